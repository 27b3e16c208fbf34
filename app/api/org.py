"""`/org/*`: create, read, update (rename) and delete organizations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from app.api.deps import CurrentAdmin, OrgService
from app.api.responses import errors
from app.repositories.base import Doc, as_utc
from app.schemas import AdminRead, OrganizationCreate, OrganizationRead, OrganizationUpdate

router = APIRouter(prefix="/org", tags=["organizations"])

NameQuery = Annotated[str, Query(min_length=1, max_length=1000, examples=["Acme Corp"])]


def to_read(doc: Doc) -> OrganizationRead:
    """The contract's organization object from a stored record (no secrets in it)."""
    return OrganizationRead(
        organization_id=doc["_id"],
        organization_name=doc["organization_name"],
        slug=doc["slug"],
        collection_name=doc["collection_name"],
        admin=AdminRead(admin_id=doc["admin"]["admin_id"], email=doc["admin"]["email"]),
        created_at=as_utc(doc["created_at"]),
        updated_at=as_utc(doc["updated_at"]),
    )


@router.post(
    "/create",
    status_code=status.HTTP_201_CREATED,
    response_model=OrganizationRead,
    responses=errors(409, 422, 503),
)
async def create_organization(body: OrganizationCreate, orgs: OrgService) -> OrganizationRead:
    """Create an organization, its admin and its tenant collection."""
    return to_read(await orgs.create(body))


@router.get("/get", response_model=OrganizationRead, responses=errors(401, 403, 404, 422, 503))
async def get_organization(
    organization_name: NameQuery, caller: CurrentAdmin, orgs: OrgService
) -> OrganizationRead:
    """The caller's organization, looked up by name (matched by slug)."""
    return to_read(await orgs.get_for(caller.organization, organization_name))


@router.put("/update", response_model=OrganizationRead, responses=errors(401, 404, 409, 422, 503))
async def update_organization(
    body: OrganizationUpdate, caller: CurrentAdmin, orgs: OrgService
) -> OrganizationRead:
    """Rename the caller's organization and/or change its admin's email or password."""
    return to_read(await orgs.update(caller.organization, body))


@router.delete(
    "/delete",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=errors(401, 403, 404, 409, 422, 503),
)
async def delete_organization(
    organization_name: NameQuery, caller: CurrentAdmin, orgs: OrgService
) -> Response:
    """Delete the caller's organization, its tenant collection and its admins."""
    await orgs.delete(caller.organization, organization_name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
