"""What ``run`` and ``resume`` show while a run goes on: an EventSink that tracks stages."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .._events import Event

STYLE = {
    "pending": "dim",
    "running": "yellow",
    "retrying": "yellow",
    "done": "green",
    "restored": "cyan",
    "failed": "red",
    "skipped": "blue",
    "cancelled": "magenta",
}
_ENDS = {
    "stage.completed": "done",
    "stage.failed": "failed",
    "stage.skipped": "skipped",
    "stage.cancelled": "cancelled",
}
STOPPED = "not started: "
"""How the reason of a stage that the run's stop (a cancel, fail-fast) skipped begins."""


@dataclass
class StageView:
    """What the view knows of one stage."""

    status: str = "pending"
    attempts: int = 0
    started: float | None = None  # wall clock, of the first stage.started
    duration: float | None = None
    note: str = ""
    restored: bool = False
    stopped: bool = False  # skipped because the run stopped: it never started
    allowed: int | None = None  # the attempts its retry policy allows, once retried
    retried_after: str = ""  # the error of the attempt before

    def shown_status(self) -> str:
        """The status, with the attempt of a retried stage that runs: ``running (attempt 2
        of 3)``; ``not started`` for a stage that the run's stop skipped."""
        if self.status == "running" and self.attempts > 1:
            of = f" of {self.allowed}" if self.allowed else ""
            return f"running (attempt {self.attempts}{of})"
        if self.status == "skipped" and self.stopped:
            return "not started"
        return self.status

    @property
    def finished(self) -> bool:
        """It ended on its own: completed, restored, failed, or skipped (not cut short by
        the run's stop: cancelled, or not started)."""
        return self.status in ("done", "restored", "failed", "skipped") and not self.stopped

    def elapsed(self) -> float | None:
        """The duration once ended, else the time since it started."""
        if self.duration is not None or self.started is None:
            return self.duration
        return max(0.0, time.time() - self.started)


class ProgressView:
    """An EventSink that keeps each stage's state, for a live table or plain lines.

    Args:
        names: the graph's stages, in order.
        console: where lines are printed (``lines=True``) or the live view renders.
        lines: print one plain line per stage end (when stdout is no terminal).
    """

    def __init__(self, names: tuple[str, ...], console: Console, *, lines: bool = False) -> None:
        self.stages = {name: StageView() for name in names}
        self.console = console
        self.lines = lines
        self.width = max((len(name) for name in names), default=0)
        self.progress = Progress(
            TextColumn("[bold]stages"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[ends]}"),
            TimeElapsedColumn(),
        )
        self.task = self.progress.add_task("stages", total=len(names), ends="")
        self.currency: str | None = None  # of the costs shown: see _format.money

    def try_emit(self, event: Event) -> None:
        """Update the stage the event is about."""
        if event.stage is None or event.stage not in self.stages:
            return
        view = self.stages[event.stage]
        kind = str(event.type)
        data = event.data
        if kind == "stage.started":
            view.status = "running"
            view.attempts = max(view.attempts, event.attempt)
            if view.started is None:
                view.started = event.ts
        elif kind == "stage.retrying":
            view.status = "retrying"
            view.retried_after = f"{data.get('error')}: {data.get('message', '')}"
            view.note = (
                f"attempt {data.get('attempt')} in {_seconds(data.get('delay'))} "
                f"after {view.retried_after}"
            )
        elif kind == "attempt.started":
            view.status = "running"
            view.attempts = max(view.attempts, event.attempt)
            allowed = data.get("attempts")
            view.allowed = allowed if isinstance(allowed, int) else None
            view.note = f"after {view.retried_after}" if view.retried_after else ""
        elif kind == "stage.restored":
            view.restored = True
            view.attempts = int(data.get("attempts", view.attempts))
        elif kind in _ENDS:
            view.status = "restored" if view.restored and kind == "stage.completed" else _ENDS[kind]
            view.attempts = max(view.attempts, event.attempt)
            duration = data.get("duration")
            view.duration = float(duration) if isinstance(duration, int | float) else 0.0
            if "reason" in data:
                view.note = str(data["reason"])
            view.stopped = kind == "stage.skipped" and view.note.startswith(STOPPED)
            self._count()
            if self.lines:
                self._line(event.stage, view)
        elif kind.startswith("custom."):
            view.note = str(data.get("note", "")) or " ".join(f"{k}={v}" for k, v in data.items())

    async def emit(self, event: Event) -> None:
        """Same as :meth:`try_emit`."""
        self.try_emit(event)

    def _line(self, name: str, view: StageView) -> None:
        tries = f"{view.attempts} attempt{'s' if view.attempts != 1 else ''}"
        note = f"  {view.note}" if view.note else ""
        self.console.print(
            f"{view.shown_status():<9} {name:<{self.width}}  {tries}  "
            f"{_seconds(view.duration)}{note}",
            markup=False,
            highlight=False,
        )

    def _count(self) -> None:
        """The bar counts the stages that finished; beside it, how the others ended."""
        views = self.stages.values()
        ends: dict[str, int] = {}
        for view in views:
            if view.status in ("failed", "skipped", "cancelled"):
                ends[view.shown_status()] = ends.get(view.shown_status(), 0) + 1
        self.progress.update(
            self.task,
            completed=sum(1 for view in views if view.finished),
            ends=", ".join(f"{n} {status}" for status, n in ends.items()),
        )

    def counts(self) -> dict[str, int]:
        """How many stages are in each state (states without stages left out)."""
        counts: dict[str, int] = {}
        for view in self.stages.values():
            counts[view.status] = counts.get(view.status, 0) + 1
        return counts

    def __rich__(self) -> Group:
        table = Table(box=None, pad_edge=False)
        for column in ("stage", "status", "attempts", "duration", "note"):
            table.add_column(column, overflow="fold" if column == "note" else "ellipsis")
        for name, view in self.stages.items():
            elapsed = view.elapsed()
            table.add_row(
                name,
                f"[{STYLE.get(view.status, '')}]{view.shown_status()}",
                str(view.attempts) if view.attempts else "",
                "" if elapsed is None else _seconds(elapsed),
                view.note,
            )
        return Group(table, self.progress)


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:.2f}s"
