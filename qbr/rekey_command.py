"""`qbr rekey` (thin): encrypt existing sets again for their repository's current recipients,
planned and applied like everything else (rekey_set actions, under the lock, with confirmation)."""

from __future__ import annotations

import sys

import click

from qbr.cli_common import color, identity_option, load, manifest_option, parallelism_option


@click.command("rekey")
@manifest_option
@click.option("--auto-approve", is_flag=True, help="Do not ask for confirmation (required without a terminal).")
@parallelism_option
@click.option("--lock-timeout", default="30s", show_default=True, help="How long to wait for another apply's lock.")
@click.option("-v", "--verbose", is_flag=True, help="Also say what qbr retries and waits for (on stderr).")
@identity_option
@click.pass_context
def rekey_command(ctx, manifest_file, auto_approve, parallelism, lock_timeout, verbose) -> None:
    """Encrypt every set that is not encrypted for its repository's current recipients again
    (needs an identity that opens them). Review first with: qbr plan --rekey -o rekey.json"""
    from qbr.apply_session import ApplySession, Presentation
    from qbr.durations import parse_duration
    from qbr.errors import QbrError
    from qbr.events import JsonLines
    from qbr.workflow import Clock, apply_locked

    try:
        timeout = 0.0 if lock_timeout.strip() in ("0", "0s") else parse_duration(lock_timeout).total_seconds()
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--lock-timeout") from None
    manifest = load(manifest_file)
    if not auto_approve and not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise QbrError("rekey needs confirmation but there is no terminal to ask on; pass --auto-approve")
    options = Presentation(False, verbose, color(), False, auto_approve, None, parallelism, debug=bool((ctx.obj or {}).get("debug")))
    session = ApplySession(
        manifest, options, echo=click.echo, prompt=lambda text: click.prompt(text, default="", show_default=False),
        emit=JsonLines(lambda: sys.stdout),
    )
    sys.exit(session.run(lambda **callbacks: apply_locked(
        manifest, saved_plan=None, parallelism=parallelism, lock_timeout=timeout, clock=Clock(), rekey=True, **callbacks
    )))
