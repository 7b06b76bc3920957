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
    "FINISHED",
    "NONE",
    "SKIPPED",
    "STATUS",
    "WAITING",
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
    INPUT = "input"  # with_input: a value a person gives


class StageStatus(enum.StrEnum):
    """How a stage ended; in the result of a run that waits for input, also where a
    stage stands: ``WAITING`` (an input stage without its value) or ``PENDING`` (not
    reached: it runs once the run goes on)."""

    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    WAITING = "waiting"
    PENDING = "pending"


class RunStatus(enum.StrEnum):
    """How a run ended (``RUNNING`` while it is driven; ``WAITING``: it stopped until an
    input it waits for is given, and is not finished; ``QUEUED``: submitted with
    ``Engine.submit``, for a worker to claim, and not driven yet)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    WAITING = "waiting"
    QUEUED = "queued"


# A run keeps each stage's status as a small int in a bytearray (see _outcomes).
NONE: Final = 0  # no outcome yet
COMPLETED: Final = 1
FAILED: Final = 2
SKIPPED: Final = 3
CANCELLED: Final = 4
WAITING: Final = 5  # an input stage without its value, in a run that stopped to wait
STATUS: Final = (StageStatus.PENDING, StageStatus.COMPLETED, StageStatus.FAILED,
                 StageStatus.SKIPPED, StageStatus.CANCELLED, StageStatus.WAITING)  # fmt: skip
# How a stage ended, by status (what StageOutput may say and a store may keep).
CODE: Final = {status: code for code, status in enumerate(STATUS) if 0 < code < WAITING}


FINISHED: Final = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
"""The statuses of a run that has ended (a waiting run has not)."""

ROUTED_TO: Final = "routed to "


def routed_reason(routes: tuple[str, ...]) -> str:
    """The reason a ROUTE stage's result (and its stored record) gives: its choice."""
    return ROUTED_TO + ", ".join(routes)


def routes_of(reason: str | None) -> tuple[str, ...] | None:
    """The routes a stored ROUTE stage chose, read back from its reason (else None)."""
    if reason is None or not reason.startswith(ROUTED_TO):
        return None
    return tuple(reason[len(ROUTED_TO) :].split(", "))
