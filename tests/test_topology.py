"""Target topology and storage (pure): which way each collection is restored, what the plan says,
what the saved plan carries, and the manifest's shape of it."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from qbr.actions import CopyCollection, RestoreCollection, params_of
from qbr.apply.copy_streams import Batch, Stream, id_key
from qbr.errors import ManifestError, PlanError
from qbr.manifest import load_manifest_text
from qbr.planner import make_plan
from qbr.planner.topology import shaped_config
from qbr.records import config_digest, set_id_for
from qbr.state import State
from tests.test_planner import NOW, cluster, collection, observed, repository, set_record

NAMED = {
    "params": {
        "vectors": {"text": {"size": 4, "distance": "Cosine"}, "image": {"size": 3, "distance": "Dot", "on_disk": True}},
        "shard_number": 3, "replication_factor": 1, "write_consistency_factor": 1,
    },
    "hnsw_config": {"m": 16, "ef_construct": 100},
    "optimizer_config": {"indexing_threshold": 10000},
    "quantization_config": None,
}


def restore_manifest(options: str = "", *, if_exists: str = "replace") -> object:
    return load_manifest_text(f"""
version: 1
clusters:
  prod: {{url: "http://127.0.0.1:6333"}}
  big: {{url: "http://127.0.0.3:6333"}}
repositories:
  main: {{path: /tmp/qbr-test-repo}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 24h}}
restores:
  reshard:
    from: nightly
    to: big
    if_exists: {if_exists}
{options}""", "qbr.yaml", Path("/tmp"), env={})


def world(*, shards: int = 3, target_nodes: int = 6, config: dict | None = None, live: bool = True, dr_version="1.19.0"):
    cfg = config or {"params": {"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": shards, "replication_factor": 1}}
    docs = collection("docs", points=150, shards=shards, config=cfg, aliases=("docs_current",))
    record = set_record(set_id_for(NOW - timedelta(hours=2)), {"docs": docs})
    return observed(
        [cluster("prod", [docs] if live else [], nodes=3), cluster("big", [], nodes=target_nodes, version=dr_version)],
        repository([record]),
    ), record, docs


def only_restore(plan):
    (action,) = [a for a in plan.actions if a.kind in ("restore_collection", "copy_collection")]
    return action


def test_a_new_shard_number_is_a_logical_copy_from_the_live_source_and_the_plan_says_so():
    w, record, docs = world()
    p = make_plan(restore_manifest("    topology: {shard_number: 6, replication_factor: 2}\n    verify_sample: 50"), w, State(), NOW)
    action = only_restore(p)
    assert action.kind == "copy_collection"
    assert action.title == (
        "collection docs on cluster big: shard number 3 -> 6, replication factor 1 -> 2: "
        "logical copy of ~150 points from cluster prod collection docs"
    )
    assert "a snapshot recovers only into a collection with the same shard number" in action.reason
    assert "cluster prod must be reachable while apply runs" in action.reason
    assert action.precondition == {"target_exists": False, "source_config_sha256": docs.config_sha256}
    typed = params_of(action.kind, action.params, action.id)
    assert isinstance(typed, CopyCollection)
    assert (typed.source_cluster, typed.source_collection, typed.shard_number, typed.replication_factor) == ("prod", "docs", 6, 2)
    assert typed.verify_sample == 50 and typed.set_id == record.set_id
    assert typed.shape == {"topology": {"shard_number": 6, "replication_factor": 2}}
    aliases = p.action("restore.reshard.aliases")
    assert aliases.depends_on == (action.id,)


def test_the_same_shard_number_recovers_snapshots_then_patches_the_rest():
    w, _, _ = world(config=NAMED, shards=3)
    storage = "    storage: {on_disk: true, quantization: {scalar: {type: int8}}, hnsw: {m: 32}, optimizers: {indexing_threshold: 20000}}"
    p = make_plan(restore_manifest(f"    topology: {{replication_factor: 2, write_consistency_factor: 2}}\n{storage}"), w, State(), NOW)
    action = only_restore(p)
    assert action.kind == "restore_collection"
    assert action.title.endswith(
        ", with replication factor 1 -> 2, write consistency factor 1 -> 2, vectors text on_disk false -> true, "
        "hnsw m 16 -> 32, optimizers indexing_threshold 10000 -> 20000, quantization none -> scalar int8"
    )
    assert "PATCH /collections/docs" in action.reason
    typed = params_of(action.kind, action.params, action.id)
    assert isinstance(typed, RestoreCollection)
    assert (typed.replication_factor, typed.write_consistency_factor) == (2, 2)
    assert typed.patch == {
        "params": {"replication_factor": 2, "write_consistency_factor": 2},
        "vectors": {"text": {"on_disk": True}},  # image is on disk already
        "hnsw_config": {"m": 32},
        "optimizers_config": {"indexing_threshold": 20000},
        "quantization_config": {"scalar": {"type": "int8"}},
    }


def test_disabling_quantization_patches_it_off_and_an_unchanged_storage_patches_nothing():
    quantized = {**NAMED, "quantization_config": {"scalar": {"type": "int8"}}}
    w, _, _ = world(config=quantized)
    p = make_plan(restore_manifest("    storage: {quantization: disabled}"), w, State(), NOW)
    assert params_of("restore_collection", only_restore(p).params, "x").patch == {"quantization_config": "Disabled"}
    same = make_plan(restore_manifest("    storage: {hnsw: {m: 16}}"), w, State(), NOW)
    assert params_of("restore_collection", only_restore(same).params, "x").patch == {}
    assert "with" not in only_restore(same).title


def test_without_topology_or_storage_a_restore_is_what_it_always_was():
    w, _, _ = world()
    action = only_restore(make_plan(restore_manifest(), w, State(), NOW))
    assert action.kind == "restore_collection"
    assert action.params["patch"] == {} and action.params["shape"] == {} and action.params["replication_factor"] is None


def test_method_logical_copies_even_the_same_shape_and_skips_the_version_refusal():
    w, _, _ = world(dr_version="1.21.0")  # two minors past the snapshot's 1.19.0
    with pytest.raises(PlanError, match="more than one minor version newer.*or set method: logical"):
        make_plan(restore_manifest(), w, State(), NOW)
    action = only_restore(make_plan(restore_manifest("    method: logical"), w, State(), NOW))
    assert action.kind == "copy_collection"
    assert action.title.startswith("collection docs on cluster big: method is logical: logical copy of ~150 points")


@pytest.mark.parametrize("options,refusal", [
    ("    topology: {shard_number: 6}\n    method: snapshot", "method snapshot cannot change the shard number of collection docs (3 -> 6)"),
    ("    topology: {replication_factor: 7}", "replication_factor 7 needs at least 7 nodes, and the target cluster has 6"),
    ("    topology: {write_consistency_factor: 3}", "write_consistency_factor 3 is more than the replication factor 1"),
])
def test_shapes_that_cannot_be_made_are_refused_in_one_sentence(options, refusal):
    w, _, _ = world()
    with pytest.raises(PlanError, match=refusal.replace("(", r"\(").replace(")", r"\)")):
        make_plan(restore_manifest(options), w, State(), NOW)


def test_a_logical_copy_without_its_live_source_is_refused():
    w, _, _ = world(live=False)
    with pytest.raises(PlanError, match="needs a logical copy .shard number 3 -> 6. from the live collection docs on cluster prod"):
        make_plan(restore_manifest("    topology: {shard_number: 6}"), w, State(), NOW)


def test_copy_from_archive_needs_no_live_source_and_reads_the_sets_archives():
    w, record, _ = world(live=False)
    action = only_restore(make_plan(restore_manifest("    topology: {shard_number: 6}\n    copy_from: archive"), w, State(), NOW))
    assert action.kind == "copy_collection"
    assert action.title == (
        f"collection docs on cluster big: shard number 3 -> 6: logical copy of ~150 points from set {record.set_id}'s "
        "archives of collection docs"
    )
    assert "read offline with Qdrant's engine" in action.reason and "cluster prod is not needed" in action.reason
    assert action.precondition == {"target_exists": False}
    typed = params_of(action.kind, action.params, action.id)
    assert (typed.copy_from, typed.repository, typed.set_id) == ("archive", "main", record.set_id)


def test_a_finished_copy_is_left_alone_and_a_changed_shape_replaces_it():
    w, record, _ = world()
    options = "    topology: {shard_number: 6}"
    done = {"reshard": {"docs": {
        "set_id": record.set_id, "copied_in": record.set_id, "source_collection": "docs", "method": "logical",
        "source_cluster": "prod", "restored_at": "2026-11-21T06:00:00Z", "shape": {"topology": {"shard_number": 6}},
    }}}
    w = replace(w, clusters={**w.clusters, "big": replace(w.clusters["big"], collection_names=("docs",))})
    p = make_plan(restore_manifest(options), w, State(restores=done), NOW)
    assert not [a for a in p.actions if a.kind == "copy_collection"]
    assert any("copied from cluster prod collection docs" in n.reason and "a logical copy" in n.reason for n in p.unchanged)
    again = only_restore(make_plan(restore_manifest("    topology: {shard_number: 4}"), w, State(restores=done), NOW))
    assert again.kind == "copy_collection" and again.change == "replace"
    assert again.reason.startswith("the restore's topology or storage changed since it was restored from set")


def test_an_interrupted_copy_is_planned_again_over_its_half_made_target():
    w, record, _ = world()
    w = replace(w, clusters={**w.clusters, "big": replace(w.clusters["big"], collection_names=("docs",))})
    mark = {"reshard": {"docs": {"set_id": record.set_id, "source_collection": "docs", "incomplete": True, "copy": {"key": "k"}}}}
    action = only_restore(make_plan(restore_manifest("    topology: {shard_number: 6}", if_exists="fail"), w, State(restores=mark), NOW))
    assert action.kind == "copy_collection" and action.precondition["target_exists"] is True
    assert "did not finish" in action.reason


def test_shaped_config_applies_storage_to_every_vector_and_disables_quantization():
    shaped = shaped_config({**NAMED, "quantization_config": {"scalar": {"type": "int8"}}},
                           {"on_disk": False, "quantization": "disabled", "hnsw": {"m": 8}}, write_consistency_factor=1)
    assert {n: v.get("on_disk") for n, v in shaped["params"]["vectors"].items()} == {"text": False, "image": False}
    assert shaped["quantization_config"] is None and shaped["hnsw_config"] == {"m": 8, "ef_construct": 100}
    assert NAMED["params"]["vectors"]["image"]["on_disk"] is True, "the observed config is not changed"
    assert config_digest(NAMED) == config_digest(dict(NAMED))


def test_the_manifest_reads_topology_storage_and_refuses_contradictions():
    text = """
version: 1
clusters:
  a: {url: "http://127.0.0.1:6333"}
  b: {url: "http://127.0.0.2:6333"}
repositories:
  main: {path: /tmp/x}
backups:
  nightly: {cluster: a, repository: main}
restores:
  r:
    from: nightly
    to: b
    topology: {shard_number: 6, replication_factor: 2}
    storage: {on_disk: true, quantization: {scalar: {type: int8, quantile: 0.99}}, hnsw: {m: 32}}
    method: auto
    batch_size: 500
    verify_sample: 100
"""
    r = load_manifest_text(text, "q.yaml", Path("/tmp"), env={}).restores["r"]
    assert (r.topology.shard_number, r.topology.replication_factor, r.topology.write_consistency_factor) == (6, 2, None)
    assert r.storage.quantization == {"scalar": {"type": "int8", "quantile": 0.99}} and r.storage.hnsw == {"m": 32}
    assert (r.method, r.batch_size, r.verify_sample) == ("auto", 500, 100)
    bad = {
        "quantization: {scalar: {type: int8, quantile: 0.99}}": ("quantization: disabld", "expected disabled or a mapping"),
        "hnsw: {m: 32}": ("hnsw: {mm: 32}", "did you mean 'm'"),
        "replication_factor: 2}": ("replication_factor: 2, write_consistency_factor: 3}", "3 is more than the replication_factor 2"),
    }
    for old, (new, message) in bad.items():
        with pytest.raises(ManifestError, match=message):
            load_manifest_text(text.replace(old, new), "q.yaml", Path("/tmp"), env={})


def test_a_stream_journal_advances_only_over_batches_done_in_order_and_keeps_the_rest_as_islands():
    stream = Stream("*", None, {})
    first, second, third = Batch(0, None, 10, []), Batch(1, 10, 20, []), Batch(2, 20, None, [])
    stream.finish(third)
    assert stream.position() == {"offset": None, "done": False, "islands": [[20, None]]}
    stream.finish(first)
    assert stream.position() == {"offset": 10, "done": False, "islands": [[20, None]]}
    stream.finish(second)
    assert stream.position() == {"offset": None, "done": True, "islands": []}
    resumed = Stream("*", None, {"offset": 10, "done": False, "islands": [[20, None]]})
    assert resumed.next_island(10) == (20, None) and resumed.next_island(None) == (20, None)
    assert sorted([5, "b2", 1, "a1"], key=id_key) == [1, 5, "a1", "b2"]
