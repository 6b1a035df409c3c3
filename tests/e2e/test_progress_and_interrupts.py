"""A real `qbr apply` process: progress per transfer on a terminal (a pseudo-terminal here) and
none in a pipe; the first Ctrl-C stops cleanly, the second abandons, and either way the state is
consistent, the locks are released, and the next apply converges."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.e2e.helpers import FAST_RETRIES, REPO_ROOT, make_collection, qbr, qbr_process, write_manifest

SLOW = 2.5  # seconds each snapshot takes to make on the slow node


def manifest(cluster, folder) -> None:
    write_manifest(folder, f"""
version: 1
clusters: {{prod: {{url: "{cluster.urls[0]}"}}}}
repositories: {{folder: {{path: ./backups}}}}
backups: {{nightly: {{cluster: prod, repository: folder, rpo: 1h}}}}
""")


@pytest.fixture
def prod(emulator):
    cluster = emulator(nodes=1)
    make_collection(cluster.urls[0], "docs", points=300)
    make_collection(cluster.urls[0], "notes", points=20)
    return cluster


def _read_all(fd: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the other side closed
            return
        if not chunk:
            return
        into.append(chunk)


def test_progress_is_drawn_per_transfer_on_a_terminal_and_not_at_all_in_a_pipe(prod, tmp_path):
    on_tty, in_pipe = tmp_path / "tty", tmp_path / "pipe"
    for folder in (on_tty, in_pipe):
        folder.mkdir()
        manifest(prod, folder)
    master, slave = os.openpty()
    env = {**os.environ, **FAST_RETRIES, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"}
    run = subprocess.Popen([sys.executable, "-m", "qbr", "apply", "--auto-approve"], cwd=on_tty, env=env,
                           stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    drawn: list[bytes] = []
    reader = threading.Thread(target=_read_all, args=(master, drawn))
    reader.start()
    out, _ = run.communicate(timeout=60)
    reader.join(10)
    os.close(master)
    terminal = b"".join(drawn).decode()
    assert run.returncode == 0, out + terminal
    assert re.search(r"copy collection docs from node \S+ into set \S+  \d+(\.\d)? (B|KiB|MiB) / \d+(\.\d)? (B|KiB|MiB)  .*/s  ETA", terminal), terminal
    assert "\x1b[J" in terminal, "lines are redrawn in place and erased"
    assert "ETA" not in out and "\x1b" not in out, "stdout (a pipe) carries only the outcome lines"

    piped = qbr_process("apply", "--auto-approve", cwd=in_pipe)
    out, err = piped.communicate(timeout=60)
    assert piped.returncode == 0, out + err
    assert "ETA" not in err + out and "\r" not in err + out and "\x1b" not in err + out
    assert out.count(": done (") == 3


def _start_slow_apply(prod, folder) -> subprocess.Popen:
    manifest(prod, folder)
    prod.nodes[0].snapshot_latency = SLOW
    run = qbr_process("apply", "--auto-approve", cwd=folder, env={"QBR_METRICS_FILE": "qbr.prom"})
    deadline = time.monotonic() + 20
    while prod.nodes[0].count_requests(method="POST", path=r"/snapshots$") < 2:  # both copies are running
        assert time.monotonic() < deadline and run.poll() is None, run.communicate()
        time.sleep(0.05)
    return run


def _state(folder) -> dict:
    return json.loads((folder / ".qbr" / "state.json").read_text())


def _no_lock_left(folder) -> bool:
    return not (folder / ".qbr" / "state.json.lock").exists() and not (folder / "backups" / "locks" / "exclusive.json").exists()


def _outcome_in_metrics(folder) -> str:
    text = (folder / "qbr.prom").read_text()
    return re.search(r'^qbr_apply_last_outcome\{outcome="(\w+)"\} 1\.0$', text, re.M).group(1)


def _converges(prod, folder) -> None:
    prod.nodes[0].snapshot_latency = 0
    again = qbr("apply", "--auto-approve", cwd=folder)
    assert again.exit_code == 0, again.output
    settled = qbr("plan", "--detailed-exitcode", cwd=folder)
    assert settled.exit_code == 0 and "No changes" in settled.stdout, settled.output


def test_the_first_ctrl_c_lets_running_actions_finish_then_journals_and_releases_the_locks(prod, tmp_path):
    run = _start_slow_apply(prod, tmp_path)
    time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 130, out + err
    assert "stopping: waiting for 2 running actions (press Ctrl-C again to abandon them)" in err, err
    assert "Traceback" not in err
    journal = {entry["kind"]: entry for entry in _state(tmp_path)["journal"]}
    assert journal["copy_archive"]["status"] == "done", "the running copies finished"
    assert journal["commit_set"]["status"] == "skipped" and "stopped" in journal["commit_set"]["message"]
    assert _no_lock_left(tmp_path)
    assert "Apply stopped: 2 done, 0 failed, 1 skipped." in out, out
    assert _outcome_in_metrics(tmp_path) == "stopped"
    _converges(prod, tmp_path)


def test_a_second_ctrl_c_abandons_the_running_actions_with_the_state_consistent(prod, tmp_path):
    run = _start_slow_apply(prod, tmp_path)
    started = time.monotonic()
    run.send_signal(signal.SIGINT)
    time.sleep(0.3)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 130, out + err
    assert time.monotonic() - started < SLOW, "it did not wait for the snapshots"
    assert "abandoning 2 running actions" in err and "Traceback" not in err, err
    state = _state(tmp_path)
    statuses = sorted((entry["kind"], entry["status"]) for entry in state["journal"])
    assert statuses == [("commit_set", "skipped"), ("copy_archive", "abandoned"), ("copy_archive", "abandoned")], statuses
    assert state["provenance"]["abandoned"] is True
    assert _outcome_in_metrics(tmp_path) == "abandoned", "the metrics file is written before qbr exits"
    assert len(state["node_snapshots"]) == 2, "the snapshots being made are recorded, so the next plan finds them"
    assert _no_lock_left(tmp_path)
    prod.nodes[0].wait_background()
    time.sleep(SLOW)  # the node finishes the snapshots it was asked for after qbr is gone
    _converges(prod, tmp_path)
