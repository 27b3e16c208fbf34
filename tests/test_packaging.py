"""Packaging: the embedded store is an optional extra, and the version lives in one place."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import httpx
import pytest

import app
from app.kit.db import (
    EmbeddedStoreUnavailable,
    embedded_store_missing,
    free_port,
    require_embedded_store,
)
from app.kit.settings import Settings
from app.main import create_app

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
WHAT_TO_DO = "pip install 'orgsvc[embedded]'"

# Run `orgsvc serve` as if nx-27017 were not installed: a None entry in sys.modules makes
# `import nx_27017` fail and `importlib.util.find_spec("nx_27017")` answer None.
SERVE_WITHOUT_NX = """
import runpy, sys
sys.modules["nx_27017"] = None
sys.argv = ["orgsvc", "serve", "--port", sys.argv[1]]
runpy.run_module("app.cli", run_name="__main__", alter_sys=True)
"""


def test_nx_27017_is_the_embedded_extra_not_a_runtime_dependency() -> None:
    project = PYPROJECT["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("nx-27017")]
    assert project["optional-dependencies"]["embedded"] == ["nx-27017>=0.8"]
    # The installed metadata says the same (the Makefile reinstalls when pyproject changes).
    requires = importlib.metadata.requires("orgsvc") or []
    nx = [r for r in requires if r.lower().startswith("nx-27017")]
    assert nx and all('extra == "embedded"' in r for r in nx)


def test_the_image_installs_no_extra_and_its_dependencies_before_the_code() -> None:
    lines = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    assert not [x for x in lines if "embedded" in x and not x.lstrip().startswith("#")]
    assert not [x for x in lines if "nx-27017" in x and not x.lstrip().startswith("#")]
    deps = next(i for i, x in enumerate(lines) if "pip install" in x and "--requirement" in x)
    code = next(i for i, x in enumerate(lines) if x.startswith("COPY app"))
    project = next(i for i, x in enumerate(lines) if "pip install --no-deps" in x)
    assert deps < code < project


def test_the_embedded_store_check_passes_when_installed() -> None:
    assert embedded_store_missing() is None
    require_embedded_store()


def test_a_missing_embedded_store_is_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "nx_27017", None)
    reason = embedded_store_missing()
    assert reason is not None
    assert WHAT_TO_DO in reason and "MONGODB_URL" in reason
    with pytest.raises(EmbeddedStoreUnavailable) as caught:
        require_embedded_store()
    assert str(caught.value) == reason


async def test_the_app_does_not_start_without_url_or_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "nx_27017", None)
    data = tmp_path / "data"
    settings = Settings(
        _env_file=None,
        environment="development",
        mongodb_url=None,
        embedded_data_dir=str(data),
        jwt_secret="test-secret-that-is-long-enough-for-hs256-0123456789",
        bcrypt_rounds=4,
    )
    service = create_app(settings)
    with pytest.raises(EmbeddedStoreUnavailable, match=r"orgsvc\[embedded\]"):
        async with service.router.lifespan_context(service):
            pass
    assert not data.exists()


@pytest.mark.realstore  # runs `orgsvc serve` as a process
def test_serve_without_url_or_embedded_store_exits_saying_what_to_do(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MONGODB_", "JWT_", "ENVIRONMENT", "FAULT_", "EMBEDDED_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    res = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_NX, str(free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert WHAT_TO_DO in res.stdout + res.stderr
    assert not (tmp_path / "data").exists()


async def test_openapi_version_is_the_package_version(api: httpx.AsyncClient) -> None:
    installed = importlib.metadata.version("orgsvc")
    assert installed == PYPROJECT["project"]["version"]
    assert app.__version__ == installed
    spec = (await api.get("/openapi.json")).json()
    assert spec["info"]["version"] == installed


@pytest.mark.realstore  # builds a wheel in a subprocess (seconds)
def test_the_wheel_holds_the_pages_templates_and_stylesheet(tmp_path: Path) -> None:
    """What the image installs (`pip install .`): the code and the pages' non-Python files. Built
    from a clean copy of the sources (a `build/` left in the checkout would hide a miss)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "app", src / "app", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--wheel-dir", str(tmp_path / "dist"), str(src)],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    [wheel] = (tmp_path / "dist").glob("orgsvc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {p.name for p in (ROOT / "app" / "pages" / "templates").glob("*.html")}
    assert templates and {f"app/pages/templates/{t}" for t in templates} <= names
    assert "app/pages/static/pages.css" in names
    assert "app/main.py" in names
