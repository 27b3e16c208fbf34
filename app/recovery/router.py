"""`/admin/password/*`: forgot (queue a reset mail) and reset (a new password with its token)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.deps import Meta, Recovery
from app.kit.responses import BODY_ERRORS, errors
from app.recovery.schemas import ForgotRequest, ForgotResponse, ResetRequest

router = APIRouter(prefix="/admin/password", tags=["admin"])


@router.post(
    "/forgot",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ForgotResponse,
    responses={
        **errors(
            422, 429, 503,
            s429=(
                "`rate_limited`: too many requests for this email (PASSWORD_RESET_MAX_PER_EMAIL) "
                "or client IP (PASSWORD_RESET_MAX_PER_IP) in PASSWORD_RESET_WINDOW_SECONDS."
            ),
        ),
        **BODY_ERRORS,
    },
)  # fmt: skip
async def forgot_password(body: ForgotRequest, recovery: Recovery, meta: Meta) -> ForgotResponse:
    """Ask for a password-reset mail. The same answer, in the same time, for every well-formed
    address: if an account has it, a mail with a single-use link goes out."""
    await recovery.forgot(body.email, meta=meta)
    return ForgotResponse()


@router.post(
    "/reset",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={
        **errors(
            410, 422, 503,
            interruptible=True,
            s410="`reset_token_invalid`: unknown, malformed, used or expired (one answer for all).",
        ),
        **BODY_ERRORS,
    },
)  # fmt: skip
async def reset_password(body: ResetRequest, recovery: Recovery, meta: Meta) -> Response:
    """Set a new password with the token from the reset mail (once). Afterwards every session
    and token of the member is dead."""
    await recovery.reset(body.token, body.password, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
