"""One error hierarchy: every failure a user can cause or meet is a QbrError.

The CLI catches QbrError at the top and prints its sentence; tracebacks are only
shown with --debug. Messages must never contain secrets (API keys, S3 credentials,
presigned URLs).
"""

from __future__ import annotations


class QbrError(Exception):
    """A failure with one plain sentence for the user and an exit code."""

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class ManifestError(QbrError):
    """The manifest is invalid; carries one line per problem (FILE:LINE:COL: what)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems) if self.problems else "invalid manifest")


class QdrantError(QbrError):
    """A Qdrant node refused or failed a request; the message names the node."""

    def __init__(self, message: str, *, status: int | None = None, node: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.node = node


class OutcomeUnknown(QdrantError):
    """A request that makes Qdrant work (create, recover, upload) may have reached the node, and its
    answer was lost: the work may be done, under way, or never started. It is never re-sent blindly;
    the caller looks at what the node did."""


class RepositoryError(QbrError):
    """A backup repository (S3 bucket or local folder) failed a request."""


class UnreachableError(RepositoryError):
    """A repository's store did not answer at all (network): not a refusal or a missing key."""


class NotFoundError(RepositoryError):
    """A key is absent from a repository."""


class ChecksumError(QbrError):
    """Bytes did not hash to what was recorded."""


class StateError(QbrError):
    """The state file is unreadable, or changed under us."""


class LockError(QbrError):
    """A lock stands in the way: held by another run, or one qbr cannot take or remove.
    Its own exit code (4), so a script tells "busy, try later" from "broken" (1)."""

    exit_code = 4


class StalePlanError(QbrError):
    """A saved plan no longer fits the state or the manifest."""


class PlanError(QbrError):
    """The manifest asks for something that cannot be planned (e.g. if_exists: fail)."""


class PreconditionError(QbrError):
    """The world moved since the plan was made; the action did nothing."""
