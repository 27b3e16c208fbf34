"""Settings, read from the environment and `.env` through pydantic-settings."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
        if problems:
            raise ValueError("refusing to start in production: " + "; ".join(problems))
        return self

    @property
    def fault_point_set(self) -> frozenset[str]:
        """The fault-injection points switched on (test-only)."""
        return frozenset(p.strip() for p in self.fault_points.split(",") if p.strip())


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
