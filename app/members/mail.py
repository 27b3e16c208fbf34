"""The invitation mail: plain text and HTML, with the organization's name and the accept link.

Composed when it is sent (by the mail worker, on whichever replica), from the invitation's
record: the token is made again from its nonce (`app.members.tokens`), never read from storage.
An invitation that is no longer pending gets no mail (the entry is dropped).
"""

from __future__ import annotations

import html
import logging
from urllib.parse import urlencode

from app.kit.store import Doc
from app.mail.message import MailMessage
from app.members.invitations import PENDING, InvitationRepository
from app.members.tokens import InvitationTokens, same_hash
from app.organizations.team import TeamRepository

log = logging.getLogger("orgsvc.members")


def accept_link(base_url: str, token: str) -> str:
    return f"{base_url}/invitations/accept?{urlencode({'token': token})}"


class InvitationMail:
    def __init__(
        self,
        invitations: InvitationRepository,
        team: TeamRepository,
        tokens: InvitationTokens,
        *,
        base_url: str,
    ) -> None:
        self.invitations = invitations
        self.team = team
        self.tokens = tokens
        self.base_url = base_url

    async def compose(self, ref: Doc) -> MailMessage | None:
        invitation = await self.invitations.get(str(ref.get("invitation_id", "")))
        if invitation is None or invitation.status != PENDING or invitation.expired:
            return None
        org = await self.team.get(invitation.organization_id)
        if org is None or org.team is None or invitation.invitation_id not in org.team.invites:
            return None  # revoked (or the organization is gone)
        token = self.tokens.make(invitation.invitation_id, invitation.nonce)
        if not same_hash(token, invitation.token_hash):
            # The signing key changed since the invitation was made: this token would not be
            # accepted. Nothing to send; the inviter can invite again.
            log.error(
                "invitation %s: its token cannot be made again (key rotated)",
                invitation.invitation_id,
            )
            return None
        name = org.organization_name
        link = accept_link(self.base_url, token)
        expires = invitation.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        role = invitation.role
        text = (
            f"You are invited to join {name} as {role}.\n\n"
            f"To accept, open this link and choose a password:\n{link}\n\n"
            f"The link works once and expires on {expires}. If you did not expect this "
            "invitation, ignore this mail.\n"
        )
        e_name, e_link = html.escape(name), html.escape(link, quote=True)
        body = (
            '<!doctype html><html lang="en"><body style="font-family: sans-serif">'
            f"<p>You are invited to join <strong>{e_name}</strong> as {html.escape(role)}.</p>"
            f'<p><a href="{e_link}">Accept the invitation</a> and choose a password.</p>'
            f"<p>The link works once and expires on {html.escape(expires)}. If you did not "
            "expect this invitation, ignore this mail.</p>"
            f'<p style="color: #555; font-size: small">Or copy this address: {e_link}</p>'
            "</body></html>"
        )
        return MailMessage(
            to=invitation.email, subject=f"Invitation to join {name}", text=text, html=body
        )
