"""Large synthetic snapshots stream through the emulator without being held in memory."""

from __future__ import annotations

import hashlib
import tracemalloc

import httpx

MIB = 1024 * 1024


def test_256mib_synthetic_download_keeps_traced_memory_small(emulator):
    cluster = emulator()
    cluster.add_synthetic_collection("big", snapshot_size=256 * MIB)
    url = cluster.urls[0]
    tracemalloc.start()
    try:
        with httpx.Client(timeout=120, trust_env=False) as http:
            desc = http.post(f"{url}/collections/big/snapshots").json()["result"]
            digest = hashlib.sha256()
            total = 0
            with http.stream("GET", f"{url}/collections/big/snapshots/{desc['name']}") as response:
                assert int(response.headers["content-length"]) == desc["size"]
                for chunk in response.iter_raw(1 * MIB):
                    digest.update(chunk)
                    total += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert abs(desc["size"] - 256 * MIB) < 4096
    assert total == desc["size"]
    assert digest.hexdigest() == desc["checksum"]
    assert peak < 20 * MIB, f"peak traced memory {peak / MIB:.1f} MiB"


def test_large_upload_streams_to_disk(emulator):
    source, target = emulator(), emulator()
    source.add_synthetic_collection("big", snapshot_size=64 * MIB)
    boundary = "qbr-emulator-large-upload"
    with httpx.Client(timeout=120, trust_env=False) as http:
        desc = http.post(f"{source.urls[0]}/collections/big/snapshots").json()["result"]
        tracemalloc.start()
        try:
            with http.stream("GET", f"{source.urls[0]}/collections/big/snapshots/{desc['name']}") as download:

                def body():
                    yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"snapshot\"; "
                           f"filename=\"{desc['name']}\"\r\n\r\n").encode()
                    yield from download.iter_raw(256 * 1024)
                    yield f"\r\n--{boundary}--\r\n".encode()

                r = http.post(f"{target.urls[0]}/collections/big/snapshots/upload",
                              params={"priority": "snapshot", "checksum": desc["checksum"]}, content=body(),
                              headers={"content-type": f"multipart/form-data; boundary={boundary}"})
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert r.status_code == 200, r.text
    stored = target.nodes[0].snapshots_dir / "big" / desc["name"]
    assert stored.stat().st_size == desc["size"]
    with open(stored, "rb") as fh:
        assert hashlib.file_digest(fh, "sha256").hexdigest() == desc["checksum"]
    assert "big" in target.collection_names()
    assert peak < 20 * MIB, f"peak traced memory {peak / MIB:.1f} MiB"
