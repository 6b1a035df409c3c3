"""The qbr command line. Commands stay thin: parse options, call one function, print."""

from __future__ import annotations

import sys

import click

from qbr import __version__
from qbr.cli_common import (
    TEST_CLOCK_SWITCH,  # noqa: F401 - tests and docs name it here
    color,
    identity_option,
    load,
    manifest_option,
    metrics_option,
    now_option,
    parallelism_option,
    run_clock,
    warn,
    write_private,
)
from qbr.dedup_commands import chunk_key_group, chunk_key_option, export_command, repair_index_command
from qbr.errors import QbrError
from qbr.rekey_command import rekey_command
from qbr.sets_command import sets_group

target_option = click.option(
    "--target", "targets", multiple=True, metavar="NAME",
    help="Plan only this backup or restore of the manifest (repeatable), and reach only the clusters and "
         "repositories it needs (Terraform's -target; e.g. a restore while its source cluster is down).",
)


class QbrGroup(click.Group):
    """A group that turns QbrError into one sentence on stderr and its exit code."""

    def make_context(self, *args, **kwargs):  # type: ignore[override]
        try:
            return super().make_context(*args, **kwargs)
        except click.UsageError as error:
            error.exit_code = 1
            raise

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            # A bad flag or argument is an error (1): exit 2 means "changes" to plan --detailed-exitcode.
            error.exit_code = 1
            raise
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


@cli.command()
@manifest_option
def validate(manifest_file: str | None) -> None:
    """Check the manifest; print FILE:LINE:COL: problem for each problem found."""
    manifest = load(manifest_file)
    click.echo(
        f"{manifest.source}: valid ({len(manifest.backups)} backups, {len(manifest.restores)} restores)"
    )




@cli.command("plan")
@manifest_option
@click.option("-o", "--out", "out_file", default=None, help="Save the plan as JSON, to apply later exactly as reviewed.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (schemas/plan.v1.json).")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 with no changes, 2 with changes, 1 on errors.")
@click.option("-v", "--verbose", is_flag=True, help="Also list every kept set and the rules that keep it, and say what qbr retries.")
@click.option("--rekey", is_flag=True, help="Plan only encrypting sets again for their repository's current recipients (qbr rekey).")
@target_option
@parallelism_option
@now_option
@identity_option
def plan_command(manifest_file, out_file, as_json, detailed_exitcode, verbose, rekey, targets, parallelism, now_text) -> None:
    """Show what apply would do. Takes no lock and writes nothing (but -o)."""
    import logging

    from qbr.events import echo_log, logs_to
    from qbr.render.plan import render_plan
    from qbr.workflow import plan_once

    clock = run_clock(now_text)
    manifest = load(manifest_file)
    with logs_to(echo_log(lambda line: click.echo(line, err=True)), logging.INFO if verbose else logging.WARNING):
        plan = plan_once(manifest, parallelism=parallelism, now=clock(), rekey=rekey, targets=targets)
    if as_json:
        click.echo(plan.to_json(), nl=False)
    else:
        click.echo(render_plan(plan, color=color(), verbose=verbose), nl=False)
    if out_file:
        write_private(out_file, plan.to_json())
        if not as_json:
            click.echo(f"Saved the plan to {out_file}. Apply exactly it with: qbr apply {out_file}")
    if detailed_exitcode and plan.has_changes:
        sys.exit(2)


@cli.command("show")
@click.argument("plan_file")
@click.option("--json", "as_json", is_flag=True, help="Print the plan's JSON (as --format json).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="markdown: for a pull-request comment (fits GitHub's 65,536 characters; long sections fold).",
)
@click.option("-v", "--verbose", is_flag=True, help="Also list every kept set.")
def show_command(plan_file, as_json, output_format, verbose) -> None:
    """Render a saved plan."""
    from qbr.plan_file import load_plan
    from qbr.render.plan import render_plan

    plan = load_plan(plan_file)
    if as_json or output_format == "json":
        click.echo(plan.to_json(), nl=False)
    elif output_format == "markdown":
        from qbr.render.markdown import render_markdown

        click.echo(render_markdown(plan), nl=False)
    else:
        click.echo(f"Plan made {plan.created} by qbr {plan.qbr_version} from {plan.manifest_source}\n")
        click.echo(render_plan(plan, color=color(), verbose=verbose), nl=False)




@cli.command("apply")
@manifest_option
@click.argument("plan_file", required=False)
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
@target_option
@parallelism_option
@click.option("--lock-timeout", default="30s", show_default=True, help="How long to wait for another apply's lock.")
@click.option("--max-plan-age", default="6h", show_default=True, help="Refuse a saved plan older than this.")
@click.option("--json", "as_json", is_flag=True, help="Stream events as JSON lines (schemas/events.v1.json) instead of text.")
@click.option("-v", "--verbose", is_flag=True, help="Also say what qbr retries and waits for (on stderr).")
@metrics_option
@click.option("--now", "now_text", default=None, hidden=True)  # tests only, with QBR_TEST_CLOCK=1
@identity_option
@chunk_key_option
@click.pass_context
def apply_command(ctx, manifest_file, plan_file, auto_approve, targets, parallelism, lock_timeout, max_plan_age, as_json, verbose, metrics_file, now_text) -> None:
    """Make the world match the manifest (or apply exactly a saved plan)."""
    from qbr.apply_session import ApplySession, Presentation
    from qbr.durations import parse_duration
    from qbr.events import JsonLines
    from qbr.plan_file import check_plan_age, load_plan
    from qbr.workflow import apply_locked

    try:
        timeout = 0.0 if lock_timeout.strip() in ("0", "0s") else parse_duration(lock_timeout).total_seconds()
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--lock-timeout") from None
    try:
        max_age = parse_duration(max_plan_age)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--max-plan-age") from None
    clock = run_clock(now_text, command="apply")
    saved = load_plan(plan_file) if plan_file else None
    if saved is not None:
        check_plan_age(saved, clock(), max_age, plan_file)
        if targets:
            raise QbrError(f"--target cannot be used with a saved plan, which carries its own targets "
                           f"({', '.join(saved.targets) or 'none: it covers every entry'}); apply {plan_file} without --target")
    manifest = load(manifest_file)
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if saved is None and not auto_approve and (as_json or not interactive):
        raise QbrError(
            f"apply needs confirmation but {'--json leaves no terminal' if as_json else 'there is no terminal'} to ask on; "
            "pass --auto-approve (or apply a saved plan)"
        )
    options = Presentation(as_json, verbose, color(), saved is not None, auto_approve, metrics_file, parallelism,
                           debug=bool((ctx.obj or {}).get("debug")))
    session = ApplySession(
        manifest,
        options,
        echo=click.echo,
        prompt=lambda text: click.prompt(text, default="", show_default=False),
        emit=JsonLines(lambda: sys.stdout),
    )
    sys.exit(session.run(lambda **callbacks: apply_locked(
        manifest, saved_plan=saved, parallelism=parallelism, lock_timeout=timeout, clock=clock, targets=targets, **callbacks
    )))


@cli.command("init")
@click.option("--from", "from_url", required=True, metavar="URL", help="A Qdrant node to read (its API key from $QDRANT_API_KEY).")
@click.option("--repository", default=None, metavar="s3://BUCKET/PREFIX|FOLDER", help="Where backups go (default ./qbr-backups).")
@click.option("-f", "--file", "manifest_file", default="qbr.yaml", show_default=True, help="The manifest to write; never overwritten.")
def init_command(from_url, repository, manifest_file) -> None:
    """Read a cluster (collections, aliases, nodes, versions) and write a commented manifest for it."""
    import os
    from pathlib import Path

    from qbr.init import RepositoryChoice, check_and_write, render_manifest, survey, write_schema_beside

    if not from_url.startswith(("http://", "https://")):
        raise click.BadParameter("expected the URL of a Qdrant node, such as http://localhost:6333", param_hint="--from")
    path = Path(manifest_file)
    if path.exists():
        raise QbrError(f"{path} already exists; qbr init never overwrites a manifest (move it aside, or write another with -f)")
    choice = RepositoryChoice.parse(repository)
    found = survey(from_url, os.environ.get("QDRANT_API_KEY") or None)
    check_and_write(path, render_manifest(found, choice))
    schema = write_schema_beside(path)
    click.echo(f"Wrote {path}: {len(found.collections)} collections of a {len(found.nodes)}-node Qdrant {found.version}, "
               f"backed up daily into {repository or './qbr-backups'}" + (f" (and {schema} for your editor)." if schema else "."))
    click.echo(f"Next: read it, then qbr plan{'' if str(path) == 'qbr.yaml' else ' -f ' + str(path)}, and qbr apply.")


@cli.command("force-unlock")
@manifest_option
@click.argument("lock_id")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
def force_unlock_command(manifest_file, lock_id, yes) -> None:
    """Remove the locks a dead apply left on the state and repositories (its ID is in the lock error)."""
    from qbr.locks import force_unlock, lock_targets
    from qbr.state_store import StateStore, state_lock_target

    manifest = load(manifest_file)
    if not yes:
        if not sys.stdin.isatty():
            raise QbrError("force-unlock needs confirmation but there is no terminal to ask on; pass --yes")
        click.echo(f"Removing lock {lock_id} lets another apply start. If the apply holding it is still running,\n"
                   "two runs would then change the same state and repository at once.")
        if click.prompt("Remove it? Only 'yes' is accepted", default="", show_default=False).strip() != "yes":
            click.echo("Unlock cancelled.", err=True)
            sys.exit(1)
    targets = lock_targets(manifest, state_lock_target(StateStore(manifest.state)), every_repository=True)
    for target, held in force_unlock(targets, lock_id):
        click.echo(f"Removed the lock held by {held.holder()} on {target.where}.")


@cli.command("status")
@manifest_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@parallelism_option
@metrics_option
@now_option
def status_command(manifest_file, as_json, parallelism, metrics_file, now_text) -> None:
    """Is every backup within its rpo? Exit 0 if so, 3 if any is late, 1 on errors."""
    import json as jsonlib

    from qbr.connections import Connections
    from qbr.observe import observe_repositories
    from qbr.render.status import render_status
    from qbr.state_store import StateStore
    from qbr.status import build_status

    clock = run_clock(now_text)
    manifest = load(manifest_file)
    state = StateStore(manifest.state).read()
    with Connections(manifest, parallelism) as connections:
        repositories = observe_repositories(manifest, connections)
    report = build_status(manifest, repositories, state, clock())
    if as_json:
        click.echo(jsonlib.dumps(report.to_dict(), indent=2))
    else:
        click.echo(render_status(report), nl=False)
    if metrics_file:
        from qbr.metrics import write_status_metrics

        write_status_metrics(metrics_file, manifest, (repositories, state), clock(), warn)
    sys.exit(report.exit_code)


@cli.command("verify")
@manifest_option
@click.option("--backup", "backup_name", default=None, metavar="NAME", help="Verify only this backup's sets.")
@click.option("--deep", is_flag=True, help="Also open each archive as a tar: check its layout and count its points.")
@click.option(
    "--restore-test",
    "restore_cluster",
    default=None,
    metavar="CLUSTER",
    help="Restore each backup's newest set into temporary collections on CLUSTER, count, then delete them.",
)
@parallelism_option
@metrics_option
@identity_option
def verify_command(manifest_file, backup_name, deep, restore_cluster, parallelism, metrics_file) -> None:
    """Re-read every archive of every set and check its size and sha256. Exit 0 if all is whole, 1 if not."""
    from qbr.connections import Connections
    from qbr.verify import render_verify, verify

    manifest = load(manifest_file)
    started = run_clock(None)()
    with Connections(manifest, parallelism) as connections:
        report = verify(manifest, connections, backup=backup_name, deep=deep, restore_cluster=restore_cluster)
    click.echo(render_verify(report), nl=False)
    if metrics_file:
        from qbr.metrics import write_verify_metrics

        write_verify_metrics(metrics_file, manifest, started, report, parallelism, warn)
    sys.exit(report.exit_code)


@cli.command("schema")
@click.argument("which", type=click.Choice(["manifest", "plan", "events"]), default="manifest")
def schema_command(which) -> None:
    """Print a JSON Schema: the manifest's (for editors: qbr schema > qbr.schema.json), a saved plan's, or the events'."""
    from pathlib import Path

    click.echo((Path(__file__).parent / "schemas" / f"{which}.v1.json").read_text(encoding="utf-8"), nl=False)


@cli.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion_command(shell) -> None:
    """Print the shell completion script: eval "$(qbr completion bash)" (or zsh; fish: qbr completion fish | source)."""
    from click.shell_completion import get_completion_class

    completion = get_completion_class(shell)(cli, {}, "qbr", "_QBR_COMPLETE")
    click.echo(completion.source())


cli.add_command(sets_group)
cli.add_command(export_command)
cli.add_command(repair_index_command)
cli.add_command(chunk_key_group)
cli.add_command(rekey_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="qbr")
