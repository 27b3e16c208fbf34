"""What figures share: the event feed's last event of a type, and a figure's problems and the
machine's noise as run notes."""

from __future__ import annotations

import httpx

from bench.common import FOREIGN_WARN_CORES, Doc
from bench.context import Context


async def feed_tail(
    http: httpx.AsyncClient, headers: dict[str, str], type_: str, page: int = 100
) -> str | None:
    """The id of the feed's last event of type `type_` (None: there is none yet)."""
    after: str | None = None
    while True:
        params = {"types": type_, "limit": str(page), **({"after": after} if after else {})}
        resp = await http.get("/events", params=params, headers=headers)
        resp.raise_for_status()
        body: Doc = resp.json()
        if body["next_cursor"] is None:
            return after
        after = body["next_cursor"]


def note_problems(ctx: Context, num: str, problems: list[str], cpu: dict[str, float]) -> None:
    """Each of figure `num`'s problems as a note, and one if other work on the machine, or the
    hypervisor, took more than `FOREIGN_WARN_CORES` while it was measured."""
    for problem in problems:
        ctx.res.notes.append(f"figure {num}: {problem}")
    if cpu["foreign_cores"] > FOREIGN_WARN_CORES or cpu["steal_cores"] > FOREIGN_WARN_CORES:
        ctx.res.notes.append(
            f"figure {num}: other work on the machine used {cpu['foreign_cores']:.2f} cores and "
            f"the hypervisor stole {cpu['steal_cores']:.2f}"
        )
