"""The team's multi-step changes as operations (intents), and the reconciler's part for each.

Each decides by the state it finds, not by a recorded commit point: the team on the organization
record (`app.organizations.team`) is the truth, and the commit point of each kind is its one
compare-and-set there. An invitation whose seat is on the team is rolled forward (its mail is
queued, which is idempotent), one whose seat is not is undone; likewise an accept (is the new
member on the team?) and a removal (is the member gone from it?).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from app.auth.admins import AdminRepository
from app.mail.outbox import OutboxRepository
from app.members.invitations import InvitationRepository
from app.organizations.team import TeamRepository
from app.tenancy.lease import Hold
from app.tenancy.operations import Operation


class InviteOp(Operation):
    kind: Literal["invite"] = "invite"
    invitation_id: str
    email: str


class AcceptOp(Operation):
    kind: Literal["accept"] = "accept"
    invitation_id: str
    member_id: str


class RemoveOp(Operation):
    kind: Literal["remove"] = "remove"
    member_id: str


KINDS: dict[str, type[Operation]] = {"invite": InviteOp, "accept": AcceptOp, "remove": RemoveOp}


def mail_id(invitation_id: str) -> str:
    """The outbox entry of an invitation's mail (one per invitation, whoever queues it)."""
    return f"invitation:{invitation_id}"


class TeamSteps:
    def __init__(
        self,
        team: TeamRepository,
        admins: AdminRepository,
        invitations: InvitationRepository,
        outbox: OutboxRepository,
        mail_queued: Callable[[], None],
    ) -> None:
        self.team = team
        self.admins = admins
        self.invitations = invitations
        self.outbox = outbox
        self.mail_queued = mail_queued  # wakes the mail worker

    async def queue_mail(self, op: InviteOp) -> None:
        ref = {"invitation_id": op.invitation_id}
        await self.outbox.enqueue(
            mail_id(op.invitation_id), kind="invitation", ref=ref, to=op.email
        )
        self.mail_queued()

    async def reconcile(self, stored: Operation, hold: Hold) -> str:
        op = stored.as_one_of(KINDS)
        if op is None:
            return "unknown"
        org = await self.team.get(op.organization_id)
        team = org.team if org is not None else None
        await hold.check()
        if isinstance(op, InviteOp):
            if team is not None and op.invitation_id in team.invites:
                await self.queue_mail(op)
                outcome = "invite_completed"
            else:
                await self.invitations.delete(op.invitation_id)
                outcome = "invite_undone"
        elif isinstance(op, AcceptOp):
            if team is not None and op.member_id in team.members:
                await self.invitations.accepted(op.invitation_id, member_id=op.member_id)
                outcome = "accept_completed"
            else:
                await self.admins.delete_if_of(op.member_id, org_id=op.organization_id)
                await self.invitations.release(op.invitation_id, op_id=op.op_id)
                outcome = "accept_undone"
        elif isinstance(op, RemoveOp):
            if team is None or op.member_id not in team.members:
                await self.admins.delete_if_of(op.member_id, org_id=op.organization_id)
                outcome = "remove_completed"
            else:
                outcome = "remove_not_started"
        else:  # pragma: no cover - KINDS lists the kinds handled above
            return "unknown"
        await hold.finish()
        return outcome
