"""Small stages and shortcuts shared by the unit tests."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from stageflow import Engine, LoopClock, RunResult, StageContext, StageGraph
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.testing import RecordingSink, run_virtual


async def noop(ctx: StageContext) -> None:
    """A stage that does nothing and completes."""


def sleeper(seconds: float, **data: Any) -> Callable[[StageContext], Any]:
    """A stage that sleeps ``seconds`` (virtual time in tests) and returns ``data``."""

    async def stage(ctx: StageContext) -> Mapping[str, Any]:
        await asyncio.sleep(seconds)
        return data

    return stage


def failing(seconds: float = 0.0, message: str = "boom") -> Callable[[StageContext], Any]:
    """A stage that sleeps ``seconds`` then raises ValueError(message)."""

    async def stage(ctx: StageContext) -> None:
        await asyncio.sleep(seconds)
        raise ValueError(message)

    return stage


def run(graph: StageGraph, engine: Engine | None = None, **kwargs: Any) -> RunResult:
    """Run ``graph`` on virtual time and return its result."""
    return run_virtual((engine or Engine()).run(graph, **kwargs))


def run_recorded(graph: StageGraph, **engine_options: Any) -> tuple[RunResult, RecordingSink]:
    """Run ``graph`` on virtual time with a RecordingSink; return the result and the sink."""
    sink = RecordingSink()
    result = run_virtual(Engine(sink=sink, **engine_options).run(graph))
    return result, sink


class ExplodingRun:
    """An inner run hook that raises after ``delay`` seconds: a run ends with an exception."""

    name = "exploding"
    priority = 1000

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def wrap(self, spec: Any, call: Any) -> Any:
        return call

    def wrap_run(self, graph: Any, call: Any) -> Any:
        async def explode(run: Any) -> Any:
            await asyncio.sleep(self.delay)
            raise RuntimeError("store down")

        return explode


EPOCH = 1_700_000_000.0  # VirtualWall's wall time when the loop's time is 0


class VirtualWall(LoopClock):
    """The loop's clock, its wall time on virtual time too: deadlines pass, and spans
    last, as long as the virtual sleeps of a test."""

    def wall(self) -> float:
        return EPOCH + asyncio.get_running_loop().time()


StoreOpener = Callable[[], Any]
"""Opens the store of a durable test (the ``open_store`` fixture of ``conftest.py``)."""


def durably(open_store: StoreOpener, scenario: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``scenario(store)`` on virtual time with a fresh store, closed afterwards."""

    async def main() -> Any:
        store = open_store()
        try:
            if isinstance(store, SQLAlchemyStore):  # open it before virtual time runs
                await store.open()
            return await scenario(store)
        finally:
            await store.aclose()

    return run_virtual(main())


class Capture(logging.Handler):
    """Keeps the log records it handles."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def of(self, stage: str) -> list[logging.LogRecord]:
        """The records about ``stage``."""
        return [r for r in self.records if getattr(r, "stage", None) == stage]

    def runs(self) -> list[logging.LogRecord]:
        """The records about runs (no stage)."""
        return [r for r in self.records if not hasattr(r, "stage")]

    def stages(self) -> list[logging.LogRecord]:
        """The records about stages."""
        return [r for r in self.records if hasattr(r, "stage")]
