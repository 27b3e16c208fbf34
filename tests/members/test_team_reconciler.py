"""The reconciler's part for the team's operations, in-process on the real store: an invitation,
an accept and a removal abandoned before and after their compare-and-set on the team. Each case
ends with a consistent store (accounts and team agree)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app.kit.settings import Settings
from app.kit.store import utcnow
from tests.support.clients import PASSWORD, bearer, create_and_login
from tests.support.consistency import assert_consistent
from tests.support.operations import abandon, reconcile
from tests.support.teams import add_member, invitation_token, invite

Pair = tuple[httpx.AsyncClient, FastAPI]


async def test_an_invitation_abandoned_before_its_seat_is_undone(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, app = real_api
    db = nx_client[settings.mongodb_db]
    org, owner = await create_and_login(http, "Inv", "o@inv.com")
    res = await invite(http, owner, "x@inv.com")
    record = await db.invitations.find_one({"_id": res.json()["invitation_id"]})
    assert record is not None
    # The same record again under a new id, as a dead invite left it before the team write.
    ghost = {**record, "_id": "0" * 24}
    await db.invitations.insert_one(ghost)
    await abandon(
        db, kind="invite", organization_id=org["organization_id"],
        invitation_id=ghost["_id"], email="x@inv.com", state="started",
    )  # fmt: skip
    assert await reconcile(app) == {"invite_undone": 1}
    assert await db.invitations.find_one({"_id": ghost["_id"]}) is None
    assert await db.mail_outbox.find_one({"_id": f"invitation:{ghost['_id']}"}) is None
    await assert_consistent(db)


async def test_an_invitation_abandoned_after_its_seat_queues_its_mail(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, app = real_api
    db = nx_client[settings.mongodb_db]
    org, owner = await create_and_login(http, "Inv", "o@inv.com")
    res = await invite(http, owner, "x@inv.com")
    inv_id = res.json()["invitation_id"]
    await db.mail_outbox.delete_many({})  # as if the process died before queueing it
    await abandon(
        db, kind="invite", organization_id=org["organization_id"],
        invitation_id=inv_id, email="x@inv.com", state="started",
    )  # fmt: skip
    assert await reconcile(app) == {"invite_completed": 1}
    entry = await db.mail_outbox.find_one({"_id": f"invitation:{inv_id}"})
    assert entry is not None and entry["to"] == "x@inv.com"
    await assert_consistent(db)


async def test_an_accept_abandoned_before_the_team_is_undone_and_can_be_retried(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, app = real_api
    db = nx_client[settings.mongodb_db]
    org, owner = await create_and_login(http, "Acc", "o@acc.com")
    inv_id = (await invite(http, owner, "n@acc.com")).json()["invitation_id"]
    op_id = await abandon(
        db, kind="accept", organization_id=org["organization_id"], invitation_id=inv_id,
        member_id="1" * 24, state="started",
    )  # fmt: skip
    # What the dead accept had done: held the invitation and made the account.
    await db.invitations.update_one(
        {"_id": inv_id}, {"$set": {"status": "accepting", "op_id": op_id}}
    )
    await db.admins.insert_one(
        {"_id": "1" * 24, "email": "n@acc.com", "email_lower": "n@acc.com",
         "organization_id": org["organization_id"], "password_hash": "x", "password_version": 0,
         "created_at": utcnow()}
    )  # fmt: skip
    assert await reconcile(app) == {"accept_undone": 1}
    assert await db.admins.find_one({"_id": "1" * 24}) is None
    held = await db.invitations.find_one({"_id": inv_id})
    assert held is not None and held["status"] == "pending"
    await assert_consistent(db)
    token = await invitation_token(app, inv_id)
    res = await http.post("/invitations/accept", json={"token": token, "password": PASSWORD})
    assert res.status_code == 201, res.text


async def test_an_accept_abandoned_after_the_team_is_finished(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, app = real_api
    db = nx_client[settings.mongodb_db]
    org, owner = await create_and_login(http, "Acc", "o@acc.com")
    member, _ = await add_member(http, app, owner, "n@acc.com")
    [accepted] = await db.invitations.find().to_list(None)
    await db.invitations.update_one(
        {"_id": accepted["_id"]}, {"$set": {"status": "accepting", "op_id": "dead"}}
    )
    await abandon(
        db, "dead", kind="accept", organization_id=org["organization_id"],
        invitation_id=accepted["_id"], member_id=member["member_id"], state="started",
    )  # fmt: skip
    assert await reconcile(app) == {"accept_completed": 1}
    done = await db.invitations.find_one({"_id": accepted["_id"]})
    assert done is not None and done["status"] == "accepted"
    await assert_consistent(db)


async def test_a_removal_abandoned_after_the_team_deletes_the_account(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, app = real_api
    db = nx_client[settings.mongodb_db]
    org, owner = await create_and_login(http, "Rem", "o@rem.com")
    member, member_token = await add_member(http, app, owner, "m@rem.com")
    account = await db.admins.find_one({"_id": member["member_id"]})
    res = await http.delete(f"/org/members/{member['member_id']}", headers=bearer(owner))
    assert res.status_code == 204
    await db.admins.insert_one(account)  # as if the process died before deleting it
    await abandon(
        db, kind="remove", organization_id=org["organization_id"],
        member_id=member["member_id"], state="started",
    )  # fmt: skip
    assert await reconcile(app) == {"remove_completed": 1}
    assert await db.admins.find_one({"_id": member["member_id"]}) is None
    assert (await http.get("/org/members", headers=bearer(member_token))).status_code == 401
    await assert_consistent(db)


async def test_a_removal_abandoned_before_the_team_leaves_the_member(
    real_api: Pair, nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, app = real_api
    db = nx_client[settings.mongodb_db]
    org, owner = await create_and_login(http, "Rem", "o@rem.com")
    member, member_token = await add_member(http, app, owner, "m@rem.com")
    await abandon(
        db, kind="remove", organization_id=org["organization_id"],
        member_id=member["member_id"], state="started",
    )  # fmt: skip
    assert await reconcile(app) == {"remove_not_started": 1}
    assert (await http.get("/org/members", headers=bearer(member_token))).status_code == 200
    await assert_consistent(db)
