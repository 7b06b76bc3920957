"""Events: what happened during a run, as frozen values sent to an EventSink."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Event", "EventType"]


class EventType(enum.StrEnum):
    """The closed set of event types stageflow emits (stages add ``custom.*``).

    Later features emit the types reserved here (``stage.retrying`` and
    ``attempt.started`` by retries, ``circuit.*`` by the circuit breaker, ``budget.*``
    by budgets, ``stage.restored``/``checkpoint.saved`` by durable runs, ``map.*`` and
    ``item.*`` by map stages, ``loop.iteration`` by loop stages, ``input.*`` by input
    stages, ``run.waiting`` by a run that stops to wait for input).
    """

    RUN_STARTED = "run.started"
    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    RUN_WAITING = "run.waiting"
    STAGE_STARTED = "stage.started"
    STAGE_COMPLETED = "stage.completed"
    STAGE_FAILED = "stage.failed"
    STAGE_SKIPPED = "stage.skipped"
    STAGE_CANCELLED = "stage.cancelled"
    STAGE_RETRYING = "stage.retrying"
    ATTEMPT_STARTED = "attempt.started"
    STAGE_RESTORED = "stage.restored"
    CIRCUIT_OPENED = "circuit.opened"
    CIRCUIT_HALF_OPEN = "circuit.half_open"
    CIRCUIT_CLOSED = "circuit.closed"
    BUDGET_WARNING = "budget.warning"
    BUDGET_EXCEEDED = "budget.exceeded"
    BUDGET_DOWNGRADED = "budget.downgraded"
    CHECKPOINT_SAVED = "checkpoint.saved"
    MAP_STARTED = "map.started"
    ITEM_STARTED = "item.started"
    ITEM_COMPLETED = "item.completed"
    ITEM_FAILED = "item.failed"
    ITEM_SKIPPED = "item.skipped"
    ITEM_CANCELLED = "item.cancelled"
    LOOP_ITERATION = "loop.iteration"
    INPUT_WAITING = "input.waiting"
    INPUT_RECEIVED = "input.received"
    INPUT_TIMED_OUT = "input.timed_out"
    ASSIST_VALIDATED = "assist.validated"
    ASSIST_ANALYZED = "assist.analyzed"
    ASSIST_DIAGNOSED = "assist.diagnosed"
    ASSIST_FAILED = "assist.failed"

    @property
    def is_terminal(self) -> bool:
        """True for the events that end a stage or a run."""
        return self in _TERMINAL


_TERMINAL = frozenset(
    {
        EventType.RUN_COMPLETED,
        EventType.RUN_FAILED,
        EventType.RUN_CANCELLED,
        EventType.STAGE_COMPLETED,
        EventType.STAGE_FAILED,
        EventType.STAGE_SKIPPED,
        EventType.STAGE_CANCELLED,
    }
)
_NO_DATA: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened in a run.

    Attributes:
        type: an :class:`EventType` value, or ``custom.<name>`` for a stage's own events.
        run_id: the run it belongs to.
        pipeline: the pipeline's name.
        stage: the stage it is about, or None for run events.
        seq: strictly increasing within a run, from 1: the order things happened in.
        ts: wall-clock time, seconds since the epoch.
        attempt: the stage's attempt (0 for run events).
        data: details; each type's keys are listed in the events documentation.
    """

    type: str
    run_id: str
    pipeline: str
    stage: str | None
    seq: int
    ts: float
    attempt: int = 0
    data: Mapping[str, Any] = field(default_factory=lambda: _NO_DATA)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the event (``data`` copied), e.g. for JSON."""
        return {
            "type": str(self.type),
            "run_id": self.run_id,
            "pipeline": self.pipeline,
            "stage": self.stage,
            "seq": self.seq,
            "ts": self.ts,
            "attempt": self.attempt,
            "data": dict(self.data),
        }
