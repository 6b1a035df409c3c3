"""Fault injection: statuses, latency, cut and corrupted downloads, resets, nodes going down."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest


@pytest.fixture
def http():
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def snapshot_of(http, url: str) -> dict:
    assert http.put(f"{url}/collections/docs", json={"vectors": {"size": 2, "distance": "Dot"}}).status_code == 200
    http.put(f"{url}/collections/docs/points?wait=true",
             json={"points": [{"id": i, "vector": [1.0, float(i)], "payload": {"i": i}} for i in range(200)]})
    return http.post(f"{url}/collections/docs/snapshots").json()["result"]


def test_status_fault_applies_to_the_next_n_matching_calls(emulator, http):
    cluster = emulator()
    node, url = cluster.nodes[0], cluster.urls[0]
    fault = node.faults.add(method="GET", path=r"^/collections$", status=503, times=2)
    for _ in range(2):
        r = http.get(f"{url}/collections")
        assert r.status_code == 503
        assert r.json()["status"]["error"].startswith("Service unavailable") and "time" in r.json()
    assert http.post(f"{url}/collections/x/points/count", json={}).status_code == 404  # other routes untouched
    assert http.get(f"{url}/collections").status_code == 200
    assert fault.hits == 2 and len(node.faults) == 0


def test_status_fault_with_body_and_retry_after(emulator, http):
    cluster = emulator()
    node, url = cluster.nodes[0], cluster.urls[0]
    node.faults.add(path="/collections", status=429, retry_after=3)
    r = http.get(f"{url}/collections")
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    node.faults.add(path="/collections", status=500, body={"status": {"error": "custom"}, "time": 0})
    assert http.get(f"{url}/collections").json() == {"status": {"error": "custom"}, "time": 0}
    node.faults.add(path="/collections", status=502, body="bad gateway")
    r = http.get(f"{url}/collections")
    assert r.status_code == 502 and r.text == "bad gateway"


def test_forever_fault_until_cleared(emulator, http):
    cluster = emulator()
    node, url = cluster.nodes[0], cluster.urls[0]
    node.faults.add(path="^/$", status=500, times=None)
    assert [http.get(url + "/").status_code for _ in range(4)] == [500] * 4
    node.faults.clear()
    assert http.get(url + "/").status_code == 200


def test_latency_delays_the_answer(emulator, http):
    cluster = emulator()
    cluster.nodes[0].faults.add(path="^/$", latency=0.3)
    started = time.monotonic()
    assert http.get(cluster.urls[0] + "/").status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    http.get(cluster.urls[0] + "/")
    assert time.monotonic() - started < 0.3


def test_cut_after_sends_full_length_but_closes_early(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    desc = snapshot_of(http, url)
    cluster.nodes[0].faults.add(method="GET", path=r"/snapshots/.+", cut_after=1000)
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError):
        with http.stream("GET", f"{url}/collections/docs/snapshots/{desc['name']}") as r:
            assert int(r.headers["content-length"]) == desc["size"] > 1000
            for chunk in r.iter_raw():
                received += chunk
    assert len(received) == 1000
    whole = http.get(f"{url}/collections/docs/snapshots/{desc['name']}")
    assert hashlib.sha256(whole.content).hexdigest() == desc["checksum"]


def test_corrupt_flips_bytes_and_keeps_the_size(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    desc = snapshot_of(http, url)
    good = http.get(f"{url}/collections/docs/snapshots/{desc['name']}").content
    cluster.nodes[0].faults.add(method="GET", path=r"/snapshots/", corrupt=True)
    bad = http.get(f"{url}/collections/docs/snapshots/{desc['name']}")
    assert bad.status_code == 200 and len(bad.content) == len(good) == int(bad.headers["content-length"])
    assert hashlib.sha256(bad.content).hexdigest() != desc["checksum"]
    assert sum(a != b for a, b in zip(good, bad.content)) == 1


def test_reset_closes_without_a_response(emulator, http):
    cluster = emulator()
    cluster.nodes[0].faults.add(path="^/collections$", reset=True)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)):
        http.get(cluster.urls[0] + "/collections")
    assert http.get(cluster.urls[0] + "/collections").status_code == 200


def test_fault_on_upload_still_reads_the_body(emulator, http):
    cluster = emulator()
    cluster.nodes[0].faults.add(method="POST", path="upload", status=500)
    r = http.post(cluster.urls[0] + "/collections/x/snapshots/upload",
                  files={"snapshot": ("a.snapshot", b"x" * 200_000)})
    assert r.status_code == 500
    assert http.get(cluster.urls[0] + "/").status_code == 200  # the same connection keeps working


def test_down_refuses_connections_and_up_serves_again(emulator, http):
    cluster = emulator(nodes=2)
    n0, n1 = cluster.nodes
    assert http.put(f"{n0.url}/collections/docs", json={"vectors": {"size": 2, "distance": "Dot"}}).status_code == 200
    assert http.get(n0.url + "/").status_code == 200  # a pooled keep-alive connection now exists
    n0.down()
    assert not n0.is_up
    with pytest.raises(httpx.TransportError):
        http.get(n0.url + "/")
    with pytest.raises(httpx.ConnectError):
        httpx.get(n0.url + "/", trust_env=False)
    assert http.get(f"{n1.url}/collections/docs").status_code == 200
    n0.up()
    assert http.get(f"{n0.url}/collections/docs").status_code == 200
    assert n0.url == cluster.urls[0]


def test_faults_are_per_node(emulator, http):
    cluster = emulator(nodes=2)
    cluster.nodes[1].faults.add(status=500, times=None)
    assert http.get(cluster.urls[0] + "/").status_code == 200
    assert http.get(cluster.urls[1] + "/").status_code == 500


def test_url_recovery_from_a_cut_or_corrupt_source_fails_cleanly(emulator, http):
    source, target = emulator(), emulator()
    desc = snapshot_of(http, source.urls[0])
    location = f"{source.urls[0]}/collections/docs/snapshots/{desc['name']}"
    source.nodes[0].faults.add(method="GET", path="/snapshots/", cut_after=500)
    r = http.put(f"{target.urls[0]}/collections/docs/snapshots/recover", json={"location": location})
    assert r.status_code == 400 and "Failed to download snapshot" in r.json()["status"]["error"]
    source.nodes[0].faults.add(method="GET", path="/snapshots/", corrupt=True)
    r = http.put(f"{target.urls[0]}/collections/docs/snapshots/recover",
                 json={"location": location, "checksum": desc["checksum"]})
    assert r.status_code == 400 and "Snapshot checksum mismatch" in r.json()["status"]["error"]
    source.nodes[0].down()
    r = http.put(f"{target.urls[0]}/collections/docs/snapshots/recover", json={"location": location})
    assert r.status_code == 400
    assert target.collection_names() == [] and target.nodes[0].errors == []
