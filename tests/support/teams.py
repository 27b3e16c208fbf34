"""Teams for tests: invite someone and accept as them (the token read the way the mail worker
makes it: from the invitation's record and the service's key, never from an answer)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI

from app.kit.keys import KeyRing
from app.members.tokens import InvitationTokens
from tests.support.clients import PASSWORD, TEST_SECRET, bearer


async def invitation_token(app: FastAPI, invitation_id: str) -> str:
    svc = app.state.svc
    invitation = await svc.repos.invitations.get(invitation_id)
    assert invitation is not None
    token: str = svc.team.tokens.make(invitation.invitation_id, invitation.nonce)
    return token


async def invite(
    http: httpx.AsyncClient, token: str, email: str, role: str = "member"
) -> httpx.Response:
    return await http.post(
        "/org/invitations", json={"email": email, "role": role}, headers=bearer(token)
    )


async def add_member(
    http: httpx.AsyncClient, app: FastAPI, token: str, email: str, role: str = "member"
) -> tuple[dict[str, Any], str]:
    """Invite `email` with `role` (as the holder of `token`) and accept; (member, its token)."""
    res = await invite(http, token, email, role)
    assert res.status_code == 201, res.text
    secret = await invitation_token(app, res.json()["invitation_id"])
    res = await http.post("/invitations/accept", json={"token": secret, "password": PASSWORD})
    assert res.status_code == 201, res.text
    body = res.json()
    return body["member"], body["access_token"]


async def token_from_store(db: Any, invitation_id: str, secret: str = TEST_SECRET) -> str:
    """The invitation token as a service with JWT_SECRET=`secret` makes it for the mail."""
    doc = await db.invitations.find_one({"_id": invitation_id})
    assert doc is not None
    return InvitationTokens(KeyRing.hmac(secret)).make(invitation_id, doc["nonce"])
