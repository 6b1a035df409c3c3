"""qbr: declarative backup and restore for Qdrant (plan, then apply)."""

__version__ = "0.1.0"
