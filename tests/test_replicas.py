"""Two replicas behind nginx (Debian's package) on one nx-27017: a bounded mixed load."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo, free_port
from tests.support.clients import PASSWORD, bearer, org_body
from tests.support.consistency import assert_consistent
from tests.support.processes import PROCS_DB as DB
from tests.support.processes import ServiceProcess
from tests.support.processes import procs_service_env as service_env

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CLIENTS = 8
ROUNDS = 10


def nginx_conf(tmp: Path, listen: int, upstreams: list[int]) -> Path:
    servers = "\n".join(f"    server 127.0.0.1:{p} max_fails=0;" for p in upstreams)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""
{user}
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log {tmp}/access.log;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  server_tokens off;
  upstream orgsvc {{
{servers}
    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{listen};
    location / {{
      proxy_pass http://orgsvc;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Request-ID $request_id;
      proxy_read_timeout 30s;
    }}
  }}
}}
"""
    )
    return conf


async def client_session(base: str, worker: int, statuses: Counter[int]) -> None:
    """One client's bounded mix: create, login, get, rename, password change, delete."""
    rng = random.Random(worker)
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:

        async def call(method: str, url: str, **kw: Any) -> httpx.Response:
            res = await http.request(method, url, **kw)
            statuses[res.status_code] += 1
            return res

        for r in range(ROUNDS):
            name = f"Load {worker} {r}"
            email = f"w{worker}r{r}@load.example.com"
            # Every client also races for a few shared names.
            if rng.random() < 0.3:
                await call(
                    "POST", "/org/create", json=org_body(f"Shared {r}", f"s{worker}{r}@x.com")
                )
            res = await call("POST", "/org/create", json=org_body(name, email))
            if res.status_code != 201:
                continue
            res = await call("POST", "/admin/login", json={"email": email, "password": PASSWORD})
            token = res.json()["access_token"]
            await call("GET", "/org/get", params={"organization_name": name}, headers=bearer(token))
            new_name = f"{name} renamed"
            await call(
                "PUT", "/org/update", json={"organization_name": new_name}, headers=bearer(token)
            )
            await call(
                "GET", "/org/get", params={"organization_name": new_name}, headers=bearer(token)
            )
            await call(
                "PUT", "/org/update", json={"password": "changed-pass"}, headers=bearer(token)
            )
            res = await call(
                "POST", "/admin/login", json={"email": email, "password": "changed-pass"}
            )
            token = res.json()["access_token"]
            if r % 2 == 0:
                await call(
                    "DELETE",
                    "/org/delete",
                    params={"organization_name": new_name},
                    headers=bearer(token),
                )


async def test_two_replicas_behind_nginx(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], tmp_path: Path
) -> None:
    a = ServiceProcess(service_env(nx_server), log_path=tmp_path / "a.log")
    b = ServiceProcess(service_env(nx_server), log_path=tmp_path / "b.log")
    listen = free_port()
    nginx: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.gather(a.start(), b.start())
        conf = nginx_conf(tmp_path, listen, [a.port, b.port])
        nginx = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp_path)])
        base = f"http://127.0.0.1:{listen}"
        deadline = time.monotonic() + 15
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                try:
                    if (await http.get(base + "/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                pytest.fail("nginx did not come up: " + (tmp_path / "error.log").read_text())

        statuses: Counter[int] = Counter()
        started = time.monotonic()
        await asyncio.wait_for(
            asyncio.gather(*(client_session(base, w, statuses) for w in range(CLIENTS))),
            timeout=240,
        )
        elapsed = time.monotonic() - started

        assert sum(n for s, n in statuses.items() if s >= 500) == 0, statuses
        assert statuses[201] >= CLIENTS * ROUNDS, statuses
        assert statuses[204] >= CLIENTS * ROUNDS // 2, statuses
        # Both replicas served part of the load.
        async with httpx.AsyncClient() as http:
            for replica in (a, b):
                text = (await http.get(replica.url + "/metrics")).text
                served = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in text.splitlines()
                    if line.startswith("orgsvc_http_requests_total{") and 'route="/org/' in line
                )
                assert served > 20, f"replica {replica.port} served {served}"
        orgs = await assert_consistent(nx_client[DB])
        survivors = {o["slug"] for o in orgs}
        for w in range(CLIENTS):
            for r in range(1, ROUNDS, 2):
                assert f"load_{w}_{r}_renamed" in survivors
        print(f"mixed load: {sum(statuses.values())} requests in {elapsed:.1f}s: {dict(statuses)}")
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=10)
        a.stop()
        b.stop()
