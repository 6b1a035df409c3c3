"""Request accounting: requests per route, snapshot bytes served and received."""

from __future__ import annotations

import httpx
import pytest

from tests.emulator.accounting import ROUTE_COLLECTION_SNAPSHOT, ROUTE_COLLECTION_SNAPSHOTS, ROUTE_COLLECTION_UPLOAD


@pytest.fixture
def http():
    with httpx.Client(timeout=10, trust_env=False) as client:
        yield client


def test_requests_per_route_and_snapshot_bytes(emulator, http):
    source, target = emulator(nodes=2), emulator()
    node = source.nodes[0]
    url = node.url
    http.put(f"{url}/collections/docs", json={"vectors": {"size": 2, "distance": "Dot"}})
    http.put(f"{url}/collections/docs/points?wait=true",
             json={"points": [{"id": i, "vector": [1.0, float(i)], "payload": {}} for i in range(300)]})
    desc = http.post(f"{url}/collections/docs/snapshots").json()["result"]
    location = f"{url}/collections/docs/snapshots/{desc['name']}"
    data = http.get(location).content
    node.faults.add(method="GET", path=r"/snapshots/.+", cut_after=1000)
    with pytest.raises(httpx.RemoteProtocolError):
        http.get(location)
    http.get(f"{url}/collections/docs/snapshots/missing.snapshot")
    http.get(f"{url}/no/such/route")
    assert node.count_requests("GET", ROUTE_COLLECTION_SNAPSHOT) == 3
    assert node.count_requests(route=ROUTE_COLLECTION_SNAPSHOTS) == 1
    assert node.count_requests(path=r"/points") == 1
    counts = node.route_counts()
    assert counts[("PUT", "/collections/{collection}")] == 1 and counts[("GET", None)] == 1
    assert node.download_bytes() == desc["size"] + 1000  # what went out: one whole, one cut short
    statuses = [r.status for r in node.traffic.select(route=ROUTE_COLLECTION_SNAPSHOT)]
    assert statuses == [200, 200, 404]
    assert node.requests[0] == ("PUT", "/collections/docs", {})  # the plain log is unchanged
    r = http.post(f"{target.urls[0]}/collections/docs/snapshots/upload", files={"snapshot": ("d.snapshot", data)})
    assert r.status_code == 200
    assert len(data) < target.upload_bytes() < len(data) + 1000
    assert target.count_requests("POST", ROUTE_COLLECTION_UPLOAD) == 1
    http.get(f"{source.urls[1]}/collections/docs/snapshots")
    assert source.count_requests("GET", ROUTE_COLLECTION_SNAPSHOTS) == 1
    assert source.download_bytes() == node.download_bytes() and source.route_counts()[("GET", None)] == 1
    node.reset_traffic()
    assert node.count_requests() == 0 and node.download_bytes() == 0
