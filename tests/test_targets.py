"""--target (pure): what each entry needs, which entries a targeted plan covers, and the words
an unreachable cluster's error gains."""

from __future__ import annotations

from datetime import timedelta

import pytest

from qbr.errors import QbrError
from qbr.planner import make_plan
from qbr.planner.targets import check_targets, needs_of, unreachable_hint
from qbr.records import set_id_for
from qbr.state import State
from tests.test_planner import NOW, cluster, collection, observed, repository, set_record
from tests.test_topology import restore_manifest


def test_a_restore_needs_the_source_cluster_only_when_it_may_copy_from_it_live():
    cases = {
        "": {"big"},
        "    method: snapshot\n    topology: {replication_factor: 2}": {"big"},
        "    topology: {shard_number: 6}": {"big", "prod"},
        "    method: logical": {"big", "prod"},
        "    topology: {shard_number: 6}\n    copy_from: archive": {"big"},
    }
    for options, clusters in cases.items():
        manifest = restore_manifest(options)
        assert needs_of(manifest, "reshard").clusters == clusters, options
        assert needs_of(manifest, "reshard").repositories == {"main"}
    assert needs_of(restore_manifest(), "nightly").clusters == {"prod"}


def test_a_targeted_plan_covers_only_its_restore_and_says_what_waits():
    docs = collection("docs", points=150, shards=1)
    old = set_record(set_id_for(NOW - timedelta(days=3)), {"docs": docs})
    world = observed([cluster("big", [])], repository([old]))  # prod is not observed: it is down
    plan = make_plan(restore_manifest(), world, State(), NOW, targets=("reshard",))
    assert {a.group for a in plan.actions} == {"restore reshard (backup nightly -> cluster big)"}
    assert plan.targets == ("reshard",)
    assert any(w.startswith("--target reshard: only restore reshard is planned; other entries, retention") for w in plan.warnings)


def test_unknown_targets_and_the_unreachable_cluster_hint():
    manifest = restore_manifest("    copy_from: archive\n    method: logical")
    with pytest.raises(QbrError, match="--target nigthly names no backup or restore of the manifest \\(did you mean nightly\\?\\)"):
        check_targets(manifest, ["nigthly"])
    assert check_targets(manifest, ["reshard", "nightly", "reshard"]) == ("nightly", "reshard")
    assert unreachable_hint(manifest, "prod", ()) == (
        "; backup nightly needs it, and restore reshard does not: plan it alone with --target reshard")
    assert unreachable_hint(manifest, "big", ()) == (
        "; restore reshard needs it, and backup nightly does not: plan it alone with --target nightly")
    assert unreachable_hint(manifest, "prod", ("reshard",)) == ""
