"""Request and response models of organizations: validation at the edge, Unicode included."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.auth.schemas import Password
from app.kit.fields import Email, StrictModel, UtcTime, no_null
from app.organizations.records import Organization
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


_UPDATE_FIELDS = ("organization_name", "email", "password")


class OrganizationUpdate(StrictModel):
    """Body of `PUT /org/update`: new values for the caller's organization, at least one
    (a null is the same as leaving the field out)."""

    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in _UPDATE_FIELDS
            ]
        }
    )

    organization_name: OrganizationName | None = None
    email: Email | None = None
    password: Password | None = None

    @model_validator(mode="after")
    def _at_least_one(self) -> OrganizationUpdate:
        if self.organization_name is None and self.email is None and self.password is None:
            raise ValueError("give at least one of organization_name, email, password")
        return self


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
    created_at: UtcTime
    updated_at: UtcTime

    @classmethod
    def of(cls, org: Organization) -> OrganizationRead:
        return cls.model_validate(org, from_attributes=True)
