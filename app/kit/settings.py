"""Settings, read from the environment and `.env` through pydantic-settings."""

from __future__ import annotations

import os
from email.utils import parseaddr
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
    # --- tenant placement (contract v2, section 6; app/tenancy/placement.py) -----------------
    # `name=url;name=url`: the clusters tenant collections may live on; `main` is MONGODB_URL
    # (the embedded store without it) and always there. Empty: `main` only.
    tenant_clusters: SecretStr = SecretStr("")
    # `cluster=db,db;cluster=db`: each cluster's shared tenant databases. Empty (or a cluster
    # not named): MONGODB_DB on `main`, none on another cluster.
    tenant_databases: str = ""
    # Comma-separated plans whose organizations get a database of their own at creation.
    dedicated_database_plans: str = ""

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
    # 64 KiB: a profile update carries up to 8 KiB of metadata as compact UTF-8 JSON, which a
    # client escaping non-ASCII (`\u00e9`, as Python's json does) sends as up to 24 KiB; the
    # nginx of deploy/ allows 64 KiB too.
    max_body_bytes: int = Field(default=65_536, ge=1024, le=16 * 1024 * 1024)
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

    # --- sessions (app/sessions/; contract section 2) --------------------------------------
    # A session lives this long after its last refresh (each refresh moves it); `remember_me`
    # at login gives the longer one.
    refresh_token_ttl_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    refresh_token_remember_me_days: float = Field(default=30.0, gt=0, le=365)
    # A session's `last_used_at` is written at most this often per process (not per request).
    session_touch_seconds: float = Field(default=60.0, ge=0, le=3600)

    # --- authentication cache (app/auth/cache.py) -------------------------------------------
    # What authentication reads, kept in memory and invalidated by change streams; it serves
    # only while its streams are caught up within AUTH_CACHE_MAX_LAG_MS (else requests read
    # the database). Off, or on a store without change streams: one read per request.
    auth_cache: bool = True
    auth_cache_max_entries: int = Field(default=100_000, ge=1, le=10_000_000)
    auth_cache_max_lag_ms: int = Field(default=1000, ge=50, le=60_000)

    # --- teams (app/members/; contract section 1) -------------------------------------------
    invitation_ttl_hours: float = Field(default=72.0, gt=0, le=24 * 90)
    # Seats of an organization without its own `max_members`: members plus pending invitations.
    max_members_per_org: int = Field(default=50, ge=1, le=10_000)

    # --- password reset (app/recovery/; contract section 2) ---------------------------------
    # POST /admin/password/forgot: at most this many requests per email and per client IP in
    # the window (429 `rate_limited` beyond); a reset link works once, for this long.
    password_reset_max_per_email: int = Field(default=3, ge=1, le=10_000)
    password_reset_max_per_ip: int = Field(default=20, ge=1, le=1_000_000)
    password_reset_window_seconds: int = Field(default=3600, ge=1, le=7 * 86_400)
    password_reset_ttl_minutes: float = Field(default=30.0, gt=0, le=24 * 60)

    # --- mail (app/mail/; contract section 7) ---------------------------------------------
    # `console` (development: the message is logged, the only log line allowed to hold a token),
    # `file` (one .eml per message in MAIL_FILE_DIR) or `smtp` (SMTP_HOST is then required).
    mail_backend: Literal["smtp", "file", "console"] = "console"
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None  # with SMTP_PASSWORD, or neither (no AUTH)
    smtp_password: SecretStr | None = None
    # STARTTLS is required when true (a server that does not offer it is a failed send, never a
    # silent fall-back to clear text); AUTH without it is refused, it would send the password in
    # clear.
    smtp_starttls: bool = True
    # Each step with the server (connect, TLS, AUTH, DATA) gives up after this long; one whole
    # attempt is bounded by three times it (app/mail/worker.py MailPolicy).
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # PEM bundle of the CAs trusted for STARTTLS instead of the system's (a private relay's CA).
    smtp_ca_file: str | None = None
    mail_from: str = "Organization service <no-reply@localhost>"
    mail_file_dir: str | None = None  # required by MAIL_BACKEND=file
    # Links in mails (`.../invitations/accept?token=...`) start with this; no trailing slash.
    public_base_url: str = Field(default="http://127.0.0.1:8000", pattern=r"^https?://[^\s/?#]+")
    # A mail that cannot be sent is retried after MAIL_RETRY_BASE_SECONDS, then twice as long
    # each time (with jitter, at most an hour), MAIL_MAX_ATTEMPTS attempts in all; then it is
    # given up (`dead`, logged as an error).
    mail_max_attempts: int = Field(default=8, ge=1, le=100)
    mail_retry_base_seconds: float = Field(default=5.0, gt=0, le=3600)
    # How often each process looks for mails that are due (retries, and mails left by a process
    # that died between storing and sending them); a new mail is sent at once, not on the poll.
    mail_poll_seconds: float = Field(default=5.0, gt=0, le=3600)

    # --- webhooks (app/webhooks/; contract section 5) -----------------------------------------
    # One attempt (connect, send, answer) is cut off after WEBHOOK_TIMEOUT_SECONDS; a non-2xx
    # answer (a redirect too), a timeout or a refused address is retried, the first time after
    # WEBHOOK_RETRY_BASE_SECONDS, then twice as long each time (jittered, at most an hour apart),
    # until WEBHOOK_RETRY_HOURS after the delivery was queued; then it is `failed`.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    webhook_retry_base_seconds: float = Field(default=5.0, gt=0, le=3600)
    webhook_retry_hours: float = Field(default=24.0, gt=0, le=24 * 14)
    # An endpoint whose every attempt has failed for this long (no 2xx in between) is disabled,
    # with a `webhook.disabled` audit entry: three days, so a weekend outage of a receiver
    # survives its 24-hour retry window being exhausted once, but a dead URL stops costing us.
    webhook_disable_after_hours: float = Field(default=72.0, gt=0, le=24 * 90)
    # Deliver to loopback, private, link-local and metadata addresses too (development and tests
    # only; refused in production).
    webhook_allow_private_networks: bool = False
    # How often each process looks for due deliveries and new events (a publish kicks it at
    # once; retries due on this process wake it by themselves).
    webhook_poll_seconds: float = Field(default=1.0, gt=0, le=300)
    # Attempts in flight per process, in all, and per endpoint: a slow receiver holds at most
    # its own share.
    webhook_max_concurrency: int = Field(default=64, ge=1, le=10_000)
    webhook_endpoint_concurrency: int = Field(default=4, ge=1, le=1000)
    # After a rotation the previous secret also signs for this long (the contract's 24 h).
    webhook_secret_overlap_hours: float = Field(default=24.0, ge=0, le=24 * 30)
    # Finished deliveries (delivered or failed) are kept this long for GET .../deliveries.
    webhook_delivery_retention_days: float = Field(default=30.0, gt=0, le=3650)
    # Keys that encrypt endpoint secrets at rest (comma-separated `kid:secret`, at least 32
    # bytes each; the first encrypts, all decrypt). Empty: a key derived from the JWT signing
    # key (app/webhooks/secrets.py).
    webhook_secret_keys: SecretStr = SecretStr("")

    @field_validator("mongodb_url", mode="before")
    @classmethod
    def _blank_url_is_unset(cls, value: object) -> object:
        # `MONGODB_URL=` in a .env file means "not set" (use the embedded store in development).
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator(
        "smtp_host",
        "smtp_username",
        "smtp_password",
        "smtp_ca_file",
        "mail_file_dir",
        mode="before",
    )
    @classmethod
    def _blank_mail_setting_is_unset(cls, value: object) -> object:
        # `SMTP_USERNAME=` in a .env file means "not set", as for MONGODB_URL.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("public_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        # Links are built as PUBLIC_BASE_URL + "/invitations/accept?...": one slash, not two.
        return value.rstrip("/")

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

    @model_validator(mode="after")
    def _check_mail_settings(self) -> Settings:
        problems: list[str] = []
        if self.mail_backend == "smtp" and not self.smtp_host:
            problems.append("MAIL_BACKEND=smtp needs SMTP_HOST")
        if self.mail_backend == "file" and not self.mail_file_dir:
            problems.append("MAIL_BACKEND=file needs MAIL_FILE_DIR")
        if (self.smtp_username is None) != (self.smtp_password is None):
            problems.append("SMTP_USERNAME and SMTP_PASSWORD go together (both, or neither)")
        elif self.smtp_username is not None and not self.smtp_starttls:
            problems.append("SMTP_PASSWORD with SMTP_STARTTLS=false would go in clear")
        _, address = parseaddr(self.mail_from)
        if "@" not in address:
            problems.append("MAIL_FROM is not an address (`Name <user@domain>` or `user@domain`)")
        if problems:
            raise ValueError("mail settings: " + "; ".join(problems))
        return self

    @model_validator(mode="after")
    def _check_webhook_settings(self) -> Settings:
        if self.environment == "production" and self.webhook_allow_private_networks:
            raise ValueError(
                "refusing to start in production: WEBHOOK_ALLOW_PRIVATE_NETWORKS is for "
                "development and tests"
            )
        for _, key in parse_entries(self.webhook_secret_keys.get_secret_value()):
            if len(key.encode()) < MIN_SECRET_BYTES:
                raise ValueError(f"a WEBHOOK_SECRET_KEYS entry is shorter than {MIN_SECRET_BYTES}")
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
