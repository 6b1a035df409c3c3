"""A Qdrant emulator for tests: real HTTP servers speaking Qdrant's REST API (standard library only).

    from tests.emulator import EmulatorCluster
    with EmulatorCluster(nodes=3) as cluster:
        cluster.urls  # http://127.0.0.1:P, http://127.0.0.2:P, http://127.0.0.3:P
"""

from tests.emulator.cluster import EmulatorCluster, EmulatorNode
from tests.emulator.faults import Fault, Faults

__all__ = ["EmulatorCluster", "EmulatorNode", "Fault", "Faults"]
