"""The `qbr sets` commands (thin): `qbr sets [BACKUP]` lists sets, `qbr sets describe SET` shows one."""

from __future__ import annotations

import click

from qbr.cli_common import load, manifest_option, parallelism_option


class _SetsGroup(click.Group):
    """`qbr sets [BACKUP] [OPTIONS]` means `qbr sets list [BACKUP] [OPTIONS]`; `qbr sets describe SET` describes."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


def _rows(manifest_file: str | None, parallelism: int, backup: str | None):
    from qbr.connections import Connections
    from qbr.observe import observe_repositories
    from qbr.sets import list_sets

    manifest = load(manifest_file)
    with Connections(manifest, parallelism) as connections:
        repositories = observe_repositories(manifest, connections)
    return list_sets(manifest, repositories, backup)


def _common(func):
    func = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)
    return manifest_option(parallelism_option(func))


@click.group("sets", cls=_SetsGroup)
def sets_group() -> None:
    """List the sets of every backup, or of BACKUP (qbr sets BACKUP), and why each is kept; describe one."""


@sets_group.command("list")
@click.argument("backup", required=False)
@_common
def list_command(backup=None, manifest_file=None, parallelism=8, as_json=False) -> None:
    """List the sets of every backup, or of BACKUP, newest first."""
    import json

    from qbr.render.sets import render_set_list

    rows = _rows(manifest_file, parallelism, backup)
    if as_json:
        click.echo(json.dumps([{"backup": r.backup, "repository": r.repository, "set_id": r.record.set_id, "created": r.record.created,
                                "collections": sorted(r.record.collections), "stored_bytes": r.copied_bytes,
                                "referenced_bytes": r.referenced_bytes, "kept": r.kept, "reasons": list(r.reasons)} for r in rows], indent=2))
    else:
        click.echo(render_set_list(rows), nl=False)


@sets_group.command("describe")
@click.argument("set_ref", metavar="SET")
@_common
def describe_command(set_ref, manifest_file=None, parallelism=8, as_json=False) -> None:
    """Show one set (its id, or BACKUP/ID): collections, sizes, sha256, aliases, Qdrant version, why kept."""
    import json

    from qbr.render.sets import render_set
    from qbr.sets import find_set

    row = find_set(_rows(manifest_file, parallelism, None), set_ref)
    if as_json:
        click.echo(json.dumps({"backup": row.backup, "repository": row.repository, "kept": row.kept, "reasons": list(row.reasons),
                               "set": json.loads(row.record.to_json())}, indent=2))
    else:
        click.echo(render_set(row), nl=False)
