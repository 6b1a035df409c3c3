"""A Qdrant emulator for tests: real HTTP servers speaking Qdrant's REST API (standard library only).

    from tests.emulator import EmulatorCluster
    with EmulatorCluster(nodes=3) as cluster:
        cluster.urls  # http://127.0.0.1:P, http://127.0.0.2:P, http://127.0.0.3:P

What tests can make a node do (see each docstring):
- faults (faults.py): `node.faults.add(...)`: a status, latency, cut or corrupt body, reset before
  the work, or `after_work="reset" | "hang" | "cut"`: the work is done and the answer lost;
- a moving world (cluster.py): `node.during_snapshot(cb)`, `node.snapshot_latency`,
  `node.during_recover(cb)`, `node.recover_latency`, `cluster.set_replica_state(...)`;
- accounting (accounting.py): `node.count_requests(...)`, `node.route_counts()`,
  `node.download_bytes()`, `node.upload_bytes()`, `node.traffic.select(...)`;
- views: `cluster.points`, `shard_points`, `replica_states`, `shard_keys`, `payload_indexes`;
- server-side S3 snapshot storage (s3storage.py): `EmulatorCluster(snapshots_s3={...})`,
  `snapshots_s3_broken=True`, `url_recovery=False`; `node.s3.fail_uploads(...)`,
  `cluster.s3_objects()`, `cluster.s3_unfinished_uploads()`;
- Qdrant's own engine (edge_store.py): `EmulatorCluster(engine="edge")`, `--engine edge`: shards are
  EdgeShards of qdrant-edge-py and snapshots hold real segment files in Qdrant's layout.
"""

from tests.emulator.cluster import EmulatorCluster, EmulatorNode
from tests.emulator.faults import Fault, Faults

__all__ = ["EmulatorCluster", "EmulatorNode", "Fault", "Faults"]
