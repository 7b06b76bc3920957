from __future__ import annotations

from .._events import Event


class RecordingSink:
    """An EventSink that keeps every event it receives, in order.

    Example:
        >>> sink = RecordingSink()
        >>> # engine = Engine(sink=sink); await engine.run(graph)
        >>> sink.types()
        []
    """

    def __init__(self) -> None:
        self.events: list[Event] = []

    def try_emit(self, event: Event) -> None:
        """Keep the event."""
        self.events.append(event)

    async def emit(self, event: Event) -> None:
        """Keep the event."""
        self.events.append(event)

    def types(self, stage: str | None = None) -> list[str]:
        """The event types in order; only those about ``stage`` if given."""
        return [e.type for e in self.events if stage is None or e.stage == stage]

    def of_type(self, type_: str) -> list[Event]:
        """The events of one type, in order."""
        return [e for e in self.events if e.type == type_]

    def for_stage(self, stage: str) -> list[Event]:
        """The events about one stage, in order."""
        return [e for e in self.events if e.stage == stage]

    def clear(self) -> None:
        """Forget every event kept so far."""
        self.events.clear()

    def __len__(self) -> int:
        return len(self.events)

    def __repr__(self) -> str:
        return f"<RecordingSink {len(self.events)} events>"
