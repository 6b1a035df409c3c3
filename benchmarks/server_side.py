"""A cluster whose nodes write snapshots to S3 themselves: a server-side backup (the archive copied
inside S3) against the client-side path (node -> qbr -> S3), in the same run.

    python benchmarks/server_side.py [--size-mib 1024] [--repeat 1]

One emulator node in Qdrant's S3 snapshot-storage mode over moto (its own process) holds one
synthetic collection of `--size-mib`. Each run is a real `qbr apply` process into a fresh prefix
of a repository bucket on the same moto: once with `snapshot_storage` declared (server-side), once
without (client-side: qbr downloads the snapshot through the node, which streams it from S3, and
uploads it again). The table shows the wall time and the archive bytes that went through qbr (the
node's served snapshot downloads).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MIB, child_env, median, moto_process, print_ratio, print_table, s3_client, use_fake_aws

from tests.emulator.cluster import EmulatorCluster

STORE, REPO = "bench-snapshots", "bench-repo"


def manifest(url: str, endpoint: str, prefix: str, server_side: bool) -> str:
    store = (f'    snapshot_storage: {{s3: {{bucket: {STORE}, prefix: snapshots, endpoint_url: "{endpoint}", '
             'region: us-east-1}}\n') if server_side else ""
    return f"""version: 1
clusters:
  prod:
    url: "{url}"
{store}repositories:
  main: {{s3: {{bucket: {REPO}, prefix: {prefix}, endpoint_url: "{endpoint}", region: us-east-1}}}}
backups:
  nightly: {{cluster: prod, repository: main, rpo: 1h}}
"""


def one_run(cluster: EmulatorCluster, endpoint: str, work: Path, name: str, server_side: bool) -> tuple[float, int]:
    folder = work / name
    folder.mkdir()
    (folder / "qbr.yaml").write_text(manifest(cluster.urls[0], endpoint, name, server_side))
    served = cluster.download_bytes()
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "qbr", "apply", "--auto-approve"], cwd=folder, env=child_env(),
                         capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if run.returncode != 0:
        raise RuntimeError(f"qbr apply failed:\n{run.stdout}{run.stderr}")
    return seconds, cluster.download_bytes() - served


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    use_fake_aws()
    with moto_process() as endpoint, tempfile.TemporaryDirectory(prefix="qbr-bench-") as tmp:
        work = Path(tmp)
        client = s3_client(endpoint)
        for bucket in (STORE, REPO):
            client.create_bucket(Bucket=bucket)
        cluster = EmulatorCluster(nodes=1, port=0, data_dir=work / "emulator", snapshots_s3={
            "bucket": STORE, "endpoint_url": endpoint, "prefix": "snapshots", "region": "us-east-1", "part_size": 8 * MIB})
        cluster.start()
        try:
            cluster.add_synthetic_collection("big", snapshot_size=args.size_mib * MIB)
            found: dict[str, list[tuple[float, int]]] = {"server-side": [], "client-side": []}
            for n in range(args.repeat):
                for path in (("server-side", "client-side") if n % 2 == 0 else ("client-side", "server-side")):
                    found[path].append(one_run(cluster, endpoint, work, f"{path}-{n}", path == "server-side"))
        finally:
            cluster.stop()
    rows = []
    for path, runs in found.items():
        seconds = median([s for s, _ in runs])
        moved = max(b for _, b in runs)
        rows.append((path, args.size_mib, len(runs), f"{seconds:.2f}", f"{moved / MIB:.1f}"))
    print_table(("path", "archive MiB", "runs", "apply s", "MiB through qbr"), rows)
    server = median([s for s, _ in found["server-side"]])
    client_side = median([s for s, _ in found["client-side"]])
    print_ratio("server_side_time_vs_client_side", server / client_side,
                "apply time of the server-side backup / of the client-side one (below 1 = faster)")
    print_ratio("server_side_mib_through_qbr", max(b for _, b in found["server-side"]) / MIB,
                "archive MiB that went through qbr in the server-side backup (0 expected)", digits=1)

    return 0


if __name__ == "__main__":
    sys.exit(main())
