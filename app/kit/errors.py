"""Domain errors with their HTTP status and stable code; one set of handlers renders them all."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pymongo.errors import AutoReconnect, ConnectionFailure, ServerSelectionTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("orgsvc.errors")


class ErrorBody(BaseModel):
    """Every error response: a human sentence (or FastAPI's list for 422) and a stable code."""

    detail: str | list[dict[str, Any]]
    code: str


class AppError(Exception):
    """An error a caller can act on; rendered as `{detail, code}` with `status`."""

    status: int = 400
    code: str = "bad_request"
    detail: str | list[dict[str, Any]] = "Bad request."

    def __init__(
        self,
        detail: str | list[dict[str, Any]] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail or self.detail)
        if detail is not None:
            self.detail = detail
        self.headers = headers


class Unauthorized(AppError):
    status, code, detail = 401, "not_authenticated", "Missing or invalid bearer token."

    def __init__(self, detail: str | None = None, *, code: str | None = None):
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})
        if code:
            self.code = code


class InvalidCredentials(AppError):
    status, code, detail = 401, "invalid_credentials", "Incorrect email or password."


class Forbidden(AppError):
    status, code, detail = 403, "forbidden", "This organization is not yours."


class NotFound(AppError):
    status, code, detail = 404, "not_found", "Organization not found."


class OrganizationExists(AppError):
    status, code, detail = 409, "organization_exists", "An organization with this name exists."


class EmailTaken(AppError):
    status, code, detail = 409, "email_taken", "This email is already registered."


class OperationInProgress(AppError):
    status, code = 409, "operation_in_progress"
    detail = "Another change to this organization is in progress; retry shortly."


class InsufficientRole(AppError):
    status, code = 403, "insufficient_role"
    detail = "Your role in this organization does not allow this."


class LastOwner(AppError):
    status, code = 409, "last_owner"
    detail = "An organization must keep at least one owner."


class InvitationExists(AppError):
    status, code = 409, "invitation_exists"
    detail = "A pending invitation for this email exists in this organization."


class SeatLimit(AppError):
    status, code = 409, "seat_limit"
    detail = "The organization has no free seat (members plus pending invitations)."


class InvitationInvalid(AppError):
    status, code = 410, "invitation_invalid"
    detail = "This invitation is unknown, already used, revoked or expired."


class OrganizationSuspended(AppError):
    status, code = 403, "organization_suspended"
    detail = "This organization is suspended."


class ExternalIdTaken(AppError):
    status, code = 409, "external_id_taken"
    detail = "Another organization has this external_id."


class InvalidInput(AppError):
    status, code, detail = 422, "validation_error", "Invalid input."


class DatabaseUnavailable(AppError):
    status, code, detail = 503, "database_unavailable", "The database is unavailable."


def _body(
    status: int, code: str, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content=jsonable_encoder({"detail": detail, "code": code}),
        headers=headers,
    )


_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    431: "request_header_fields_too_large",
}

INTERNAL_ERROR = "Internal server error."


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route fully serves on this request's path (asked through the routes'
    own `matches`, so included routers count too)."""
    routes = request.app.router.routes
    return [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] == Match.FULL for route in routes
        )
    ]


def install_error_handlers(
    app: FastAPI, *, on_db_error: Callable[[BaseException], None] | None = None
) -> None:
    """Render every error, expected or not, in the contract's `{detail, code}` shape.

    Call before adding any other middleware: the unexpected-error middleware must be the
    innermost one, so a 500 still passes through all of them (request id, security headers,
    access log) and the connection stays open.
    """
    app.add_middleware(UnexpectedErrorMiddleware)

    @app.exception_handler(AppError)
    async def _app_error(_: Request, exc: AppError) -> JSONResponse:
        return _body(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            # Never echo the offending input back: it may be a password.
            errors.append({k: v for k, v in err.items() if k not in ("input", "ctx", "url")})
        return _body(422, "validation_error", errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only; a path served by
            # several routes (GET and POST /org/invitations) allows all of theirs.
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return _body(exc.status_code, code, str(exc.detail), headers)

    @app.exception_handler(ServerSelectionTimeoutError)
    @app.exception_handler(ConnectionFailure)
    @app.exception_handler(AutoReconnect)
    async def _db_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc).__name__)
        if on_db_error is not None:
            on_db_error(exc)
        return _body(503, "database_unavailable", DatabaseUnavailable.detail)

    # Last resort, for an error in a middleware itself: Starlette answers from outside every
    # middleware and re-raises (no request id, and the server closes the connection).
    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _body(500, "internal_error", INTERNAL_ERROR)


class StartWatch:
    """Wraps an ASGI `send` and remembers whether the response has started (after that, a
    middleware can no longer answer in its place)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class UnexpectedErrorMiddleware:
    """Turns an unexpected exception of a route into the contract's 500 *inside* the middleware
    stack (Starlette's own Exception handler runs outside it and re-raises). After the response
    has started there is nothing to fix: the exception goes on and the server drops the
    connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        watch = StartWatch(send)
        try:
            await self.app(scope, receive, watch.send)
        except Exception as exc:
            if watch.started or isinstance(exc, StarletteHTTPException):
                raise  # an HTTP error raised outside a route belongs to the middleware above
            log.exception("unhandled error", exc_info=exc)
            await _body(500, "internal_error", INTERNAL_ERROR)(scope, receive, send)
