"""Checks every store adapter makes the same way (adapters do not import each other)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .._check import integer
from .._events import Event
from ..errors import ConfigurationError
from ..ports import InputRecord, Lease, StageRecord, UsageRecord


def usage_of_run(lease: Lease, records: Sequence[UsageRecord]) -> list[UsageRecord]:
    """The records as a list, each checked to be of the lease's run."""
    batch = list(records)
    for record in batch:
        _of_run(lease, record.run_id, "a usage record", "records", record)
    return batch


def stage_of_run(lease: Lease, record: StageRecord) -> None:
    """Refuse a stage record of another run than the lease's."""
    _of_run(lease, record.run_id, "a stage record", "record", record)


def input_of_run(lease: Lease, record: InputRecord) -> InputRecord:
    """The input record, checked to be of the lease's run."""
    _of_run(lease, record.run_id, "an input", "record", record)
    return record


def item_stage(name: str) -> str | None:
    """The stage of an item's input name (``approve`` of ``approve[doc-17]``), else None."""
    stage, bracket, _ = name.partition("[")
    return stage if bracket and name.endswith("]") else None


def _of_run(lease: Lease, run_id: str, what: str, field: str, value: object) -> None:
    if run_id != lease.run_id:
        raise ConfigurationError(
            f"{what} of run {run_id!r} cannot be recorded with the lease of run {lease.run_id!r}",
            field=field,
            value=value,
        )


def checked_limit(limit: object) -> int | None:
    """``list_runs``'s ``limit``: None, or an int >= 0 (else ``ConfigurationError``)."""
    return None if limit is None else integer(limit, "limit", "None or an int >= 0", ge=0)


def events_to_append(events: Sequence[Event]) -> list[Event]:
    """``append_events``' argument as a list, each checked to be an Event."""
    if isinstance(events, Event | str | bytes) or not isinstance(events, Sequence):
        raise ConfigurationError(
            f"append_events takes a sequence of events, not {events!r}",
            field="events",
            value=events,
        )
    batch = list(events)
    for event in batch:
        if not isinstance(event, Event):
            raise ConfigurationError(
                f"append_events takes stageflow Events, not {event!r}",
                field="events",
                value=event,
            )
    return batch


def checked_after(after: object) -> int:
    """``read_events``' ``after``: an int >= 0 (else ``ConfigurationError``)."""
    return integer(after, "after", "an int >= 0 (a seq)", ge=0)


def event_data_text(event: Event) -> str:
    """An event's data as JSON text; what JSON cannot hold is written as its ``repr``."""
    if not event.data:
        return "{}"
    # Imported here: pydantic_core would be a third of `import stageflow`'s time.
    from pydantic_core import to_json

    return to_json(dict(event.data), fallback=repr).decode()


def stored_event(
    run_id: str,
    seq: int,
    type_: str,
    pipeline: str,
    stage: str | None,
    ts: float,
    attempt: int,
    data: str,
) -> Event:
    """An Event as read back from a store's row."""
    read: dict[str, Any] = json.loads(data) if data != "{}" else {}
    return Event(type_, run_id, pipeline, stage, seq, ts, attempt, read)


SHOWN = 2000  # characters of a refused value shown back to a client at most, as JSON


def shown_value(value: Any) -> Any:
    """A refused value as a client is shown it (HTTP and MCP errors): as JSON when it is
    JSON and short, else its text or ``repr`` cut to ``SHOWN`` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = None
    if text is not None and len(text) <= SHOWN:
        return value
    said = value if isinstance(value, str) else repr(value)
    return said if len(said) <= SHOWN else said[:SHOWN] + "..."
