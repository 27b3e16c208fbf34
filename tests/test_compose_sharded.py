"""docker-compose.yml's `sharded` profile, checked without a Docker engine (there is none here).

`problems()` reads the compose file and lists what is wrong with the profile: a config server
replica set, two shard replica sets and a mongos that all agree on names and hosts, a one-shot
init service whose settings name those same replica sets, the service pointed at mongos with
several tenant databases spread over both shards, start-up ordering that holds, and the default
stack (no profile) left exactly as it was. The mutation tests break the file one way at a time and
require `problems()` to say so, so the checker is known to catch what it claims to.

deploy/mongo-sharded-init.js itself is run under Node.js against a simulated cluster (the shell
functions it calls, answering as mongod and mongos do): it must initiate the three replica sets,
add both shards and place each database on its shard, change nothing on a second run, never move
an existing database, and fail with the reason when a member never answers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml  # type: ignore[import-untyped]  # PyYAML: no type information without types-PyYAML

from app.kit.settings import Settings
from app.tenancy.placement import Topology

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
INIT_SCRIPT = ROOT / "deploy" / "mongo-sharded-init.js"
PROFILE = "sharded"

# The default stack (`docker compose up`, no profile) as it was before the profile was added: its
# services and a digest of their parsed definitions. If a change to them is intended, put the
# digest the failure message shows here.
DEFAULT_SERVICES = frozenset({"mongo", "api", "nginx"})
DEFAULT_DIGEST = "11d048f045916ad229c855382c490be3b3acc3faa214a9cfc95ab3d2de185def"

# The service's own rule for database names (MONGODB_DB in app/kit/settings.py).
DATABASE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,38}$")
PINNED_MONGO_IMAGE = re.compile(r"^mongo:\d+\.\d+(\.\d+)?$")
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

Compose = dict[str, Any]
Service = dict[str, Any]


def load() -> Compose:
    compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(compose, dict)
    return compose


# --- reading the file --------------------------------------------------------------------------


def services_of(compose: Compose) -> dict[str, Service]:
    services = compose.get("services") or {}
    assert isinstance(services, dict)
    return services


def in_profile(service: Service) -> bool:
    return PROFILE in (service.get("profiles") or [])


def argv(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value]


def flag(args: list[str], name: str) -> str | None:
    """The value of `--name value` or `--name=value`."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1 :]
    return None


def environment(service: Service) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) for item in env)
        return {p[0]: (p[1] if len(p) > 1 else "") for p in pairs}
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def depends_on(service: Service) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def networks_of(service: Service) -> set[str]:
    nets = service.get("networks")
    if nets is None:
        return {"default"}
    return set(nets)


def replica_set(spec: str) -> tuple[str, list[str]]:
    """`name/host:port,host:port` -> (name, hosts)."""
    name, _, hosts = spec.partition("/")
    return name.strip(), [h.strip() for h in hosts.split(",") if h.strip()]


def assignment(spec: str) -> dict[str, list[str]]:
    """`key=a,b;key2=c` -> {key: [a, b], key2: [c]} (the format of TENANT_DATABASES)."""
    result: dict[str, list[str]] = {}
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        key, _, values = entry.partition("=")
        result.setdefault(key.strip(), []).extend(v.strip() for v in values.split(",") if v.strip())
    return result


def default_digest(compose: Compose) -> str:
    services = services_of(compose)
    default = {name: services.get(name) for name in sorted(DEFAULT_SERVICES)}
    canonical = json.dumps(default, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- the checks --------------------------------------------------------------------------------


class Roles:
    """The profile's services, found by what they run rather than by name."""

    def __init__(self, services: dict[str, Service]) -> None:
        self.profile = {n: s for n, s in services.items() if in_profile(s)}
        self.args = {n: argv(s.get("command")) for n, s in self.profile.items()}
        self.config = [n for n, a in self.args.items() if "--configsvr" in a]
        self.shards = [n for n, a in self.args.items() if "--shardsvr" in a]
        self.mongos = [n for n, a in self.args.items() if a[:1] == ["mongos"]]
        self.init = [
            n
            for n, s in self.profile.items()
            if "mongosh" in argv(s.get("entrypoint")) + self.args[n]
        ]
        self.app = [n for n, s in self.profile.items() if s.get("build")]

    def port(self, name: str) -> str:
        return flag(self.args[name], "--port") or "27017"

    def address(self, name: str) -> str:
        return f"{name}:{self.port(name)}"


def problems(compose: Compose) -> list[str]:
    found: list[str] = []
    services = services_of(compose)
    roles = Roles(services)
    found += check_default_stack(compose)
    found += check_replica_sets(roles)
    found += check_mongos(roles)
    found += check_init(roles)
    found += check_app(roles, services)
    found += check_wiring(compose)
    return found


def check_default_stack(compose: Compose) -> list[str]:
    found: list[str] = []
    services = services_of(compose)
    default = {n for n, s in services.items() if not s.get("profiles")}
    if default != DEFAULT_SERVICES:
        found.append(
            f"default stack (no profile) is {sorted(default)}, not {sorted(DEFAULT_SERVICES)}"
        )
    if not set(services) >= DEFAULT_SERVICES:
        return found
    digest = default_digest(compose)
    if digest != DEFAULT_DIGEST:
        found.append(f"default services changed (digest {digest}); if intended, pin the new digest")
    for name in DEFAULT_SERVICES:
        for target in depends_on(services[name]):
            if target in services and services[target].get("profiles"):
                found.append(f"default service {name} depends on {target}, which is in a profile")
    for name, service in services.items():
        if service.get("profiles") and service.get("profiles") != [PROFILE]:
            found.append(f"{name}: profiles {service.get('profiles')}, expected [{PROFILE}]")
    return found


def check_replica_sets(roles: Roles) -> list[str]:
    found: list[str] = []
    if len(roles.config) != 1:
        found.append(f"expected one config server service (--configsvr), found {roles.config}")
    if len(roles.shards) != 2:
        found.append(f"expected two shard services (--shardsvr), found {roles.shards}")
    names = []
    for name in roles.config + roles.shards:
        args = roles.args[name]
        rs = flag(args, "--replSet")
        if not rs:
            found.append(f"{name}: no --replSet")
        names.append(rs)
        if "--bind_ip_all" not in args:
            found.append(f"{name}: no --bind_ip_all (other containers could not reach it)")
        service = roles.profile[name]
        if not service.get("healthcheck"):
            found.append(f"{name}: no healthcheck")
        dbpath = flag(args, "--dbpath") or (
            "/data/configdb" if "--configsvr" in args else "/data/db"
        )
        targets = {str(v).split(":")[1] for v in service.get("volumes") or [] if ":" in str(v)}
        if dbpath not in targets:
            found.append(f"{name}: no volume at its dbpath {dbpath}")
    if len(set(names)) != len(names):
        found.append(f"replica set names are not distinct: {names}")
    images = {roles.profile[n].get("image") for n in roles.config + roles.shards + roles.mongos}
    if len(images) != 1 or not all(PINNED_MONGO_IMAGE.match(str(i)) for i in images):
        found.append(f"mongod and mongos must share one pinned mongo:X.Y image, have {images}")
    return found


def check_mongos(roles: Roles) -> list[str]:
    found: list[str] = []
    if len(roles.mongos) != 1:
        return [f"expected one mongos service, found {roles.mongos}"]
    if len(roles.config) != 1:
        return found
    mongos, config = roles.mongos[0], roles.config[0]
    args = roles.args[mongos]
    configdb = flag(args, "--configdb") or ""
    want = (flag(roles.args[config], "--replSet"), [roles.address(config)])
    if replica_set(configdb) != want:
        found.append(f"{mongos}: --configdb {configdb!r}, expected {want[0]}/{want[1][0]}")
    if "--bind_ip_all" not in args:
        found.append(f"{mongos}: no --bind_ip_all (the service could not reach it)")
    if not roles.profile[mongos].get("healthcheck"):
        found.append(f"{mongos}: no healthcheck")
    return found


def check_init(roles: Roles) -> list[str]:
    if len(roles.init) != 1:
        return [f"expected one init service running mongosh, found {roles.init}"]
    found: list[str] = []
    name = roles.init[0]
    service = roles.profile[name]
    env = environment(service)
    command = argv(service.get("entrypoint")) + roles.args[name]
    scripts = [a for a in command if a.endswith(".js")]
    mounts = {
        str(v).split(":")[1]: str(v).split(":")[0]
        for v in service.get("volumes") or []
        if ":" in str(v)
    }
    if len(scripts) != 1 or mounts.get(scripts[0]) != "./deploy/mongo-sharded-init.js":
        found.append(
            f"{name}: does not run ./deploy/mongo-sharded-init.js (runs {scripts}, mounts {mounts})"
        )
    if not INIT_SCRIPT.is_file():
        found.append(f"{INIT_SCRIPT.relative_to(ROOT)} is missing")
    if service.get("restart", "no") != "no":
        found.append(
            f"{name}: restart {service.get('restart')!r}; a one-shot job needs restart 'no'"
        )
    for config in roles.config:
        want = f"{flag(roles.args[config], '--replSet')}/{roles.address(config)}"
        if env.get("CONFIG_REPLSET") != want:
            found.append(f"{name}: CONFIG_REPLSET {env.get('CONFIG_REPLSET')!r}, expected {want!r}")
    listed = [replica_set(s) for s in env.get("SHARD_REPLSETS", "").split(";") if s.strip()]
    expected = [(flag(roles.args[s], "--replSet"), [roles.address(s)]) for s in roles.shards]
    if sorted(map(str, listed)) != sorted(map(str, expected)):
        found.append(f"{name}: SHARD_REPLSETS lists {listed}, the shard services are {expected}")
    if roles.mongos and env.get("MONGOS") != roles.address(roles.mongos[0]):
        found.append(
            f"{name}: MONGOS {env.get('MONGOS')!r}, expected {roles.address(roles.mongos[0])!r}"
        )
    deps = depends_on(service)
    for target in roles.config + roles.shards:
        if deps.get(target) != "service_healthy":
            found.append(f"{name}: does not wait for {target} to be healthy")
    for target in roles.mongos:
        if target not in deps:
            found.append(f"{name}: does not wait for {target} to start")
    for target in roles.config + roles.shards + roles.mongos:
        if not networks_of(service) & networks_of(roles.profile[target]):
            found.append(f"{name}: shares no network with {target}")
    return found


def check_app(roles: Roles, services: dict[str, Service]) -> list[str]:
    if len(roles.app) != 1:
        return [f"expected one service built in the profile, found {roles.app}"]
    found: list[str] = []
    name = roles.app[0]
    service = roles.profile[name]
    env = environment(service)
    if "api" in services and service.get("build") != services["api"].get("build"):
        found.append(f"{name}: not built like api ({service.get('build')})")
    url = urlsplit(env.get("MONGODB_URL", ""))
    mongos = {roles.address(m) for m in roles.mongos}
    if url.scheme != "mongodb" or f"{url.hostname}:{url.port or 27017}" not in mongos:
        found.append(
            f"{name}: MONGODB_URL {env.get('MONGODB_URL')!r} does not point at mongos {mongos}"
        )
    if "replicaSet" in parse_qs(url.query):
        found.append(f"{name}: MONGODB_URL names a replicaSet; mongos is not one")
    for m in roles.mongos:
        if not networks_of(service) & networks_of(roles.profile[m]):
            found.append(f"{name}: shares no network with {m}")
    control = env.get("MONGODB_DB", "")
    if not DATABASE_NAME.match(control):
        found.append(f"{name}: MONGODB_DB {control!r} is not set to a valid name")
    if env.get("TENANT_CLUSTERS", "").strip():
        found.append(f"{name}: TENANT_CLUSTERS set; here there is one cluster, main = MONGODB_URL")
    tenants = assignment(env.get("TENANT_DATABASES", ""))
    databases = tenants.get("main", [])
    if set(tenants) != {"main"} or len(databases) < 2 * max(1, len(roles.shards)):
        found.append(
            f"{name}: TENANT_DATABASES {tenants} is not several databases on main "
            "(two per shard at least)"
        )
    if len(set(databases)) != len(databases) or control in databases:
        found.append(f"{name}: TENANT_DATABASES repeats a database or the control database")
    for db in databases:
        if not DATABASE_NAME.match(db) or db.startswith("orgdata_"):
            found.append(f"{name}: tenant database name {db!r} is not usable")
    if not [p for p in env.get("DEDICATED_DATABASE_PLANS", "").split(",") if p.strip()]:
        found.append(f"{name}: DEDICATED_DATABASE_PLANS is empty")
    deps = depends_on(service)
    for init in roles.init:
        if deps.get(init) != "service_completed_successfully":
            found.append(f"{name}: does not wait for {init} to complete successfully")
        placed = assignment(environment(roles.profile[init]).get("PRIMARY_SHARDS", ""))
        where = {db: shard for shard, dbs in placed.items() for db in dbs}
        listed_once = sum(map(len, placed.values())) == len(where)
        if sorted(where) != sorted([control, *databases]) or not listed_once:
            found.append(
                f"{init}: PRIMARY_SHARDS {placed} does not place MONGODB_DB and each tenant "
                "database once"
            )
        shard_names = {flag(roles.args[s], "--replSet") or "" for s in roles.shards}
        used = {where[db] for db in databases if db in where}
        if used != shard_names:
            found.append(
                f"{init}: tenant databases are on {sorted(used)}, "
                f"not on every shard {sorted(shard_names)}"
            )
    for m in roles.mongos:
        if deps.get(m) != "service_healthy":
            found.append(f"{name}: does not wait for {m} to be healthy")
    ports = [str(p) for p in service.get("ports") or []]
    if not ports or not all(p.startswith("127.0.0.1:") for p in ports):
        found.append(f"{name}: ports {ports}: publish on the loopback only")
    if env.get("TRUSTED_PROXIES", None) != "":
        found.append(f"{name}: TRUSTED_PROXIES must be fixed empty (no proxy in front of it)")
    return found


def check_wiring(compose: Compose) -> list[str]:
    found: list[str] = []
    services = services_of(compose)
    declared_networks = set(compose.get("networks") or {}) | {"default"}
    declared_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        for target, condition in depends_on(service).items():
            if target not in services:
                found.append(f"{name}: depends on {target}, which does not exist")
                continue
            if condition not in CONDITIONS:
                found.append(f"{name}: unknown depends_on condition {condition!r}")
            built = services[target].get("build")  # the image's own HEALTHCHECK
            if condition == "service_healthy" and not (
                services[target].get("healthcheck") or built
            ):
                found.append(f"{name}: waits for {target} to be healthy, which has no healthcheck")
            if in_profile(service) and not in_profile(services[target]):
                found.append(f"{name}: depends on {target}, outside the {PROFILE} profile")
        for net in networks_of(service) - declared_networks:
            found.append(f"{name}: network {net} is not declared")
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")) and source not in declared_volumes:
                found.append(f"{name}: volume {source} is not declared")
    # no cycles
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2 or node not in services:
            return
        if state.get(node) == 1:
            found.append(f"depends_on cycle: {' -> '.join([*path, node])}")
            return
        state[node] = 1
        for target in depends_on(services[node]):
            visit(target, [*path, node])
        state[node] = 2

    for name in services:
        visit(name, [])
    host_ports = [  # "8080:80" and "127.0.0.1:8080:80" both take the host's port 8080
        str(p).split(":")[-2]
        for s in services.values()
        for p in s.get("ports") or []
        if ":" in str(p)
    ]
    if len(set(host_ports)) != len(host_ports):
        found.append(f"a host port is published twice: {host_ports}")
    return found


# --- the tests ---------------------------------------------------------------------------------


def test_the_compose_file_has_no_problems() -> None:
    assert problems(load()) == []


def test_the_profile_is_what_the_issue_asks_for() -> None:
    """The same, said plainly: the names a reader of docs/sharded-deployment.md will look for."""
    services = services_of(load())
    roles = Roles(services)
    assert roles.config == ["mongo-cfg"] and roles.mongos == ["mongos"]
    assert sorted(roles.shards) == ["mongo-shard1", "mongo-shard2"]
    assert roles.init == ["mongo-sharded-init"] and roles.app == ["orgsvc-sharded"]
    env = environment(services["orgsvc-sharded"])
    assert env["MONGODB_URL"] == "mongodb://mongos:27017/"
    assert env["TENANT_DATABASES"] == "main=tenants_a,tenants_b,tenants_c,tenants_d"
    init = environment(services["mongo-sharded-init"])
    assert assignment(init["PRIMARY_SHARDS"]) == {
        "shard1": ["org_service", "tenants_a", "tenants_b"],
        "shard2": ["tenants_c", "tenants_d"],
    }
    script = INIT_SCRIPT.read_text(encoding="utf-8")
    for needed in ("replSetInitiate", "configsvr", "addShard", "enableSharding", "primaryShard"):
        assert needed in script
    for setting in ("CONFIG_REPLSET", "SHARD_REPLSETS", "MONGOS", "PRIMARY_SHARDS"):
        assert f'setting("{setting}")' in script


def test_the_service_reads_the_profiles_placement_settings_as_meant() -> None:
    """orgsvc-sharded's settings through the service's own parser: one cluster (mongos), the four
    shared tenant databases, the control database apart, one dedicated plan."""
    env = environment(services_of(load())["orgsvc-sharded"])
    settings = Settings(
        _env_file=None,
        mongodb_url=env["MONGODB_URL"],
        mongodb_db=env["MONGODB_DB"],
        tenant_databases=env["TENANT_DATABASES"],
        dedicated_database_plans=env["DEDICATED_DATABASE_PLANS"],
        jwt_secret="test-secret-that-is-long-enough-for-hs256-0123456789",
    )
    topology = Topology.of(settings)
    assert topology.clusters == ("main",)
    assert [p.database for p in topology.shared] == [
        "tenants_a",
        "tenants_b",
        "tenants_c",
        "tenants_d",
    ]
    assert {p.cluster for p in topology.shared} == {"main"}
    assert topology.control_db == "org_service"
    assert topology.control_db not in [p.database for p in topology.shared]
    assert topology.dedicated_plans == {"enterprise"}


def _set_env(name: str, key: str, value: str | None) -> Callable[[Compose], None]:
    def mutate(c: Compose) -> None:
        env = c["services"][name].setdefault("environment", {})
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value

    return mutate


def _set(path: str, value: Any) -> Callable[[Compose], None]:
    def mutate(c: Compose) -> None:
        *parents, last = path.split(".")
        node = c
        for key in parents:
            node = node[key]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value

    return mutate


def _replace_arg(name: str, old: str, new: str) -> Callable[[Compose], None]:
    def mutate(c: Compose) -> None:
        c["services"][name]["command"] = [
            new if a == old else a for a in c["services"][name]["command"]
        ]

    return mutate


MUTATIONS: list[tuple[str, Callable[[Compose], None], str]] = [
    ("mongos out of the profile", _set("services.mongos.profiles", None), "default stack"),
    ("a default service edited", _set_env("api", "PORT", "9000"), "default services changed"),
    (
        "a default service depends on the profile",
        _set("services.nginx.depends_on.mongos", {"condition": "service_started"}),
        "in a profile",
    ),
    ("no config server", _replace_arg("mongo-cfg", "--configsvr", "--shardsvr"), "config server"),
    ("one shard only", _replace_arg("mongo-shard2", "--shardsvr", "--nojournal"), "two shard"),
    ("two sets with one name", _replace_arg("mongo-shard2", "shard2", "shard1"), "not distinct"),
    (
        "mongos on the wrong set",
        _replace_arg("mongos", "cfg/mongo-cfg:27017", "rs/mongo-cfg:27017"),
        "--configdb",
    ),
    ("an unpinned image", _set("services.mongos.image", "mongo:latest"), "pinned"),
    ("mixed versions", _set("services.mongo-shard1.image", "mongo:8.0"), "pinned"),
    ("a shard without its volume", _set("services.mongo-shard1.volumes", None), "dbpath"),
    (
        "init adds one shard",
        _set_env("mongo-sharded-init", "SHARD_REPLSETS", "shard1/mongo-shard1:27017"),
        "SHARD_REPLSETS",
    ),
    ("init restarts", _set("services.mongo-sharded-init.restart", "unless-stopped"), "restart"),
    (
        "init runs another script",
        _set(
            "services.mongo-sharded-init.volumes",
            ["./deploy/other.js:/deploy/mongo-sharded-init.js:ro"],
        ),
        "mongo-sharded-init.js",
    ),
    (
        "init does not wait for a shard",
        _set("services.mongo-sharded-init.depends_on.mongo-shard2", None),
        "healthy",
    ),
    (
        "service on a shard, not mongos",
        _set_env(
            "orgsvc-sharded", "MONGODB_URL", "mongodb://mongo-shard1:27017/?replicaSet=shard1"
        ),
        "does not point at mongos",
    ),
    (
        "one tenant database",
        _set_env("orgsvc-sharded", "TENANT_DATABASES", "main=tenants_a"),
        "several databases",
    ),
    (
        "a tenant database not placed",
        _set_env(
            "mongo-sharded-init",
            "PRIMARY_SHARDS",
            "shard1=org_service,tenants_a,tenants_b;shard2=tenants_c",
        ),
        "PRIMARY_SHARDS",
    ),
    (
        "every tenant on one shard",
        _set_env(
            "mongo-sharded-init",
            "PRIMARY_SHARDS",
            "shard1=org_service,tenants_a,tenants_b,tenants_c,tenants_d",
        ),
        "not on every shard",
    ),
    (
        "service starts before init is done",
        _set(
            "services.orgsvc-sharded.depends_on.mongo-sharded-init",
            {"condition": "service_started"},
        ),
        "complete successfully",
    ),
    (
        "depends on a service that does not exist",
        _set("services.orgsvc-sharded.depends_on.mongo-router", {"condition": "service_healthy"}),
        "does not exist",
    ),
    (
        "service cut off from mongos",
        _set("services.orgsvc-sharded.networks", ["sharded-edge"]),
        "no network",
    ),
    ("an undeclared network", _set("services.mongos.networks", ["nowhere"]), "not declared"),
    (
        "nginx's host port taken",
        _set("services.orgsvc-sharded.ports", ["127.0.0.1:8080:8000"]),
        "published twice",
    ),
    (
        "published on every interface",
        _set("services.orgsvc-sharded.ports", ["8081:8000"]),
        "loopback",
    ),
    ("trusts a proxy", _set_env("orgsvc-sharded", "TRUSTED_PROXIES", None), "TRUSTED_PROXIES"),
    (
        "a dependency cycle",
        _set("services.mongo-cfg.depends_on", {"mongos": {"condition": "service_started"}}),
        "cycle",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [(m, e) for _, m, e in MUTATIONS], ids=[d for d, _, _ in MUTATIONS]
)
def test_a_broken_profile_is_caught(mutate: Callable[[Compose], None], expected: str) -> None:
    compose = copy.deepcopy(load())
    mutate(compose)
    found = problems(compose)
    assert any(expected in p for p in found), found


# --- deploy/mongo-sharded-init.js under Node.js, against a simulated cluster -------------------

# The shell functions the script uses (Mongo, print, sleep, quit, Date.now), answering as mongod
# and mongos do: a member before replSetInitiate refuses replSetGetStatus with 94
# NotYetInitialized, a second replSetInitiate with 23 AlreadyInitialized; the driver throws on
# ok: 0 with the server's code, and throws without a numeric code on a network error; mongos
# cannot list shards before its config server replica set has a primary; addShard refuses a set
# whose name or role does not match; enableSharding refuses a database already on another shard.
HARNESS = r"""
const fs = require("fs"), vm = require("vm");
const state = JSON.parse(process.env.FAKE_STATE);
const ops = [], lines = [];
let clock = 1.7e12;
Date.now = () => clock;
function serverError(code, codeName, message) {
  const e = new Error(message); e.code = code; e.codeName = codeName; return e;
}
function report(code) {
  process.stdout.write("@@RESULT@@" + JSON.stringify({ code, ops, lines, state }) + "\n");
  process.exit(code);
}
globalThis.print = (line) => lines.push(String(line));
globalThis.sleep = (ms) => { clock += ms; };
globalThis.quit = (code) => report(code === undefined ? 0 : code);
function mongodCommand(host, node, cmd) {
  if ("ping" in cmd) return { ok: 1 };
  if ("hello" in cmd) {
    if (!node.initiated) return { ok: 1, isWritablePrimary: false };
    const elected = node.election <= 0;
    if (!elected) node.election -= 1;
    const primary = elected ? host : undefined;
    return { ok: 1, setName: node.replSet, isWritablePrimary: elected, primary };
  }
  if ("replSetGetStatus" in cmd) {
    if (!node.initiated) {
      throw serverError(94, "NotYetInitialized", "no replset config has been received");
    }
    return { ok: 1, set: node.replSet };
  }
  if ("replSetInitiate" in cmd) {
    if (node.initiated) throw serverError(23, "AlreadyInitialized", "already initialized");
    const config = cmd.replSetInitiate;
    const roleOk = (node.role === "configsvr") === (config.configsvr === true);
    if (config._id !== node.replSet || !roleOk || config.members[0].host !== host) {
      throw serverError(93, "InvalidReplicaSetConfig", "config does not match this node");
    }
    node.initiated = true; node.election = 2;
    ops.push({ op: "replSetInitiate", host, config });
    return { ok: 1 };
  }
  throw serverError(59, "CommandNotFound", "no such command: " + Object.keys(cmd)[0]);
}
function configPrimary() {
  const nodes = Object.values(state.nodes);
  return nodes.some((n) => n.role === "configsvr" && n.initiated && n.election <= 0);
}
function mongosCommand(cmd) {
  if ("ping" in cmd) return { ok: 1 };
  if (!configPrimary()) {
    throw serverError(133, "FailedToSatisfyReadPreference", "no primary for set cfg");
  }
  if ("listShards" in cmd) {
    return { ok: 1, shards: state.shards.map((s) => ({ _id: s._id, host: s.host })) };
  }
  if ("addShard" in cmd) {
    const [setName, hosts] = cmd.addShard.split("/");
    const node = state.nodes[hosts.split(",")[0]];
    const fits = node && node.initiated && node.replSet === setName && node.role === "shardsvr";
    if (!fits || cmd.name !== setName) {
      throw serverError(96, "OperationFailed", "cannot add shard " + cmd.addShard);
    }
    if (!state.shards.some((s) => s._id === cmd.name)) {
      state.shards.push({ _id: cmd.name, host: cmd.addShard });
    }
    ops.push({ op: "addShard", shard: cmd.addShard, name: cmd.name });
    return { ok: 1, shardAdded: cmd.name };
  }
  if ("enableSharding" in cmd) {
    if (!state.shards.some((s) => s._id === cmd.primaryShard)) {
      throw serverError(70, "ShardNotFound", "no shard " + cmd.primaryShard);
    }
    const current = state.databases[cmd.enableSharding];
    if (current && current !== cmd.primaryShard) {
      throw serverError(96, "OperationFailed", "already on another shard");
    }
    state.databases[cmd.enableSharding] = cmd.primaryShard;
    ops.push({ op: "enableSharding", db: cmd.enableSharding, primaryShard: cmd.primaryShard });
    return { ok: 1 };
  }
  throw serverError(59, "CommandNotFound", "no such command: " + Object.keys(cmd)[0]);
}
globalThis.Mongo = function (uri) {
  const host = /^mongodb:\/\/([^/?]+)/.exec(uri)[1];
  const node = state.nodes[host];
  const refuse = !node || node.down === "forever" || node.down > 0;
  if (refuse && node && node.down !== "forever") node.down -= 1;
  if (refuse) throw new Error("connect ECONNREFUSED " + host);
  this.getDB = (name) => ({
    runCommand: (cmd) => {
      if (name !== "admin") throw serverError(13, "Unauthorized", "admin commands only on admin");
      return node.role === "mongos" ? mongosCommand(cmd) : mongodCommand(host, node, cmd);
    },
    getCollection: (coll) => ({
      findOne: (query) => {
        if (node.role !== "mongos" || name !== "config" || coll !== "databases") {
          throw new Error("unexpected read");
        }
        const primary = state.databases[query._id];
        return primary ? { _id: query._id, primary } : null;
      },
    }),
  });
};
const path = process.env.INIT_SCRIPT;
vm.runInThisContext(fs.readFileSync(path, "utf8"), { filename: path });
report(0);
"""

needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


def fresh_cluster(init_env: dict[str, str], down: int = 3) -> dict[str, Any]:
    """The containers of the profile just started: nothing initiated, each refusing a few
    connections first."""
    nodes: dict[str, Any] = {}
    config_name, config_hosts = replica_set(init_env["CONFIG_REPLSET"])
    nodes[config_hosts[0]] = {
        "role": "configsvr",
        "replSet": config_name,
        "initiated": False,
        "down": down,
    }
    for spec in init_env["SHARD_REPLSETS"].split(";"):
        name, hosts = replica_set(spec)
        nodes[hosts[0]] = {"role": "shardsvr", "replSet": name, "initiated": False, "down": down}
    nodes[init_env["MONGOS"]] = {"role": "mongos", "down": down}
    return {"nodes": nodes, "shards": [], "databases": {}}


def run_init(init_env: dict[str, str], cluster: dict[str, Any]) -> dict[str, Any]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        **init_env,
        "FAKE_STATE": json.dumps(cluster),
        "INIT_SCRIPT": str(INIT_SCRIPT),
    }
    res = subprocess.run(
        ["node", "-e", HARNESS], env=env, capture_output=True, text=True, timeout=30
    )
    results = [x for x in res.stdout.splitlines() if x.startswith("@@RESULT@@")]
    assert len(results) == 1, (res.stdout, res.stderr)
    result: dict[str, Any] = json.loads(results[0].removeprefix("@@RESULT@@"))
    assert result["code"] == res.returncode
    return result


def init_environment() -> dict[str, str]:
    return environment(services_of(load())["mongo-sharded-init"])


@pytest.mark.realstore  # starts Node.js processes
@needs_node
def test_the_init_script_builds_the_cluster_and_a_second_run_changes_nothing() -> None:
    init_env = init_environment()
    first = run_init(init_env, fresh_cluster(init_env))
    assert first["code"] == 0, first["lines"]
    initiated = {
        op["config"]["_id"]: op["config"] for op in first["ops"] if op["op"] == "replSetInitiate"
    }
    assert set(initiated) == {"cfg", "shard1", "shard2"}
    assert initiated["cfg"].get("configsvr") is True
    assert "configsvr" not in initiated["shard1"] and "configsvr" not in initiated["shard2"]
    assert initiated["shard2"]["members"] == [{"_id": 0, "host": "mongo-shard2:27017"}]
    added = [(op["name"], op["shard"]) for op in first["ops"] if op["op"] == "addShard"]
    assert added == [
        ("shard1", "shard1/mongo-shard1:27017"),
        ("shard2", "shard2/mongo-shard2:27017"),
    ]
    placed = assignment(init_env["PRIMARY_SHARDS"])
    assert first["state"]["databases"] == {db: shard for shard, dbs in placed.items() for db in dbs}

    second = run_init(init_env, first["state"])
    assert second["code"] == 0, second["lines"]
    assert second["ops"] == []
    assert second["state"] == first["state"]


@pytest.mark.realstore  # starts Node.js processes
@needs_node
def test_the_init_script_never_moves_an_existing_database() -> None:
    init_env = init_environment()
    built = run_init(init_env, fresh_cluster(init_env, down=0))["state"]
    built["databases"]["tenants_c"] = "shard1"  # say, created before the init job placed it
    again = run_init(init_env, built)
    assert again["code"] == 0 and again["ops"] == []
    assert again["state"]["databases"]["tenants_c"] == "shard1"
    assert any("tenants_c" in x and "movePrimary" in x for x in again["lines"]), again["lines"]


@pytest.mark.realstore  # starts Node.js processes
@needs_node
def test_the_init_script_fails_with_the_reason_when_a_member_never_answers() -> None:
    init_env = {**init_environment(), "INIT_TIMEOUT_SECONDS": "30"}
    cluster = fresh_cluster(init_env, down=0)
    cluster["nodes"]["mongo-shard2:27017"]["down"] = "forever"
    result = run_init(init_env, cluster)
    assert result["code"] == 1
    assert "mongo-shard2:27017" in result["lines"][-1] and "FAILED" in result["lines"][-1]
    assert not [op for op in result["ops"] if op["op"] == "addShard"]
