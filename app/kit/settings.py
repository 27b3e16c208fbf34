"""Settings, read from the environment and `.env` through pydantic-settings."""

from __future__ import annotations

import os
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.kit.keys import (
    DEV_JWT_SECRET,
    MIN_SECRET_BYTES,
    PLACEHOLDER_SECRETS,
    KeyRing,
    parse_entries,
)

IPNetwork = IPv4Network | IPv6Network


def usable_cpus() -> int:
    """CPUs this process may run on (a container's affinity, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Settings(BaseSettings):
    """Every setting of the service; names are the environment variables (case-insensitive)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["development", "production"] = "development"

    # --- MongoDB -------------------------------------------------------------------------
    mongodb_url: SecretStr | None = None
    mongodb_db: str = Field(default="org_service", pattern=r"^[A-Za-z0-9_-]{1,38}$")
    mongodb_timeout_ms: int = Field(default=3000, ge=100, le=60_000)
    mongodb_max_pool_size: int = Field(default=50, ge=1, le=1000)

    # --- embedded nx-27017 store (development without MONGODB_URL) ------------------------
    embedded_data_dir: str = "./data"
    embedded_port: int = Field(default=0, ge=0, le=65535)  # 0 = pick a free port

    # --- tokens ------------------------------------------------------------------------------
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_expires_minutes: int = Field(default=30, ge=1, le=24 * 60)
    jwt_issuer: str = "orgsvc"
    jwt_audience: str = "orgsvc-api"
    # Signing: HS256 with JWT_SECRET (default), or EdDSA/RS256 with a private key whose public
    # half is published at /.well-known/jwks.json. Previous keys keep verifying (rotation).
    jwt_algorithm: Literal["HS256", "EdDSA", "RS256"] = "HS256"
    jwt_kid: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    jwt_previous_secrets: SecretStr = SecretStr("")  # comma-separated `kid:secret` or `secret`
    jwt_private_key: SecretStr | None = None  # PEM (literal `\n` allowed for newlines)
    jwt_private_key_file: str | None = None
    jwt_previous_public_key_files: str = ""  # comma-separated `kid:path` or `path` (PEM)

    # --- abuse protection ------------------------------------------------------------------
    login_max_failures_per_email: int = Field(default=5, ge=1, le=10_000)
    login_max_failures_per_ip: int = Field(default=20, ge=1, le=1_000_000)
    login_failure_window_seconds: int = Field(default=900, ge=1, le=7 * 86_400)
    trusted_proxies: str = ""  # comma-separated IPs/CIDRs whose X-Forwarded-For is believed
    org_create_requires_key: bool = False  # True: POST /org/create needs an org:create API key
    max_body_bytes: int = Field(default=16_384, ge=1024, le=16 * 1024 * 1024)
    cors_origins: str = ""  # comma-separated origins; empty = no CORS headers at all
    audit_retention_days: float = Field(default=365.0, gt=0, le=36_500)

    # --- passwords ---------------------------------------------------------------------------
    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    hash_pool_size: int = Field(default_factory=lambda: usable_cpus(), ge=1, le=64)

    # --- crash safety --------------------------------------------------------------------
    operation_lease_seconds: float = Field(default=30.0, gt=0, le=3600)
    reconcile_interval_seconds: float = Field(default=30.0, gt=0, le=86_400)

    # --- test-only fault injection (refused in production) -------------------------------
    fault_points: str = ""

    # --- HTTP ----------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "info"
    # Largest request head (request line + headers); larger is 431, refused while it is read.
    max_header_bytes: int = Field(default=16_384, ge=4096, le=1024 * 1024)

    @field_validator("mongodb_url", mode="before")
    @classmethod
    def _blank_url_is_unset(cls, value: object) -> object:
        # `MONGODB_URL=` in a .env file means "not set" (use the embedded store in development).
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _refuse_weak_production(self) -> Settings:
        if self.environment != "production":
            return self
        problems: list[str] = []
        secret = self.jwt_secret.get_secret_value()
        if secret.strip().lower() in PLACEHOLDER_SECRETS or secret == DEV_JWT_SECRET:
            problems.append("JWT_SECRET is missing or a placeholder")
        elif len(secret.encode()) < MIN_SECRET_BYTES:
            problems.append(f"JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes")
        if self.mongodb_url is None or not self.mongodb_url.get_secret_value().strip():
            problems.append("MONGODB_URL is missing (the embedded store is for development only)")
        if self.fault_points.strip():
            problems.append("FAULT_POINTS is a test-only setting")
        for _, old in parse_entries(self.jwt_previous_secrets.get_secret_value()):
            if old.strip().lower() in PLACEHOLDER_SECRETS or len(old.encode()) < MIN_SECRET_BYTES:
                problems.append("a JWT_PREVIOUS_SECRETS entry is a placeholder or too short")
                break
        if "*" in self.cors_origin_list:
            problems.append("CORS_ORIGINS=* is refused in production; list the origins")
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _check_security_settings(self) -> Settings:
        self.trusted_proxy_networks  # noqa: B018 - raises ValueError on a bad entry
        if self.jwt_algorithm != "HS256" and not (
            self.jwt_private_key is not None or self.jwt_private_key_file
        ):
            raise ValueError(f"JWT_ALGORITHM={self.jwt_algorithm} needs JWT_PRIVATE_KEY or _FILE")
        KeyRing.from_settings(self)  # unreadable or unfit keys: refuse now, with a clear reason
        return self

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        """TRUSTED_PROXIES parsed; a bad entry is a ValueError."""
        return tuple(ip_network(p.strip(), strict=False) for p in _split(self.trusted_proxies))

    @property
    def cors_origin_list(self) -> list[str]:
        return _split(self.cors_origins)

    @property
    def fault_point_set(self) -> frozenset[str]:
        """The fault-injection points switched on (test-only)."""
        return frozenset(p.strip() for p in self.fault_points.split(",") if p.strip())


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
