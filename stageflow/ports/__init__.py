"""Ports: the Protocols through which stageflow reaches the outside world.

Each port states the contract an implementation must keep; adapters in
``stageflow.adapters`` (and your own classes) implement them.
"""

from ._assistant import LLMAssistant
from ._clock import Clock, Timer
from ._events import EventLog, EventSink, PressureSink
from ._queue import RunQueue, WorkerRecord
from ._records import InputRecord, Lease, RunRecord, StageRecord, UsageRecord
from ._runner import StageRunner
from ._secrets import SecretResolver
from ._store import CheckpointStore, InputStore, RunCatalog, RunStore

__all__ = [
    "CheckpointStore",
    "Clock",
    "EventLog",
    "EventSink",
    "InputRecord",
    "InputStore",
    "LLMAssistant",
    "Lease",
    "PressureSink",
    "RunCatalog",
    "RunQueue",
    "RunRecord",
    "RunStore",
    "SecretResolver",
    "StageRecord",
    "StageRunner",
    "Timer",
    "UsageRecord",
    "WorkerRecord",
]
