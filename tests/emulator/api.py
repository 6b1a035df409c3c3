"""The REST API of one emulator node: service endpoints here, the rest in api_collections.py,
api_points.py and api_snapshots.py (imported below so their routes are registered)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from tests.emulator import api_collections, api_points, api_snapshots  # noqa: F401 - register routes
from tests.emulator.errors import bad_request
from tests.emulator.routing import (  # noqa: F401 - the server's entry points
    ROUTES,
    Request,
    Response,
    dispatch,
    error_response,
    json_response,
    match,
    ok,
    route,
    text_response,
)

COMMIT = "0f1e2d3c4b5a69788796a5b4c3d2e1f0a1b2c3d4"


@route("GET", "/")
def root(req: Request) -> Response:
    return json_response(200, {"title": "qdrant - vector search engine", "version": req.node.cluster.version,
                               "commit": COMMIT})


@route("GET", "/healthz")
@route("GET", "/livez")
def healthz(req: Request) -> Response:
    return text_response(200, "healthz check passed")


@route("GET", "/readyz")
def readyz(req: Request) -> Response:
    return text_response(200, "all shards are ready")


@route("GET", "/cluster")
def cluster_status(req: Request) -> Response:
    node = req.node
    state = node.state
    if not state.distributed:
        return ok({"status": "disabled"}, req.started)
    leader = state.peer_ids[state.node_indexes[0]]
    return ok({
        "status": "enabled",
        "peer_id": node.peer_id,
        "peers": {str(state.peer_ids[i]): {"uri": node.cluster.p2p_uri(i)} for i in state.node_indexes},
        "raft_info": {
            "term": 1,
            "commit": state.commit,
            "pending_operations": 0,
            "leader": leader,
            "role": "Leader" if node.peer_id == leader else "Follower",
            "is_voter": True,
        },
        "consensus_thread_status": {"consensus_thread_status": "working",
                                    "last_update": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())},
        "message_send_failures": {},
    }, req.started)


@route("GET", "/telemetry")
def telemetry(req: Request) -> Response:
    """TelemetryData, trimmed to what the emulator knows. As in Qdrant (collections_telemetry.rs),
    `collections.collections` needs details_level >= 1 and the per-collection snapshot counters
    (`running_snapshots`, `running_snapshot_recovery`, `total_snapshot_creations`) >= 2."""
    node = req.node
    raw_level = req.query.get("details_level") or "0"
    if not raw_level.isdigit():
        raise bad_request(f"Query deserialize error: invalid digit found in string: {raw_level!r}")
    level = int(raw_level)
    state = node.state
    with state.lock:
        collections = dict(state.collections)
    data: dict = {"number_of_collections": len(collections)}
    if level >= 2:
        data["collections"] = [{"id": name, "init_time_ms": 0} for name in collections]
        data["snapshots"] = node.activity.telemetry()
    elif level >= 1:
        data["collections"] = [{"vectors": c.points_count(), "optimizers_status": "ok",
                                "params": c.rest_config()["params"]} for c in collections.values()]
        data["snapshots"] = []
    started = datetime.fromtimestamp(node.cluster.started_at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return ok({
        "id": node.telemetry_id,
        "app": {"name": "qdrant", "version": node.cluster.version, "startup": started},
        "collections": data,
    }, req.started)


METRIC_FAMILIES = (
    ("snapshot_creation_running", "amount of snapshot creations that are currently running", "gauge",
     "running_snapshots"),
    ("snapshot_recovery_running", "amount of snapshot recovery operations currently running", "gauge",
     "running_snapshot_recovery"),
    ("snapshot_created_total", "total amount of snapshots created", "counter", "total_snapshot_creations"),
)


@route("GET", "/metrics")
def metrics(req: Request) -> Response:
    """Prometheus text: `collections_total` and the per-collection snapshot gauges and counter
    Qdrant derives from the same telemetry (common/metrics.rs)."""
    with req.node.state.lock:
        count = len(req.node.state.collections)
    lines = ["# HELP collections_total number of collections", "# TYPE collections_total gauge",
             f"collections_total {count}"]
    snapshots = req.node.activity.telemetry()
    for name, help_text, kind, field in METRIC_FAMILIES if snapshots else ():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f'{name}{{id="{s["id"]}"}} {s[field]}' for s in snapshots]
    data = ("\n".join(lines) + "\n").encode()
    return Response(200, data, len(data), "text/plain; version=0.0.4")
