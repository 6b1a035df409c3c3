"""Point endpoints: upsert, delete, set/overwrite payload, update vectors, scroll, count, retrieve.

Reads answer from the asking node's replica when it is readable (a node with a stale replica
that is still Active answers stale data, as in Qdrant); `shard_key` selects shards.
"""

from __future__ import annotations

from typing import Any

from tests.emulator.errors import ApiError, bad_request
from tests.emulator.routing import Request, Response, ok, route


@route("PUT", "/collections/{collection}/points", write=True)
def upsert_points(req: Request) -> Response:
    body = req.json()
    return req.update(lambda: req.node.state.upsert(req.params["collection"], body))


@route("POST", "/collections/{collection}/points/delete", write=True)
def delete_points(req: Request) -> Response:
    body = req.json()
    return req.update(lambda: req.node.state.delete_points(req.params["collection"], body))


@route("POST", "/collections/{collection}/points/payload", write=True)
def set_payload(req: Request) -> Response:
    """Merge keys into the points' payload (or into the object at `key`)."""
    body = req.json()
    return req.update(lambda: req.node.state.set_payload(req.params["collection"], body))


@route("PUT", "/collections/{collection}/points/payload", write=True)
def overwrite_payload(req: Request) -> Response:
    """Replace the points' whole payload."""
    body = req.json()
    return req.update(lambda: req.node.state.set_payload(req.params["collection"], body, overwrite=True))


@route("PUT", "/collections/{collection}/points/vectors", write=True)
def update_vectors(req: Request) -> Response:
    body = req.json()
    return req.update(lambda: req.node.state.update_vectors(req.params["collection"], body))


@route("POST", "/collections/{collection}/points/scroll")
def scroll_points(req: Request) -> Response:
    return ok(req.node.state.scroll(req.params["collection"], req.json(), req.node.index), req.started)


@route("POST", "/collections/{collection}/points/count")
def count_points(req: Request) -> Response:
    return ok(req.node.state.count(req.params["collection"], req.json(), req.node.index), req.started)


@route("POST", "/collections/{collection}/points")
def retrieve_points(req: Request) -> Response:
    body = req.json()
    if not isinstance(body.get("ids"), list):
        raise bad_request("Json deserialize error: missing field `ids`")
    return ok(req.node.state.retrieve(req.params["collection"], body["ids"], body.get("with_payload", True),
                                      body.get("with_vector", False), req.node.index, body.get("shard_key")),
              req.started)


@route("GET", "/collections/{collection}/points/{point_id}")
def get_point(req: Request) -> Response:
    raw = req.params["point_id"]
    point_id: Any = int(raw) if raw.isdigit() else raw
    found = req.node.state.retrieve(req.params["collection"], [point_id], True, True, req.node.index)
    if not found:
        raise ApiError(404, f"Not found: No point with id {raw} found")
    return ok(found[0], req.started)
