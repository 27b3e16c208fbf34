"""Request and response models of organizations: validation at the edge, Unicode included."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from app.auth.schemas import Password
from app.kit.fields import Email, StrictModel, UtcTime, no_null
from app.organizations.profile import DisplayName, ExternalId, MaxMembers, Metadata, Plan
from app.organizations.records import DEFAULT_PLAN, Organization
from app.tenancy.names import MAX_NAME_CHARS, InvalidName, current_rules

NAME_FORMAT = "organization-name"
SLUG_CURSOR_FORMAT = "slug-cursor"  # `GET /org/list`
NAME_DESCRIPTION = (
    f"1 to {MAX_NAME_CHARS} characters with at least one letter or digit, no NUL and no "
    "bidirectional control character. Matched by its slug (invisible default-ignorable "
    "characters dropped, NFKC, casefolded, every run of non-letters/digits to `_`, trimmed), "
    "which must fit a MongoDB namespace as `org_<slug>`. Otherwise 422."
)


def slug_rules(name: str) -> str:
    """Run the deployment's slug rules on a name (`app.tenancy.names.NameRules`), so that every
    bad name, in a body or a query, is the same 422 as a too-long one: `loc` says where it was,
    `msg` says why."""
    try:
        current_rules().slug(name)
    except InvalidName as exc:
        raise PydanticCustomError("value_error", str(exc)) from None
    return name


OrganizationName = Annotated[
    str,
    StringConstraints(strict=True, min_length=1, max_length=MAX_NAME_CHARS),
    AfterValidator(no_null),
    AfterValidator(slug_rules),
    Field(
        examples=["Acme Corp"],
        description=NAME_DESCRIPTION,
        json_schema_extra={"format": NAME_FORMAT},
    ),
]


class OrganizationCreate(StrictModel):
    """Body of `POST /org/create`."""

    organization_name: OrganizationName
    email: Email
    password: Password
    plan: Annotated[
        Plan,
        Field(
            description=(
                "The plan; only with an `X-API-Key`. A plan listed in DEDICATED_DATABASE_PLANS "
                "gives the organization a database of its own."
            )
        ),
    ] = DEFAULT_PLAN


_UPDATE_FIELDS = ("organization_name", "email", "password")
_UPDATE_ANY_OF: list[JsonValue] = [
    {"required": [name], "properties": {name: {"type": "string"}}} for name in _UPDATE_FIELDS
]
_UPDATE_ANY_OF += [
    {"required": ["display_name"]},
    {"required": ["metadata"], "properties": {"metadata": {"type": "object"}}},
]


class OrganizationUpdate(StrictModel):
    """Body of `PUT /org/update`: new values for the caller's organization, at least one. A
    null `organization_name`, `email`, `password` or `metadata` is the same as leaving it out;
    a null `display_name` removes the display name."""

    model_config = ConfigDict(json_schema_extra={"anyOf": _UPDATE_ANY_OF})

    organization_name: OrganizationName | None = None
    email: Email | None = None
    password: Password | None = None
    display_name: DisplayName | None = None
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> OrganizationUpdate:
        if not self.profile() and all(getattr(self, name) is None for name in _UPDATE_FIELDS):
            raise ValueError(
                "give at least one of organization_name, email, password, display_name, metadata"
            )
        return self

    def profile(self) -> dict[str, Any]:
        """The profile fields this body changes (`display_name` may be None: removed)."""
        changes: dict[str, Any] = {}
        if "display_name" in self.model_fields_set:
            changes["display_name"] = self.display_name
        if self.metadata is not None:
            changes["metadata"] = self.metadata
        return changes


_PATCH_FIELDS = ("display_name", "metadata", "plan", "external_id", "max_members")


class OrganizationPatch(StrictModel):
    """Body of `PATCH /orgs/{organization_id}`: the fields to change, at least one. A null
    `display_name` or `external_id` removes it; a null `max_members` goes back to the
    deployment's MAX_MEMBERS_PER_ORG; `metadata` replaces the whole object."""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": [name]} for name in _PATCH_FIELDS]}
    )

    display_name: DisplayName | None = None
    # Never null (a 422 below): the schema does not offer null for these two.
    metadata: Metadata | SkipJsonSchema[None] = None
    plan: Plan | SkipJsonSchema[None] = None
    external_id: ExternalId | None = None
    max_members: MaxMembers | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> OrganizationPatch:
        if not self.model_fields_set:
            raise ValueError(f"give at least one of {', '.join(_PATCH_FIELDS)}")
        for name in ("metadata", "plan"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        return {
            name: getattr(self, name) for name in _PATCH_FIELDS if name in self.model_fields_set
        }


class SuspendRequest(StrictModel):
    """Body of `POST /orgs/{organization_id}/suspend` (optional)."""

    reason: Annotated[
        str | None,
        StringConstraints(strict=True, min_length=1, max_length=500, pattern=r"^[^\x00]+$"),
        Field(description="Why (kept on the record, shown to operators; at most 500 characters)."),
    ] = None


class PlacementRead(BaseModel):
    """Where a tenant collection lives: a cluster named in TENANT_CLUSTERS, and a database."""

    model_config = ConfigDict(from_attributes=True)

    cluster: str
    database: str


class AdminRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    admin_id: str
    email: str


# Routes return the stored record (`records.Organization`); this model picks what callers see
# of it (its docstring is the OpenAPI description).
class OrganizationRead(BaseModel):
    """The organization object of the contract."""

    model_config = ConfigDict(from_attributes=True)

    organization_id: str
    organization_name: str
    slug: str
    collection_name: str
    admin: AdminRead = Field(
        description="The primary owner (the creator, or whom ownership passed to)."
    )
    member_count: int
    placement: PlacementRead | None = Field(
        description=(
            "Where `collection_name` lives: `{cluster, database}` (null only for a record of a "
            "replica older than placement, until a start-up records it)."
        )
    )
    display_name: str | None
    metadata: dict[str, Any]
    plan: str
    status: Literal["active", "suspended"] = Field(validation_alias="state")
    external_id: str | None
    max_members: int | None = Field(
        description="Seats (members plus pending invitations); null: MAX_MEMBERS_PER_ORG."
    )
    suspended_at: UtcTime | None = Field(
        description="When the organization was suspended; null while it is active."
    )
    suspension_reason: str | None = Field(description="The operator's reason, if one was given.")
    created_at: UtcTime
    updated_at: UtcTime

    @classmethod
    def of(cls, org: Organization) -> OrganizationRead:
        return cls.model_validate(org, from_attributes=True)


class OrganizationStats(BaseModel):
    """`GET /orgs/{organization_id}/stats`: the team from the organization record, the tenant
    collection from the database's own statistics (no document is read)."""

    member_count: int
    pending_invitations: int = Field(
        description="Invitations not yet accepted, revoked or expired."
    )
    tenant_documents: int
    tenant_storage_bytes: int
    tenant_indexes: int = Field(description="Indexes of the tenant collection, `_id`'s included.")
    last_login_at: UtcTime | None = Field(description="The latest login of any member.")
