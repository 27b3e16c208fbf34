"""What a run records: the figures, every load phase's raw numbers and CPU, and notes."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.common import FOREIGN_WARN_CORES, Doc, own_cpu, say
from bench.load import LoadGenerator, LoadResult, LoadSpec, run
from bench.procs import Child, CpuClock


@dataclass
class Figure:
    num: str
    name: str
    value: float | None
    op: str  # "<=" or ">="
    target: float | None  # None: no target (the figure is reported, not judged)
    measured: str
    details: Doc = field(default_factory=dict)
    unit: str = ""  # after the value and the target, e.g. " MiB"

    @property
    def met(self) -> bool | None:
        if self.value is None or self.target is None:
            return None
        return self.value <= self.target if self.op == "<=" else self.value >= self.target

    def row(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:.2f}{self.unit}"
        met = {True: "yes", False: "**NO**", None: "n/a"}[self.met]
        op = "≤" if self.op == "<=" else "≥"
        target = "none" if self.target is None else f"{op} {self.target:g}{self.unit}"
        return f"| {self.num} | {self.name} | {self.measured} | {value} | {target} | {met} |"

    def as_dict(self) -> Doc:
        return {
            "figure": self.num,
            "name": self.name,
            "value": None if self.value is None else round(self.value, 4),
            "unit": self.unit.strip(),
            "target": None if self.target is None else f"{self.op} {self.target:g}",
            "met": self.met,
            "measured": self.measured,
            "details": self.details,
        }


@dataclass
class Results:
    """Everything the report is made of (the run's configuration aside)."""

    figures: list[Figure] = field(default_factory=list)
    phases: Doc = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: Doc = field(default_factory=dict)  # machine, create, noise
    t_verify: float = 0.0  # one bcrypt verify, seconds, measured in the bench process
    t_hash: float = 0.0  # one bcrypt hash
    loadgen: str = "?"

    def loaded(
        self, name: str, gen: LoadGenerator, spec: LoadSpec, watch: list[Child]
    ) -> tuple[LoadResult, dict[str, float]]:
        """Run one load; return its result and the CPU seconds each watched process used."""
        clock = CpuClock(watch)
        bench_before = own_cpu()
        result = run(gen, spec)
        cpu = clock.stop()
        cpu["bench+loadgen"] = own_cpu() - bench_before
        self.record(name, result, cpu)
        if cpu["foreign_cores"] > FOREIGN_WARN_CORES or cpu["steal_cores"] > FOREIGN_WARN_CORES:
            self.notes.append(
                f"phase `{name}`: other work on the machine used {cpu['foreign_cores']:.2f} "
                f"cores and the hypervisor stole {cpu['steal_cores']:.2f}: figures are noisier"
            )
        return result, cpu

    def record(self, name: str, result: LoadResult, cpu: dict[str, float] | None = None) -> None:
        entry = result.as_dict()
        if cpu is not None:
            entry["cpu_s"] = {k: round(v, 3) for k, v in cpu.items()}
        self.phases[name] = entry
        say(
            f"{name}: {result.requests} responses ({result.non_ok} non-2xx, "
            f"{result.socket_errors} socket errors) in {result.duration_s:.1f}s = "
            f"{result.rps:.0f}/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms"
            + (f", cpu {entry['cpu_s']}" if cpu is not None else "")
        )
        if result.non_ok or result.socket_errors:
            self.notes.append(
                f"phase `{name}`: {result.non_ok} non-2xx responses and "
                f"{result.socket_errors} socket errors out of {result.requests}"
            )
