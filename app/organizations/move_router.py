"""`POST /orgs/{organization_id}/move` and `GET /operations/{operation_id}` (scope `org:move`):
moving an organization's tenant collection online (`app.organizations.moves`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, Field

from app.api_keys.service import KeyPrincipal
from app.deps import Meta, require_scope, state_of
from app.kit.responses import BODY_ERRORS, errors
from app.organizations.moves import MoveRecord, MoveStatus, Phase
from app.organizations.operator import KEY_401, OrganizationId
from app.tenancy.placement import Placement

router = APIRouter(tags=["placement"])
Mover = Annotated[KeyPrincipal, Depends(require_scope("org:move"))]
_403 = "`insufficient_scope`: the key lacks `org:move`."
NAME = r"^[A-Za-z0-9_-]{1,64}$"


class MoveRequest(BaseModel):
    """Where to move the organization: a cluster of TENANT_CLUSTERS and one of its
    TENANT_DATABASES, or the organization's own database `orgdata_<organization_id>`."""

    cluster: str = Field(pattern=NAME, examples=["main"])
    database: str = Field(pattern=NAME, examples=["tenants_2"])


class MoveAccepted(BaseModel):
    operation_id: str


class Progress(BaseModel):
    phase: Phase = Field(
        description="`queued`, `copying`, `indexes`, `verifying`, `switching`, "
        "`dropping_source`, `done`."
    )
    copied: int = Field(description="Documents copied so far.")
    total: int = Field(description="Documents in the tenant collection when the move began.")


class OperationRead(BaseModel):
    """A long-running operation (a move), kept after it ends."""

    operation_id: str
    kind: str
    status: MoveStatus
    progress: Progress
    error: str | None = Field(description="Why it failed or was rolled back.")
    organization_id: str
    source: Placement
    target: Placement

    @classmethod
    def of(cls, record: MoveRecord) -> OperationRead:
        return cls(
            operation_id=record.operation_id, kind=record.kind, status=record.status,
            progress=Progress(phase=record.phase, copied=record.copied, total=record.total),
            error=record.error, organization_id=record.organization_id,
            source=record.source, target=record.target,
        )  # fmt: skip


@router.post(
    "/orgs/{organization_id}/move",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=MoveAccepted,
    responses={
        **errors(
            401, 403, 404, 409, 422, 503, s401=KEY_401, s403=_403,
            s409="`operation_in_progress` (a rename, delete, suspension or another move "
            "holds it) or `already_placed`.",
            s422="`unknown_placement`: not a configured place; `namespace_too_long`.",
        ),
        **BODY_ERRORS,
    },
)  # fmt: skip
async def move_organization(
    organization_id: OrganizationId, body: MoveRequest, request: Request, key: Mover, meta: Meta
) -> MoveAccepted:
    """Move the organization's tenant collection to another database or cluster, online:
    `organization.moving` is published before the copy (tenant writers pause on it), every
    document and index is copied and verified, the record switches with
    `organization.moved`, and only then is the source dropped. Follow it with
    `GET /operations/{operation_id}`."""
    target = Placement(cluster=body.cluster, database=body.database)
    moves = state_of(request).moves
    op_id = await moves.start(organization_id, target, actor=key.actor, meta=meta)
    return MoveAccepted(operation_id=op_id)


@router.get(
    "/operations/{operation_id}",
    response_model=OperationRead,
    responses=errors(401, 403, 404, 422, 503, s401=KEY_401, s403=_403),
)
async def get_operation(operation_id: str, request: Request, _key: Mover) -> OperationRead:
    """A move's status (`pending`, `running`, `done`, `failed`, `rolled_back`) and progress."""
    return OperationRead.of(await state_of(request).moves.get(operation_id))
