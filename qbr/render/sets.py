"""`qbr sets` drawn for people: a table of sets (restic's `snapshots`), and one set described."""

from __future__ import annotations

from qbr.render.sizes import human_bytes
from qbr.sets import SetRow


def render_set_list(rows: list[SetRow]) -> str:
    header = ("ID", "Taken (UTC)", "Backup", "Collections", "Stored", "Kept because")
    table = [header] + [
        (
            r.record.set_id,
            r.record.created.replace("T", " ").rstrip("Z"),
            r.backup,
            str(len(r.record.collections)),
            human_bytes(r.copied_bytes),
            "; ".join(r.reasons) if r.kept else "not kept: " + ("; ".join(r.reasons) or "deleted by the next apply"),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1] for row in table]
    lines.insert(1, "-" * max(len(line) for line in lines))
    backups = len({r.backup for r in rows})
    lines.append(f"{len(rows)} set{'s' if len(rows) != 1 else ''} of {backups} backup{'s' if backups != 1 else ''}")
    return "\n".join(lines) + "\n"


def render_set(row: SetRow) -> str:
    record = row.record
    lines = [
        f"set {row.backup}/{record.set_id}",
        f"  repository:   {row.repository}",
        f"  taken:        {record.created}" + (f" (committed {record.completed})" if record.completed else ""),
        f"  cluster:      {record.cluster}, Qdrant {record.qdrant_version}" + (f", by qbr {record.qbr_version}" if record.qbr_version else ""),
        f"  size:         {human_bytes(row.copied_bytes)} stored by this set, {human_bytes(row.referenced_bytes)} referenced",
        "  kept because: " + "; ".join(row.reasons) if row.kept else "  NOT KEPT:     " + ("; ".join(row.reasons) or "the next apply deletes it"),
        f"  collections:  {len(record.collections)}",
    ]
    for name, collection in sorted(record.collections.items()):
        origin = "copied in this set" if collection.copied_in == record.set_id else f"carried from set {collection.copied_in}"
        lines.append(f"    {name}: {collection.points_count} points, {collection.shard_number} shard{'s' if collection.shard_number != 1 else ''}, Qdrant {collection.qdrant_version}, {origin}")
        if collection.aliases:
            lines.append(f"      aliases: {', '.join(collection.aliases)}")
        for archive in collection.archives:
            shards = "all shards" if archive.kind == "collection" else "shard " + ", ".join(str(s) for s in archive.shard_ids)
            lines.append(f"      {archive.key}")
            lines.append(f"        {human_bytes(archive.size)} ({archive.size} bytes), sha256 {archive.sha256 or '(not computed: ' + str(archive.etag) + ')'}, {shards}, from {archive.node}")
    return "\n".join(lines) + "\n"
