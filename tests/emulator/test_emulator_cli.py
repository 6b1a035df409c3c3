"""`python -m tests.emulator` serves a cluster until it is told to stop."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def test_module_prints_urls_serves_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--port", "0", "--nodes", "2", "--api-key", "k",
         "--version", "1.18.3", "--data-dir", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        urls = [proc.stdout.readline().strip() for _ in range(2)]
        assert urls[0].startswith("http://127.0.0.1:") and urls[1].startswith("http://127.0.0.2:")
        for url in urls:
            assert httpx.get(url + "/", trust_env=False).json()["version"] == "1.18.3"
        assert httpx.get(urls[0] + "/collections", trust_env=False).status_code == 401
        r = httpx.get(urls[1] + "/cluster", headers={"api-key": "k"}, trust_env=False)
        assert r.json()["result"]["status"] == "enabled"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (tmp_path / "node-1" / "snapshots").is_dir()
