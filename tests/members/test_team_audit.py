"""Every team action is audited (success and failure), and no entry holds a token, its hash, a
nonce or a password."""

from __future__ import annotations

import json

from tests.support.apps import custom_app
from tests.support.clients import PASSWORD, bearer, create_and_login
from tests.support.teams import add_member, invitation_token, invite


async def test_every_team_action_is_audited_without_secrets() -> None:
    async with custom_app() as (http, app):
        _, owner = await create_and_login(http, "Acme", "owner@acme.com")
        member, member_token = await add_member(http, app, owner, "m@acme.com")
        pending = (await invite(http, owner, "p@acme.com", "admin")).json()
        token = await invitation_token(app, pending["invitation_id"])
        await invite(http, owner, "p@acme.com")  # 409 invitation_exists
        await http.patch(
            f"/org/members/{member['member_id']}", json={"role": "admin"}, headers=bearer(owner)
        )
        await http.delete(f"/org/invitations/{pending['invitation_id']}", headers=bearer(owner))
        await http.post("/invitations/accept", json={"token": token, "password": PASSWORD})  # 410
        await http.delete(f"/org/members/{member['member_id']}", headers=bearer(member_token))
        res = await http.get("/org/audit", params={"limit": 200}, headers=bearer(owner))
        entries = res.json()["items"]
        seen = {(e["action"], e["outcome"], e["code"]) for e in entries}
        for expected in [
            ("invitation.create", "success", None),
            ("invitation.create", "failure", "invitation_exists"),
            ("invitation.accept", "success", None),
            ("member.role_change", "success", None),
            ("invitation.revoke", "success", None),
            ("member.leave", "success", None),
        ]:
            assert expected in seen, (expected, sorted(seen))
        stored = await app.state.svc.repos.audit.col.find().to_list(None)
        failed_accept = [
            e for e in stored if e["action"] == "invitation.accept" and e["outcome"] == "failure"
        ]
        assert [e["code"] for e in failed_accept] == ["invitation_invalid"]
        text = json.dumps(stored, default=str)
        invitation = await app.state.svc.repos.invitations.get(pending["invitation_id"])
        for secret in (
            token,
            token.split(".")[1],
            invitation.token_hash,
            invitation.nonce,
            PASSWORD,
        ):
            assert secret not in text
