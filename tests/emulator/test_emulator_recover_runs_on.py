"""Recovers that keep running after the client gave up: replica states and telemetry while they
run, overlapping collection recovers (last to finish wins), shard recovers queued in 1.19."""

from __future__ import annotations

import shutil
import threading
import time

import httpx
import pytest

VECTORS = {"size": 2, "distance": "Dot"}


@pytest.fixture
def http():
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def upsert(http, url, ids, name="docs"):
    http.put(f"{url}/collections/{name}/points?wait=true",
             json={"points": [{"id": i, "vector": [1.0, float(i)], "payload": {}} for i in ids]})


def snapshot_location(http, cluster, ids, label="backup") -> str:
    """A collection snapshot holding exactly `ids`, kept as `<label>.snapshot`, as a file:// location
    (a name of its own: two snapshots made within one second would share theirs)."""
    url = cluster.urls[0]
    http.post(f"{url}/collections/docs/points/delete?wait=true", json={"filter": {}})
    upsert(http, url, ids)
    desc = http.post(f"{url}/collections/docs/snapshots").json()["result"]
    made = cluster.nodes[0].snapshots_dir / "docs" / desc["name"]
    return shutil.copy(made, made.with_name(f"{label}.snapshot")).as_uri()


def local_states(http, url, name="docs") -> list[str]:
    return [s["state"] for s in http.get(f"{url}/collections/{name}/cluster").json()["result"]["local_shards"]]


def recovering(http, url, name="docs") -> int:
    snapshots = http.get(f"{url}/telemetry", params={"details_level": 2}).json()["result"]["collections"]["snapshots"]
    return sum(s["running_snapshot_recovery"] for s in snapshots if s["id"] == name)


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def gate(node) -> threading.Event:
    """Hold the node's next recover in its recovering phase until the returned event is set."""
    release = threading.Event()
    node.during_recover(lambda *_: release.wait(10))
    return release


def test_a_recover_runs_on_after_the_client_timed_out(emulator, http):
    cluster = emulator()
    url, node = cluster.urls[0], cluster.nodes[0]
    http.put(f"{url}/collections/docs", json={"vectors": VECTORS})
    location = snapshot_location(http, cluster, range(8))
    release = gate(node)
    with httpx.Client(timeout=0.15, trust_env=False) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.put(f"{url}/collections/copy/snapshots/recover", json={"location": location})
    # still running: the new collection exists already, empty, its replica recovering
    assert local_states(http, url, "copy") == ["ManualRecovery"]
    assert recovering(http, url, "copy") == 1
    assert 'snapshot_recovery_running{id="copy"} 1' in http.get(f"{url}/metrics").text.splitlines()
    assert http.post(f"{url}/collections/copy/points/count", json={}).json()["result"]["count"] == 0
    release.set()
    wait_until(lambda: recovering(http, url, "copy") == 0)
    assert local_states(http, url, "copy") == ["Active"] and sorted(cluster.points("copy")) == list(range(8))


def test_recover_latency_is_spent_recovering_and_a_list_gives_one_value_per_recover(emulator, http):
    cluster = emulator()
    url, node = cluster.urls[0], cluster.nodes[0]
    http.put(f"{url}/collections/docs", json={"vectors": VECTORS})
    location = snapshot_location(http, cluster, range(3))
    node.recover_latency = [0.2, 0.0]
    seen = []
    node.during_recover(lambda *_: seen.append(local_states(http, url)), times=2)
    for _ in range(2):
        started = time.monotonic()
        assert http.put(f"{url}/collections/docs/snapshots/recover", json={"location": location}).status_code == 200
        seen.append(time.monotonic() - started)
    assert seen[0] == ["ManualRecovery"] and seen[1] >= 0.2 and node.recover_latency == []
    node.recover_latency = 0


def test_replicas_are_partial_while_recovering_before_1_16_4(emulator, http):
    cluster = emulator(version="1.16.0")
    url = cluster.urls[0]
    http.put(f"{url}/collections/docs", json={"vectors": VECTORS})
    location = snapshot_location(http, cluster, range(3))
    seen = []
    cluster.nodes[0].during_recover(lambda n, c, s: seen.append(local_states(http, url)))
    assert http.put(f"{url}/collections/docs/snapshots/recover", json={"location": location}).status_code == 200
    assert seen == [["Partial"]] and local_states(http, url) == ["Active"]


def test_overlapping_collection_recovers_both_run_and_the_last_to_finish_wins(emulator, http):
    cluster = emulator()
    url, node = cluster.urls[0], cluster.nodes[0]
    http.put(f"{url}/collections/docs", json={"vectors": VECTORS})
    first = snapshot_location(http, cluster, range(5), "first")
    second = snapshot_location(http, cluster, [100, 101], "second")
    release = gate(node)  # the first recover is held; the second runs through
    slow = threading.Thread(target=lambda: httpx.put(f"{url}/collections/docs/snapshots/recover",
                                                     json={"location": first}, timeout=10, trust_env=False))
    slow.start()
    wait_until(lambda: recovering(http, url) == 1)
    r = http.put(f"{url}/collections/docs/snapshots/recover", json={"location": second})
    assert r.status_code == 200 and sorted(cluster.points("docs")) == [100, 101]
    assert local_states(http, url) == ["Active"] and recovering(http, url) == 1  # Active, yet one still runs
    release.set()
    slow.join()
    assert sorted(cluster.points("docs")) == list(range(5)) and recovering(http, url) == 0


@pytest.mark.parametrize(("version", "winner"), [("1.19.0", "second"), ("1.18.3", "first")])
def test_shard_recovers_queue_from_1_19_and_overlap_before(emulator, http, version, winner):
    cluster = emulator(version=version)
    url, node = cluster.urls[0], cluster.nodes[0]
    http.put(f"{url}/collections/docs", json={"vectors": VECTORS})
    names = {}
    for label, ids in (("first", range(4)), ("second", [50])):
        http.post(f"{url}/collections/docs/points/delete?wait=true", json={"filter": {}})
        upsert(http, url, ids)
        made = http.post(f"{url}/collections/docs/shards/0/snapshots").json()["result"]["name"]
        shard_dir = node.snapshots_dir / "docs" / "shards" / "0"
        names[label] = shutil.copy(shard_dir / made, shard_dir / f"{label}.snapshot").name
    states = []
    node.during_recover(lambda *_: states.append(local_states(http, url)))
    release = gate(node)

    def recover(label):
        return lambda: httpx.put(f"{url}/collections/docs/shards/0/snapshots/recover",
                                 json={"location": names[label]}, timeout=10, trust_env=False)

    first, second = threading.Thread(target=recover("first")), threading.Thread(target=recover("second"))
    first.start()
    wait_until(lambda: recovering(http, url) == 1)
    second.start()
    second.join(0.3 if winner == "second" else 5)
    assert second.is_alive() == (winner == "second")  # 1.19 queues the second behind the first
    release.set()
    first.join()
    second.join()
    assert sorted(cluster.points("docs")) == (list(range(4)) if winner == "first" else [50])
    assert states[0] == ["Active"]  # a shard recover leaves the replica's state alone


def test_accepted_recover_runs_in_the_background_and_is_counted(emulator, http):
    cluster = emulator()
    url, node = cluster.urls[0], cluster.nodes[0]
    http.put(f"{url}/collections/docs", json={"vectors": VECTORS})
    location = snapshot_location(http, cluster, range(3))
    release = gate(node)
    r = http.put(f"{url}/collections/other/snapshots/recover?wait=false", json={"location": location})
    assert r.status_code == 202
    wait_until(lambda: recovering(http, url, "other") == 1)
    release.set()
    cluster.wait_background()
    assert sorted(cluster.points("other")) == [0, 1, 2] and recovering(http, url, "other") == 0
