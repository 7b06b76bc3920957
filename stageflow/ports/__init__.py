"""Ports: the Protocols through which stageflow reaches the outside world.

Each port states the contract an implementation must keep; adapters in
``stageflow.adapters`` (and your own classes) implement them.
"""

from ._checkpoint import CheckpointStore, Lease, RunRecord, StageRecord, UsageRecord
from ._clock import Clock, LoopClock
from ._events import EventSink

__all__ = [
    "CheckpointStore",
    "Clock",
    "EventSink",
    "Lease",
    "LoopClock",
    "RunRecord",
    "StageRecord",
    "UsageRecord",
]
