"""What the qbr commands share: their common options, the clock, the manifest loader, output helpers."""

from __future__ import annotations

import sys

import click

manifest_option = click.option(
    "-f",
    "--file",
    "manifest_file",
    envvar="QBR_FILE",
    default=None,
    help="The manifest (default: qbr.yaml, or $QBR_FILE).",
)

parallelism_option = click.option(
    "--parallelism", default=8, show_default=True, type=click.IntRange(1, 256), help="Requests and actions in flight at once."
)

metrics_option = click.option(
    "--metrics-file",
    envvar="QBR_METRICS_FILE",
    default=None,
    metavar="PATH",
    help="Also write Prometheus metrics to PATH (e.g. node_exporter's textfile folder; default $QBR_METRICS_FILE).",
)


def now_option(func):
    return click.option(
        "--now",
        "now_text",
        default=None,
        metavar="TIMESTAMP",
        help="Plan as if it were this moment (ISO 8601, UTC if no offset): what-if runs and tests.",
    )(func)


TEST_CLOCK_SWITCH = "QBR_TEST_CLOCK"  # lets tests run apply at a fixed moment; never for real backups


def run_clock(now_text: str | None, *, command: str = "plan"):  # -> qbr.workflow.Clock
    import os

    from qbr.records import parse_utc
    from qbr.workflow import Clock

    if now_text is None:
        return Clock()
    if command == "apply" and os.environ.get(TEST_CLOCK_SWITCH) != "1":
        raise click.BadParameter(
            "apply always runs at the real time, so sets are stamped when their snapshots were taken; "
            "use --now with qbr plan or qbr status for what-if runs",
            param_hint="--now",
        )
    try:
        return Clock(parse_utc(now_text))
    except ValueError:
        raise click.BadParameter(f"{now_text!r} is not an ISO 8601 timestamp", param_hint="--now") from None


def color() -> bool:
    import os

    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


def load(manifest_file: str | None):
    from qbr.manifest import load_manifest, resolve_manifest_path

    path = resolve_manifest_path(manifest_file)
    if path is None:
        click.echo(
            "No qbr.yaml here: using the embedded default manifest (every collection at $QDRANT_URL into "
            "./qbr-backups); write your own from your cluster with: qbr init --from URL",
            err=True,
        )
    return load_manifest(path)


def warn(message: str) -> None:
    click.echo(f"Warning: {message}", err=True)


def write_private(path: str, text: str) -> None:
    """Plans and state are written owner-only: they name hosts and collections."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def identity_option(func):
    """--identity FILE: the age identity (or ssh private key) that opens encrypted backups."""

    def remember(ctx, param, value):
        from qbr.encryption import KEYRING

        KEYRING.use_file(value)  # None: $QBR_AGE_IDENTITY_FILE, read when first needed
        return value

    return click.option(
        "--identity",
        default=None,
        metavar="FILE",
        expose_value=False,
        callback=remember,
        help="An age identity file or ssh private key that opens encrypted backups (default $QBR_AGE_IDENTITY_FILE); "
        "never stored by qbr.",
    )(func)
