"""What the benchmark scripts share: the services they measure against, run as child processes,
and the way they print results (a small table, then `ratio:` lines).

The Qdrant emulator (tests/emulator) and, for memory.py, moto's S3 server run in processes of
their own, so the numbers are those of qbr's process and not of the servers it talks to.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/x.py` puts only benchmarks/ on the path
    sys.path.insert(0, str(ROOT))

MIB = 1 << 20

#: Fake keys for the local moto server; boto3 finds them through its standard chain.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "benchmark-access-key",
    "AWS_SECRET_ACCESS_KEY": "benchmark-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_AWS_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def use_fake_aws(env: dict[str, str] | None = None) -> dict[str, str]:
    """Point boto3 at the fake keys (in `env`, default os.environ), never at real credentials."""
    target = os.environ if env is None else env
    target.update(FAKE_AWS)
    for name in _AWS_UNSET:
        target.pop(name, None)
    return target  # type: ignore[return-value]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_env() -> dict[str, str]:
    """The environment for a child Python: the repository importable, no proxies, fake AWS keys."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(name, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return use_fake_aws(env)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def emulator_process(
    synthetic: dict[str, int] | None = None, collections: int = 0, data_dir: Path | None = None
) -> Iterator[str]:
    """A one-node Qdrant emulator in a child process; yields its URL.

    synthetic: collection name -> snapshot size in bytes (generated, never held in memory).
    collections: that many small ordinary collections, named c00000, c00001, ...
    """
    with cluster_process(1, {name: (size, 0) for name, size in (synthetic or {}).items()}, collections,
                         data_dir) as urls:
        yield urls[0]


class EmulatorTraffic:
    """The requests an emulator process served (its --control channel): reset, then read."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    def _ask(self, command: str) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def reset(self) -> None:
        self._ask("reset")

    def counts(self) -> dict:
        """{"requests": total, "routes": {"GET /collections/{collection}": n, ...}} since the last reset."""
        return self._ask("traffic")


@contextmanager
def emulator_with_traffic(collections: int = 0, data_dir: Path | None = None) -> Iterator[tuple[str, EmulatorTraffic]]:
    """A one-node emulator in a child process, as emulator_process, and what it served."""
    with _emulator_child(_emulator_args(1, None, collections, data_dir, None, 0.0) + ["--control"]) as (urls, process):
        yield urls[0], EmulatorTraffic(process)


def _emulator_args(nodes: int, synthetic: dict[str, tuple[int, int]] | None, collections: int,
                   data_dir: Path | None, download_rate: float | None, snapshot_latency: float) -> list[str]:
    args = [sys.executable, str(ROOT / "benchmarks" / "_emulator_server.py"), "--nodes", str(nodes),
            "--collections", str(collections), "--snapshot-latency", str(snapshot_latency)]
    for name, (size, node) in (synthetic or {}).items():
        args += ["--synthetic", f"{name}={size}@{node}"]
    if data_dir is not None:
        args += ["--data-dir", str(data_dir)]
    if download_rate is not None:
        args += ["--download-rate", str(download_rate)]
    return args


@contextmanager
def _emulator_child(args: list[str]) -> Iterator[tuple[list[str], subprocess.Popen]]:
    control = "--control" in args
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=child_env(),
                               stdin=subprocess.PIPE if control else None)
    try:
        assert process.stdout is not None
        urls = process.stdout.readline().split()
        if not urls or not all(url.startswith("http://") for url in urls):
            raise RuntimeError(f"the emulator did not start (exit code {process.wait()})")
        yield urls, process
    finally:
        if process.stdin is not None:
            process.stdin.close()
        _stop(process)


@contextmanager
def cluster_process(
    nodes: int,
    synthetic: dict[str, tuple[int, int]] | None = None,
    collections: int = 0,
    data_dir: Path | None = None,
    *,
    download_rate: float | None = None,
    snapshot_latency: float = 0.0,
) -> Iterator[list[str]]:
    """A Qdrant emulator cluster of `nodes` in a child process; yields the nodes' URLs.

    synthetic: collection name -> (snapshot size in bytes, node index it lives on).
    download_rate: bytes/s each node serves snapshot downloads at, all of them together.
    snapshot_latency: seconds each node takes to make a snapshot.
    """
    args = _emulator_args(nodes, synthetic, collections, data_dir, download_rate, snapshot_latency)
    with _emulator_child(args) as (urls, _):
        yield urls


@contextmanager
def moto_process() -> Iterator[str]:
    """moto's S3 server in a child process (it keeps objects in its own memory); yields its endpoint."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=child_env(),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


@contextmanager
def moto_in_process() -> Iterator[str]:
    """moto's ThreadedMotoServer in this process (as the test suite runs it); yields its endpoint."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    use_fake_aws()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def s3_client(endpoint: str):  # -> botocore S3 client
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def drop_bucket(client, bucket: str) -> None:
    """Empty and delete a bucket, so moto frees what it holds."""
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
        for upload in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])
    client.delete_bucket(Bucket=bucket)


# ---------------------------------------------------------------- printing


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


def print_ratio(name: str, value: float, note: str, digits: int = 2) -> None:
    """One machine-greppable result line: `ratio: <name> = <value> (<what it means>)`."""
    print(f"ratio: {name} = {value:.{digits}f} ({note})", flush=True)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def mib_per_s(size: int, seconds: float) -> float:
    return size / MIB / max(seconds, 1e-9)
