"""Dependencies: the process state, and the caller resolved from the bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.errors import Unauthorized
from app.services.auth import AuthService, Principal
from app.services.organizations import OrganizationService
from app.state import AppState

_bearer = HTTPBearer(auto_error=False, description="Access token from `POST /admin/login`.")


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.svc
    return state


State = Annotated[AppState, Depends(get_state)]


def get_org_service(state: State) -> OrganizationService:
    return state.orgs


def get_auth_service(state: State) -> AuthService:
    return state.auth


OrgService = Annotated[OrganizationService, Depends(get_org_service)]
Auth = Annotated[AuthService, Depends(get_auth_service)]


async def current_admin(
    request: Request,
    auth: Auth,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated admin, or 401 with `WWW-Authenticate: Bearer`."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized()
    principal = await auth.authenticate(credentials.credentials)
    request.state.organization_id = principal.claims.organization_id  # for the access log
    return principal


CurrentAdmin = Annotated[Principal, Depends(current_admin)]
