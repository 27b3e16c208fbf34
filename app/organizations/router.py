"""`/org/*`: create, read, update (rename), delete and list organizations.

Every mutating call is audited (`app.audit.service`): success, or failure with its code.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, status
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import AfterValidator, WithJsonSchema

from app.api_keys.service import KeyPrincipal
from app.audit.service import ANONYMOUS
from app.auth.service import Principal
from app.deps import (
    Caller,
    CurrentAdmin,
    Meta,
    OptionalKey,
    OrgService,
    State,
    admin_of,
    require_scope,
    state_of,
)
from app.kit.errors import Forbidden, Unauthorized
from app.kit.pagination import Page, decode_cursor, encode_cursor
from app.kit.responses import BODY_ERRORS, errors
from app.kit.routes import FastPathRoute, fast_path
from app.organizations.records import Organization
from app.organizations.schemas import (
    NAME_DESCRIPTION,
    NAME_FORMAT,
    SLUG_CURSOR_FORMAT,
    OrganizationCreate,
    OrganizationRead,
    OrganizationUpdate,
    slug_rules,
)
from app.tenancy.names import MAX_NAME_CHARS, InvalidName, use_rules


async def name_rules(request: Request) -> None:
    """This app's slug rules, for the name type of this request's models (see
    `app.tenancy.names`); a route dependency, so it runs before any parameter is validated.
    (The state from the request, not a dependency: see `app.deps.current_admin`.)"""
    use_rules(state_of(request).orgs.names)


router = APIRouter(
    prefix="/org",
    tags=["organizations"],
    dependencies=[Depends(name_rules)],
    route_class=FastPathRoute,
)

NameQuery = Annotated[
    str,
    AfterValidator(slug_rules),
    Query(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        description=NAME_DESCRIPTION,
        examples=["Acme Corp"],
        json_schema_extra={"format": NAME_FORMAT},
    ),
]


async def create_gate(state: State, key: OptionalKey) -> KeyPrincipal | None:
    """Open sign-up, unless ORG_CREATE_REQUIRES_KEY: then an API key with org:create."""
    if key is None and state.settings.org_create_requires_key:
        raise Unauthorized("An API key with the org:create scope is required.")
    if key is not None:
        key.require("org:create")  # a key that is sent must be one allowed to create
    return key


@router.post(
    "/create",
    status_code=status.HTTP_201_CREATED,
    response_model=OrganizationRead,
    responses={
        **errors(
            401,
            403,
            409,
            422,
            503,
            s401=(
                "`invalid_api_key`: the `X-API-Key` sent is unknown or revoked; "
                "`not_authenticated`: no key while ORG_CREATE_REQUIRES_KEY is set."
            ),
            s403=(
                "`insufficient_scope`: the `X-API-Key` sent lacks the `org:create` scope; "
                "`forbidden`: a `plan` without an `X-API-Key`."
            ),
            s409="`organization_exists` (same slug) or `email_taken`.",
            interruptible=True,
        ),
        **BODY_ERRORS,
    },
    # The key is optional (open sign-up) unless ORG_CREATE_REQUIRES_KEY: `{}` is "no credentials".
    openapi_extra={"security": [{}]},
)
async def create_organization(
    body: OrganizationCreate,
    orgs: OrgService,
    meta: Meta,
    key: Annotated[KeyPrincipal | None, Depends(create_gate)],
) -> Organization:
    """Create an organization, its admin and its tenant collection.

    Open to anyone unless ORG_CREATE_REQUIRES_KEY is set; then it needs `X-API-Key` with the
    `org:create` scope (401 without a key, 403 without the scope). Only a key may choose the
    plan (403 `forbidden` without one)."""
    if "plan" in body.model_fields_set and key is None:
        raise Forbidden("Only an API key may choose the plan of a new organization.")
    return await orgs.create(body, actor=key.actor if key else ANONYMOUS, meta=meta)


def document_required_create_key(app: FastAPI) -> None:
    """For ORG_CREATE_REQUIRES_KEY: `POST /org/create` documents its `X-API-Key` as required
    (the route itself declares it optional, which is the default)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI builds it once and caches it; this edit is idempotent
        operation = schema["paths"]["/org/create"]["post"]
        operation["security"] = [
            requirement for requirement in operation["security"] if requirement
        ]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def readable(request: Request, organization_name: NameQuery, caller: Caller) -> Organization:
    """Authorization of `GET /org/get`: `org:read` (every admin has it on its own organization;
    a key needs the scope), then the organization as this caller may see it. The name is a
    parameter here so that a bad name is a 422 before any 403, as before. (The service comes
    from the request, not a dependency: this is the hot path, see `app.deps.current_admin`.)"""
    return await _visible(request, caller, organization_name)


async def _visible(request: Request, caller: Principal | KeyPrincipal, name: str) -> Organization:
    caller.require("org:read")
    return await state_of(request).orgs.get_visible(
        caller.organization, name, hide_others=isinstance(caller, KeyPrincipal)
    )


def _encoded(organization: Organization) -> Response:
    # Encoded here, as FastAPI would (`response_model`, by alias), without its second pass of
    # validating the model it is handed.
    body = OrganizationRead.of(organization).model_dump_json(by_alias=True)
    return Response(body, media_type="application/json")


async def get_fast(request: Request) -> Response | None:
    """`GET /org/get`'s fast path (`app.kit.routes`): the common request, a bearer token and one
    valid `organization_name`, answered without FastAPI's dependency resolution (about 40% of
    this request's CPU). Anything else (an API key, no or another authorization scheme, a
    missing, repeated, extra or invalid parameter) returns `None` and is answered by the route
    as declared, so every error keeps its code and its order (401, then 422, then 403, 404)."""
    headers = request.headers
    authorization = headers.get("authorization")
    if authorization is None or "x-api-key" in headers:
        return None
    scheme, token = get_authorization_scheme_param(authorization)
    params = request.query_params
    if not token or scheme.lower() != "bearer" or len(params.multi_items()) != 1:
        return None
    name = params.get("organization_name")
    if name is None:
        return None
    rules = state_of(request).orgs.names
    use_rules(rules)  # as the router's `name_rules` does, for the model's name type
    try:
        rules.slug(name)
    except InvalidName:
        return None  # the route's 422 (every rule, the length too), after its 401 for a bad token
    caller = await admin_of(request, token)
    return _encoded(await _visible(request, caller, name))


@router.get(
    "/get",
    response_model=OrganizationRead,
    responses=errors(
        401,
        403,
        404,
        422,
        503,
        s401=(
            "`not_authenticated` (neither a bearer token nor an API key), `invalid_token`, "
            "`token_revoked`, or `invalid_api_key` (the `X-API-Key` sent is unknown or revoked)."
        ),
        s403=(
            "`forbidden`: another organization than the bearer's; `insufficient_scope`: the "
            "`X-API-Key` lacks `org:read`."
        ),
    ),
)
@fast_path(get_fast)
async def get_organization(
    organization: Annotated[Organization, Depends(readable)],
) -> Response:
    """An organization by name (matched by slug): the caller's own with a bearer token, any
    with an API key that has the `org:read` scope."""
    return _encoded(organization)


class OrganizationPage(Page[OrganizationRead]):
    """One page of organizations, by slug; pass `next_cursor` back as `cursor` for the next."""


@router.get(
    "/list",
    response_model=OrganizationPage,
    responses=errors(
        401,
        403,
        422,
        503,
        s401="`not_authenticated` (no `X-API-Key`) or `invalid_api_key` (unknown or revoked).",
        s403="`insufficient_scope`: the key lacks `org:list`.",
    ),
)
async def list_organizations(
    orgs: OrgService,
    _key: Annotated[KeyPrincipal, Depends(require_scope("org:list"))],
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[
        str | None,
        # A query value is a string or absent, never null: the schema says just that.
        WithJsonSchema(
            {"type": "string", "minLength": 2, "maxLength": 400, "format": SLUG_CURSOR_FORMAT}
        ),
        Query(
            min_length=2,
            max_length=400,
            description=(
                "`next_cursor` of the previous page, passed back unchanged: the base64url "
                "(RFC 4648 §5, `=` padding optional) of the UTF-8 slug of that page's last "
                "organization; the page starts after that slug. Anything that does not decode "
                "to a non-empty UTF-8 string is a 422."
            ),
        ),
    ] = None,
) -> OrganizationPage:
    """Every active organization, by slug, in pages (API key with the `org:list` scope)."""
    after = decode_cursor(cursor) if cursor is not None else None
    found, last = await orgs.list_page(limit=limit, after=after)
    return OrganizationPage(
        items=[OrganizationRead.of(org) for org in found],
        next_cursor=encode_cursor(last) if last else None,
    )


@router.put(
    "/update",
    response_model=OrganizationRead,
    responses={
        **errors(
            401,
            403,
            404,
            409,
            422,
            503,
            s403="`insufficient_role`: a `member` may not change `organization_name`.",
            s404="`not_found`: the organization was deleted meanwhile.",
            s409="`organization_exists`, `email_taken`, or `operation_in_progress`.",
            interruptible=True,
        ),
        **BODY_ERRORS,
    },
)
async def update_organization(
    body: OrganizationUpdate, caller: CurrentAdmin, orgs: OrgService, meta: Meta
) -> Organization:
    """Rename the caller's organization (owners and admins) and/or change the caller's own
    email or password (every member)."""
    return await orgs.update(caller, body, meta=meta)


@router.delete(
    "/delete",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(
        401,
        403,
        404,
        409,
        422,
        503,
        s403=(
            "`insufficient_role`: only an owner deletes the organization; `forbidden`: not the "
            "caller's organization."
        ),
        s409="`operation_in_progress`: a rename or delete of this organization is under way.",
        interruptible=True,
    ),
)
async def delete_organization(
    organization_name: NameQuery, caller: CurrentAdmin, orgs: OrgService, meta: Meta
) -> Response:
    """Delete the caller's organization (owners only), its tenant collection and its members."""
    await orgs.delete(caller, organization_name, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
