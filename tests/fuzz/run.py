"""Fuzz the live service with schemathesis, bounded and reproducible.

Starts an nx-27017 store and `python -m app.cli serve` on free loopback ports (cheap bcrypt,
generous login limits so the fuzzer is not just answered 429), makes a service API key with
every scope an endpoint asks for (`org:read`, `org:create`, `org:list`, `org:write`,
`events:read`, `webhooks:manage`) through the CLI, then runs schemathesis against the live
`/openapi.json` with a fixed seed and a bounded number of cases per operation, with every
check schemathesis has: the response checks (status
code, schema, headers, content type, no 5xx) and the request checks (schema-valid data is
accepted, schema-invalid data is refused, a missing auth header or key is a 401, an undeclared
method is a 405 with `Allow`, auth is enforced). Exits with schemathesis's status. Options it
does not know go to schemathesis (e.g. `--phases coverage`).

Webhook deliveries never leave the machine: the fuzzed endpoints are registered with public
addresses (the SSRF guard runs as in production), and the service's delivery worker would POST
every event to them. No setting keeps it from sending (a publish or a registration wakes it at
once, whatever WEBHOOK_POLL_SECONDS says, and there is no switch to turn it off), so on Linux
the whole run (store, service, schemathesis) goes into a network namespace of its own, made
with an unprivileged user namespace, where only the loopback interface is up: every attempt
fails at once with "network is unreachable", is retried an hour later (after the run), and
shows in the delivery history as pending with its error. Where no namespace can be made (not
Linux, or user namespaces forbidden) the run says so and goes on; its results do not depend on
the deliveries.

    python -m tests.fuzz.run [--max-examples 3] [--seed 42] [--checks all]
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import fcntl
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from app.kit.db import EmbeddedMongo
from tests.support.clients import TEST_SECRET
from tests.support.processes import ROOT, ServiceProcess, stop_process
from tests.support.stores import start_nx

# Every check, none excluded. `object_level_authorization` needs several identities configured
# in schemathesis's own auth settings and stays idle with the hook-based auth used here; reading
# another organization is covered by the API tests (403 `forbidden`).
CHECKS = "all"


CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def isolate_network() -> str | None:
    """Move this process, and so every process it starts, into a new network namespace with
    only `lo` up (this process keeps its uid, mapped onto itself). None when done, else why
    not. Must run before any thread starts (the kernel refuses a user namespace to a threaded
    process)."""
    if sys.platform != "linux":
        return f"no network namespaces on {sys.platform}"
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        return f"unshare: {os.strerror(ctypes.get_errno())}"
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):  # fmt: skip
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=3, help="cases per operation")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--checks", default=CHECKS, help="comma-separated, or all")
    args, passthrough = parser.parse_known_args()
    why_not = isolate_network()
    if why_not is not None:
        print(f"fuzz: no private network ({why_not}): webhook deliveries may go out", flush=True)

    with tempfile.TemporaryDirectory(prefix="orgsvc-fuzz-") as tmp:
        nx = EmbeddedMongo(Path(tmp) / "nx")
        nx_proc = start_nx(nx)
        env = {
            "MONGODB_URL": nx.url,
            "MONGODB_DB": "orgsvc_fuzz",
            "JWT_SECRET": TEST_SECRET,
            "BCRYPT_ROUNDS": "4",
            "ENVIRONMENT": "development",
            "LOGIN_MAX_FAILURES_PER_EMAIL": "10000",
            "LOGIN_MAX_FAILURES_PER_IP": "1000000",
            # The fuzzer's forgots and the hook's all come from 127.0.0.1.
            "PASSWORD_RESET_MAX_PER_EMAIL": "10000",
            "PASSWORD_RESET_MAX_PER_IP": "1000000",
            "LOG_LEVEL": "warning",
            # Invitation mails as files: the hooks read an invitee's token from there.
            "MAIL_BACKEND": "file",
            "MAIL_FILE_DIR": str(Path(tmp) / "mail"),
            # The SSRF guard as in production (no WEBHOOK_ALLOW_PRIVATE_NETWORKS). Each delivery
            # is attempted once during the run (see the module docstring), cut off soon.
            "WEBHOOK_TIMEOUT_SECONDS": "2",
            "WEBHOOK_RETRY_BASE_SECONDS": "3600",
        }
        Path(env["MAIL_FILE_DIR"]).mkdir()
        service = ServiceProcess(env, log_path=Path(tmp) / "service.log")
        try:
            asyncio.run(service.start())
            made = subprocess.run(
                [sys.executable, "-m", "app.cli", "api-key", "create", "--name", "fuzz",
                 "--scopes", "org:read,org:create,org:list,org:write,org:move,events:read,"
                 "webhooks:manage"],
                cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, check=True,
            )  # fmt: skip
            key = json.loads(made.stdout)["key"]
            command = [
                str(Path(sys.executable).with_name("schemathesis")),
                "run", f"{service.url}/openapi.json",
                "--checks", args.checks,
                "--max-examples", str(args.max_examples),
                "--seed", str(args.seed),
                "--generation-database", "none",
                "--workers", "1",
                "--request-timeout", "10",
                "--no-color",
                *passthrough,  # any other schemathesis option, e.g. --phases coverage
            ]  # fmt: skip
            hooks_env = {
                **os.environ,
                "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks",
                "FUZZ_BASE_URL": service.url,
                "FUZZ_API_KEY": key,
                "FUZZ_DB": env["MONGODB_DB"],
                "FUZZ_MONGODB_URL": nx.url,  # the hooks read live ids from the store
                "FUZZ_MAIL_DIR": env["MAIL_FILE_DIR"],
                "PYTHONPATH": str(ROOT),
            }
            print("fuzz:", " ".join(command), flush=True)
            # Run from the temp dir: schemathesis keeps a cache in `.schemathesis/` there.
            code = subprocess.run(command, cwd=tmp, env=hooks_env, check=False).returncode
            if code != 0:
                log = (Path(tmp) / "service.log").read_text(errors="replace")
                print("---- service log (tail) ----\n" + log[-4000:], file=sys.stderr)
            return code
        finally:
            service.stop()
            stop_process(nx_proc)


if __name__ == "__main__":
    sys.exit(main())
