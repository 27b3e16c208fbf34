"""Two nx-27017 processes standing in for two clusters (`main` and `eu`), for a module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.kit.db import EmbeddedMongo, free_port
from tests.support.processes import stop_process
from tests.support.stores import start_nx


@pytest.fixture(scope="module")
def clusters(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedMongo, ...]]:
    """`(main, eu)`: one store process per cluster (databases of one process are not the unit
    of failure: a cluster is), stopped after the module."""
    main = EmbeddedMongo(tmp_path_factory.mktemp("main"), port=free_port())
    eu = EmbeddedMongo(tmp_path_factory.mktemp("eu"), port=free_port())
    procs = [start_nx(main), start_nx(eu)]
    yield main, eu
    for proc in procs:
        stop_process(proc)
