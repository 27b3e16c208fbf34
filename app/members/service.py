"""Team rules: members and their roles, invitations and their acceptance.

Every change that spans members goes through `_change_team`: read the team, decide on that
snapshot (roles of both sides as they are now, the last owner, the seats), write it back with a
compare-and-set, and on a lost race read again. Changes with side records (an invitation and
its mail, a new member's account, a removed member's account) are operations with intents, so
a crash at any point is finished or undone by the reconciler (`app.members.steps`).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from app.audit.service import ANONYMOUS, Actor, AuditService, RequestMeta
from app.auth.admins import AdminRepository, MemberAccount
from app.auth.passwords import PasswordHasher
from app.auth.roles import OWNER, Permission, may_change_role, may_remove
from app.auth.schemas import TokenResponse
from app.auth.service import AuthService, Principal
from app.events.records import EventActor, PendingEvent
from app.kit.errors import (
    AppError,
    EmailTaken,
    InsufficientRole,
    InvitationExists,
    InvitationInvalid,
    LastOwner,
    NotFound,
    OperationInProgress,
    OrganizationSuspended,
    SeatLimit,
)
from app.kit.events import DomainEvent, EventHook
from app.kit.store import epoch_ms, new_id, utcnow
from app.members.invitations import PENDING, Invitation, InvitationRepository
from app.members.schemas import InvitationRead, MemberRead, last_login
from app.members.steps import AcceptOp, InviteOp, RemoveOp, TeamSteps
from app.members.tokens import InvitationTokens, invitation_id_of, same_hash, token_hash
from app.organizations.events import event_actor
from app.organizations.records import InviteSlot, Organization, Team, TeamEntry
from app.organizations.team import TeamRepository, is_member_id
from app.tenancy.context import OperationContext
from app.tenancy.lease import Hold
from app.tenancy.operations import Operation, OperationRepository

MAX_TRIES = 60  # compare-and-set rounds before a 409 operation_in_progress
PURGE_AFTER = timedelta(days=30)  # an expired invitation's record is kept this long


class MemberNotFound(NotFound):
    detail = "No such member in this organization."


class InvitationNotFound(NotFound):
    detail = "No such pending invitation in this organization."


@dataclass(frozen=True, slots=True)
class MemberView:
    """A member as the contract shows it."""

    member_id: str
    email: str
    role: str
    created_at: object
    last_login_ms: int | None


@dataclass(frozen=True, slots=True)
class Joined:
    """A member just made by an accepted invitation."""

    organization_id: str
    member: MemberView
    entry: TeamEntry


@dataclass(frozen=True, slots=True)
class InvitationView:
    """What an invitee is told about a live invitation."""

    organization: str
    role: str
    email: str


@dataclass(frozen=True, slots=True)
class Change:
    """What a decision on the team writes: the new team, and the primary owner when it moves."""

    team: Team
    admin: tuple[str, str] | None = None
    events: list[PendingEvent] = field(default_factory=list)  # written with it (the outbox)


Decide = Callable[[Organization, Team], Awaitable[Change]]


def _live_invites(team: Team) -> dict[str, InviteSlot]:
    now = epoch_ms()
    return {k: v for k, v in team.invites.items() if v.expires_ms > now}


class TeamService:
    def __init__(
        self,
        *,
        team: TeamRepository,
        admins: AdminRepository,
        invitations: InvitationRepository,
        ops: OperationRepository,
        steps: TeamSteps,
        tokens: InvitationTokens,
        hasher: PasswordHasher,
        auth: AuthService,
        audit: AuditService,
        events: EventHook,
        ctx: OperationContext,
    ) -> None:
        self.team = team
        self.admins = admins
        self.invitations = invitations
        self.ops = ops
        self.steps = steps
        self.tokens = tokens
        self.hasher = hasher
        self.auth = auth
        self.audit = audit
        self.events = events
        self.ctx = ctx
        settings = ctx.settings
        self.invitation_ttl = timedelta(hours=settings.invitation_ttl_hours)
        self.default_seats = settings.max_members_per_org

    # ------------------------------------------------------------------ the team's one writer
    def seats(self, org: Organization) -> int:
        return org.max_members if org.max_members is not None else self.default_seats

    async def _change_team(self, org_id: str, decide: Decide) -> Organization:
        """Decide on a fresh snapshot and write it if nobody changed the team meanwhile; the
        organization as it was read for the decision that was written."""
        for attempt in range(MAX_TRIES):
            org = await self.team.get(org_id)
            if org is None or org.team is None:
                raise NotFound()
            if org.suspended:
                raise OrganizationSuspended()  # no one joins, leaves or changes role meanwhile
            change = await decide(org, org.team)
            if await self.team.replace(org, change.team, admin=change.admin, events=change.events):
                return org
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311 - backoff
        raise OperationInProgress()

    async def _primary(self, old: Team, owners: list[str]) -> tuple[str, str] | None:
        """The primary owner's summary when the first owner changes."""
        if not owners or (old.owners and owners[0] == old.owners[0]):
            return None
        email = await self.admins.email_of(owners[0])
        return None if email is None else (owners[0], email)

    async def _start(self, op: Operation) -> Hold:
        lease = self.ctx.settings.operation_lease_seconds
        fence = await self.ops.start(op, owner=self.ctx.owner, lease_seconds=lease)
        return Hold(self.ops, op.op_id, fence=fence, lease_seconds=lease)

    async def _emit(self, type_: str, org_id: str, **data: object) -> None:
        await self.events.emit(DomainEvent(type_, org_id, dict(data)))

    # ------------------------------------------------------------------ members
    async def members_page(
        self, caller: Principal, *, limit: int, after: str | None
    ) -> tuple[list[MemberView], str | None]:
        """The caller's organization's members by id, after `after`, with their roles now."""
        caller.require(Permission.LIST_MEMBERS)
        return await self.members_of(caller.organization.organization_id, limit=limit, after=after)

    async def members_of(
        self, org_id: str, *, limit: int, after: str | None
    ) -> tuple[list[MemberView], str | None]:
        """An organization's members by id, after `after` (callers have been authorized: the
        HTTP API for the caller's own organization, the operator's CLI for any)."""
        org = await self.team.get(org_id)
        if org is None or org.team is None:
            raise NotFound()
        members = org.team.members
        found: list[MemberView] = []
        cursor = after
        # Accounts whose member left the team (a removal that crashed before deleting the
        # account) are skipped; the page is filled from the next accounts.
        while len(found) <= limit:
            accounts = await self.admins.of_org(org.organization_id, limit=limit + 1, after=cursor)
            for account in accounts:
                entry = members.get(account.member_id)
                if entry is not None:
                    found.append(_view(account, entry))
            if len(accounts) <= limit:
                break
            cursor = accounts[-1].member_id
        page = found[:limit]
        return page, (page[-1].member_id if len(found) > limit else None)

    async def change_role(
        self, caller: Principal, member_id: str, role: str, *, meta: RequestMeta
    ) -> MemberView:
        caller.require(Permission.CHANGE_ROLES)
        org_id = caller.organization.organization_id
        details = {"member_id": member_id, "role": role}

        async def decide(_: Organization, team: Team) -> Change:
            target = team.members.get(member_id)
            actor = team.members.get(caller.member_id)
            if target is None:
                raise MemberNotFound()
            if actor is None or not may_change_role(actor.role, target.role, role):
                raise InsufficientRole()
            owners = [o for o in team.owners if o != member_id]
            if role == OWNER:
                owners = [*team.owners] if member_id in team.owners else [*team.owners, member_id]
            if not owners:
                raise LastOwner()
            members = {**team.members, member_id: target.model_copy(update={"role": role})}
            new = team.model_copy(
                update={"members": members, "owners": owners, "invites": _live_invites(team)}
            )
            data = _member_data(target_account, role)
            event = PendingEvent.of("member.role_changed", org_id, data, actor=by)
            return Change(new, await self._primary(team, owners), [event])

        by = event_actor(caller.actor)
        async with self.audit.track(
            "member.role_change", actor=caller.actor, meta=meta, organization_id=org_id,
            details=details,
        ):  # fmt: skip
            if not is_member_id(member_id):
                raise MemberNotFound()
            account = await self.admins.get_account(member_id, org_id=org_id)
            if account is None:
                raise MemberNotFound()
            target_account = account
            await self._change_team(org_id, decide)
        await self._emit("member.role_changed", org_id, member_id=member_id, role=role)
        return MemberView(
            account.member_id, account.email, role, account.created_at, account.last_login_ms
        )

    async def remove(self, caller: Principal, member_id: str, *, meta: RequestMeta) -> None:
        """Remove a member (or leave, for oneself): its tokens stop at once on every replica
        (its team entry is gone), then its account is deleted."""
        is_self = member_id == caller.member_id
        if not is_self:
            caller.require(Permission.REMOVE_MEMBERS)
        org_id = caller.organization.organization_id

        async def decide(_: Organization, team: Team) -> Change:
            target = team.members.get(member_id)
            actor = team.members.get(caller.member_id)
            if target is None:
                raise MemberNotFound()
            if actor is None or not may_remove(actor.role, target.role, is_self=is_self):
                raise InsufficientRole()
            owners = [o for o in team.owners if o != member_id]
            if not owners:
                raise LastOwner()
            members = {k: v for k, v in team.members.items() if k != member_id}
            new = team.model_copy(
                update={
                    "members": members,
                    "owners": owners,
                    "count": len(members),
                    "invites": _live_invites(team),
                }
            )
            events = []
            if account is not None:
                data = _member_data(account, target.role)
                events.append(PendingEvent.of("member.removed", org_id, data, actor=by))
            return Change(new, await self._primary(team, owners), events)

        by = event_actor(caller.actor)
        action = "member.leave" if is_self else "member.remove"
        async with self.audit.track(
            action, actor=caller.actor, meta=meta, organization_id=org_id,
            details={"member_id": member_id},
        ):  # fmt: skip
            if not is_member_id(member_id):
                raise MemberNotFound()
            account = await self.admins.get_account(member_id, org_id=org_id)
            op = RemoveOp(op_id=uuid.uuid4().hex, organization_id=org_id, member_id=member_id)
            async with await self._start(op) as hold:
                try:
                    await self._change_team(org_id, decide)
                except AppError:
                    await hold.finish()
                    raise
                self.ctx.fault("remove.after_team")
                await hold.check()
                await self.admins.delete_if_of(member_id, org_id=org_id)
                await hold.finish()
        await self._emit("member.removed", org_id, member_id=member_id)

    # ------------------------------------------------------------------ invitations
    async def invite(
        self, caller: Principal, email: str, role: str, *, meta: RequestMeta
    ) -> Invitation:
        """A pending invitation, its seat held; its mail queued (sent by the mail worker)."""
        caller.require(Permission.MANAGE_INVITATIONS)
        if role == OWNER:
            caller.require(Permission.INVITE_OWNER)
        org_id = caller.organization.organization_id
        lower = email.lower()
        async with self.audit.track(
            "invitation.create", actor=caller.actor, meta=meta, organization_id=org_id,
            details={"role": role},
        ) as entry:  # fmt: skip
            if await self.admins.email_in_use(email, other_than=""):
                raise EmailTaken()
            now = utcnow()
            invitation = Invitation(
                invitation_id=new_id(),
                organization_id=org_id,
                email=email,
                role=role,
                invited_by=caller.member_id,
                created_at=now,
                expires_at=now + self.invitation_ttl,
                expires_ms=epoch_ms(self.invitation_ttl.total_seconds()),
                token_hash="",
                nonce=InvitationTokens.new_nonce(),
            )
            token = self.tokens.make(invitation.invitation_id, invitation.nonce)
            invitation = invitation.model_copy(update={"token_hash": token_hash(token)})
            entry.details["invitation_id"] = invitation.invitation_id

            async def decide(org: Organization, team: Team) -> Change:
                live = _live_invites(team)
                if any(slot.email == lower for slot in live.values()):
                    raise InvitationExists()
                if team.count + len(live) >= self.seats(org):
                    raise SeatLimit()
                slot = InviteSlot(email=lower, expires_ms=invitation.expires_ms)
                invites = {**live, invitation.invitation_id: slot}
                data = _invitation_data(invitation)
                event = PendingEvent.of(
                    "member.invited", org_id, data, actor=event_actor(caller.actor)
                )
                return Change(team.model_copy(update={"invites": invites}), events=[event])

            op = InviteOp(
                op_id=uuid.uuid4().hex,
                organization_id=org_id,
                invitation_id=invitation.invitation_id,
                email=email,
            )
            async with await self._start(op) as hold:
                await self.invitations.insert(
                    invitation, purge_at=invitation.expires_at + PURGE_AFTER
                )
                self.ctx.fault("invite.after_record")
                await hold.check()
                try:
                    await self._change_team(org_id, decide)
                except AppError:
                    await self.invitations.delete(invitation.invitation_id)
                    await hold.finish()
                    raise
                self.ctx.fault("invite.after_team")
                await hold.check()
                await self.steps.queue_mail(op)
                await hold.finish()
        await self._emit(
            "member.invited", org_id, invitation_id=invitation.invitation_id, role=role
        )
        return invitation

    async def invitations_page(
        self, caller: Principal, *, limit: int, after: str | None
    ) -> tuple[list[Invitation], str | None]:
        caller.require(Permission.MANAGE_INVITATIONS)
        org_id = caller.organization.organization_id
        return await self.invitations_of(org_id, limit=limit, after=after)

    async def invitations_of(
        self, org_id: str, *, limit: int, after: str | None
    ) -> tuple[list[Invitation], str | None]:
        """An organization's pending invitations by id, after `after` (authorized callers)."""
        org = await self.team.get(org_id)
        if org is None or org.team is None:
            raise NotFound()
        ids = sorted(k for k in _live_invites(org.team) if after is None or k > after)
        pending = await self.invitations.pending_of(org.organization_id, ids[: limit + 1])
        page = pending[:limit]
        return page, (page[-1].invitation_id if len(pending) > limit else None)

    async def revoke(self, caller: Principal, invitation_id: str, *, meta: RequestMeta) -> None:
        caller.require(Permission.MANAGE_INVITATIONS)
        org_id = caller.organization.organization_id

        async def decide(_: Organization, team: Team) -> Change:
            live = _live_invites(team)
            if invitation_id not in live or invitation is None:
                raise InvitationNotFound()
            invites = {k: v for k, v in live.items() if k != invitation_id}
            data = _invitation_data(invitation)
            event = PendingEvent.of(
                "invitation.revoked", org_id, data, actor=event_actor(caller.actor)
            )
            return Change(team.model_copy(update={"invites": invites}), events=[event])

        async with self.audit.track(
            "invitation.revoke", actor=caller.actor, meta=meta, organization_id=org_id,
            details={"invitation_id": invitation_id},
        ):  # fmt: skip
            found = (
                await self.invitations.get(invitation_id) if is_member_id(invitation_id) else None
            )
            invitation = found if found is not None and found.organization_id == org_id else None
            await self._change_team(org_id, decide)
            await self.invitations.revoked(invitation_id)
        await self._emit("invitation.revoked", org_id, invitation_id=invitation_id)

    async def peek(self, token: str) -> InvitationView | None:
        """The live invitation `token` names (where, as what, for which address), or None for
        every other token. Read-only: the checks `accept` makes before it writes, and the
        invitation's seat on the team (a revocation removes that first)."""
        invitation_id = invitation_id_of(token)
        invitation = await self.invitations.get(invitation_id) if invitation_id else None
        if (
            invitation is None
            or not same_hash(token, invitation.token_hash)
            or invitation.status != PENDING
            or invitation.expired
        ):
            return None
        org = await self.team.get(invitation.organization_id)
        if org is None or org.team is None or invitation.invitation_id not in org.team.invites:
            return None
        return InvitationView(org.organization_name, invitation.role, invitation.email)

    async def organization_name(self, org_id: str) -> str | None:
        org = await self.team.get(org_id)
        return None if org is None else org.organization_name

    async def accept(
        self, token: str, password: str, *, meta: RequestMeta
    ) -> tuple[TokenResponse, MemberView]:
        """Become a member through an invitation, and be logged in (a new session)."""
        joined = await self.join(token, password, meta=meta)
        response = await self.auth.token_for(
            joined.member.member_id, joined.organization_id, joined.entry, meta=meta
        )
        return response, joined.member

    async def join(self, token: str, password: str, *, meta: RequestMeta) -> Joined:
        """Become a member through an invitation, without logging in (the accept page: its
        invitee logs in afterwards, so no session is opened for nobody). One answer (410) for
        every token that is not a live invitation's."""
        invitation_id = invitation_id_of(token)
        invitation = await self.invitations.get(invitation_id) if invitation_id else None
        if (
            invitation is None
            or not same_hash(token, invitation.token_hash)
            or invitation.status != PENDING
            or invitation.expired
        ):
            await self.audit.record(
                "invitation.accept", actor=ANONYMOUS, meta=meta, organization_id=None,
                outcome="failure", code=InvitationInvalid.code,
            )  # fmt: skip
            raise InvitationInvalid()
        org_id, member_id = invitation.organization_id, new_id()
        async with self.audit.track(
            "invitation.accept", actor=Actor("admin", member_id), meta=meta,
            organization_id=org_id, details={"invitation_id": invitation.invitation_id},
        ):  # fmt: skip
            password_hash = await self.hasher.hash(password)
            entry = await self._join(invitation, member_id, password_hash)
            account = await self.admins.get_account(member_id, org_id=org_id)
            if account is None:
                raise InvitationInvalid()  # removed at once by someone else
        await self._emit("member.joined", org_id, member_id=member_id, role=entry.role)
        return Joined(org_id, _view(account, entry), entry)

    async def _join(self, invitation: Invitation, member_id: str, password_hash: str) -> TeamEntry:
        org_id, inv_id = invitation.organization_id, invitation.invitation_id
        entry = TeamEntry(role=invitation.role)
        joined_at = utcnow()

        async def decide(org: Organization, team: Team) -> Change:
            live = _live_invites(team)
            if inv_id not in live:
                raise InvitationInvalid()  # revoked or expired meanwhile
            invites = {k: v for k, v in live.items() if k != inv_id}
            if team.count + 1 + len(invites) > self.seats(org):
                raise SeatLimit()  # max_members was lowered below what was promised
            owners = [*team.owners, member_id] if entry.role == OWNER else team.owners
            members = {**team.members, member_id: entry}
            new = team.model_copy(
                update={
                    "members": members,
                    "owners": owners,
                    "count": len(members),
                    "invites": invites,
                }
            )
            joined = MemberAccount(
                member_id=member_id, organization_id=org_id, email=invitation.email,
                created_at=joined_at,
            )  # fmt: skip
            data = _member_data(joined, entry.role)
            by = EventActor(type="admin", id=member_id)
            return Change(new, events=[PendingEvent.of("member.joined", org_id, data, actor=by)])

        op = AcceptOp(
            op_id=uuid.uuid4().hex,
            organization_id=org_id,
            invitation_id=inv_id,
            member_id=member_id,
        )
        async with await self._start(op) as hold:
            if await self.invitations.hold(inv_id, op_id=op.op_id) is None:
                await hold.finish()
                raise InvitationInvalid()  # another accept has it
            added = await self.admins.insert(
                member_id,
                email=invitation.email,
                organization_id=org_id,
                password_hash=password_hash,
                created_at=joined_at,
            )
            if not added:
                await self.invitations.release(inv_id, op_id=op.op_id)
                await hold.finish()
                raise EmailTaken()
            self.ctx.fault("accept.after_account")
            await hold.check()
            try:
                await self._change_team(org_id, decide)
            except AppError:
                await self.admins.delete_if_of(member_id, org_id=org_id)
                await self.invitations.release(inv_id, op_id=op.op_id)
                await hold.finish()
                raise
            self.ctx.fault("accept.after_team")
            await hold.check()
            await self.invitations.accepted(inv_id, member_id=member_id)
            await hold.finish()
        return entry


def _member_data(account: MemberAccount, role: str) -> dict[str, Any]:
    """The member object of the API (the `data` of `member.*` events)."""
    return MemberRead(
        member_id=account.member_id,
        email=account.email,
        role=role,
        created_at=account.created_at,
        last_login_at=last_login(account.last_login_ms),
    ).model_dump(mode="json")


def _invitation_data(invitation: Invitation) -> dict[str, Any]:
    """The invitation object of the API (never its token or hash)."""
    return InvitationRead.model_validate(invitation, from_attributes=True).model_dump(mode="json")


def _view(account: MemberAccount, entry: TeamEntry) -> MemberView:
    return MemberView(
        account.member_id, account.email, entry.role, account.created_at, account.last_login_ms
    )
