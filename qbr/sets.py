"""`qbr sets`: the sets of each backup as the repositories hold them, and why retention keeps
each (restic's `snapshots`). Pure: built from the manifest and observed repositories; drawing is
`qbr.render.sets`.
"""

from __future__ import annotations

from dataclasses import dataclass

from qbr.errors import QbrError
from qbr.manifest import Manifest
from qbr.records import SetRecord
from qbr.retention import SetSummary, decide_retention
from qbr.world import ObservedRepository


@dataclass(frozen=True)
class SetRow:
    backup: str
    repository: str
    record: SetRecord
    kept: bool
    reasons: tuple[str, ...]  # why retention keeps it, or why it goes at the next apply

    @property
    def copied_bytes(self) -> int:
        """Bytes this set's run stored (archives carried from earlier sets are not counted)."""
        return sum(a.size for c in self.record.collections.values() if c.copied_in == self.record.set_id for a in c.archives)

    @property
    def referenced_bytes(self) -> int:
        return sum(a.size for c in self.record.collections.values() for a in c.archives)


def list_sets(manifest: Manifest, repositories: dict[str, ObservedRepository], backup: str | None = None) -> list[SetRow]:
    """Every set of every backup (or of one), newest first within each backup."""
    if backup is not None and backup not in manifest.backups:
        known = ", ".join(sorted(manifest.backups)) or "none"
        raise QbrError(f"no backup named {backup} in {manifest.source} (backups: {known})")
    rows: list[SetRow] = []
    for name, config in manifest.backups.items():
        if backup is not None and name != backup:
            continue
        sets = repositories[config.repository].sets_of(name)
        decisions = {d.set_id: d for d in decide_retention([SetSummary(s.set_id, s.created_at) for s in sets], config.retention)}
        for record in sets:
            decision = decisions.get(record.set_id)
            kept = decision.keep if decision else True
            reasons = decision.reasons if decision else ()
            rows.append(SetRow(name, config.repository, record, kept, tuple(reasons)))
    return rows


def find_set(rows: list[SetRow], ref: str) -> SetRow:
    """A set named by its id, or BACKUP/ID when two backups have a set of that id."""
    backup, _, set_id = ref.rpartition("/")
    found = [r for r in rows if r.record.set_id == set_id and (not backup or r.backup == backup)]
    if not found:
        raise QbrError(f"no set {ref} in the repositories of {len({r.repository for r in rows})} backups; `qbr sets` lists them")
    if len(found) > 1:
        raise QbrError(f"set {ref} is in several backups ({', '.join(r.backup for r in found)}); name it as BACKUP/{set_id}")
    return found[0]
