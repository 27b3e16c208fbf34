"""Endpoint signing secrets: made, kept encrypted at rest, and used to sign deliveries.

Why encrypted and not hashed (as every other secret of the service is): a webhook secret is an
HMAC key *we* must use to sign every delivery, so the store has to give it back. It is kept
encrypted with AES-256-GCM under a key the database does not hold (WEBHOOK_SECRET_KEYS, or by
default a key derived from the JWT signing key, which also lives only in the process's settings),
with the endpoint's id as associated data (a ciphertext copied onto another endpoint does not
decrypt). A dump or a read-only leak of the database therefore yields no usable secret; each
ciphertext names the key it was sealed with (`kid`), so the encryption key can be rotated by
listing the new one first in WEBHOOK_SECRET_KEYS and keeping the old one after it. A secret
whose key is gone cannot sign: its attempts fail with a clear `last_error` until the endpoint's
secret is rotated. The plaintext is shown once (create, rotate) and never logged.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from standardwebhooks import Webhook

from app.kit.keys import KeyRing, parse_entries
from app.kit.settings import Settings
from app.kit.store import Doc

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32  # 256 bits, as every secret of the service
_LABEL = "orgsvc webhook secrets v1"


def new_secret() -> str:
    """A fresh signing secret in the Standard Webhooks form: `whsec_` + base64 of 32 bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _kid(key: bytes) -> str:
    return "wk-" + hashlib.sha256(b"orgsvc-webhook-kid\x00" + key).hexdigest()[:16]


class SecretUnreadable(Exception):
    """A stored secret that none of the configured keys opens."""


@dataclass(frozen=True, slots=True)
class SecretBox:
    """Seals and opens endpoint secrets (AES-256-GCM, the endpoint id as associated data)."""

    keys: tuple[tuple[str, bytes], ...]  # (kid, 32-byte key); the first seals

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        entries = parse_entries(settings.webhook_secret_keys.get_secret_value())
        if entries:
            keys = [
                hashlib.sha256(_LABEL.encode() + b"\x00" + v.encode()).digest() for _, v in entries
            ]
            return cls(
                tuple((kid or _kid(k), k) for (kid, _), k in zip(entries, keys, strict=True))
            )
        key = KeyRing.from_settings(settings).derived_secret(_LABEL)
        return cls(((_kid(key), key),))

    def seal(self, secret: str, *, webhook_id: str) -> Doc:
        kid, key = self.keys[0]
        nonce = secrets.token_bytes(12)
        sealed = AESGCM(key).encrypt(nonce, secret.encode(), webhook_id.encode())
        return {
            "kid": kid,
            "nonce": base64.b64encode(nonce).decode(),
            "box": base64.b64encode(sealed).decode(),
        }

    def open(self, stored: Doc, *, webhook_id: str) -> str:
        for kid, key in self.keys:
            if kid != stored.get("kid"):
                continue
            try:
                plain = AESGCM(key).decrypt(
                    base64.b64decode(stored["nonce"]),
                    base64.b64decode(stored["box"]),
                    webhook_id.encode(),
                )
            except (InvalidTag, KeyError, ValueError) as exc:
                raise SecretUnreadable("the signing secret does not decrypt") from exc
            return plain.decode()
        raise SecretUnreadable(
            "the signing secret was sealed with a key that is not configured any more "
            "(WEBHOOK_SECRET_KEYS or the JWT signing key changed); rotate the endpoint's secret"
        )


def signature_header(secrets_: list[str], *, msg_id: str, timestamp: int, body: str) -> str:
    """`webhook-signature`: one `v1,<base64>` per secret, space-separated (the library signs
    with one secret; receivers accept the header if any of its signatures verifies)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return " ".join(Webhook(s).sign(msg_id, moment, body) for s in secrets_)
