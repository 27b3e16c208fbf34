"""Signing keys: one current key, previous keys still accepted, each pinned to one algorithm.

Every token carries a `kid` header. Verification looks the kid up here and verifies with exactly
that key and its algorithm, so an unknown kid, or a known kid with another `alg`, is refused.

- HS256 (the default): the key is `JWT_SECRET`; previous secrets come from `JWT_PREVIOUS_SECRETS`.
  Symmetric keys are never published.
- EdDSA (Ed25519) or RS256: the private key comes from `JWT_PRIVATE_KEY` (PEM) or
  `JWT_PRIVATE_KEY_FILE`; previous public keys from `JWT_PREVIOUS_PUBLIC_KEY_FILES`. Their public
  halves are published at `/.well-known/jwks.json`, so other services verify without a secret.

Unless `JWT_KID` names it, a key's kid is derived from the key itself (a truncated SHA-256 of an
HMAC secret; the RFC 7638 thumbprint of a public key), so rotation needs no extra bookkeeping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm
from pydantic import SecretStr


class KeySettings(Protocol):
    """The settings a key ring is made from (`app.kit.settings.Settings` has them all)."""

    @property
    def jwt_secret(self) -> SecretStr: ...
    @property
    def jwt_algorithm(self) -> str: ...
    @property
    def jwt_kid(self) -> str | None: ...
    @property
    def jwt_previous_secrets(self) -> SecretStr: ...
    @property
    def jwt_private_key(self) -> SecretStr | None: ...
    @property
    def jwt_private_key_file(self) -> str | None: ...
    @property
    def jwt_previous_public_key_files(self) -> str: ...


# Values that must never sign a production token: the placeholders of .env.example and friends.
PLACEHOLDER_SECRETS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "changethis",
        "secret",
        "dev-secret",
        "development-secret-not-for-production",
        "please-change-me-to-a-long-random-string",
    }
)
DEV_JWT_SECRET = "development-secret-not-for-production"  # noqa: S105 - refused in production
MIN_SECRET_BYTES = 32
HS256, EDDSA, RS256 = "HS256", "EdDSA", "RS256"
ASYMMETRIC = frozenset({EDDSA, RS256})
KID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
MIN_RSA_BITS = 2048

PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey
PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


class KeyConfigError(ValueError):
    """The key settings cannot be turned into a usable key ring."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key that may verify tokens, pinned to one algorithm."""

    kid: str
    algorithm: str
    key: str | PublicKey  # the HMAC secret, or a public key

    @property
    def public(self) -> bool:
        return self.algorithm in ASYMMETRIC


@dataclass(frozen=True, slots=True)
class SigningKey:
    """The one key new tokens are signed with."""

    kid: str
    algorithm: str
    key: str | PrivateKey


class KeyRing:
    """The current signing key and every key a token may still be verified with."""

    def __init__(
        self,
        signing: SigningKey,
        verification: list[VerificationKey],
        *,
        legacy_kid: str | None = None,
    ) -> None:
        self.signing = signing
        self._by_kid: dict[str, VerificationKey] = {}
        for key in verification:
            if key.kid in self._by_kid:
                raise KeyConfigError(f"two signing keys share the kid {key.kid!r}")
            self._by_kid[key.kid] = key
        # Tokens issued before kids existed carry none; they were signed with JWT_SECRET.
        self.legacy_kid = legacy_kid

    def derived_secret(self, label: str) -> bytes:
        """A secret for another purpose (`label`), derived from the current signing key (HMAC
        with the key's bytes), so the service needs no second secret to keep; rotating the
        signing key changes it too."""
        key = self.signing.key
        if isinstance(key, str):
            material = key.encode()
        else:
            material = key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        return hmac.new(material, label.encode(), hashlib.sha256).digest()

    @classmethod
    def hmac(cls, secret: str, *, kid: str | None = None) -> KeyRing:
        """A ring with a single HS256 key (tests, tools)."""
        kid = kid or hmac_kid(secret)
        return cls(
            SigningKey(kid, HS256, secret), [VerificationKey(kid, HS256, secret)], legacy_kid=kid
        )

    @classmethod
    def from_settings(cls, settings: KeySettings) -> KeyRing:
        """The ring the settings describe; KeyConfigError when they do not add up."""
        verification: list[VerificationKey] = []
        legacy_kid: str | None
        secret = settings.jwt_secret.get_secret_value()
        algorithm = settings.jwt_algorithm
        if algorithm == HS256:
            current_kid = settings.jwt_kid or hmac_kid(secret)
            signing = SigningKey(current_kid, HS256, secret)
            verification.append(VerificationKey(current_kid, HS256, secret))
            legacy_kid = current_kid
        else:
            private = load_private_key(settings, algorithm)
            public = private.public_key()
            current_kid = settings.jwt_kid or thumbprint(public)
            signing = SigningKey(current_kid, algorithm, private)
            verification.append(VerificationKey(current_kid, algorithm, public))
            # JWT_SECRET still verifies the HS256 tokens issued before the switch, until they
            # expire (production refuses a weak JWT_SECRET, so this is no weaker than before);
            # the well-known development secret is never accepted next to a real key pair.
            legacy_kid = None
            if secret != DEV_JWT_SECRET and secret.strip().lower() not in PLACEHOLDER_SECRETS:
                legacy_kid = hmac_kid(secret)
                verification.append(VerificationKey(legacy_kid, HS256, secret))
        for kid, old_secret in parse_entries(settings.jwt_previous_secrets.get_secret_value()):
            verification.append(VerificationKey(kid or hmac_kid(old_secret), HS256, old_secret))
        for kid, path in parse_entries(settings.jwt_previous_public_key_files):
            old_public, old_algorithm = load_public_key_file(Path(path))
            verification.append(
                VerificationKey(kid or thumbprint(old_public), old_algorithm, old_public)
            )
        return cls(signing, verification, legacy_kid=legacy_kid)

    def for_kid(self, kid: str | None) -> VerificationKey | None:
        """The key a token with this `kid` header must verify with, or None (reject it)."""
        if kid is None:
            kid = self.legacy_kid
        return self._by_kid.get(kid) if kid is not None else None

    @property
    def kids(self) -> list[str]:
        return list(self._by_kid)

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public keys as a JWK Set (RFC 7517); HMAC secrets are never in it."""
        keys = [public_jwk(k) for k in self._by_kid.values() if k.public]
        # The current key first: clients that take the first key get the right one.
        keys.sort(key=lambda jwk: jwk["kid"] != self.signing.kid)
        return {"keys": keys}


def hmac_kid(secret: str) -> str:
    """A stable, non-reversible name for an HMAC secret (anyone holding a token could already
    try guesses against its signature; a truncated hash gives them nothing more)."""
    digest = hashlib.sha256(b"orgsvc-kid\x00" + secret.encode()).hexdigest()
    return "hs-" + digest[:16]


def thumbprint(public: PublicKey) -> str:
    """The RFC 7638 JWK thumbprint of a public key (base64url SHA-256)."""
    jwk = _bare_jwk(public)
    required = {"OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_jwk(key: VerificationKey) -> dict[str, Any]:
    """One JWK: the public key, its kid and algorithm, for signatures only."""
    assert not isinstance(key.key, str)
    return {**_bare_jwk(key.key), "kid": key.kid, "alg": key.algorithm, "use": "sig"}


def _bare_jwk(public: PublicKey) -> dict[str, Any]:
    if isinstance(public, ed25519.Ed25519PublicKey):
        jwk: dict[str, Any] = OKPAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    jwk.pop("key_ops", None)
    return jwk


def parse_entries(text: str) -> list[tuple[str | None, str]]:
    """`kid:value` or bare `value` entries, comma-separated; a bare value gets a derived kid."""
    out: list[tuple[str | None, str]] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        head, sep, tail = entry.partition(":")
        if sep and KID_PATTERN.match(head) and tail:
            out.append((head, tail))
        else:
            out.append((None, entry))
    return out


def load_private_key(settings: KeySettings, algorithm: str) -> PrivateKey:
    """The PEM private key from JWT_PRIVATE_KEY or JWT_PRIVATE_KEY_FILE, checked for `algorithm`."""
    if settings.jwt_private_key is not None:
        pem = settings.jwt_private_key.get_secret_value().replace("\\n", "\n").encode()
        source = "JWT_PRIVATE_KEY"
    elif settings.jwt_private_key_file:
        path = Path(settings.jwt_private_key_file)
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise KeyConfigError(f"JWT_PRIVATE_KEY_FILE cannot be read: {exc.strerror}") from None
        source = "JWT_PRIVATE_KEY_FILE"
    else:
        raise KeyConfigError(f"JWT_ALGORITHM={algorithm} needs JWT_PRIVATE_KEY or _FILE")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        # Never echo the key material, not even a part of it.
        raise KeyConfigError(f"{source} is not an unencrypted PEM private key") from None
    if algorithm == EDDSA and isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if algorithm == RS256 and isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyConfigError(f"{source}: RSA keys must have at least {MIN_RSA_BITS} bits")
        return key
    raise KeyConfigError(f"{source} is not a key for {algorithm}")


def load_public_key_file(path: Path) -> tuple[PublicKey, str]:
    """A previous key's public half (a PEM public or private key file) and its algorithm."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyConfigError(f"previous key file {path} cannot be read: {exc.strerror}") from None
    key: Any
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        try:
            key = serialization.load_pem_private_key(pem, password=None).public_key()
        except (ValueError, TypeError):
            raise KeyConfigError(f"previous key file {path} is not a PEM key") from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, EDDSA
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return key, RS256
    raise KeyConfigError(f"previous key file {path} is not an Ed25519 or RSA (2048+) key")
