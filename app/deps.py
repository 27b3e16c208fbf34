"""Dependencies: the process state, and the caller (a bearer token or a service API key).

Even the trivial ones are `async def`: FastAPI runs a plain `def` dependency in its thread pool,
a thread hop per dependency per request (the benchmark measured a third of a GET's CPU).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from app.api_keys.service import ApiKeyService, KeyPrincipal, invalid_key
from app.audit.service import AuditService, RequestMeta
from app.auth.roles import Permission
from app.auth.service import AuthService, Principal
from app.kit.errors import OrganizationSuspended, Unauthorized
from app.members.service import TeamService
from app.organizations.lifecycle import LifecycleService
from app.organizations.service import OrganizationService
from app.recovery.service import RecoveryService
from app.sessions.service import SessionService
from app.wiring import AppState

_bearer = HTTPBearer(auto_error=False, description="Access token from `POST /admin/login`.")
_api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="Service API key (`orgsvc api-key create`); its scopes decide what it may do.",
)


def state_of(request: Request) -> AppState:
    """The process state, for the hot path's dependencies that read it from the request
    instead of through one more dependency (see `current_admin`)."""
    state: AppState = request.app.state.svc
    return state


async def get_state(request: Request) -> AppState:
    return state_of(request)


State = Annotated[AppState, Depends(get_state)]


async def get_org_service(state: State) -> OrganizationService:
    return state.orgs


async def get_auth_service(state: State) -> AuthService:
    return state.auth


OrgService = Annotated[OrganizationService, Depends(get_org_service)]
Auth = Annotated[AuthService, Depends(get_auth_service)]


Bearer = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
KeyHeader = Annotated[str | None, Depends(_api_key)]


async def current_admin(request: Request, credentials: Bearer) -> Principal:
    """The authenticated admin, or 401 with `WWW-Authenticate: Bearer`.

    The hot path of every member request: it takes the process state from the request rather
    than through more dependencies (each costs FastAPI's resolution, ~10 µs, on every call)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized()
    return await admin_of(request, credentials.credentials)


async def admin_of(request: Request, token: str) -> Principal:
    """The admin behind a bearer token (401/403 as `AuthService.authenticate` decides), noted on
    the request for the access log."""
    principal = await state_of(request).auth.authenticate(token)
    request.state.organization_id = principal.claims.organization_id  # for the access log
    return principal


CurrentAdmin = Annotated[Principal, Depends(current_admin)]


def requires(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """A member whose role grants `permission` (`app.auth.roles`), or 403 `insufficient_role`."""

    async def dependency(caller: CurrentAdmin) -> Principal:
        caller.require(permission)
        return caller

    return dependency


async def get_lifecycle(state: State) -> LifecycleService:
    return state.lifecycle


Lifecycle = Annotated[LifecycleService, Depends(get_lifecycle)]


async def get_team_service(state: State) -> TeamService:
    return state.team


Teams = Annotated[TeamService, Depends(get_team_service)]


async def get_session_service(state: State) -> SessionService:
    return state.sessions


Sessions = Annotated[SessionService, Depends(get_session_service)]


async def get_recovery_service(state: State) -> RecoveryService:
    return state.recovery


Recovery = Annotated[RecoveryService, Depends(get_recovery_service)]


async def get_audit(state: State) -> AuditService:
    return state.audit


async def get_api_key_service(state: State) -> ApiKeyService:
    return state.api_keys


Audit = Annotated[AuditService, Depends(get_audit)]
ApiKeys = Annotated[ApiKeyService, Depends(get_api_key_service)]


async def request_meta(request: Request) -> RequestMeta:
    """The client IP (resolved by the edge middleware) and the request id, for audit entries."""
    state = request.scope.get("state", {})
    client = request.client.host if request.client else None
    agent = request.headers.get("user-agent")
    return RequestMeta(
        ip=state.get("client_ip", client),
        request_id=state.get("request_id"),
        user_agent=agent[:200] if agent else None,
    )


Meta = Annotated[RequestMeta, Depends(request_meta)]


async def optional_api_key(request: Request, api_key: KeyHeader) -> KeyPrincipal | None:
    """The key principal when `X-API-Key` is sent (401 if it is not a valid key), else None."""
    return None if api_key is None else await key_principal(request, api_key)


async def key_principal(request: Request, api_key: str) -> KeyPrincipal:
    """The principal of this key (401 if it is not a valid key)."""
    state = state_of(request)
    principal = await state.api_keys.authenticate(api_key)
    request.state.api_key_id = principal.key_id  # for the access log
    if principal.organization_id is not None:
        # An organization's own key: it lives as long as its organization, and acts for it
        # only while it is not suspended (a second read, for these keys only).
        org = await state.orgs.orgs.get_active(principal.organization_id)
        if org is None:
            raise invalid_key()
        if org.suspended:
            raise OrganizationSuspended()
        request.state.organization_id = org.organization_id
        principal = replace(principal, organization=org)
    return principal


OptionalKey = Annotated[KeyPrincipal | None, Depends(optional_api_key)]


async def current_caller(
    request: Request, api_key: KeyHeader, credentials: Bearer
) -> Principal | KeyPrincipal:
    """An API key when `X-API-Key` is sent, else the admin behind the bearer token."""
    if api_key is not None:
        return await key_principal(request, api_key)
    return await current_admin(request, credentials)


Caller = Annotated[Principal | KeyPrincipal, Depends(current_caller)]


def require_scope(scope: str) -> Callable[[KeyPrincipal | None], Awaitable[KeyPrincipal]]:
    """A dependency: an API key with `scope` (401 without a key, 403 without the scope)."""

    async def dependency(key: OptionalKey) -> KeyPrincipal:
        if key is None:
            raise Unauthorized(f"An API key with the {scope} scope is required.")
        key.require(scope)
        return key

    return dependency
