"""The benchmark scripts run end to end with tiny sizes and print their ratio lines (so they do not rot).

The six run at once, as real processes (each starts its own emulator, and moto where needed).
Speed is never asserted here: only that each script measured what it says it measures.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RATIO = re.compile(r"^ratio: ([a-z0-9_]+) = (-?[0-9]+\.[0-9]+) \((.+)\)$", re.MULTILINE)
RUNS = {
    "transfer": ["--size-mib", "4", "--repeat", "1"],
    "memory": ["--size-mib", "2", "4"],
    "plan_time": ["--collections", "5", "20", "--observe-collections", "3", "6", "--history", "3", "--repeat", "1",
                  "--request-collections", "3", "12", "--request-backups", "1", "2"],
    "parallel": ["--collections", "3", "--size-mib", "1", "--rate-mib", "64", "--snapshot-latency", "0",
                 "--parallelism", "1", "3", "--repeat", "1"],
    "logical_copy": ["--points", "300", "--dim", "8", "--batch", "50", "--target-nodes", "2", "--shards", "2"],
    "dedup": ["--points", "300", "--changes", "0.1", "--sweep-avg", "65536"],
    "encryption": ["--size-mib", "1", "2", "--repeat", "1"],
    "server_side": ["--size-mib", "2"],
}


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess]:
    started = {
        name: subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name, args in RUNS.items()
    }
    done = {}
    for name, process in started.items():
        try:
            out, err = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        done[name] = subprocess.CompletedProcess(process.args, process.returncode, out, err)
    return done


def ratios(run: subprocess.CompletedProcess) -> dict[str, float]:
    assert run.returncode == 0, run.stderr[-3000:]
    found = {name: float(value) for name, value, _ in RATIO.findall(run.stdout)}
    assert all(math.isfinite(v) and v >= 0 for v in found.values()), found
    return found


def test_transfer_prints_qbr_over_baseline_for_each_direction(runs):
    found = ratios(runs["transfer"])
    assert set(found) == {"backup_local_4mib", "backup_local_vs_sha256_4mib", "backup_s3_4mib", "restore_local_4mib",
                          "restore_s3_4mib"}
    assert all(v > 0 for v in found.values())
    table = runs["transfer"].stdout
    for direction in ("backup -> local folder", "backup -> local folder, vs copy+sha256", "backup -> S3 (moto)",
                      "restore <- local folder", "restore <- S3 (moto)"):
        assert direction in table
    # The S3 backup's requests, counted by the repository: 4 MiB fits one part, so one PutObject.
    assert "S3 requests of one qbr backup (repo.requests, retries included): 4 MiB: S3: 1 request: 0 GET, 1 PUT," in table


def test_memory_measures_every_kind_direction_and_size(runs):
    found = ratios(runs["memory"])
    expected = {
        f"{kind}_{direction}_{what}"
        for kind in ("local", "s3", "dedup")
        for direction in ("backup", "restore")
        for what in ("traced_peak_4_vs_2mib", "rss_peak_4_vs_2mib", "rss_growth_per_byte_4mib")
    }
    assert set(found) == expected | {"s3_backup_traced_mib_beyond_parts_bound"}
    # The children really traced something and really ran: a peak ratio of 0 would mean no data.
    assert all(found[name] > 0 for name in expected if "peak" in name)
    table_row = re.compile(r"^(local|s3|dedup)\s+(backup|restore)\s")
    rows = [line for line in runs["memory"].stdout.splitlines() if table_row.match(line)]
    assert len(rows) == 12  # one table row per repository kind, direction and size


def test_plan_time_reports_growth_for_the_pure_planner_and_observe(runs):
    found = ratios(runs["plan_time"])
    assert set(found) == {
        "plan_ms_per_collection_20_vs_5", "plan_time_20_vs_5",
        "observe_plan_ms_per_collection_6_vs_3", "observe_plan_time_6_vs_3",
        *(f"quiet_qdrant_requests_12_vs_3_{kind}_{b}b" for kind in ("folder", "s3") for b in (1, 2)),
        *(f"quiet_s3_requests_12_vs_3_s3_{b}b" for b in (1, 2)),
    }
    assert found["plan_time_20_vs_5"] > 0 and found["observe_plan_time_6_vs_3"] > 0
    out = runs["plan_time"].stdout
    assert "copy=" in out and "commit=1" in out  # the synthetic world made the planner do real work
    # the request table: a first quiet tick, the next, and a due one for each size, backup count and
    # repository kind
    rows = [line.split() for line in out.splitlines() if line.startswith(("folder ", "s3 "))]
    assert len(rows) == 2 * 2 * 2 * 3  # sizes x backup counts x repository kinds x ticks
    assert all("GET=" in row[8] for row in rows if row[0] == "s3" and row[4] == "1st-quiet")  # every set record
    assert all(row[8] == "LIST=3" for row in rows if row[0] == "s3" and row[4] == "quiet")  # then the listings alone
    assert all(int(row[6]) > 0 for row in rows)  # Qdrant requests, counted by the emulator
    assert all(row[7] != "-" and int(row[7]) > 0 for row in rows if row[0] == "s3")  # S3 requests, by qbr
    assert all(value == 1.0 for name, value in found.items() if name.startswith("quiet_"))  # flat


def test_parallel_compares_qbr_apply_with_the_sequential_script(runs):
    found = ratios(runs["parallel"])
    assert set(found) == {"parallel_speedup_p1", "parallel_speedup_p3"}
    assert all(v > 0 for v in found.values())
    out = runs["parallel"].stdout
    assert "sequential script (httpx)" in out and "qbr apply --parallelism 3" in out
    assert "SNAPSHOTS_PER_NODE = " in out  # the per-node cap on snapshot creation is shown


def test_logical_copy_compares_qbr_with_a_plain_scroll_and_upsert_loop(runs):
    found = ratios(runs["logical_copy"])
    assert set(found) == {"logical_copy_vs_plain_loop_0ms", "logical_copy_vs_plain_loop_20ms"}
    assert all(v > 0 for v in found.values())
    out = runs["logical_copy"].stdout
    assert "plain scroll+upsert loop (httpx)" in out and "qbr copy_collection --parallelism 4" in out
    assert "300 points of 8 floats" in out


def test_encryption_compares_encrypted_transfers_with_plain_ones(runs):
    found = ratios(runs["encryption"])
    throughput = {"encrypted_backup_vs_plain_1mib", "encrypted_restore_vs_plain_1mib", "encrypted_backup_vs_plain_2mib",
                  "encrypted_restore_vs_plain_2mib", "encrypted_traced_peak_2_vs_1mib"}
    cpu = {f"encrypted_{kind}_cpu_bound_{n}mib" for kind in ("backup", "restore") for n in (1, 2)}  # CPU ticks: may be 0 this small
    assert set(found) == throughput | cpu
    assert all(found[name] > 0 for name in throughput)
    assert "age backup MiB/s" in runs["encryption"].stdout


def test_dedup_prints_what_a_second_backup_adds_in_qbr_and_restic(runs):
    """Real segment files when qdrant-edge-py is installed (else the emulator's JSON lines: said so)."""
    found = ratios(runs["dedup"])
    assert {"qbr_added_over_full_10pct", "qbr_first_stored_over_size_10pct"} <= set(found)
    assert 0 < found["qbr_added_over_full_10pct"] < 1, "the second archive costs less than a full copy"
    out = runs["dedup"].stdout
    assert "qbr adds" in out and "restic adds" in out and "avg    64 KiB: archive 2 in" in out
    import shutil

    if shutil.which("restic"):
        assert "qbr_added_over_restic_10pct" in found and "qbr_speed_over_restic_10pct" in found
    else:
        assert "restic is not installed (Debian package restic): its columns are left empty" in out
    try:
        import qdrant_edge  # noqa: F401
    except ImportError:
        assert "qdrant-edge-py is not installed: synthetic" in out
    else:
        assert "engine emulator, 300 points" in out and "qbr_peak_rss_mib_10pct" in found


def test_server_side_moves_no_archive_byte_through_qbr_and_times_both_paths(runs):
    found = ratios(runs["server_side"])
    assert found["server_side_mib_through_qbr"] == 0.0
    assert found["server_side_time_vs_client_side"] > 0
    out = runs["server_side"].stdout
    assert "server-side" in out and "client-side" in out and "2.0" in out  # the client path moved the 2 MiB
