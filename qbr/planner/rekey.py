"""Rekey: which sets are not encrypted for their repository's current recipients. Pure.

A change of recipients applies to new sets by itself; `qbr rekey` plans one rekey_set action
per older set (and per plain set of a repository that has since declared encryption), oldest
first, each after the one before (sets share archives under only_changed, and each archive is
encrypted again once).
"""

from __future__ import annotations

from qbr.actions import RekeySet, as_params
from qbr.manifest import Manifest
from qbr.plan import Action, Note
from qbr.planner.draft import Draft
from qbr.render.sizes import human_bytes
from qbr.world import Observed


def plan_rekeys(draft: Draft, manifest: Manifest, observed: Observed) -> None:
    for name in sorted(observed.repositories):
        repo = observed.repositories[name]
        wanted = manifest.repositories[name].encryption
        group = f"repository {name} ({repo.description})"
        if wanted is None:
            if repo.sets:
                draft.unchanged.append(Note(group, "every set", "the repository declares no encryption: nothing to rekey"))
            continue
        previous: tuple[str, ...] = ()
        shared = 0
        for record in sorted(repo.sets, key=lambda r: (r.set_id, r.backup)):
            have = (record.encryption or {}).get("fingerprint")
            if have == wanted.fingerprint:
                draft.unchanged.append(Note(group, f"set {record.backup}/{record.set_id}", "already encrypted for the current recipients"))
                continue
            if have is not None and manifest.repositories[name].dedup:
                shared += 1  # its chunks are shared with other sets and encrypted once each (qbr.repository.chunk_crypto)
                continue
            size = sum(a.size for c in record.collections.values() for a in c.archives)
            action_id = f"rekey.{name}.{record.backup}.{record.set_id}"
            draft.actions.append(Action(
                id=action_id,
                kind="rekey_set",
                change="replace",
                group=group,
                title=f"set {record.backup}/{record.set_id}: encrypt again for {len(wanted.recipients)} recipients ({human_bytes(size)})",
                reason=("it is encrypted for other recipients" if have else "it is not encrypted") +
                       "; each archive is streamed through qbr (decrypted, then encrypted, never written in clear) into a "
                       "new object, the record is sealed anew, and the old archives are left to garbage collection",
                depends_on=previous,
                params=as_params(RekeySet(repository=name, backup=record.backup, set_id=record.set_id, fingerprint=wanted.fingerprint)),
            ))
            previous = (action_id,)
        if shared:
            draft.warnings.append(
                f"repository {name}: {shared} sets are encrypted for other recipients, and a dedup repository's chunks are "
                "shared by sets and encrypted once each, so qbr rekey does not encrypt them again: list the old recipients "
                "again, or back up into a new repository for the new ones")
