"""Leaf values: what kind a stage is, how a stage or a run ended, and their codes.

Nothing here imports anything of stageflow's: every layer above may use it.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = [
    "CANCELLED",
    "CODE",
    "COMPLETED",
    "FAILED",
    "NONE",
    "SKIPPED",
    "STATUS",
    "RunStatus",
    "StageKind",
    "StageStatus",
]


class StageKind(enum.StrEnum):
    """What a stage does; informative (drawn, traced, logged), never changes scheduling."""

    TRANSFORM = "transform"
    ENRICH = "enrich"
    ROUTE = "route"
    GUARD = "guard"
    WORK = "work"
    AGENT = "agent"


class StageStatus(enum.StrEnum):
    """How a stage ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class RunStatus(enum.StrEnum):
    """How a run ended (``RUNNING`` while it is driven)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# A run keeps each stage's status as a small int in a bytearray (see _outcomes).
NONE: Final = 0  # no outcome yet
COMPLETED: Final = 1
FAILED: Final = 2
SKIPPED: Final = 3
CANCELLED: Final = 4
STATUS: Final = (None, StageStatus.COMPLETED, StageStatus.FAILED, StageStatus.SKIPPED,
                 StageStatus.CANCELLED)  # fmt: skip
CODE: Final = {status: code for code, status in enumerate(STATUS) if status is not None}


ROUTED_TO: Final = "routed to "


def routed_reason(routes: tuple[str, ...]) -> str:
    """The reason a ROUTE stage's result (and its stored record) gives: its choice."""
    return ROUTED_TO + ", ".join(routes)


def routes_of(reason: str | None) -> tuple[str, ...] | None:
    """The routes a stored ROUTE stage chose, read back from its reason (else None)."""
    if reason is None or not reason.startswith(ROUTED_TO):
        return None
    return tuple(reason[len(ROUTED_TO) :].split(", "))
