"""Backups and restores of real Qdrant segments, through the CLI: the emulator in edge mode keeps
its shards in qdrant-edge-py's EdgeShards, so its archives are what Qdrant writes, and qbr reads
them with Qdrant's engine, no plug-in named (QBR_COPY_ENGINE and QBR_DEEP_ENGINE empty)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("qdrant_edge", reason="the edge engine needs qdrant-edge-py (the test extra installs it)")

from qbr.apply.archive_reader import QdrantEdgeReader  # noqa: E402
from qbr.repository.local import LocalRepository  # noqa: E402
from tests.e2e.helpers import all_points, make_collection, qbr, read_sets, write_manifest  # noqa: E402
from tests.emulator.edge_archive import shard_snapshot  # noqa: E402

T0 = "2026-11-21T08:00:00Z"
T1 = "2026-11-21T08:20:00Z"
REAL_ENGINE = {"QBR_COPY_ENGINE": "", "QBR_DEEP_ENGINE": ""}


def manifest(folder: Path, source_url: str, target_url: str, restores: str = "") -> None:
    write_manifest(folder, f"""
version: 1
clusters:
  prod: {{url: "{source_url}"}}
  dr: {{url: "{target_url}"}}
repositories:
  main: {{path: ./repo}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h}}
{restores}""")


def the_set(folder: Path) -> dict:
    [record] = read_sets(LocalRepository(folder / "repo"))
    return record


def points_in_archive(archive: Path, shard_ids, scratch: Path) -> dict:
    """{id: (vector, payload)} of the archive's shards, read by qbr's reader with Qdrant's engine."""
    scratch.mkdir(parents=True, exist_ok=True)
    points: dict = {}
    for sid in shard_ids:
        pages = QdrantEdgeReader().open(shard_snapshot(archive, sid, scratch / f"{sid}.tar"), scratch / f"shard-{sid}")
        offset = None
        try:
            while True:
                page, offset = pages.scroll(offset, 25)
                points.update({p["id"]: (p["vector"], p["payload"]) for p in page})
                if offset is None:
                    break
        finally:
            pages.close()
    return points


def test_a_backup_of_real_segments_opens_verifies_and_restores_with_qdrants_engine(emulator, tmp_path):
    prod, dr = emulator(engine="edge"), emulator(engine="edge")
    make_collection(prod.urls[0], "docs", points=40, shards=1)
    manifest(tmp_path, prod.urls[0], dr.urls[0])
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path, env=REAL_ENGINE).exit_code == 0
    backed_up = all_points(prod.urls[0], "docs")
    record = the_set(tmp_path)
    [archive] = record["collections"]["docs"]["archives"]
    assert points_in_archive(tmp_path / "repo" / archive["key"], [0], tmp_path / "read") == backed_up

    verified = qbr("verify", "--deep", cwd=tmp_path, env=REAL_ENGINE)
    assert verified.exit_code == 0, verified.output
    assert f"set nightly/{record['set_id']}: 1 archive" in verified.stdout and "not counted" not in verified.stdout
    lie = json.loads(json.dumps(record))  # the set claims one point less: only a real count notices
    lie["collections"]["docs"]["points_count"] -= 1
    lie["collections"]["docs"]["archives"][0]["points_count"] = 39
    (tmp_path / "repo" / "sets" / "nightly" / f"{record['set_id']}.json").write_text(json.dumps(lie))
    caught = qbr("verify", "--deep", cwd=tmp_path, env=REAL_ENGINE)
    assert caught.exit_code == 1 and "holds 40 points (counted by Qdrant's engine), the set recorded 39" in caught.stdout
    (tmp_path / "repo" / "sets" / "nightly" / f"{record['set_id']}.json").write_text(json.dumps(record))

    manifest(tmp_path, prod.urls[0], dr.urls[0], "restores:\n  replica: {from: nightly, to: dr}\n")
    restored = qbr("apply", "--auto-approve", "--now", T1, cwd=tmp_path, env=REAL_ENGINE)
    assert restored.exit_code == 0, restored.output
    assert all_points(dr.urls[0], "docs") == backed_up


def test_copy_from_archive_of_real_segments_after_the_source_cluster_stopped(emulator, tmp_path):
    """Issue 16: a 3-shard collection backed up, its cluster stopped, then restored into 6 shards
    on another cluster by reading the set's segments with Qdrant's engine."""
    prod, dr = emulator(nodes=3, engine="edge"), emulator(nodes=2, engine="edge")
    make_collection(prod.urls[0], "docs", points=90, shards=3)
    manifest(tmp_path, prod.urls[0], dr.urls[0])
    assert qbr("apply", "--auto-approve", "--now", T0, cwd=tmp_path, env=REAL_ENGINE).exit_code == 0
    backed_up = all_points(prod.urls[0], "docs")
    prod.stop()
    manifest(tmp_path, prod.urls[0], dr.urls[0], """restores:
  offline:
    from: nightly
    to: dr
    topology: {shard_number: 6}
    copy_from: archive
    batch_size: 25
    verify_sample: 10
""")
    run = qbr("apply", "--auto-approve", "--now", T1, "--target", "offline", cwd=tmp_path, env=REAL_ENGINE)
    assert run.exit_code == 0, run.output
    assert all_points(dr.urls[0], "docs") == backed_up
    assert dr.nodes[0].state.resolve("docs").shard_number == 6
    done = json.loads((tmp_path / ".qbr" / "state.json").read_text())["restores"]["offline"]["docs"]
    assert (done["copy_from"], done["points_count"], done["sample_checked"]) == ("archive", 90, 10)
