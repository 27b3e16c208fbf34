"""Figure 6: peak RSS of the service process over the whole run."""

from __future__ import annotations

from bench.context import Context
from bench.record import Figure


def measure(ctx: Context) -> None:
    """Stops the sampler: the larger of its sampled VmRSS peak and the kernel's VmHWM."""
    sampler = ctx.stack.sampler
    assert sampler is not None
    sampler.stop()
    ctx.res.figures.append(
        Figure(
            "6",
            "Peak RSS of the service process during all runs above",
            sampler.peak_mb,
            "<=",
            150.0,
            f"VmHWM {(sampler.hwm_kib or 0) / 1024:.1f} MiB, sampled max "
            f"{sampler.peak_kib / 1024:.1f} MiB ({sampler.samples} samples)",
            {"vm_hwm_kib": sampler.hwm_kib, "sampled_peak_kib": sampler.peak_kib},
            unit=" MiB",
        )
    )
