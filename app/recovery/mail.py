"""The password-reset mail, composed by the mail worker (kind `password_reset`).

The request (`RecoveryService.forgot`) only queued `{reset_id, email, nonce}`, the same for a
known and an unknown address; here, in the background, the address is looked up. Unknown (or
its organization gone): no mail, the entry is dropped. Known: the reset record is stored first
(idempotent by the reset id: a retried compose finds it and sends the same token again), then
the mail: plain text and HTML, the organization's name, the link
`PUBLIC_BASE_URL/password/reset?token=...`.
"""

from __future__ import annotations

import html
import logging
from datetime import timedelta
from urllib.parse import urlencode

from app.auth.admins import AdminRepository
from app.kit.store import Doc, epoch_ms, utcnow
from app.mail.message import MailMessage
from app.organizations.team import TeamRepository
from app.recovery.repository import PasswordReset, ResetRepository
from app.recovery.tokens import ResetTokens, same_hash, token_hash

log = logging.getLogger("orgsvc.recovery")
KIND = "password_reset"


def reset_link(base_url: str, token: str) -> str:
    return f"{base_url}/password/reset?{urlencode({'token': token})}"


class ResetMail:
    def __init__(
        self,
        resets: ResetRepository,
        admins: AdminRepository,
        team: TeamRepository,
        tokens: ResetTokens,
        *,
        base_url: str,
        ttl_minutes: float,
    ) -> None:
        self.resets = resets
        self.admins = admins
        self.team = team
        self.tokens = tokens
        self.base_url = base_url
        self.ttl = timedelta(minutes=ttl_minutes)

    async def compose(self, ref: Doc) -> MailMessage | None:
        reset_id, email, nonce = (str(ref.get(k, "")) for k in ("reset_id", "email", "nonce"))
        account = await self.admins.by_email(email)
        if account is None or not reset_id or not nonce:
            return None  # nobody has this address: nobody is mailed
        org = await self.team.get(account.organization_id)
        if org is None or (org.team is not None and account.admin_id not in org.team.members):
            return None
        token = self.tokens.make(reset_id, nonce)
        reset = await self.resets.get(reset_id)
        if reset is None:
            now = utcnow()
            reset = PasswordReset(
                reset_id=reset_id,
                organization_id=account.organization_id,
                member_id=account.admin_id,
                token_hash=token_hash(token),
                nonce=nonce,
                created_at=now,
                expires_at=now + self.ttl,
                expires_ms=epoch_ms(self.ttl.total_seconds()),
            )
            if not await self.resets.insert(reset):  # another worker's compose, a moment ago
                reset = await self.resets.get(reset_id)
        if reset is None or reset.used or reset.expired:
            return None
        if reset.member_id != account.admin_id or not same_hash(token, reset.token_hash):
            # The signing key changed since the record was made: this token would not work.
            log.error("password reset %s: its token cannot be made again (key rotated)", reset_id)
            return None
        name = org.organization_name
        link = reset_link(self.base_url, token)
        minutes = round(self.ttl.total_seconds() / 60)
        expires = reset.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        text = (
            f"Someone asked to reset the password of your account at {name}.\n\n"
            f"To choose a new password, open this link:\n{link}\n\n"
            f"The link works once and expires in {minutes} minutes ({expires}). Setting a new "
            "password logs you out everywhere. If you did not ask for this, ignore this mail: "
            "your password stays as it is.\n"
        )
        e_name, e_link = html.escape(name), html.escape(link, quote=True)
        body = (
            '<!doctype html><html lang="en"><body style="font-family: sans-serif">'
            "<p>Someone asked to reset the password of your account at "
            f"<strong>{e_name}</strong>.</p>"
            f'<p><a href="{e_link}">Choose a new password</a>.</p>'
            f"<p>The link works once and expires in {minutes} minutes "
            f"({html.escape(expires)}). Setting a new password logs you out everywhere. If you "
            "did not ask for this, ignore this mail: your password stays as it is.</p>"
            f'<p style="color: #555; font-size: small">Or copy this address: {e_link}</p>'
            "</body></html>"
        )
        return MailMessage(to=email, subject=f"Reset your password at {name}", text=text, html=body)
