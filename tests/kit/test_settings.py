"""Settings: production refuses weak secrets, a missing database URL and test-only switches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.kit.settings import Settings

STRONG = "x" * 40
URL = "mongodb://db:27017"


def prod(**values: Any) -> Settings:
    return Settings(_env_file=None, environment="production", **values)


def test_production_with_strong_secret_and_url_starts() -> None:
    assert prod(jwt_secret=STRONG, mongodb_url=URL).environment == "production"


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"mongodb_url": URL}, "JWT_SECRET is missing"),
        ({"jwt_secret": "changeme", "mongodb_url": URL}, "placeholder"),
        (
            {"jwt_secret": "please-change-me-to-a-long-random-string", "mongodb_url": URL},
            "placeholder",
        ),
        ({"jwt_secret": "short-but-not-a-placeholder", "mongodb_url": URL}, "shorter than 32"),
        ({"jwt_secret": STRONG}, "MONGODB_URL is missing"),
        (
            {"jwt_secret": STRONG, "mongodb_url": URL, "fault_points": "create.after_claim"},
            "test-only",
        ),
    ],
)
def test_production_refuses(values: dict[str, str], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        prod(**values)


def test_settings_come_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONGODB_DB", "from_env")
    monkeypatch.setenv("JWT_EXPIRES_MINUTES", "5")
    monkeypatch.setenv("BCRYPT_ROUNDS", "10")
    s = Settings(_env_file=None)
    assert (s.mongodb_db, s.jwt_expires_minutes, s.bcrypt_rounds) == ("from_env", 5, 10)


def test_settings_come_from_dotenv(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("MONGODB_DB=from_dotenv\nJWT_EXPIRES_MINUTES=7\n")
    s = Settings(_env_file=env)
    assert (s.mongodb_db, s.jwt_expires_minutes) == ("from_dotenv", 7)


def test_secrets_do_not_leak_through_repr() -> None:
    s = Settings(_env_file=None, jwt_secret=STRONG, mongodb_url="mongodb://u:pw@h")
    assert STRONG not in repr(s) and "pw@" not in repr(s)


def test_blank_mongodb_url_means_embedded_store() -> None:
    s = Settings(_env_file=None, mongodb_url="  ")
    assert s.mongodb_url is None
