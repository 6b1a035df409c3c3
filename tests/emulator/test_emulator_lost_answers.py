"""Answers lost after the work: the call's effect happens, the client never hears of it."""

from __future__ import annotations

import time

import httpx
import pytest

VECTORS = {"size": 2, "distance": "Dot"}
LOST = (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError)


@pytest.fixture
def http():
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def seed(http, url, name="docs", points=20):
    assert http.put(f"{url}/collections/{name}", json={"vectors": VECTORS}).status_code == 200
    http.put(f"{url}/collections/{name}/points?wait=true",
             json={"points": [{"id": i, "vector": [1.0, float(i)], "payload": {"i": i}} for i in range(points)]})


def test_reset_after_work_on_snapshot_create_leaves_the_snapshot(emulator, http):
    cluster = emulator()
    url, node = cluster.urls[0], cluster.nodes[0]
    seed(http, url)
    fault = node.faults.add(method="POST", path=r"/snapshots$", after_work="reset")
    with pytest.raises(LOST):
        http.post(f"{url}/collections/docs/snapshots")
    listed = http.get(f"{url}/collections/docs/snapshots").json()["result"]
    assert len(listed) == 1 and listed[0]["checksum"]
    assert fault.hits == 1 and len(node.faults) == 0
    assert node.traffic.select(method="POST")[-1].fault == "after_work:reset"
    assert node.traffic.select(method="POST")[-1].status is None  # no status line ever went out


def test_reset_after_work_on_collection_create_leaves_the_collection(emulator, http):
    cluster = emulator()
    url = cluster.urls[0]
    cluster.nodes[0].faults.add(method="PUT", path=r"^/collections/new$", after_work="reset")
    with pytest.raises(LOST):
        http.put(f"{url}/collections/new", json={"vectors": VECTORS})
    assert http.get(f"{url}/collections/new/exists").json()["result"] == {"exists": True}
    again = http.put(f"{url}/collections/new", json={"vectors": VECTORS})  # a blind retry meets a 409
    assert again.status_code == 409


def test_reset_after_work_on_recover_and_upload_leaves_them_recovered(emulator, http):
    source, target = emulator(), emulator()
    seed(http, source.urls[0])
    desc = http.post(f"{source.urls[0]}/collections/docs/snapshots").json()["result"]
    location = f"{source.urls[0]}/collections/docs/snapshots/{desc['name']}"
    data = http.get(location).content
    node = target.nodes[0]
    node.faults.add(method="PUT", path=r"/snapshots/recover$", after_work="reset")
    with pytest.raises(LOST):
        http.put(f"{target.urls[0]}/collections/a/snapshots/recover", json={"location": location})
    assert target.points("a") == source.points("docs")
    node.faults.add(method="POST", path=r"/snapshots/upload$", after_work="reset")
    with pytest.raises(LOST):
        http.post(f"{target.urls[0]}/collections/b/snapshots/upload", files={"snapshot": ("b.snapshot", data)})
    assert target.points("b") == source.points("docs")
    assert [s["name"] for s in http.get(f"{target.urls[0]}/collections/b/snapshots").json()["result"]] == ["b.snapshot"]
    assert node.upload_bytes() > len(data)  # the whole upload was received, multipart framing included


def test_hang_after_work_keeps_the_answer_until_the_client_gave_up(emulator):
    cluster = emulator()
    url, node = cluster.urls[0], cluster.nodes[0]
    with httpx.Client(timeout=10, trust_env=False) as http:
        seed(http, url)
    node.faults.add(method="POST", path=r"/snapshots$", after_work="hang", hold=5.0)
    started = time.monotonic()
    with httpx.Client(timeout=0.3, trust_env=False) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post(f"{url}/collections/docs/snapshots")
    assert time.monotonic() - started < 2
    with httpx.Client(timeout=10, trust_env=False) as http:
        assert len(http.get(f"{url}/collections/docs/snapshots").json()["result"]) == 1
    # the held answer ends with the node (stop does not wait the hold out)


def test_hang_then_answer_reaches_a_patient_client(emulator, http):
    cluster = emulator()
    cluster.nodes[0].faults.add(method="GET", path=r"^/collections$", after_work="hang", hold=0.2)
    started = time.monotonic()
    assert http.get(f"{cluster.urls[0]}/collections").json()["result"] == {"collections": []}
    assert time.monotonic() - started >= 0.2


def test_cut_after_headers_on_create_and_on_a_202(emulator, http):
    cluster = emulator()
    url, node = cluster.urls[0], cluster.nodes[0]
    seed(http, url)
    node.faults.add(method="POST", path=r"/snapshots$", after_work="cut")
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(f"{url}/collections/docs/snapshots")
    record = node.traffic.select(method="POST")[-1]
    assert record.status == 200 and record.sent == 0 and record.fault == "after_work:cut"
    node.faults.add(method="POST", path=r"/snapshots$", after_work="cut")
    with pytest.raises(httpx.RemoteProtocolError):
        http.post(f"{url}/collections/docs/snapshots?wait=false")
    cluster.wait_background()
    names = {s["name"] for s in http.get(f"{url}/collections/docs/snapshots").json()["result"]}
    assert 1 <= len(names) <= 2  # two creates within one second share a name


def test_before_work_faults_still_stop_the_work(emulator, http):
    cluster = emulator()
    url, node = cluster.urls[0], cluster.nodes[0]
    seed(http, url)
    node.faults.add(method="POST", path=r"/snapshots$", status=503)
    assert http.post(f"{url}/collections/docs/snapshots").status_code == 503
    node.faults.add(method="POST", path=r"/snapshots$", reset=True)
    with pytest.raises(LOST):
        http.post(f"{url}/collections/docs/snapshots")
    assert http.get(f"{url}/collections/docs/snapshots").json()["result"] == []


def test_after_work_options_are_checked(emulator):
    faults = emulator().nodes[0].faults
    with pytest.raises(ValueError):
        faults.add(after_work="explode")
    with pytest.raises(ValueError):
        faults.add(after_work="reset", status=500)
    with pytest.raises(ValueError):
        faults.add(after_work="hang", reset=True)
