"""`orgsvc tenants move|rebalance`: where organizations' tenant collections live (contract v2,
section 6), from the operator's side.

A move is the service's own online move (`state.moves.start`, audited as `org.move` with a CLI
actor): `Moves.start` runs the copy as a task in this process's event loop, so the command keeps
the loop running, polling the move's record (`state.moves.get`) for its progress, until the move
is `done`, `rolled_back` or `failed`. Progress goes to stderr: a bar on a terminal (or with
`--progress`), else a plain line per phase (CI logs, tests); stdout has the outcome only.

Ctrl-C stops this process's copy, not the move: its intent stays recorded with its checkpoint,
and the reconciler of any replica (or `orgsvc reconcile`) resumes it once its lease
(`OPERATION_LEASE_SECONDS`) has run out.

Exit codes: 0 done (or a dry run), 1 a move that did not end `done`, a refusal of the service
(404, 409 `operation_in_progress`, 422 `unknown_placement`, ...) or an unreachable database (one
line on stderr), 2 usage, 130 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import typer
from tqdm import tqdm

from app.audit.service import CLI_META, Actor
from app.cli.base import no_such_organization, organization_given, progress, run
from app.kit.errors import AppError
from app.organizations.moves import MoveRecord
from app.organizations.records import ACTIVE, Organization
from app.tenancy.placement import Placement, Topology
from app.wiring import AppState

tenants_cli = typer.Typer(
    help="Tenant placement: move an organization's tenant collection, rebalance the shared "
    "tenant databases.",
    no_args_is_help=True,
)

POLL_SECONDS = 0.2  # how often a running move's record is read
PLAIN_EVERY_SECONDS = 5.0  # without a bar: a `copying` line at most this often
PAGE = 500  # organization records per read when planning
TERMINAL = frozenset({"done", "failed", "rolled_back"})
INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
LOG_LINE = 240  # a log line kept for the message of a stopped move, at most

ProgressOption = typer.Option(
    None,
    "--progress/--no-progress",
    envvar="ORGSVC_PROGRESS",
    help="Progress bar on stderr (default: only when stderr is a terminal; otherwise, and with "
    "--no-progress, a plain line per phase).",
)


T = TypeVar("T")


def _actor() -> Actor:
    return Actor("cli", os.environ.get("USER") or None)


def _where(placement: Placement) -> dict[str, str]:
    return {"cluster": placement.cluster, "database": placement.database}


# ------------------------------------------------------------------------------ following a move
@dataclass
class _Started:
    """The move this command is running, if any (for the Ctrl-C message)."""

    starting: bool = False  # a move is being started or followed
    op_id: str | None = None  # its operation, once recorded
    label: str = ""
    lease: float | None = None  # OPERATION_LEASE_SECONDS, once the settings are read
    ended: str | None = None  # the move's status when it ended before it could be stopped


class MoveStopped(Exception):
    """The copy task of a move ended without ending the move (a store error, a lost lease):
    the intent stays for the reconciler."""

    def __init__(self, record: MoveRecord, why: list[str]) -> None:
        super().__init__(record.operation_id)
        self.record = record
        self.why = why


class _Collected(logging.Handler):
    """While a move runs here, the service's log lines (`orgsvc.*`, WARNING and up) are kept
    rather than written out by Python's last-resort handler (which would print a traceback for a
    logged exception); they are shown, one line each, only when the copy stops unfinished."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line += f" ({type(exc).__name__}: {exc})"
        first = line.splitlines()[0] if line else ""
        self.lines.append(first if len(first) <= LOG_LINE else first[: LOG_LINE - 3] + "...")


@contextlib.contextmanager
def _collect_logs() -> Iterator[_Collected]:
    handler = _Collected()
    logger = logging.getLogger("orgsvc")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class _Progress:
    """A move's progress on stderr: a bar of documents copied with the phase beside it, or,
    when there is no bar, a line per phase (and during the copy, one every few seconds)."""

    def __init__(self, label: str, total: int, *, force: bool | None) -> None:
        self.label = label
        self.bar: tqdm[Any] = tqdm(
            total=total,
            desc=label,
            unit="doc",
            file=sys.stderr,
            disable=None if force is None else not force,  # None: tqdm's own "not a TTY: off"
            dynamic_ncols=True,
            leave=True,
        )
        self.plain = bool(self.bar.disable)
        self.phase: str | None = None
        self.printed_at = 0.0

    def show(self, record: MoveRecord) -> None:
        if self.plain:
            now = time.monotonic()
            again = record.phase == "copying" and now - self.printed_at >= PLAIN_EVERY_SECONDS
            if record.phase != self.phase or again:
                typer.echo(
                    f"{self.label}: {record.phase} {record.copied}/{record.total} documents",
                    err=True,
                )
                self.printed_at = now
        else:
            # The total is the source's estimated count: never let the bar run past it.
            self.bar.total = max(record.total, record.copied)
            self.bar.n = record.copied
            self.bar.set_postfix_str(record.phase, refresh=False)
            self.bar.refresh()
        self.phase = record.phase

    def close(self) -> None:
        self.bar.close()


def _copy_task(op_id: str) -> asyncio.Task[Any] | None:
    """The task `Moves.start` made for the copy (named `move-<operation id>`)."""
    for task in asyncio.all_tasks():
        if task.get_name() == f"move-{op_id}":
            return task
    return None


async def follow(state: AppState, op_id: str, label: str, *, force: bool | None) -> MoveRecord:
    """Poll the move's record until its status is terminal, showing its progress; the record.
    Raises `MoveStopped` when the copy task of this process ends first."""
    task = _copy_task(op_id)  # made by `start`, before its first step ran
    record = await state.moves.get(op_id)
    shown = _Progress(label, record.total, force=force)
    with _collect_logs() as logs:
        try:
            while True:
                shown.show(record)
                if record.status in TERMINAL:
                    return record
                if task is not None and task.done():
                    record = await state.moves.get(op_id)  # it may have ended just now
                    if record.status in TERMINAL:
                        continue
                    raise MoveStopped(record, logs.lines)
                await asyncio.sleep(POLL_SECONDS)
                record = await state.moves.get(op_id)
        finally:
            shown.close()


async def _start_and_follow(
    state: AppState,
    org: Organization,
    target: Placement,
    started: _Started,
    *,
    force: bool | None,
) -> MoveRecord:
    """Start the move and follow it; on Ctrl-C (the main task cancelled), stop this process's
    copy cleanly (the intent stays) before the state is closed."""
    started.starting, started.op_id, started.label = True, None, org.slug
    started.lease = state.settings.operation_lease_seconds
    try:
        started.op_id = await state.moves.start(
            org.organization_id, target, actor=_actor(), meta=CLI_META
        )
        return await follow(state, started.op_id, org.slug, force=force)
    except asyncio.CancelledError:
        await _stop_copy(state, started)
        raise


async def _stop_copy(state: AppState, started: _Started) -> None:
    """Stop this process's copy of the move (its intent stays; `Moves.stop` cancels until the
    copy has ended), and note whether the move ended first."""
    await state.moves.stop()
    if started.op_id is not None:
        record = await state.moves.get(started.op_id)
        if record.status in TERMINAL:
            started.ended = record.status


def _interrupted(started: _Started) -> typer.Exit:
    """Ctrl-C: what is left behind, and exit 130."""
    if not started.starting:
        typer.echo("orgsvc: interrupted before any move started; nothing was moved", err=True)
        return typer.Exit(INTERRUPTED)
    if started.ended is not None:
        typer.echo(
            f"orgsvc: interrupted: move {started.op_id} of {started.label} had already ended "
            f"({started.ended}) when it was stopped",
            err=True,
        )
        return typer.Exit(INTERRUPTED)
    if started.op_id is None:
        what = f"the move of {started.label} was being started; if it was recorded, its intent"
    else:
        what = f"move {started.op_id} of {started.label} is not finished: its intent"
    lease = "" if started.lease is None else f", {started.lease:g} s"
    typer.echo(
        f"orgsvc: interrupted: {what} stays, and the service's reconciler resumes it after its "
        f"lease (OPERATION_LEASE_SECONDS{lease}; or `orgsvc reconcile` then)",
        err=True,
    )
    return typer.Exit(INTERRUPTED)


def _run_moves(go: Callable[[AppState], Awaitable[T]], started: _Started) -> T:
    """Run a command that starts moves; Ctrl-C says what it leaves behind (exit 130)."""
    try:
        return run(go)
    except KeyboardInterrupt:
        raise _interrupted(started) from None


def _fail(line: str | None) -> None:
    """Exit 1 with `line` on stderr, when there is one."""
    if line is not None:
        typer.echo(line, err=True)
        raise typer.Exit(1)


def _stopped_line(exc: MoveStopped) -> str:
    record = exc.record
    why = "; ".join(exc.why[-3:]) or "see the service's log"
    return (
        f"orgsvc: move {record.operation_id} stopped at {record.phase} "
        f"({record.copied}/{record.total} documents): {why}; its intent stays and the "
        "service's reconciler resumes or rolls it back after its lease (OPERATION_LEASE_SECONDS)"
    )


def _outcome(org: Organization, record: MoveRecord, placement: Placement | None) -> dict[str, Any]:
    return {
        "operation_id": record.operation_id,
        "organization_id": org.organization_id,
        "slug": org.slug,
        "status": record.status,
        "from": _where(record.source),
        "to": _where(record.target),
        "placement": None if placement is None else _where(placement),
        "documents": record.copied,
        "error": record.error,
    }


async def _final_placement(state: AppState, org_id: str) -> Placement | None:
    org = await state.repos.orgs.get(org_id)
    return None if org is None else state.repos.tenants.home(org.placement)


MOVE_HELP = (
    "Move an organization's tenant collection online to another database or cluster, and "
    "follow it to its end.\n\n"
    "Every document and index is copied and verified before the organization is switched over, "
    "and the source is dropped only after that. Progress (documents copied, the phase) goes to "
    "stderr; the outcome, with the final placement, is one JSON line on stdout. Exit 0 when the "
    "move is done, 1 when it was refused, rolled back or failed, 130 on Ctrl-C (the move's "
    "intent stays: the service's reconciler resumes it after its lease, "
    "OPERATION_LEASE_SECONDS)."
)


@tenants_cli.command("move", help=MOVE_HELP)
def move(
    org_ref: str = typer.Argument(
        ..., metavar="ORGANIZATION_ID", help="The organization's id (or its name)."
    ),
    cluster: str = typer.Option(..., help="Target cluster: `main` or one of TENANT_CLUSTERS."),
    database: str = typer.Option(
        ...,
        help="Target database: one of that cluster's TENANT_DATABASES, or the organization's "
        "own `orgdata_<organization_id>`.",
    ),
    show_progress: bool | None = ProgressOption,
) -> None:
    """`orgsvc tenants move` (its help: MOVE_HELP)."""
    target = Placement(cluster=cluster, database=database)
    started = _Started()

    async def go(state: AppState) -> tuple[dict[str, Any], str | None]:
        org = await organization_given(state, org_ref)
        if org is None:
            raise no_such_organization(org_ref)
        try:
            record = await _start_and_follow(state, org, target, started, force=show_progress)
        except MoveStopped as exc:
            return _outcome(org, exc.record, None), _stopped_line(exc)
        placement = await _final_placement(state, org.organization_id)
        failed = None
        if record.status != "done":
            failed = f"orgsvc: move {record.operation_id} {record.status}: {record.error}"
        return _outcome(org, record, placement), failed

    outcome, failed = _run_moves(go, started)
    typer.echo(json.dumps(outcome, ensure_ascii=False))
    _fail(failed)


# ------------------------------------------------------------------------------ rebalancing
@dataclass(frozen=True, slots=True)
class Candidate:
    """An organization a rebalance may move: active, not held by an operation, in a shared
    database or one to drain."""

    organization_id: str
    slug: str
    placement: Placement
    collection: str


@dataclass(frozen=True, slots=True)
class PlannedMove:
    organization_id: str
    slug: str
    source: Placement
    target: Placement
    documents: int  # the tenant collection's estimated count


@dataclass
class Plan:
    """The shared databases' tenants now (exact, from the records) and after the planned moves."""

    shared: tuple[Placement, ...]
    drained: tuple[Placement, ...]  # not in TENANT_DATABASES any more, still holding tenants
    stranded: tuple[Placement, ...]  # on a cluster no longer configured: cannot be reached
    now: dict[Placement, int]
    after: dict[Placement, int]
    moves: list[PlannedMove] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return sum(self.after[p] for p in self.shared) / len(self.shared)

    @property
    def balanced(self) -> bool:
        return all(abs(self.after[p] - self.mean) <= 1 for p in self.shared)


Sizes = Callable[[Sequence[Candidate]], Awaitable[list[int]]]


async def plan_moves(
    topology: Topology,
    now: Mapping[Placement, int],
    candidates: Mapping[Placement, Sequence[Candidate]],
    sizes: Sizes,
) -> Plan:
    """Greedy: first every movable organization out of the databases to drain, each to the
    emptiest shared database; then, from the fullest shared database to the emptiest, until
    every shared database is within 1 of the mean (or nothing movable is left where it would
    help). A database's organizations go smallest tenant collection first (`sizes`, asked once
    per database the plan takes from); the settings' order breaks ties. Dedicated databases
    (`orgdata_*`) take no part."""
    shared = topology.shared
    clusters = set(topology.clusters)
    others = [p for p, n in now.items() if p not in shared and not p.dedicated and n > 0]
    plan = Plan(
        shared=shared,
        drained=tuple(p for p in others if p.cluster in clusters),
        stranded=tuple(p for p in others if p.cluster not in clusters),
        now=dict(now),
        after={**{p: now.get(p, 0) for p in shared}, **{p: now[p] for p in others}},
    )
    queues: dict[Placement, deque[tuple[int, str, Candidate]]] = {}

    async def queue(source: Placement) -> deque[tuple[int, str, Candidate]]:
        if source not in queues:
            found = list(candidates.get(source, ()))
            counted = await sizes(found) if found else []
            queues[source] = deque(
                sorted(zip(counted, [c.slug for c in found], found, strict=True))
            )
        return queues[source]

    def emptiest() -> Placement:
        return min(shared, key=lambda p: plan.after[p])  # the first of the fewest

    def take(source: Placement, documents: int, org: Candidate) -> None:
        target = emptiest()
        plan.moves.append(PlannedMove(org.organization_id, org.slug, source, target, documents))
        plan.after[source] -= 1
        plan.after[target] += 1

    for source in plan.drained:
        waiting = await queue(source)
        while waiting:
            documents, _, org = waiting.popleft()
            take(source, documents, org)
    while not plan.balanced:
        target = emptiest()
        fullest = sorted(shared, key=lambda p: -plan.after[p])  # stable: settings' order
        for source in fullest:
            if plan.after[source] - plan.after[target] <= 1:
                return plan  # nothing left that a move would even out
            waiting = await queue(source)
            if waiting:
                documents, _, org = waiting.popleft()
                take(source, documents, org)
                break
        else:
            return plan
    return plan


async def _candidates(
    state: AppState, wanted: set[Placement], *, force: bool | None
) -> dict[Placement, list[Candidate]]:
    """The active organizations not held by an operation whose tenant collection is in one of
    `wanted`, read page by page (by slug)."""
    found: dict[Placement, list[Candidate]] = {}
    home = state.repos.tenants.home
    after: str | None = None
    with progress(None, desc="reading organizations", force=force) as bar:
        while True:
            page = await state.repos.orgs.list_active(limit=PAGE, after=after)
            for org in page:
                where = home(org.placement)
                if where in wanted and org.status == ACTIVE and org.pending_op is None:
                    found.setdefault(where, []).append(
                        Candidate(org.organization_id, org.slug, where, org.collection_name)
                    )
            bar.update(len(page))
            if len(page) < PAGE:
                return found
            after = page[-1].slug


def _sizes(state: AppState) -> Sizes:
    """The tenant collections' estimated counts (metadata: no document is read)."""

    async def sizes(orgs: Sequence[Candidate]) -> list[int]:
        count = state.repos.tenants.estimated_count
        return [await count(org.placement, org.collection) for org in orgs]

    return sizes


def _key(key: str) -> Placement:
    cluster, _, database = key.partition("/")
    return Placement(cluster=cluster, database=database)


def _table(plan: Plan, stored: dict[Placement, int], *, dry_run: bool) -> list[str]:
    """The human output: the databases (stored count, tenants now, after) and the moves."""
    rows: list[tuple[str, str, str, str]] = []
    notes = {p: "" for p in plan.shared}
    notes.update({p: " (drained)" for p in plan.drained})
    notes.update({p: " (cluster not configured)" for p in plan.stranded})
    for p in [*plan.shared, *plan.drained, *plan.stranded]:
        known = stored.get(p)
        rows.append(
            (p.key + notes[p], "-" if known is None else str(known), str(plan.now.get(p, 0)),
             str(plan.after[p]))
        )  # fmt: skip
    dedicated = [p for p in {*plan.now, *stored} if p.dedicated]
    if dedicated:
        rows.append(
            (f"dedicated ({len(dedicated)} database{'' if len(dedicated) == 1 else 's'}, "
             "never moved)",
             str(sum(stored.get(p, 0) for p in dedicated)),
             str(sum(plan.now.get(p, 0) for p in dedicated)),
             str(sum(plan.now.get(p, 0) for p in dedicated)))
        )  # fmt: skip
    out = _columns(("placement", "stored", "tenants now", "after"), rows, right=(1, 2, 3))
    fixes = [
        f"{p.key}: stored {stored.get(p, 0)}, counted {plan.now.get(p, 0)}"
        for p in sorted({*plan.now, *stored}, key=lambda p: p.key)
        if stored.get(p, 0) != plan.now.get(p, 0)
    ]
    verb = "would be set" if dry_run else "set"
    out.append("")
    if fixes:
        out.append(f"stored counts {verb} from the records: " + "; ".join(fixes))
    else:
        out.append("stored counts agree with the records")
    out.append(f"mean {plan.mean:.2f} tenants over {len(plan.shared)} shared databases")
    if not plan.balanced:
        out.append(
            "not every shared database can be brought within 1 of the mean: the organizations "
            "that would even them out are busy with another operation"
        )
    out.append("")
    if not plan.moves:
        out.append("no moves needed")
        return out
    out.append(f"{len(plan.moves)} moves planned (smallest tenant collections first):")
    out += _columns(
        ("organization_id", "slug", "from", "to", "documents"),
        [(m.organization_id, m.slug, m.source.key, m.target.key, str(m.documents))
         for m in plan.moves],
        right=(4,),
    )  # fmt: skip
    return out


def _columns(
    header: tuple[str, ...], rows: Sequence[tuple[str, ...]], *, right: tuple[int, ...]
) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(cells).rstrip()

    return [line(header), *(line(r) for r in rows)]


def _plan_json(plan: Plan, stored: dict[Placement, int], *, dry_run: bool) -> dict[str, Any]:
    keys = [*plan.shared, *plan.drained, *plan.stranded]
    return {
        "dry_run": dry_run,
        "placements": [
            {
                **_where(p),
                "shared": p in plan.shared,
                "drained": p in plan.drained,
                "stranded": p in plan.stranded,
                "stored": stored.get(p),
                "tenants": plan.now.get(p, 0),
                "after": plan.after[p],
            }
            for p in keys
        ],
        "dedicated": sum(n for p, n in plan.now.items() if p.dedicated),
        "recount": [
            {**_where(p), "stored": stored.get(p, 0), "counted": plan.now.get(p, 0)}
            for p in sorted({*plan.now, *stored}, key=lambda p: p.key)
            if stored.get(p, 0) != plan.now.get(p, 0)
        ],
        "mean": round(plan.mean, 4),
        "balanced": plan.balanced,
        "moves": [
            {
                "organization_id": m.organization_id,
                "slug": m.slug,
                "from": _where(m.source),
                "to": _where(m.target),
                "documents": m.documents,
            }
            for m in plan.moves
        ],
    }


REBALANCE_HELP = (
    "Even out the organizations over the shared tenant databases (TENANT_DATABASES).\n\n"
    "First the stored tenant counts, which choose where new organizations go, are set again "
    "from the organizations' records. Then moves are planned, greedily: every organization out "
    "of a database that is not in TENANT_DATABASES any more, then from the fullest shared "
    "database to the emptiest, until every shared database is within 1 of the mean. From a "
    "database, the organizations with the smallest tenant collections (estimated document "
    "counts) move first, so that the fewest documents are copied. Organizations in a database "
    "of their own (orgdata_*) never move in a rebalance, nor do ones busy with another "
    "operation.\n\n"
    "Prints a table (placement, stored count, tenants now, after) and the planned moves. With "
    "--dry-run that is all: nothing is written. Otherwise the moves run one after another, each "
    "followed as `tenants move` does, and the first that does not end `done` stops the "
    "rebalance (exit 1)."
)


@tenants_cli.command("rebalance", help=REBALANCE_HELP)
def rebalance(
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Recount and plan only: print the plan, write nothing."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="The plan as one JSON object, then each move's outcome as a line."
    ),
    show_progress: bool | None = ProgressOption,
) -> None:
    """`orgsvc tenants rebalance` (its help: REBALANCE_HELP)."""
    started = _Started()

    async def go(state: AppState) -> str | None:
        topology = state.repos.tenants.clusters.topology
        stored = {_key(k): n for k, n in (await state.repos.placements.counts()).items()}
        now = await state.repos.orgs.placement_counts()
        if not dry_run:
            await state.repos.placements.set_all(now)
        reachable = set(topology.clusters)
        wanted = {p for p, n in now.items() if n and not p.dedicated and p.cluster in reachable}
        wanted |= set(topology.shared)
        candidates = await _candidates(state, wanted, force=show_progress)
        plan = await plan_moves(topology, now, candidates, _sizes(state))
        if as_json:
            typer.echo(json.dumps(_plan_json(plan, stored, dry_run=dry_run), ensure_ascii=False))
        else:
            for line in _table(plan, stored, dry_run=dry_run):
                typer.echo(line)
        if dry_run:
            return None
        return await _carry_out(state, plan, started, as_json=as_json, force=show_progress)

    _fail(_run_moves(go, started))


async def _carry_out(
    state: AppState, plan: Plan, started: _Started, *, as_json: bool, force: bool | None
) -> str | None:
    """Run the planned moves one after another; the error line of the first that does not end
    `done` (None: all done)."""
    total = len(plan.moves)
    for i, planned in enumerate(plan.moves, 1):
        org = await state.repos.orgs.get(planned.organization_id)
        if org is None:
            return f"orgsvc: move {i}/{total}: {planned.slug} is gone ({i - 1} done)"
        typer.echo(
            f"move {i}/{total}: {planned.slug} {planned.source.key} -> {planned.target.key}",
            err=True,
        )
        try:
            record = await _start_and_follow(state, org, planned.target, started, force=force)
        except AppError as exc:
            detail = exc.detail if isinstance(exc.detail, str) else exc.code
            return f"orgsvc: move {i}/{total} of {planned.slug} refused: {detail} ({exc.code})"
        except MoveStopped as exc:
            return _stopped_line(exc)
        placement = await _final_placement(state, org.organization_id)
        outcome = _outcome(org, record, placement)
        if as_json:
            typer.echo(json.dumps(outcome, ensure_ascii=False))
        else:
            typer.echo(
                f"moved {org.slug}: {record.source.key} -> {record.target.key} "
                f"({record.copied} documents): {record.status}"
            )
        if record.status != "done":
            return (
                f"orgsvc: move {i}/{total} ({record.operation_id}) {record.status}: "
                f"{record.error}; rebalance stopped after {i - 1} of {total} moves"
            )
    return None
