"""Where each organization's tenant collection lives: a cluster and a database (contract v2,
section 6).

The deployment names its clusters (`TENANT_CLUSTERS`, `main` being `MONGODB_URL`), each cluster's
shared tenant databases (`TENANT_DATABASES`) and the plans whose organizations get a database of
their own (`DEDICATED_DATABASE_PLANS`, named `orgdata_<organization_id>`). The organization record
holds its `placement`; the tenant collection is reached only through it (`app.tenancy.collections`),
so a request never names a database or a collection: a move's target is checked against this
list (`Topology.allows`).

New organizations go where there are fewest tenants. The counts are kept in `placements` (one
small document per database, changed by the write that adds or removes a record there, so that a
second run of a step never counts twice); `recount` sets them from the records themselves
(`orgsvc tenants rebalance` does, and start-up when there are none yet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient, UpdateOne

from app.kit.settings import Settings
from app.kit.store import Collection, Database, Record

MAIN = "main"
DEDICATED_PREFIX = "orgdata_"
_CLUSTER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_DATABASE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,38}$")

Client = AsyncMongoClient[dict[str, Any]]


class Placement(Record):
    """`{cluster, database}`: where an organization's `collection_name` lives."""

    cluster: str
    database: str

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.database}"

    @property
    def dedicated(self) -> bool:
        return self.database.startswith(DEDICATED_PREFIX)


class TopologyError(ValueError):
    """A placement setting that cannot be used (the service refuses to start)."""


@dataclass(frozen=True)
class Topology:
    """The placement settings, parsed and checked."""

    control_db: str  # MONGODB_DB on `main`: the organizations' records
    urls: dict[str, str]  # the clusters other than `main`, by name
    shared: tuple[Placement, ...]  # every shared tenant database, in the settings' order
    dedicated_plans: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(cls, settings: Settings) -> Topology:
        urls = _pairs(settings.tenant_clusters.get_secret_value(), "TENANT_CLUSTERS")
        for name in urls:
            if not _CLUSTER_NAME.match(name):
                raise TopologyError(f"TENANT_CLUSTERS: {name!r} is not a cluster name")
        if MAIN in urls:
            raise TopologyError("TENANT_CLUSTERS: `main` is MONGODB_URL; name the others")
        clusters = [MAIN, *urls]
        databases = _pairs(settings.tenant_databases, "TENANT_DATABASES")
        shared: list[Placement] = []
        for cluster, names in databases.items():
            if cluster not in clusters:
                raise TopologyError(f"TENANT_DATABASES: no cluster named {cluster!r}")
            for name in (n.strip() for n in names.split(",")):
                if not _DATABASE_NAME.match(name) or name.startswith(DEDICATED_PREFIX):
                    raise TopologyError(f"TENANT_DATABASES: {name!r} is not a database name")
                shared.append(Placement(cluster=cluster, database=name))
        if MAIN not in databases:
            shared.insert(0, Placement(cluster=MAIN, database=settings.mongodb_db))
        if len({p.key for p in shared}) != len(shared):
            raise TopologyError("TENANT_DATABASES names a database twice")
        plans = frozenset(p.strip() for p in settings.dedicated_database_plans.split(","))
        return cls(settings.mongodb_db, urls, tuple(shared), plans - {""})

    @classmethod
    def single(cls, control_db: str) -> Topology:
        """The default: one cluster, every tenant in the control database (as in v1)."""
        return cls(control_db, {}, (Placement(cluster=MAIN, database=control_db),))

    @property
    def clusters(self) -> tuple[str, ...]:
        return (MAIN, *self.urls)

    @property
    def default(self) -> Placement:
        """Where v1 kept every tenant (and where a record without a placement has its own)."""
        return Placement(cluster=MAIN, database=self.control_db)

    def dedicated(self, cluster: str, organization_id: str) -> Placement:
        return Placement(cluster=cluster, database=f"{DEDICATED_PREFIX}{organization_id}")

    def longest_database(self) -> str:
        """The longest database name a new tenant may get, for the namespace length limit on
        names (a move into a longer one checks that the name fits: `fits`)."""
        names = [p.database for p in self.shared]
        if self.dedicated_plans:
            names.append(f"{DEDICATED_PREFIX}{'0' * 24}")
        return max(names, key=lambda n: len(n.encode()))

    def allows(self, target: Placement, organization_id: str) -> bool:
        """Whether an organization may be placed there: a configured shared database, or its
        own dedicated database on a configured cluster. Nothing else, whatever a request says."""
        if target in self.shared:
            return True
        return target.cluster in self.clusters and target == self.dedicated(
            target.cluster, organization_id
        )


def _pairs(text: str, setting: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in (i.strip() for i in text.split(";")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise TopologyError(f"{setting}: expected `name=value;name=value`")
        if name in found:
            raise TopologyError(f"{setting}: {name!r} is given twice")
        found[name] = value
    return found


class PlacementCounts:
    """How many tenants each database holds (`placements`: `{_id: "cluster/database",
    tenants}`), for choosing where a new organization goes. A hint, kept exact by the writes
    that add or remove a record and set again from the records by `recount`."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["placements"]

    async def counts(self) -> dict[str, int]:
        docs = await self.col.find({}, {"tenants": 1}).to_list(None)
        return {str(d["_id"]): int(d.get("tenants", 0)) for d in docs}

    async def add(self, placement: Placement, delta: int) -> None:
        await self.col.update_one(
            {"_id": placement.key},
            {"$inc": {"tenants": delta}, "$set": placement.model_dump()},
            upsert=True,
        )

    async def set_all(self, counts: dict[Placement, int]) -> None:
        ops = [
            UpdateOne({"_id": p.key}, {"$set": {**p.model_dump(), "tenants": n}}, upsert=True)
            for p, n in counts.items()
        ]
        await self.col.delete_many({"_id": {"$nin": [p.key for p in counts]}})
        if ops:
            await self.col.bulk_write(ops)


def choose(
    topology: Topology,
    counts: dict[str, int],
    *,
    plan: str,
    organization_id: str,
    reachable: frozenset[str],
) -> Placement:
    """Where a new organization goes: its own database on the cluster with fewest tenants when
    its plan is dedicated, else the shared database with fewest tenants (the settings' order
    breaks ties). A cluster the client cannot reach now is passed over while another can take
    the organization, so that one cluster down does not stop every create."""

    def tenants_on(cluster: str) -> int:
        return sum(n for key, n in counts.items() if key.startswith(f"{cluster}/"))

    up = [c for c in topology.clusters if c in reachable] or list(topology.clusters)
    if plan in topology.dedicated_plans:
        cluster = min(up, key=lambda c: (tenants_on(c), topology.clusters.index(c)))
        return topology.dedicated(cluster, organization_id)
    candidates = [p for p in topology.shared if p.cluster in up] or list(topology.shared)
    return min(candidates, key=lambda p: counts.get(p.key, 0))


class Clusters:
    """One client per cluster: `main` is the process's own; the others are made from
    `TENANT_CLUSTERS` when the state is built and closed with it."""

    def __init__(self, main: Client, topology: Topology, make: Any) -> None:
        self.topology = topology
        self.clients: dict[str, Client] = {MAIN: main}
        for name, url in topology.urls.items():
            self.clients[name] = make(url)

    def db(self, placement: Placement) -> Database:
        client = self.clients.get(placement.cluster)
        if client is None:
            raise TopologyError(f"no cluster named {placement.cluster!r} is configured")
        return client[placement.database]

    def reachable(self) -> frozenset[str]:
        """The clusters not known to be down: no I/O, the client's own view from its
        monitoring (down: it has tried every server it knows and can write to none)."""
        return frozenset(name for name, client in self.clients.items() if not _down(client))

    async def close(self) -> None:
        for name, client in self.clients.items():
            if name != MAIN:  # the process's own client is closed by its owner
                await client.close()


def _down(client: Client) -> bool:
    if not isinstance(client, AsyncMongoClient):  # the in-memory double of the tests
        return False
    description = client.topology_description
    if description.has_writable_server():
        return False
    servers = description.server_descriptions().values()
    return bool(servers) and all(server.error is not None for server in servers)
