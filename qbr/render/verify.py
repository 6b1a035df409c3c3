"""`qbr verify`'s report for people: one line per set, finding and restore test, then a summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qbr.redact import redact
from qbr.render.sizes import human_bytes

if TYPE_CHECKING:
    from qbr.verify.report import RestoreCheck, SetCheck, VerifyReport


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


def _set_lines(check: SetCheck) -> list[str]:
    verdict = f"{_plural(check.archives, 'archive')} OK" if check.ok else _plural(len(check.findings), "problem")
    return [f"set {check.backup}/{check.set_id}: {verdict}"] + [f"  {redact(f.line())}" for f in check.findings]


def _restore_line(restore: RestoreCheck) -> str:
    verdict = f"{restore.points} points OK" if restore.ok else redact(restore.problem or "points count differs")
    return f"restore test {restore.backup}/{restore.set_id}, collection {restore.collection} on cluster {restore.cluster}: {verdict}"


def render_verify(report: VerifyReport) -> str:
    """Findings and restore problems pass through `redact`: no presigned URL's query reaches the output."""
    lines = [line for check in report.sets for line in _set_lines(check)]
    lines += report.notes
    lines += [_restore_line(restore) for restore in report.restores]
    lines += [f"exposed: {text}" for text in report.exposures]
    lines += [f"Warning: {text}" for text in report.warnings]
    if report.uncounted:
        lines.append(
            f"{_plural(report.uncounted, 'archive')} hold Qdrant segment data whose points were "
            "not counted: install qdrant-edge-py (pip install 'qbr[deep]') to open them with Qdrant's engine"
        )
    summary = (
        f"Verified {_plural(len(report.sets), 'set')}, {_plural(report.archives, 'archive')} "
        f"({human_bytes(report.bytes_read)} read{', deep' if report.deep else ''})"
    )
    if report.restore_cluster is not None:
        summary += f", {_plural(len(report.restores), 'restore test')} on cluster {report.restore_cluster}"
    problems = report.problems
    summary += ": all OK." if not problems else f": {_plural(problems, 'problem')}."
    lines.append(summary)
    return "\n".join(lines) + "\n"
