"""Roles and what each may do: the permission table of the contract (section 1), in one place.

Every route states the permission it needs (`app.deps.requires`), or its service asks
`Principal.require` when the permission depends on the request (which fields `PUT /org/update`
changes); nothing else decides who may do what. The rules about another member (change a role,
remove) depend on both roles and live here too. A member's role is read from the organization
record on every request, never from the token (its `role` claim is a hint only).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from app.kit.errors import InsufficientRole

Role = Literal["owner", "admin", "member"]
OWNER: Role = "owner"
ADMIN: Role = "admin"
MEMBER: Role = "member"
ROLES: tuple[Role, ...] = (OWNER, ADMIN, MEMBER)  # strongest first


class Permission(StrEnum):
    READ_ORG = "org:read"  # GET /org/get (own organization)
    LIST_MEMBERS = "members:read"  # GET /org/members
    EDIT_OWN_ACCOUNT = "account:edit"  # PUT /org/update with email / password
    EDIT_ORG = "org:edit"  # PUT /org/update with organization_name
    READ_AUDIT = "audit:read"  # GET /org/audit
    MANAGE_INVITATIONS = "invitations:manage"  # list, create (admin/member), revoke
    INVITE_OWNER = "invitations:owner"  # create an invitation with role owner
    CHANGE_ROLES = "members:role"  # PATCH /org/members/{id}, within `may_change_role`
    REMOVE_MEMBERS = "members:remove"  # DELETE /org/members/{id} of another, within `may_remove`
    DELETE_ORG = "org:delete"  # DELETE /org/delete
    MANAGE_API_KEYS = "api_keys:manage"  # POST, GET, DELETE /org/api-keys


_EVERYONE = {Permission.READ_ORG, Permission.LIST_MEMBERS, Permission.EDIT_OWN_ACCOUNT}
_ADMINS = _EVERYONE | {
    Permission.EDIT_ORG,
    Permission.READ_AUDIT,
    Permission.MANAGE_INVITATIONS,
    Permission.CHANGE_ROLES,
    Permission.REMOVE_MEMBERS,
    Permission.MANAGE_API_KEYS,
}
GRANTS: dict[str, frozenset[Permission]] = {
    OWNER: frozenset(Permission),
    ADMIN: frozenset(_ADMINS),
    MEMBER: frozenset(_EVERYONE),
}


def can(role: str, permission: Permission) -> bool:
    return permission in GRANTS.get(role, frozenset())


def require(role: str, permission: Permission) -> None:
    if not can(role, permission):
        raise InsufficientRole()


def may_change_role(actor: str, target: str, new: str) -> bool:
    """An owner sets any role; an admin moves someone between member and admin, never an
    owner and never to owner."""
    if actor == OWNER:
        return True
    if actor == ADMIN:
        return target in (ADMIN, MEMBER) and new in (ADMIN, MEMBER)
    return False


def may_remove(actor: str, target: str, *, is_self: bool) -> bool:
    """Anyone may leave; an owner removes anyone; an admin removes admins and members."""
    if is_self:
        return True
    if actor == OWNER:
        return True
    return actor == ADMIN and target in (ADMIN, MEMBER)
