"""pytest fixture: `emulator(nodes=1, api_key=None, version="1.19.0", **kw)` starts a cluster for one test."""

from __future__ import annotations

from typing import Callable

import pytest

from tests.emulator.cluster import EmulatorCluster


@pytest.fixture
def emulator(tmp_path_factory) -> Callable[..., EmulatorCluster]:
    """A factory of started emulator clusters, each with its own data dir, stopped at teardown."""
    clusters: list[EmulatorCluster] = []

    def start(nodes: int = 1, api_key: str | None = None, version: str = "1.19.0", **kw) -> EmulatorCluster:
        if kw.get("data_dir") is None:
            kw["data_dir"] = tmp_path_factory.mktemp("emulator")
        cluster = EmulatorCluster(nodes=nodes, api_key=api_key, version=version, **kw)
        clusters.append(cluster)
        return cluster.start()

    yield start
    for cluster in clusters:
        cluster.stop()
