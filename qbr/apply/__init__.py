"""apply: carry out a plan. The walker is `applier.py`; each kind of action has its handler in
`backup.py`, `cleanup.py`, `restore.py` or `aliases.py`, reached through one table."""

from qbr.apply.applier import Applier, ApplyReport, Outcome, run_action
from qbr.errors import PreconditionError

__all__ = ["Applier", "ApplyReport", "Outcome", "PreconditionError", "run_action"]
