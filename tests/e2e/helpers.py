"""Helpers for end-to-end scenarios: run qbr's CLI against emulator nodes and moto's S3."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from qbr.cli import cli
from tests.qdrant_testing import TestingClient as QdrantClient

REPO_ROOT = Path(__file__).resolve().parents[2]
# Fast retries, and apply --now allowed (a test-only switch: real applies run at the real time).
FAST_RETRIES = {"QBR_HTTP_BACKOFF": "0.01", "QBR_HTTP_RETRIES": "3", "QBR_TEST_CLOCK": "1"}


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def qbr(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Run:
    """Run the qbr CLI in-process (CliRunner), from `cwd`, as a user would type it."""
    runner = CliRunner()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(cli, list(args), env={**FAST_RETRIES, **(env or {})}, catch_exceptions=True)
    finally:
        os.chdir(old)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"qbr {' '.join(args)} raised {result.exception!r}\n{result.output}") from result.exception
    return Run(result.exit_code, result.stdout, result.stderr)


def qbr_process(*args: str, cwd: Path, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """Start qbr as a real subprocess (for locks, kills and concurrency)."""
    full_env = {**os.environ, **FAST_RETRIES, **(env or {}), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "qbr", *args],
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def write_manifest(folder: Path, text: str) -> Path:
    path = folder / "qbr.yaml"
    path.write_text(text)
    return path


def make_collection(url: str, name: str, *, points: int, shards: int = 1, dim: int = 4, start: int = 0, api_key: str | None = None) -> None:
    """Create a collection and fill it with deterministic points (ids start..start+points-1)."""
    with QdrantClient(url, api_key=api_key, backoff=0) as client:
        if not client.collection_exists(name):
            client.create_collection(name, {"params": {"vectors": {"size": dim, "distance": "Cosine"}}}, shard_number=shards)
        upsert(client, name, range(start, start + points), dim=dim)


def upsert(client: QdrantClient, name: str, ids, *, dim: int = 4, tag: str = "v1") -> None:
    batch = [
        {"id": i, "vector": [round((i * 7 + k) % 11 / 10, 3) for k in range(dim)], "payload": {"n": i, "tag": tag, "name": f"{name}-{i}"}}
        for i in ids
    ]
    for chunk in range(0, len(batch), 200):
        client.upsert_points(name, batch[chunk : chunk + 200])


def all_points(url: str, name: str, api_key: str | None = None) -> dict:
    """{id: (vector, payload)} read over HTTP, to compare collections point by point."""
    with QdrantClient(url, api_key=api_key, backoff=0) as client:
        return {p["id"]: (p.get("vector"), p.get("payload")) for p in client.scroll_points(name)}


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_sets(repo) -> list[dict]:
    """Every set record in a repository (qbr.repository interface), parsed."""
    return [json.loads(repo.get_bytes(o.key)) for o in repo.list("sets/")]


def add_tar_members(tar: tarfile.TarFile, members) -> None:
    """Add (name, content) members: bytes make a file, None a folder, a Path is added from disk."""
    for name, content in members:
        if isinstance(content, Path):
            tar.add(content, arcname=name)
            continue
        info = tarfile.TarInfo(name)
        if content is None:
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        else:
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def tar_bytes(members) -> bytes:
    """A GNU tar archive of (name, content) members, in memory (for crafting test archives)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        add_tar_members(tar, members)
    return buffer.getvalue()
