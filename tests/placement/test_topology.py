"""The placement settings, parsed and checked (`app.tenancy.placement.Topology`), and the rule
that chooses where a new organization goes (`choose`). No store: the fast tier."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.tenancy.placement import Placement, Topology, TopologyError, choose
from tests.support.apps import make_settings
from tests.support.processes import ROOT


def topology(**values: str) -> Topology:
    return Topology.of(make_settings(mongodb_db="ctl", **values))


def test_the_default_is_v1s_layout() -> None:
    t = topology()
    assert t.clusters == ("main",)
    assert t.shared == (Placement(cluster="main", database="ctl"),)
    assert t.default == Placement(cluster="main", database="ctl")
    assert t.longest_database() == "ctl"  # the name limit of v1, unchanged
    assert t.allows(Placement(cluster="main", database="orgdata_abc"), "abc")  # its own database
    assert not t.allows(Placement(cluster="main", database="orgdata_abc"), "xyz")


def test_clusters_databases_and_plans() -> None:
    t = topology(
        tenant_clusters="eu=mongodb://eu:27017; us=mongodb://us:27017",
        tenant_databases="main=a,b;eu=c",
        dedicated_database_plans="enterprise, gold",
    )
    assert t.clusters == ("main", "eu", "us")
    assert [p.key for p in t.shared] == ["main/a", "main/b", "eu/c"]  # MONGODB_DB not added
    assert t.dedicated_plans == {"enterprise", "gold"}
    assert len(t.longest_database()) == len("orgdata_") + 24  # dedicated plans: their names
    assert not t.allows(Placement(cluster="us", database="c"), "abc")  # c is eu's
    assert not t.allows(Placement(cluster="asia", database="orgdata_abc"), "abc")
    assert not t.allows(Placement(cluster="main", database="ctl"), "abc")  # not listed


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ({"tenant_clusters": "bad"}, "expected `name=value;name=value`"),
        ({"tenant_clusters": "main=mongodb://x"}, "`main` is MONGODB_URL"),
        ({"tenant_clusters": "Eu=mongodb://x"}, "not a cluster name"),
        ({"tenant_clusters": "eu=mongodb://x;eu=mongodb://y"}, "given twice"),
        ({"tenant_databases": "nowhere=a"}, "no cluster named 'nowhere'"),
        ({"tenant_databases": "main=a.b"}, "not a database name"),
        ({"tenant_databases": "main=orgdata_x"}, "not a database name"),  # reserved
        ({"tenant_databases": "main=a,a"}, "names a database twice"),
    ],
)
def test_settings_that_cannot_be_used_are_refused(values: dict[str, str], why: str) -> None:
    with pytest.raises(TopologyError, match=why.replace("(", r"\(")):
        topology(**values)


def test_the_command_line_refuses_them_in_one_line() -> None:
    env = {"TENANT_DATABASES": "nowhere=a", "MONGODB_URL": "mongodb://127.0.0.1:1",
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    res = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--port", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2
    assert (
        res.stderr.strip()
        == "orgsvc: invalid settings: TENANT_DATABASES: no cluster named 'nowhere'"
    )


def test_new_organizations_go_where_there_are_fewest_tenants() -> None:
    t = topology(
        tenant_clusters="eu=mongodb://eu", tenant_databases="main=a,b;eu=c",
        dedicated_database_plans="enterprise",
    )  # fmt: skip
    up = frozenset({"main", "eu"})
    counts = {"main/a": 3, "main/b": 1, "eu/c": 1}
    assert choose(t, counts, plan="free", organization_id="x", reachable=up).key == "main/b"
    # eu holds fewer tenants in all: a dedicated database goes there
    assert choose(t, counts, plan="enterprise", organization_id="x", reachable=up) == Placement(
        cluster="eu", database="orgdata_x"
    )
    # a cluster known to be down is passed over while another can take the organization
    only_main = frozenset({"main"})
    assert choose(t, {"main/a": 3, "main/b": 4}, plan="free", organization_id="x",
                  reachable=only_main).key == "main/a"  # fmt: skip
    # nothing reachable: chosen as if all were (the create then answers 503 there)
    assert choose(t, counts, plan="free", organization_id="x", reachable=frozenset()).key in {
        "main/b", "eu/c"}  # fmt: skip
