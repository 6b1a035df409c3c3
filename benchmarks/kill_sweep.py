"""The full crash-safety sweep: kill `qbr apply` at every fault point, at every occurrence.

    python benchmarks/kill_sweep.py                      # everything (about 550 kills)
    python benchmarks/kill_sweep.py --workers 3          # three kills at a time (each in its own world)
    python benchmarks/kill_sweep.py --scenario restore --point restore.before_recover
    python benchmarks/kill_sweep.py --every 5            # every 5th occurrence of each point

For each scenario of tests/e2e/killing.py (backup, retention, restore, recovery) an uninterrupted
apply runs first and logs how often it reaches each point of qbr/faultpoints.py; then, for every
point and every n up to that count, a fresh world is built, qbr is SIGKILLed the n-th time it
reaches the point, and the harness checks the promises (state parses, no set names a missing or
damaged archive, the lock's lease runs out, the next apply with the same --now takes the lock over
and converges to the uninterrupted world, node snapshots are cleaned up, leftovers are swept after
the grace period). restore.before_recover is also tried with a timed kill that lands while the node
works on the recover. Prints one line per kill and counts per scenario; exits 1 if any promise broke.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qbr.faultpoints import POINTS
from tests.e2e.killing import (
    SCENARIOS,
    Baseline,
    CaseResult,
    baseline,
    run_case,
    standalone_bed,
)

TIMED = {"restore.before_recover": 0.1}  # also kill this long after the point (mid recover)

_bed = None
_bed_context = None


def _worker_init() -> None:
    global _bed, _bed_context
    _bed_context = standalone_bed()
    _bed = _bed_context.__enter__()


def _worker_case(base: Baseline, point: str, n: int, delay: float, parallelism: int) -> CaseResult:
    return run_case(_bed, base, point, n, delay=delay, parallelism=parallelism)


def cases_of(base: Baseline, points: set[str] | None, every: int) -> list[tuple[str, int, float]]:
    out = []
    for point, count in sorted(base.occurrences.items()):
        if points and point not in points:
            continue
        for n in range(1, count + 1):
            if (n - 1) % every and n != count:
                continue
            out.append((point, n, 0.0))
            if point in TIMED:
                out.append((point, n, TIMED[point]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="only these scenarios")
    parser.add_argument("--point", action="append", help="only these points")
    parser.add_argument("--every", type=int, default=1, help="try every k-th occurrence of each point (and the last)")
    parser.add_argument("--parallelism", type=int, default=4, help="qbr apply --parallelism of the killed runs")
    parser.add_argument("--workers", type=int, default=1, help="kills run at once, each in its own world")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    args = parser.parse_args()
    scenarios = args.scenario or list(SCENARIOS)
    points = set(args.point) if args.point else None
    started = time.monotonic()
    summary = []
    reached: set[str] = set()
    broken: list[CaseResult] = []
    with standalone_bed() as bed:
        bases = {}
        for scenario in scenarios:
            bases[scenario] = baseline(bed, scenario, args.parallelism)
            reached |= set(bases[scenario].occurrences)
            print(f"{scenario}: uninterrupted apply {bases[scenario].seconds:.1f}s, "
                  f"{len(bases[scenario].occurrences)} points, {sum(bases[scenario].occurrences.values())} occurrences",
                  flush=True)
    pool = ProcessPoolExecutor(max_workers=args.workers, initializer=_worker_init) if args.workers > 1 else None
    if pool is None:
        _worker_init()
    try:
        for scenario in scenarios:
            base = bases[scenario]
            todo = cases_of(base, points, max(1, args.every))
            t0 = time.monotonic()
            if pool is None:
                results = (_worker_case(base, p, n, d, args.parallelism) for p, n, d in todo)
            else:
                results = pool.map(_worker_case, *zip(*[(base, p, n, d, args.parallelism) for p, n, d in todo])) if todo else []
            counts = {"ok": 0, "failed": 0, "not reached": 0}
            findings: dict[str, int] = {}
            for result in results:
                verdict = "failed" if result.failures and result.killed else "ok" if result.killed else "not reached"
                counts[verdict] += 1
                for finding in result.findings:
                    kind = re.sub(r"\b[0-9]+\b", "N", finding)
                    findings[kind] = findings.get(kind, 0) + 1
                if verdict != "ok":
                    broken.append(result)
                if verdict != "ok" or not args.quiet:
                    print(result.report() if verdict != "ok" else f"{result.label}: ok ({result.seconds:.1f}s)", flush=True)
            seconds = time.monotonic() - t0
            summary.append((scenario, len({p for p, _, _ in todo}), len(todo), counts, seconds, findings))
    finally:
        if pool is not None:
            pool.shutdown()
        elif _bed_context is not None:
            _bed_context.__exit__(None, None, None)

    print("\nscenario    points  kills     ok  failed  not-reached   seconds")
    for scenario, npoints, nkills, counts, seconds, _ in summary:
        print(f"{scenario:<10} {npoints:>7} {nkills:>6} {counts['ok']:>6} {counts['failed']:>7} {counts['not reached']:>12} {seconds:>9.0f}")
    total = sum(s[2] for s in summary)
    print(f"total: {total} kills over {len(POINTS)} known points ({len(reached)} reached by these scenarios) "
          f"in {time.monotonic() - started:.0f}s")
    unreached = sorted(set(POINTS) - reached)
    if unreached and not points and not args.scenario:
        print("points no scenario reaches: " + ", ".join(unreached))
    print("\nwhat the kills left behind (cleaned up by the next apply, or swept after the grace period, unless a line above FAILED):")
    merged: dict[str, int] = {}
    for *_, findings in summary:
        for kind, n in findings.items():
            merged[kind] = merged.get(kind, 0) + n
    for kind, n in sorted(merged.items(), key=lambda kv: -kv[1]):
        print(f"  {n:>5} x {kind}")
    return 1 if any(r.killed and r.failures for r in broken) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
