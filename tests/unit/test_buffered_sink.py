"""BufferedSink: a slow sink never stalls a run."""

from __future__ import annotations

import asyncio

import pytest

from stageflow import BufferedSink, ConfigurationError, Engine, Event, Pipeline
from stageflow.testing import RecordingSink, run_virtual


class SlowSink:
    """Takes `delay` seconds (virtual) to deliver each event."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.events: list[Event] = []

    def try_emit(self, event: Event) -> None:  # pragma: no cover - BufferedSink awaits emit
        raise AssertionError("a BufferedSink must not call try_emit of its inner sink")

    async def emit(self, event: Event) -> None:
        await asyncio.sleep(self.delay)
        self.events.append(event)


async def one_second(ctx: object) -> dict[str, int]:
    await asyncio.sleep(1)
    return {"v": 1}


GRAPH = (
    Pipeline("slow-sink")
    .with_stage("a", one_second)
    .with_stage("b", one_second, dependencies=("a",))
    .build()
)


class TestBufferedSink:
    def test_a_slow_sink_does_not_stall_the_run_and_receives_every_event_in_order(self) -> None:
        slow = SlowSink(delay=10.0)
        sink = BufferedSink(slow)

        async def main() -> tuple[float, float]:
            loop = asyncio.get_running_loop()
            result = await Engine(sink=sink).run(GRAPH)
            await sink.flush()
            flushed_at = loop.time()
            await sink.aclose()
            return result.duration, flushed_at

        duration, flushed_at = run_virtual(main())
        assert duration == pytest.approx(2.0)  # the stages' time, not the sink's
        assert flushed_at == pytest.approx(10.0 * 6)  # six events, one after the other
        assert [e.seq for e in slow.events] == [1, 2, 3, 4, 5, 6]

    def test_a_full_queue_drops_the_oldest_events_and_counts_them(self) -> None:
        slow = SlowSink(delay=10.0)
        sink = BufferedSink(slow, maxsize=2)

        async def main() -> None:
            await Engine(sink=sink).run(GRAPH)
            await sink.aclose()

        run_virtual(main())
        # The first event is taken at once by the deliverer; then the queue keeps the newest.
        assert sink.dropped > 0
        assert slow.events[-1].type == "run.completed"
        assert len(slow.events) + sink.dropped == 6

    def test_drop_newest_keeps_the_first_events(self) -> None:
        slow = SlowSink(delay=10.0)
        sink = BufferedSink(slow, maxsize=1, overflow="drop_newest")

        async def main() -> None:
            await Engine(sink=sink).run(GRAPH)
            await sink.aclose()

        run_virtual(main())
        assert slow.events[0].type == "run.started"
        assert slow.events[-1].type != "run.completed"
        assert len(slow.events) + sink.dropped == 6

    def test_errors_of_the_inner_sink_are_counted_and_delivery_goes_on(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        class Flaky(RecordingSink):
            async def emit(self, event: Event) -> None:
                if event.seq % 2:
                    raise RuntimeError("flaky")
                await super().emit(event)

        inner = Flaky()
        sink = BufferedSink(inner)

        async def main() -> str:
            result = await Engine(sink=sink).run(GRAPH)
            await sink.aclose()
            return result.status

        assert run_virtual(main()) == "completed"
        assert sink.errors == 3
        assert [e.seq for e in inner.events] == [2, 4, 6]
        assert caplog.text.count("raised on") == 1  # logged once, then counted

    def test_events_after_aclose_are_dropped(self) -> None:
        inner = RecordingSink()
        sink = BufferedSink(inner)

        async def main() -> None:
            await Engine(sink=sink).run(GRAPH)
            await sink.aclose()
            await Engine(sink=sink).run(GRAPH)

        run_virtual(main())
        assert len(inner.events) == 6
        assert sink.dropped == 6

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"sink": object()}, "sink"),
            ({"sink": RecordingSink(), "maxsize": 0}, "maxsize"),
            ({"sink": RecordingSink(), "maxsize": True}, "maxsize"),
            ({"sink": RecordingSink(), "overflow": "block"}, "overflow"),
        ],
    )
    def test_bad_arguments_are_refused_naming_the_field(
        self, kwargs: dict[str, object], field: str
    ) -> None:
        with pytest.raises(ConfigurationError) as info:
            BufferedSink(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == field
        assert repr(kwargs[field]) in str(info.value)
