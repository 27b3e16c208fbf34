"""Schemathesis hooks (loaded through SCHEMATHESIS_HOOKS by `tests/fuzz/run.py`).

Authenticated endpoints are fuzzed with real credentials: a bearer token for a fresh
organization (made again whenever a fuzzed logout, password change or delete revokes the
current one: schemathesis refetches on a 401), and the service API key for `/org/list`, the
operator API (`/orgs`), the event feed (`/events`) and the webhooks API (`/webhooks`). Most
valid operator calls name a real organization, and every other valid key revocation a live key
of the caller's organization, read from the fuzz database, so their success paths are fuzzed
and not only their 404s. Likewise every valid `after` (of the feed and of a replay) is a
published event's id read from the fuzz database (any other id is rightly a 422), and two
valid webhook calls in three name a registered endpoint (read from the database, or registered
when there is none).

The schema names each rule JSON Schema keywords cannot state with a `format` (see
`app.organizations.schemas`); here each format gets a generator for that rule, so the
positive-data checks hold the service to it. The length keywords beside a format are the schema's
own: a generator also draws values just outside them (schemathesis drops those where it wants
valid data, and asks the format for one value past each bound when it wants invalid data), and
draws the bounds themselves, which a plain `text()` would almost never hit.

Webhook URLs (`webhook-url`) are http(s) URLs of a literal public address: the SSRF guard runs
as in production and resolves a host name, which needs DNS (a name that does not resolve is
rightly a 422); an address needs none. `tests/fuzz/run.py` keeps deliveries to them from leaving
the machine.

`metadata` is an object with a format (`org-metadata`); schemathesis applies format generators
to strings only, so its generator here replaces the metadata of valid bodies through the case
hooks instead (`flatmap_case` in the phases Hypothesis drives, `map_case` in the coverage phase).
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import os
import re
import string
import time
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import unquote

import httpx
import schemathesis
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError
from pymongo import MongoClient

from app.api_keys.router import KEY_ID_CURSOR_FORMAT
from app.audit.service import AUDIT_CURSOR_FORMAT
from app.auth.passwords import MAX_PASSWORD_BYTES, MIN_PASSWORD_BYTES
from app.auth.schemas import PASSWORD_FORMAT
from app.events.records import EVENT_TYPES
from app.events.router import EVENT_TYPES_FORMAT, MAX_TYPES_CHARS
from app.kit.fields import EMAIL_FORMAT, Email
from app.members.router import CURSOR_FORMAT as ID_CURSOR_FORMAT
from app.organizations.operator import ORDER_CURSOR_FORMAT
from app.organizations.profile import (
    METADATA_MAX_BYTES,
    METADATA_MAX_KEYS,
    METADATA_MAX_LEVELS,
    check_metadata,
)
from app.organizations.schemas import NAME_FORMAT, SLUG_CURSOR_FORMAT
from app.tenancy.names import MAX_NAME_CHARS, InvalidName, validate_name
from app.webhooks.guard import UnsafeUrl, parse, refusal
from app.webhooks.router import DELIVERY_CURSOR_FORMAT, WEBHOOK_CURSOR_FORMAT
from app.webhooks.schemas import URL_FORMAT

BASE_URL = os.environ.get("FUZZ_BASE_URL", "http://127.0.0.1:8000")
API_KEY = os.environ.get("FUZZ_API_KEY", "")
MAIL_DIR = os.environ.get("FUZZ_MAIL_DIR", "")
DB_NAME = os.environ.get("FUZZ_DB", "orgsvc_fuzz")
MONGODB_URL = os.environ.get("FUZZ_MONGODB_URL", "mongodb://127.0.0.1:27017")
PASSWORD = "fuzzing-password-123"
MAX_EMAIL_CHARS = 254
_counter = itertools.count()
_turns = itertools.count()
_logins = itertools.count()
_picks = itertools.count()
_real_ids = itertools.count()

_EMAIL: TypeAdapter[str] = TypeAdapter(Email)
_any_char = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
_letter = st.characters(categories=["L", "N"])
_ascii_word = string.ascii_letters + string.digits
_four_bytes = st.characters(min_codepoint=0x10000, exclude_categories=["Cs", "Cn"])


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _exactly(lengths: list[int], alphabet: Any) -> st.SearchStrategy[str]:
    """Strings of exactly one of `lengths` characters."""
    return st.sampled_from(lengths).flatmap(lambda n: st.text(alphabet, min_size=n, max_size=n))


def _name_rule(name: str) -> bool:
    """The name rule beyond its length keywords (1 to 200 characters)."""
    try:
        validate_name(name[:MAX_NAME_CHARS], db_name=DB_NAME)
    except InvalidName:
        return False
    return True


def _password_rule(password: str) -> bool:
    """8 to 72 bytes of UTF-8, within the length keywords (2 to 72 characters)."""
    if not 2 <= len(password) <= MAX_PASSWORD_BYTES:
        return True  # outside the keywords: the schema alone refuses it
    return MIN_PASSWORD_BYTES <= len(password.encode()) <= MAX_PASSWORD_BYTES


def _email_rule(email: str) -> bool:
    """What `email-validator` accepts, within the length keyword (254 characters)."""
    if len(email) > MAX_EMAIL_CHARS:
        return True  # outside the keyword: the schema alone refuses it
    try:
        _EMAIL.validate_python(email)
    except ValidationError:
        return False
    return True


def _email_of(size: int, letters: str) -> str:
    """An address of exactly `size` (253 to 255) characters: a 64-character local part, then
    63-character labels (the most `email-validator` takes) down to `.com`."""
    domain_size = size - 65
    labels, rest = [], domain_size - len(".com")
    while rest > 0:
        take = min(63, rest)
        labels.append((letters * 63)[:take])
        rest -= take + 1
    domain = ".".join(labels) + ".com"
    return (letters * 64)[:64] + "@" + domain[-domain_size:].lstrip(".")


schemathesis.openapi.format(
    NAME_FORMAT,
    st.one_of(
        st.text(_any_char, min_size=1, max_size=MAX_NAME_CHARS),
        _exactly(
            [1, 2, MAX_NAME_CHARS - 1, MAX_NAME_CHARS, MAX_NAME_CHARS + 1], _ascii_word + " -&."
        ),
    ).filter(_name_rule),
)
schemathesis.openapi.format(
    PASSWORD_FORMAT,
    st.one_of(
        st.text(_any_char, min_size=2, max_size=MAX_PASSWORD_BYTES),
        _exactly([1, 2, 3], _four_bytes),  # 4, 8 and 12 bytes
        _exactly([MAX_PASSWORD_BYTES - 1, MAX_PASSWORD_BYTES, MAX_PASSWORD_BYTES + 1], _ascii_word),
    ).filter(_password_rule),
)
schemathesis.openapi.format(
    EMAIL_FORMAT,
    st.one_of(
        st.builds(
            "{}@{}.{}".format,
            st.text(_ascii_word + "._%+-", min_size=1, max_size=20),
            st.text(_ascii_word + "-", min_size=1, max_size=20),
            st.sampled_from(["com", "org", "net", "io", "de"]),
        ),
        # Internationalized: letters of any script on both sides of the @.
        st.builds(
            "{}@{}.{}".format,
            st.text(_letter, min_size=1, max_size=20),
            st.text(_letter, min_size=1, max_size=20),
            st.sampled_from(["com", "org", "de", "xn--p1ai"]),
        ),
        st.builds(_email_of, st.sampled_from([253, 254, 255]), st.text("abcxyz0189", min_size=1)),
    ).filter(_email_rule),
)
schemathesis.openapi.format(
    SLUG_CURSOR_FORMAT,
    st.one_of(
        st.text(_any_char, min_size=1, max_size=100).map(lambda s: _b64url(s.encode())),
        # 2, 399 and 400 characters; 1 and 401 are past the keywords (no base64 is that long).
        _exactly([1, 299, 300], _ascii_word).map(lambda s: _b64url(s.encode())),
        st.sampled_from(["A", "A" * 401]),
    ),
)
schemathesis.openapi.format(
    AUDIT_CURSOR_FORMAT,
    st.one_of(
        st.just(""),
        st.builds(
            lambda ms, entry: _b64url(f"{ms}.{entry}".encode()),
            st.integers(min_value=0, max_value=10**16 - 1),
            st.text("0123456789abcdef", min_size=24, max_size=24),
        ),
        st.just("A" * 201),  # past the length keyword
    ),
)

schemathesis.openapi.format(
    ID_CURSOR_FORMAT,
    st.one_of(
        st.text("0123456789abcdef", min_size=24, max_size=24).map(lambda s: _b64url(s.encode())),
        st.sampled_from(["A", "A" * 65]),  # past the length keywords
    ),
)
schemathesis.openapi.format(
    WEBHOOK_CURSOR_FORMAT,
    st.one_of(
        st.text("0123456789abcdef", min_size=24, max_size=24).map(lambda s: _b64url(s.encode())),
        st.sampled_from(["A", "A" * 65]),  # past the length keywords
    ),
)
schemathesis.openapi.format(
    DELIVERY_CURSOR_FORMAT,
    st.one_of(
        st.builds(
            lambda seq, generation: _b64url(f"{seq}.{generation}".encode()),
            st.one_of(st.integers(min_value=0, max_value=10**18 - 1), st.sampled_from([0, 1])),
            st.one_of(st.integers(min_value=0, max_value=10**9 - 1), st.sampled_from([0, 1])),
        ),
        st.sampled_from(["A", "A" * 65]),  # past the length keywords
    ),
)


def _types_of(size: int) -> str:
    """A `types` value of exactly `size` characters: one type, padded with blanks (ignored)."""
    return "member.joined".ljust(size)


schemathesis.openapi.format(
    EVENT_TYPES_FORMAT,
    st.one_of(
        st.lists(st.sampled_from(EVENT_TYPES), min_size=1, max_size=len(EVENT_TYPES) + 2).map(
            ",".join
        ),
        # Blanks around items and empty items are ignored (at least one type remains).
        st.lists(
            st.tuples(st.sampled_from(["", " "]), st.sampled_from(EVENT_TYPES), st.just(" ")),
            min_size=1,
            max_size=4,
        ).map(lambda items: ",,".join("".join(item) for item in items)),
        # The length bounds: no type (past the minimum), and the maximum give or take one.
        st.sampled_from(["", *map(_types_of, range(MAX_TYPES_CHARS - 1, MAX_TYPES_CHARS + 2))]),
    ),
)

# `webhook-url`: an http(s) URL whose host is a literal public address (the guard passes it
# without DNS), with a port or not, and any path, query and fragment without whitespace or NUL
# (the pattern's rule); also the length bounds, and one past each.
_PUBLIC_HOSTS = ["93.184.215.14", "[2606:2800:21f:cb07:6820:80da:af6b:8b2c]"]
assert all(refusal(ipaddress.ip_address(h.strip("[]"))) is None for h in _PUBLIC_HOSTS)
_url_char = st.characters(exclude_categories=["Cs", "Cc", "Z"])
_url_start = st.builds(
    "{}://{}{}".format,
    st.sampled_from(["https", "http", "HTTPS", "Https"]),
    st.sampled_from(_PUBLIC_HOSTS),
    st.sampled_from(["", ":443", ":8443", ":1", ":65535"]),
)


def _url_of(start: str, size: int) -> str:
    """A URL of exactly `size` characters (`start` then a path of `a`s)."""
    return (start + "/" + "a" * size)[:size]


schemathesis.openapi.format(
    URL_FORMAT,
    st.one_of(
        st.builds("{}/{}".format, _url_start, st.text(_url_char, max_size=40)),
        st.builds(_url_of, _url_start, st.sampled_from([2047, 2048, 2049])),
        st.just("http://"),  # past the minimum length (7 characters)
    ),
)
schemathesis.openapi.format(
    KEY_ID_CURSOR_FORMAT,
    st.one_of(
        st.text("0123456789abcdef", min_size=12, max_size=12).map(lambda s: _b64url(s.encode())),
        st.sampled_from(["A", "A" * 65]),  # past the length keywords
    ),
)
schemathesis.openapi.format(
    ORDER_CURSOR_FORMAT,
    st.one_of(
        st.builds(
            lambda ms, org: _b64url(f"{ms:013d}.{org}".encode()),
            st.one_of(
                st.integers(min_value=0, max_value=10**13 - 1),
                st.sampled_from([0, 10**13 - 1]),
                st.just(1_767_225_600_000),  # a fixed recent moment: 2026-01-01
            ),
            st.text("0123456789abcdef", min_size=24, max_size=24),
        ),
        st.sampled_from(["A", "A" * 201]),  # past the length keywords
    ),
)


# `org-metadata`: every key matches the key rule, containers stop at level 5 (the metadata
# object being level 1), integers fit in 64 bits, strings hold no NUL; the filter then holds
# the whole value to the service's own rule (64 keys, 8 KiB of compact JSON).
_INT64 = (-(2**63), 2**63 - 1)
_meta_key = st.one_of(
    st.text(_ascii_word + "_-", min_size=1, max_size=64),
    _exactly([1, 64], _ascii_word + "_-"),
)
_meta_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=_INT64[0], max_value=_INT64[1]),
    st.sampled_from(_INT64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(_any_char, max_size=40),
)


def _meta_values(level: int) -> st.SearchStrategy[Any]:
    """Metadata values whose objects and arrays would sit at `level`."""
    if level > METADATA_MAX_LEVELS:
        return _meta_scalar
    inner = _meta_values(level + 1)
    return st.one_of(
        _meta_scalar,
        st.lists(inner, max_size=3),
        st.dictionaries(_meta_key, inner, max_size=3),
    )


def _padded(size: int, char: str) -> dict[str, Any]:
    """Metadata of exactly `size` bytes as compact JSON: one string of `char` (1 to 4 bytes of
    UTF-8), topped up with ASCII."""
    room = size - len(b'{"pad":""}')
    width = len(char.encode())
    return {"pad": char * (room // width) + "x" * (room % width)}


def _nested(levels: int, *, arrays: bool) -> dict[str, Any]:
    """Metadata `levels` levels deep (objects with 64-character keys, or arrays between)."""
    node: Any = _INT64[1]
    for depth in range(levels - 1):
        node = [node, _INT64[0]] if arrays and depth % 2 else {"k" * 64: node}
    return {"deep": node}


def _metadata_rule(value: dict[str, Any]) -> bool:
    try:
        check_metadata(value)
    except ValueError:
        return False
    return True


# The bounds themselves: 64 keys, 8 KiB (in 1-, 2-, 3- and 4-byte characters), 5 levels.
_METADATA_BOUNDS: list[dict[str, Any]] = [
    {},
    {f"key_{n:02d}": n for n in range(METADATA_MAX_KEYS)},
    *(_padded(METADATA_MAX_BYTES, char) for char in ("a", "\u00e9", "\u20ac", "\U0001f600")),
    _padded(METADATA_MAX_BYTES - 1, "a"),
    _nested(METADATA_MAX_LEVELS, arrays=False),
    _nested(METADATA_MAX_LEVELS, arrays=True),
    {
        "min": _INT64[0],
        "max": _INT64[1],
        "float": 1.5e300,
        "text": "caf\u00e9 \U0001f600",
        "no": None,
    },
]
assert all(_metadata_rule(value) for value in _METADATA_BOUNDS)
_METADATA = st.one_of(
    st.dictionaries(_meta_key, _meta_values(2), max_size=8),
    st.dictionaries(
        _meta_key, _meta_scalar, min_size=METADATA_MAX_KEYS - 1, max_size=METADATA_MAX_KEYS
    ),
    st.sampled_from(_METADATA_BOUNDS),
).filter(_metadata_rule)
_bounds = itertools.cycle(_METADATA_BOUNDS)


def _is_positive(case: Any) -> bool:
    meta = case.meta
    return meta is not None and bool(meta.generation.mode.is_positive)


def _has_metadata(case: Any) -> bool:
    return isinstance(case.body, dict) and isinstance(case.body.get("metadata"), dict)


@schemathesis.hook
def flatmap_case(ctx: Any, case: Any) -> st.SearchStrategy[Any]:
    """A valid body's `metadata` drawn from the `org-metadata` generator."""
    if not _is_positive(case) or not _has_metadata(case):
        return st.just(case)

    def with_metadata(metadata: dict[str, Any]) -> Any:
        case.body = {**case.body, "metadata": metadata}
        return case

    return _METADATA.map(with_metadata)


_LOGIN = {"email": "login@fuzz.example.com", "password": PASSWORD}
_login_account: list[bool] = []


def _invitation_token() -> str:
    """A live invitation's token, read from the mail the service sent (MAIL_BACKEND=file), as an
    invitee would: a fresh organization invites a fresh address."""
    n = next(_counter)
    owner, invitee = f"inviter{n}@fuzz.example.com", f"invitee{n}@fuzz.example.com"
    before = set(os.listdir(MAIL_DIR))
    with httpx.Client(base_url=BASE_URL, timeout=30) as http:
        body = {"organization_name": f"fuzz inviter {n}", "email": owner, "password": PASSWORD}
        http.post("/org/create", json=body).raise_for_status()
        login = http.post("/admin/login", json={"email": owner, "password": PASSWORD})
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        res = http.post("/org/invitations", json={"email": invitee, "role": "member"}, headers=auth)
        res.raise_for_status()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for name in set(os.listdir(MAIL_DIR)) - before:
            with open(os.path.join(MAIL_DIR, name), "rb") as f:
                message = BytesParser(policy=policy.default).parse(f)
            text = message.get_body(preferencelist=("plain",))
            found = re.search(r"token=([\w.%-]+)", text.get_content() if text else "")
            if message["To"] == invitee and found:
                return unquote(found.group(1))
        time.sleep(0.05)
    raise AssertionError("the invitation mail did not arrive")


def _reset_token() -> str:
    """A live password-reset token, read from the reset mail the service sent (MAIL_BACKEND=file)
    as its member would: a fresh organization's owner asks for one."""
    n = next(_counter)
    owner = f"forgetful{n}@fuzz.example.com"
    before = set(os.listdir(MAIL_DIR))
    with httpx.Client(base_url=BASE_URL, timeout=30) as http:
        body = {"organization_name": f"fuzz forgetful {n}", "email": owner, "password": PASSWORD}
        http.post("/org/create", json=body).raise_for_status()
        http.post("/admin/password/forgot", json={"email": owner}).raise_for_status()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for name in set(os.listdir(MAIL_DIR)) - before:
            with open(os.path.join(MAIL_DIR, name), "rb") as f:
                message = BytesParser(policy=policy.default).parse(f)
            text = message.get_body(preferencelist=("plain",))
            found = re.search(r"token=([\w.%-]+)", text.get_content() if text else "")
            if message["To"] == owner and found:
                return unquote(found.group(1))
        time.sleep(0.05)
    raise AssertionError("the reset mail did not arrive")


_page_token: list[str] = []  # opening the reset page does not use its token up: one will do
_mongo: list[MongoClient[dict[str, Any]]] = []
_current_org: dict[str, str] = {}  # the bearer token's organization (the auth's latest)
_orgs_of_tokens: dict[str, str] = {}  # every bearer token handed out: its organization's id


def _db() -> Any:
    if not _mongo:
        _mongo.append(MongoClient(MONGODB_URL, serverSelectionTimeoutMS=10_000))
    return _mongo[0][DB_NAME]


def _real_organization_id(path: str) -> str | None:
    """An organization of the fuzz database for the operator API: never the one whose token
    the other endpoints use nor the login account's (a suspend or delete would starve them);
    a suspended one to restore and an active one to suspend when there is one."""
    query: dict[str, Any] = {
        "status": "active",  # the record is an organization (not one being made or deleted)
        "_id": {"$ne": _current_org.get("id", "")},
        "admin.email": {"$ne": _LOGIN["email"]},
    }
    wanted = {"/restore": "suspended", "/suspend": "active"}
    for suffix, state in wanted.items():
        if path.endswith(suffix):
            preferred = _ids(_db().organizations.find({**query, "state": state}, {"_id": 1}))
            if preferred:
                return preferred[next(_picks) % len(preferred)]
    found = _ids(_db().organizations.find(query, {"_id": 1}))
    return found[next(_picks) % len(found)] if found else None


def _ids(docs: Any) -> list[str]:
    return sorted(str(doc["_id"]) for doc in docs)


def _live_key_id(token: str) -> str | None:
    """A live API key of the bearer token's organization (made when it has none)."""
    org_id = _orgs_of_tokens.get(token)
    if org_id is None:
        return None
    found = _ids(_db().api_keys.find({"organization_id": org_id, "status": "active"}, {"_id": 1}))
    if found:
        return found[next(_picks) % len(found)]
    with httpx.Client(base_url=BASE_URL, timeout=30) as http:
        body = {"name": "fuzz revocable", "scopes": ["org:read"]}
        made = http.post("/org/api-keys", json=body, headers={"Authorization": f"Bearer {token}"})
    return str(made.json()["key_id"]) if made.status_code == 201 else None


def _event_id() -> str | None:
    """A published event's id (never a tombstone: it has none), of the newest 200, so a page
    after it is sometimes full and sometimes short or empty. The id is stored as `event_id`
    (`id` by earlier releases)."""
    query = {"tombstone": {"$ne": True}}
    docs = _db().events.find(query, {"event_id": 1, "id": 1}).sort("_id", -1).limit(200)
    found = sorted(str(doc.get("event_id") or doc["id"]) for doc in docs)
    return found[next(_picks) % len(found)] if found else None


def _webhook_id() -> str | None:
    """A registered webhook endpoint (registered now when there is none: a fuzzed delete may
    have removed the last)."""
    found = _ids(_db().webhooks.find({}, {"_id": 1}))
    if found:
        return found[next(_picks) % len(found)]
    body = {"url": f"https://{_PUBLIC_HOSTS[0]}/fuzz", "types": list(EVENT_TYPES)}
    with httpx.Client(base_url=BASE_URL, timeout=30) as http:
        made = http.post("/webhooks", json=body, headers={"X-API-Key": API_KEY})
    return str(made.json()["webhook_id"]) if made.status_code == 201 else None


def _real_events_query(query: dict[str, Any]) -> dict[str, Any]:
    """A valid `GET /events` query with a published event as `after` (when it has one), and
    every other `organization_id` a real organization's."""
    if "after" in query:
        after = _event_id()
        query = {**query, "after": after} if after else {k: query[k] for k in query if k != "after"}
    if "organization_id" in query and next(_real_ids) % 2:
        found = _ids(_db().organizations.find({}, {"_id": 1}))
        if found:
            query = {**query, "organization_id": found[next(_picks) % len(found)]}
    return query


@schemathesis.hook
def before_call(ctx: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Every valid accept and every valid open of the accept page, in every phase, carries a
    live invitation's token (a random one is a 410, rightly), so the 201/200 paths are fuzzed;
    likewise every valid reset (a fresh reset token each: it works once) and every valid open
    of the reset page. Two valid operator calls in three name a real organization, and every
    other valid key revocation a live key of the caller's organization (random ids: 404s).
    Every valid `after` of the feed and of a replay is a published event's id, and two valid
    webhook calls in three name a registered endpoint."""
    if not _is_positive(case):
        return
    if _has_metadata(case) and not _metadata_rule(case.body["metadata"]):
        # The stateful phase fills fields from earlier responses after `map_case` (an inferred
        # link can add another organization's metadata keys to a bound): one of the bounds.
        case.body = {**case.body, "metadata": next(_bounds)}
    path = case.operation.path
    if path == "/events":
        case.query = _real_events_query(dict(case.query or {}))
        return
    if path.startswith("/webhooks/{webhook_id}"):
        if next(_real_ids) % 3:
            webhook_id = _webhook_id()
            if webhook_id is not None:
                case.path_parameters = {**(case.path_parameters or {}), "webhook_id": webhook_id}
        after = _event_id() if path.endswith("/replay") else None
        if after is not None and isinstance(case.body, dict):
            case.body = {**case.body, "after": after}
        return
    if path.startswith("/orgs/{organization_id}") and next(_real_ids) % 3:
        found = _real_organization_id(path)
        if found is not None:
            case.path_parameters = {**(case.path_parameters or {}), "organization_id": found}
    if path.endswith("/move"):
        # A place this deployment has (any other is the contract's 422 `unknown_placement`):
        # the organization's own database (a real move), or the shared one (409 if it is there).
        org_id = (case.path_parameters or {}).get("organization_id", "")
        own = {"cluster": "main", "database": f"orgdata_{org_id}"}
        case.body = own if next(_picks) % 2 else {"cluster": "main", "database": DB_NAME}
        return
    if path.startswith("/orgs/{organization_id}"):
        return
    if path == "/operations/{operation_id}" and next(_real_ids) % 2:
        moves = _ids(_db().moves.find({}, {"_id": 1}))
        if moves:
            chosen = moves[next(_picks) % len(moves)]
            case.path_parameters = {**(case.path_parameters or {}), "operation_id": chosen}
        return
    if path == "/org/api-keys/{key_id}" and next(_real_ids) % 2:
        token = (case.headers or {}).get("Authorization", "").removeprefix("Bearer ")
        key_id = _live_key_id(token)
        if key_id is not None:  # by its id, or every other time by its prefix
            key_id = f"osk_{key_id}" if next(_picks) % 2 else key_id
            case.path_parameters = {**(case.path_parameters or {}), "key_id": key_id}
        return
    if path == "/admin/password/reset" and isinstance(case.body, dict):
        case.body = {**case.body, "token": _reset_token()}
        return
    if path == "/password/reset":
        if not _page_token:
            _page_token.append(_reset_token())
        case.query = {**(case.query or {}), "token": _page_token[0]}
        return
    if path != "/invitations/accept":
        return
    if case.method.upper() == "GET":  # the mail's link: the page's form for a live token
        case.query = {**(case.query or {}), "token": _invitation_token()}
    elif isinstance(case.body, dict):
        case.body = {**case.body, "token": _invitation_token()}


def _url_rule(url: str) -> bool:
    """An http(s) URL the SSRF guard passes without DNS: its host a public address."""
    try:
        host = parse(url).hostname or ""
        return refusal(ipaddress.ip_address(host)) is None
    except (UnsafeUrl, ValueError):
        return False


def map_case(ctx: Any, case: Any) -> Any:
    """Every other valid login draw uses a real account, so the 200 path is fuzzed too. A valid
    body's `metadata` that breaks the metadata rule (the coverage phase's, which no `format`
    generator reaches) becomes one of the rule's bounds instead; likewise a valid webhook
    `url` that breaks the `webhook-url` rule (the coverage phase draws it from the pattern)
    becomes a URL of a public address of the same length (within the length keywords)."""
    if _is_positive(case) and _has_metadata(case) and not _metadata_rule(case.body["metadata"]):
        case.body = {**case.body, "metadata": next(_bounds)}
    url = case.body.get("url") if isinstance(case.body, dict) else None
    on_webhooks = case.operation.path.startswith("/webhooks")
    if _is_positive(case) and on_webhooks and isinstance(url, str) and not _url_rule(url):
        start = f"https://{_PUBLIC_HOSTS[0]}"
        case.body = {**case.body, "url": _url_of(start, max(len(url), len(start) + 1))}
    if case.operation.path != "/admin/login" or not _is_positive(case) or next(_logins) % 2:
        return case
    if not _login_account:
        with httpx.Client(base_url=BASE_URL, timeout=30) as http:
            body = {"organization_name": "fuzz login", **_LOGIN}
            assert http.post("/org/create", json=body).status_code in (201, 409)
        _login_account.append(True)
    case.body = dict(_LOGIN)
    return case


schemathesis.hook(map_case)


@schemathesis.auth(refresh_interval=60, retry_on=[401])
class FreshAdmin:
    """A new organization and its admin's token: `{"token": ..., "name": ...}`."""

    def get(self, case: Any, ctx: Any) -> dict[str, str]:
        n = next(_counter)
        email, name = f"fuzz{n}@fuzz.example.com", f"fuzz org {n}"
        with httpx.Client(base_url=BASE_URL, timeout=30) as http:
            body = {"organization_name": name, "email": email, "password": PASSWORD}
            made = http.post("/org/create", json=body)
            made.raise_for_status()
            login = http.post("/admin/login", json={"email": email, "password": PASSWORD})
            login.raise_for_status()
        token, org_id = login.json()["access_token"], made.json()["organization_id"]
        _current_org["id"] = _orgs_of_tokens[token] = org_id
        return {"token": token, "name": name}

    def set(self, case: Any, data: dict[str, str], ctx: Any) -> None:
        turn = next(_turns)
        case.headers = case.headers or {}
        path = case.operation.path
        # The operator API, the event feed and the webhooks API take the service key only.
        operator = path in ("/orgs", "/events") or path.startswith(
            ("/orgs/", "/webhooks", "/operations/")
        )
        # Only a key may choose the plan of a new organization (a 403 without one).
        planned = path == "/org/create" and isinstance(case.body, dict) and "plan" in case.body
        if operator or planned or path == "/org/list" or (path == "/org/get" and turn % 3 == 0):
            case.headers["X-API-Key"] = API_KEY
        else:
            case.headers["Authorization"] = f"Bearer {data['token']}"
        # Half the reads and deletes name the caller's own organization, so the success paths
        # are fuzzed too (a delete then revokes the token: the 401 makes schemathesis re-login).
        if path in ("/org/get", "/org/delete") and turn % 2 == 0:
            case.query = {**(case.query or {}), "organization_name": data["name"]}
