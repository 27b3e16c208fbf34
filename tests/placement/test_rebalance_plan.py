"""The rebalance planner (`orgsvc tenants rebalance`), in process: which organizations move where,
in which order, and what the table and JSON say. The subprocess tests in test_tenants_cli.py
run the same plans against real stores; these pin the greedy rules case by case."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from app.cli.tenants import Candidate, Plan, _plan_json, _table, plan_moves
from app.tenancy.placement import MAIN, Placement, Topology

A = Placement(cluster=MAIN, database="t_a")
B = Placement(cluster=MAIN, database="t_b")
C = Placement(cluster="eu", database="t_c")
OLD = Placement(cluster=MAIN, database="t_old")  # no longer in TENANT_DATABASES
GONE = Placement(cluster="us", database="t_us")  # its cluster is no longer configured
DEDICATED = Placement(cluster=MAIN, database="orgdata_0123456789abcdef01234567")
TOPOLOGY = Topology("control", {"eu": "mongodb://127.0.0.1:1"}, (A, B, C))


def orgs(where: Placement, *sizes: int) -> list[Candidate]:
    """Candidates in `where`, one per size (the slug names the size, for the sizes callback)."""
    return [
        Candidate(f"{where.database}-{i}", f"{where.database}-{i}-{size}", where, f"org_{i}")
        for i, size in enumerate(sizes)
    ]


class Sizes:
    """The estimated counts, from the slugs; records which databases were asked."""

    def __init__(self) -> None:
        self.asked: list[Placement] = []

    async def __call__(self, found: Sequence[Candidate]) -> list[int]:
        self.asked.append(found[0].placement)
        return [int(c.slug.rsplit("-", 1)[1]) for c in found]


async def plan(
    now: Mapping[Placement, int], candidates: Mapping[Placement, list[Candidate]]
) -> tuple[Plan, Sizes]:
    sizes = Sizes()
    return await plan_moves(TOPOLOGY, now, candidates, sizes), sizes


async def test_balanced_databases_plan_nothing_and_read_no_sizes() -> None:
    now = {A: 3, B: 2, C: 3, DEDICATED: 1}
    found, sizes = await plan(now, {A: orgs(A, 1, 2, 3), B: orgs(B, 1, 2), C: orgs(C, 1, 2, 3)})
    assert found.moves == [] and found.balanced
    assert found.after == {A: 3, B: 2, C: 3}
    assert sizes.asked == []
    assert "no moves needed" in _table(found, dict(now), dry_run=True)


async def test_the_fullest_gives_its_smallest_tenants_to_the_emptiest() -> None:
    now = {A: 7, B: 1, C: 1}
    found, sizes = await plan(now, {A: orgs(A, 500, 20, 9000, 20, 3, 70, 1)})
    moved = [(m.slug, m.target) for m in found.moves]
    # Smallest first (ties by slug), each to the emptiest (the settings' order breaks ties).
    assert moved == [("t_a-6-1", B), ("t_a-4-3", C), ("t_a-1-20", B)]
    assert [m.documents for m in found.moves] == [1, 3, 20]
    # Within 1 of the mean (3) is balanced: a fourth move would copy documents for nothing.
    assert found.after == {A: 4, B: 3, C: 2} and found.balanced
    assert sizes.asked == [A]  # asked once, for the one database it takes from


async def test_databases_to_drain_are_emptied_first() -> None:
    now = {A: 1, B: 1, C: 2, OLD: 3}
    found, _ = await plan(now, {OLD: orgs(OLD, 5, 6, 7), C: orgs(C, 1, 1)})
    assert found.drained == (OLD,) and found.stranded == ()
    assert [(m.source, m.target) for m in found.moves] == [(OLD, A), (OLD, B), (OLD, A)]
    assert found.after == {A: 3, B: 2, C: 2, OLD: 0}
    rows = _plan_json(found, {A: 1, B: 1, C: 2, OLD: 3}, dry_run=True)
    assert [p["drained"] for p in rows["placements"]] == [False, False, False, True]
    assert rows["balanced"] is True and len(rows["moves"]) == 3


async def test_a_database_on_an_unconfigured_cluster_is_stranded_not_moved() -> None:
    now = {A: 0, B: 0, C: 0, GONE: 2}
    found, sizes = await plan(now, {GONE: orgs(GONE, 1, 2)})
    assert found.stranded == (GONE,) and found.drained == ()
    assert found.moves == [] and sizes.asked == []
    table = _table(found, {}, dry_run=True)
    assert any(line.startswith("us/t_us (cluster not configured)") for line in table), table


async def test_busy_organizations_leave_the_plan_unbalanced_and_it_says_so() -> None:
    # 6 tenants in A but only one is movable (the others hold an operation): one move, then stop.
    now = {A: 6, B: 0, C: 0}
    found, _ = await plan(now, {A: orgs(A, 10)})
    assert [(m.source, m.target) for m in found.moves] == [(A, B)]
    assert found.after == {A: 5, B: 1, C: 0} and not found.balanced
    table = _table(found, dict(now), dry_run=False)
    assert any("busy with another operation" in line for line in table), table


async def test_dedicated_databases_take_no_part_and_the_recount_is_reported() -> None:
    now = {A: 2, B: 0, C: 0, DEDICATED: 4}
    stored = {A: 5, B: 0, C: 0, DEDICATED: 4}  # the stored count of A is off by 3
    found, _ = await plan(now, {A: orgs(A, 1, 2)})
    assert DEDICATED not in found.after
    assert all(DEDICATED not in (m.source, m.target) for m in found.moves)
    assert found.after == {A: 1, B: 1, C: 0}
    rows = _plan_json(found, stored, dry_run=True)
    assert rows["dedicated"] == 4
    assert rows["recount"] == [{"cluster": MAIN, "database": "t_a", "stored": 5, "counted": 2}]
    table = _table(found, stored, dry_run=True)
    assert "stored counts would be set from the records: main/t_a: stored 5, counted 2" in table
    assert any(line.startswith("dedicated (1 database, never moved)") for line in table), table
