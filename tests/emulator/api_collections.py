"""Collection, alias, shard key, payload index and collection cluster endpoints."""

from __future__ import annotations

from urllib.parse import unquote

from tests.emulator.errors import ApiError, bad_request
from tests.emulator.routing import Request, Response, ok, route


@route("GET", "/collections")
def list_collections(req: Request) -> Response:
    with req.node.state.lock:
        names = list(req.node.state.collections)
    return ok({"collections": [{"name": n} for n in names]}, req.started)


@route("GET", "/aliases")
def list_aliases(req: Request) -> Response:
    return ok({"aliases": req.node.state.alias_list()}, req.started)


@route("POST", "/collections/aliases", write=True)
def update_aliases(req: Request) -> Response:
    body = req.json()
    return ok(req.node.state.update_aliases(body.get("actions", [])), req.started)


@route("GET", "/collections/{collection}")
def get_collection(req: Request) -> Response:
    state = req.node.state
    return ok(state.collection_info(state.resolve(req.params["collection"])), req.started)


@route("PUT", "/collections/{collection}", write=True)
def create_collection(req: Request) -> Response:
    body = req.json()
    req.node.state.create_collection(req.params["collection"], body)
    return ok(True, req.started)


@route("PATCH", "/collections/{collection}", write=True)
def update_collection(req: Request) -> Response:
    return ok(req.node.state.update_collection(req.params["collection"], req.json()), req.started)


@route("DELETE", "/collections/{collection}", write=True)
def delete_collection(req: Request) -> Response:
    return ok(req.node.state.delete_collection(req.params["collection"]), req.started)


@route("GET", "/collections/{collection}/exists")
def collection_exists(req: Request) -> Response:
    try:
        req.node.state.resolve(req.params["collection"])
        exists = True
    except ApiError:
        exists = False
    return ok({"exists": exists}, req.started)


@route("GET", "/collections/{collection}/aliases")
def collection_aliases(req: Request) -> Response:
    return ok({"aliases": req.node.state.alias_list(req.params["collection"])}, req.started)


@route("GET", "/collections/{collection}/cluster")
def collection_cluster(req: Request) -> Response:
    """This node's view: its replicas (local_shards) and the others (remote_shards), with states."""
    state = req.node.state
    return ok(state.cluster_info(state.resolve(req.params["collection"]), req.node.index), req.started)


# ---------------------------------------------------------------------------------------------
# Shard keys (custom sharding; cluster mode only, 405 in standalone mode)


@route("GET", "/collections/{collection}/shards")
def list_shard_keys(req: Request) -> Response:
    return ok(req.node.state.shard_keys(req.params["collection"]), req.started)


@route("PUT", "/collections/{collection}/shards", write=True)
def create_shard_key(req: Request) -> Response:
    body = req.json()
    if "shard_key" not in body:
        raise bad_request("Json deserialize error: missing field `shard_key`")
    return ok(req.node.state.create_shard_key(req.params["collection"], body), req.started)


@route("POST", "/collections/{collection}/shards/delete", write=True)
def delete_shard_key(req: Request) -> Response:
    body = req.json()
    if "shard_key" not in body:
        raise bad_request("Json deserialize error: missing field `shard_key`")
    return ok(req.node.state.drop_shard_key(req.params["collection"], body), req.started)


# ---------------------------------------------------------------------------------------------
# Payload indexes


@route("PUT", "/collections/{collection}/index", write=True)
def create_index(req: Request) -> Response:
    body = req.json()
    return req.update(lambda: req.node.state.create_index(req.params["collection"], body.get("field_name"),
                                                          body.get("field_schema")))


@route("DELETE", "/collections/{collection}/index/{field_name}", write=True)
def delete_index(req: Request) -> Response:
    field_name = unquote(req.params["field_name"])
    return req.update(lambda: req.node.state.delete_index(req.params["collection"], field_name))
