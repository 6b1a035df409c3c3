"""`qbr status` drawn for people: one verdict per backup, sizes, and where restores came from."""

from __future__ import annotations

from qbr.render.sizes import human_bytes
from qbr.status import StatusReport


def render_status(report: StatusReport) -> str:
    lines = []
    for b in report.backups:
        verdict = "LATE" if b.late else "OK"
        if b.newest_set:
            lines.append(f"backup {b.backup}: {verdict}  newest set {b.newest_set} is {b.age} old (rpo {b.rpo})")
        else:
            lines.append(f"backup {b.backup}: {verdict}  no set yet (rpo {b.rpo})")
        lines.append(
            f"    {b.sets} sets in repository {b.repository}, {human_bytes(b.total_bytes)} referenced, "
            f"{human_bytes(b.unique_bytes)} stored; collections: {', '.join(b.collections) or '-'}"
        )
        for set_id, until, left in b.protected:
            lines.append(f"    set {set_id}: protected by S3 Object Lock until {until} ({left} left)")
        if b.stored_bytes is not None:
            ratio = f"{b.dedup_ratio:.2f}x" if b.dedup_ratio else "-"
            lines.append(f"    dedup: {human_bytes(b.unique_bytes)} of archives take {human_bytes(b.stored_bytes)} as chunks "
                         f"(dedup and compression {ratio})")
    for name, targets in report.restores.items():
        lines.append(f"restore {name}: {len(targets)} collections restored")
        for t in targets:
            if t.incomplete:
                lines.append(
                    f"    {t.collection} on {t.cluster}: a restore from set {t.set_id} collection {t.source_collection} "
                    "did not finish; the next apply restores it again"
                )
                continue
            if t.points_check_failed:
                lines.append(f"    {t.collection} on {t.cluster}: NOT TRUSTED: {t.points_check_failed}")
                continue
            lines.append(
                f"    {t.collection} on {t.cluster}: from set {t.set_id} collection {t.source_collection}, "
                f"restored {t.restored_at} ({t.points_count} points)"
            )
    lines += [f"Recommended: {r}" for r in report.recommendations]
    late = [b.backup for b in report.backups if b.late]
    lines.append(f"{len(late)} of {len(report.backups)} backups late: {', '.join(late)}" if late else f"All {len(report.backups)} backups within their rpo.")
    return "\n".join(lines) + "\n"
