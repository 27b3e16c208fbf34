"""One run's state as the figures see it: the flags, the stack, the results, the accounts."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from urllib.parse import quote

from bench.common import Doc
from bench.load import LoadGenerator, LoadSpec
from bench.procs import Child, CpuClock
from bench.record import Results
from bench.stack import Stack


@dataclass
class Context:
    args: argparse.Namespace
    stack: Stack
    res: Results
    cores: int
    run_id: str
    gen: LoadGenerator  # against the service
    whole: CpuClock  # the whole run, for the noise line
    accounts: list[Doc] = field(default_factory=list)  # {"name", "email", "org", "token"}

    @property
    def main(self) -> Doc:
        """The account whose organization every GET reads."""
        return self.accounts[0]

    @property
    def get_path(self) -> str:
        return "/org/get?organization_name=" + quote(self.main["name"])

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.main['token']}"}

    @property
    def watch(self) -> list[Child]:
        """The processes whose CPU a service phase reads."""
        return [self.stack.service, self.stack.nx]

    def latency_load(self) -> LoadSpec:
        """The light GET load of figures 3 and 5 (so the latency is not queueing)."""
        a = self.args
        return LoadSpec("GET", self.get_path, a.latency_connections, a.duration, headers=self.auth)

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until requests abandoned by the last load (still hashing) have drained."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            queued = self.stack.hash_queue()
            if queued is None:  # no metric: wait for the longest plausible queue
                time.sleep((self.args.login_connections / self.cores + 1) * self.res.t_verify)
                return
            if queued == 0:
                return
            time.sleep(0.05)
        self.res.notes.append("the hash pool did not drain within 20 s after a login phase")
