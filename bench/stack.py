"""The processes a run measures, in one temporary directory on loopback: an nx-27017 store, the
service (with its RSS sampled), the bare FastAPI app of figure 1; and the clients to them."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
from pymongo import MongoClient
from pymongo.database import Database

from app.kit.db import EmbeddedMongo, free_port
from bench.common import REPO, Doc, say
from bench.load import LoadGenerator, make_generator
from bench.procs import Child, RssSampler, wait_http
from tests.support.stores import start_nx


class Stack:
    """Starts the store, the service and the bare app; `cleanup()` stops and removes it all."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="orgsvc-bench-"))
        self.children: list[Child] = []
        self.generators: list[LoadGenerator] = []
        self.sampler: RssSampler | None = None
        self.http: httpx.Client | None = None
        self.mongo: MongoClient[Doc] | None = None
        self.mongo_url = ""
        self.url = ""  # the main service's
        self.db_name = "org_service"
        self.jwt_secret = "bench-jwt-secret-" + secrets.token_hex(12)  # 41 characters

    def child_env(self) -> dict[str, str]:
        """Our environment without any of the service's own settings, plus the repo on the path."""
        from app.kit.settings import Settings

        service_vars = {name.upper() for name in Settings.model_fields}
        env = {k: v for k, v in os.environ.items() if k.upper() not in service_vars}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        child = Child(name, log_path=self.tmp / f"{name}.log")
        self.children.append(child)
        child.start(argv, env=env, cwd=self.tmp)
        return child

    def start_store(self) -> str:
        """nx-27017 on a free port (the tests' `start_nx`); returns its URL."""
        self.nx, url = self.launch_store("nx-27017")
        self.mongo = MongoClient(url, tz_aware=True)
        self.mongo_url = url
        return url

    def launch_store(self, name: str) -> tuple[Child, str]:
        """An nx-27017 store process of its own, with its own data directory (one SQLite file
        per database, as the launcher runs it): a separate process stands in for a separate
        cluster, whose load and failures are its own."""
        nx = EmbeddedMongo(self.tmp / name, port=free_port())
        nx.data_dir.mkdir(parents=True)
        child = Child(name, log_path=self.tmp / f"{name}.log")
        proc = start_nx(nx, cwd=self.tmp, env=self.child_env(), output=child.log_path)
        child.adopt(proc)
        self.children.append(child)
        return child, nx.url

    @property
    def db(self) -> Database[Doc]:
        assert self.mongo is not None
        return self.mongo[self.db_name]

    def start_service(self, mongo_url: str) -> str:
        """The service as `orgsvc serve` (or bare uvicorn), its RSS sampled; returns its URL."""
        self.service, url = self.launch_service("service", mongo_url)
        self.sampler = RssSampler(self.service.pid)
        self.sampler.start()
        self.http = httpx.Client(base_url=url, timeout=120.0, trust_env=False)
        self.url = url
        return url

    def service_env(self, mongo_url: str) -> dict[str, str]:
        """The service's settings over the store at `mongo_url` (the CLI reads the same ones)."""
        env = self.child_env()
        env.update(
            MONGODB_URL=mongo_url,
            MONGODB_DB=self.db_name,
            BCRYPT_ROUNDS=str(self.args.bcrypt_rounds),
            JWT_SECRET=self.jwt_secret,
            JWT_EXPIRES_MINUTES="600",
            ENVIRONMENT="development",
            LOG_LEVEL="info",
            # Figure 10 registers a webhook receiver on 127.0.0.1: the SSRF guard refuses
            # loopback addresses unless told otherwise (allowed only outside production).
            WEBHOOK_ALLOW_PRIVATE_NETWORKS="true",
        )
        if self.args.hash_pool_size:
            env["HASH_POOL_SIZE"] = str(self.args.hash_pool_size)
        return env

    def launch_service(self, name: str, mongo_url: str) -> tuple[Child, str]:
        """A service process over the store at `mongo_url` on a free port, once it answers;
        returns it and its URL (the main one is `start_service`'s; figure 7 starts its own)."""
        port = free_port()
        env = self.service_env(mongo_url)
        env.update(HOST="127.0.0.1", PORT=str(port))
        child = self.spawn(name, self.service_argv(port), env)
        url = f"http://127.0.0.1:{port}"
        wait_http(child, url + "/health")
        return child, url

    def cli(self, mongo_url: str, *args: str) -> str:
        """`python -m app.cli ARGS` with the settings of a service over the store at
        `mongo_url`; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            env=self.service_env(mongo_url),
            cwd=self.tmp,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"app.cli {' '.join(args)}: exit {done.returncode}: {done.stderr}")
        return done.stdout

    def service_argv(self, port: int) -> list[str]:
        if self.args.launcher == "orgsvc":
            return [
                sys.executable, "-m", "app.cli", "serve",
                "--host", "127.0.0.1", "--port", str(port),
            ]  # fmt: skip
        return [
            sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--no-access-log",
        ]  # fmt: skip

    def start_bare(self, body: Doc) -> str:
        """The bare FastAPI app (figure 1's baseline) answering `body`; returns its URL."""
        port = free_port()
        env = self.child_env()
        env["BENCH_BARE_BODY"] = json.dumps(body)
        argv = [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
        self.bare = self.spawn("bare", argv, env)
        url = f"http://127.0.0.1:{port}"
        wait_http(self.bare, url + "/health")
        return url

    def load_generator(self, base_url: str) -> LoadGenerator:
        """wrk (or the httpx fallback) against `base_url`, closed at cleanup."""
        gen = make_generator(base_url, self.tmp, force_httpx=self.args.no_wrk)
        self.generators.append(gen)
        return gen

    def api(self, method: str, path: str, *, token: str | None = None, **kw: Any) -> httpx.Response:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.request(method, path, headers=headers, **kw)

    def hash_queue(self) -> float | None:
        """The service's bcrypt queue length from /metrics, if it exports one."""
        with contextlib.suppress(httpx.HTTPError):
            text = self.api("GET", "/metrics").text
            found = re.search(r"^orgsvc_hash_pool_queue_length\s+(\S+)$", text, re.M)
            if found:
                return float(found.group(1))
        return None

    def cleanup(self) -> None:
        for gen in self.generators:
            gen.close()
        if self.sampler is not None and self.sampler.is_alive():
            self.sampler.stop()
        if self.http is not None:
            self.http.close()
        if self.mongo is not None:
            self.mongo.close()
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {child.name}: {exc!r}", file=sys.stderr)
        if self.args.keep_tmp:
            say(f"kept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
