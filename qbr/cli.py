"""The qbr command line. Commands stay thin: parse options, call one function, print."""

from __future__ import annotations

import sys

import click

from qbr import __version__
from qbr.errors import QbrError


class QbrGroup(click.Group):
    """A group that turns QbrError into one sentence on stderr and its exit code."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except QbrError as error:
            if (ctx.obj or {}).get("debug"):
                raise
            text = str(error)
            click.echo(text if "\n" in text else f"Error: {text}", err=True)
            ctx.exit(error.exit_code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


@click.group(cls=QbrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="qbr")
@click.option("--debug", is_flag=True, help="Show tracebacks (for bug reports).")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """qbr: declarative backup and restore for Qdrant. Write a manifest, then plan and apply."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


manifest_option = click.option(
    "-f",
    "--file",
    "manifest_file",
    envvar="QBR_FILE",
    default=None,
    help="The manifest (default: qbr.yaml, or $QBR_FILE).",
)


@cli.command()
@manifest_option
def validate(manifest_file: str | None) -> None:
    """Check the manifest; print FILE:LINE:COL: problem for each problem found."""
    from qbr.manifest import load_manifest, resolve_manifest_path

    path = resolve_manifest_path(manifest_file)
    manifest = load_manifest(path)
    click.echo(
        f"{path}: valid ({len(manifest.backups)} backups, {len(manifest.restores)} restores)"
    )


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="qbr")
