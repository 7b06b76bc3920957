"""What ``run`` and ``resume`` show while a run goes on: an EventSink that tracks stages."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from rich.console import Console, Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .._events import Event

STYLE = {
    "pending": "dim",
    "running": "yellow",
    "retrying": "yellow",
    "waiting": "bold yellow",
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
_ITEM_ENDS: Final = {"item.completed": "done", "item.failed": "failed", "item.skipped": "skipped"}
STOPPED = "not started: "
"""How the reason of a stage that the run's stop (a cancel, fail-fast) skipped begins."""
_ITERATION: Final = re.compile(r"\[(\d+)\]\.")  # refine[2].critique: iteration 2 of refine


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
    items: int | None = None  # a map's: how many items (its map.started)
    done: int = 0  # items that completed (restored ones too)
    failed: int = 0  # items that failed
    skipped: int = 0  # items that were skipped
    restored_items: int = 0  # items restored from the store (a resumed map)
    iteration: int | None = None  # a loop's: the iteration running (its loop.iteration)
    within: tuple[tuple[str, int], ...] = ()  # a loop's stage: (loop, iteration) it is in

    def progress(self) -> str:
        """A map's items (``412/1000``, ``1000/1000 (2 failed)``), a loop's iteration
        (``iteration 3`` while it runs, ``3 iterations`` once it ended); else ""."""
        if self.items is not None:
            ended = self.done + self.failed + self.skipped
            counts = [
                f"{n} {what}"
                for n, what in (
                    (self.failed, "failed"),
                    (self.skipped, "skipped"),
                    (self.restored_items, "restored"),
                )
                if n
            ]
            return f"{ended}/{self.items}" + (f" ({', '.join(counts)})" if counts else "")
        if self.iteration is not None:
            if self.status in ("running", "retrying"):
                return f"iteration {self.iteration}"
            return f"{self.iteration} iteration{'s' if self.iteration != 1 else ''}"
        return ""

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

    The graph's stages come first; a stage of a subgraph or of a loop's iteration
    (``etl.fetch``, ``refine[2].critique``) gets a row of its own, below the stage it is
    in, when its first event arrives; the table shows the rows of a loop's latest
    iteration only. A map stage's row counts its items (``score 412/1000``), a loop's
    shows its iteration (``refine iteration 3``). The bar counts the graph's stages.

    Args:
        names: the graph's stages, in order.
        console: where lines are printed (``lines=True``) or the live view renders.
        lines: print one plain line per stage end (when stdout is no terminal), and one
            per failed item of a map.
    """

    def __init__(self, names: tuple[str, ...], console: Console, *, lines: bool = False) -> None:
        self.stages = {name: StageView() for name in names}
        self.top = names
        self._top = frozenset(names)
        self.nested: dict[str, list[str]] = {}  # a graph's stage -> the rows inside it
        self.maps: list[str] = []  # the rows of map stages, once their map.started came
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

    def _view(self, stage: str | None, kind: str) -> StageView | None:
        """The row of ``stage``: one of the graph's, or a nested stage's, made now."""
        if stage is None:
            return None
        view = self.stages.get(stage)
        if view is not None or stage.endswith("]"):  # an item (score[3]): no row of its own
            if view is None and kind == "stage.restored":
                self._item_restored(stage)
            return view
        cut = min((k for k in (stage.find("."), stage.find("[")) if k > 0), default=-1)
        top = stage[:cut]
        if cut < 0 or top not in self._top:
            return None  # not a stage of the graph
        view = self.stages[stage] = StageView()
        view.within = tuple(
            (stage[: m.start()], int(m.group(1))) for m in _ITERATION.finditer(stage)
        )
        self.nested.setdefault(top, []).append(stage)
        return view

    def _item_restored(self, item: str) -> None:
        """An item of a map was restored (its stage.restored, named ``<map>[<key>]``)."""
        owners = [m for m in self.maps if item.startswith(m + "[")]
        if owners:
            self.stages[max(owners, key=len)].restored_items += 1

    def try_emit(self, event: Event) -> None:
        """Update the stage the event is about."""
        stage = event.stage
        kind = str(event.type)
        view = self._view(stage, kind)
        if view is None or stage is None:
            return
        data = event.data
        if kind == "stage.started":
            view.status = "running"
            view.attempts = max(view.attempts, event.attempt)
            if view.started is None:
                view.started = event.ts
        elif kind in _ITEM_ENDS:
            ended = _ITEM_ENDS[kind]
            if ended == "done":
                view.done += 1
            elif ended == "failed":
                view.failed += 1
                if self.lines:
                    self._item_line(stage, event.attempt, data)
            else:
                view.skipped += 1
        elif kind == "item.started":
            pass  # the row counts the items that ended
        elif kind == "map.started":
            items = data.get("items")
            view.items = items if isinstance(items, int) else 0
            view.done = view.failed = view.skipped = view.restored_items = 0
            if stage not in self.maps:
                self.maps.append(stage)
        elif kind == "loop.iteration":
            iteration = data.get("iteration")
            view.iteration = iteration if isinstance(iteration, int) else None
        elif kind == "input.waiting":  # an input stage: its prompt is the note
            view.status = "waiting"
            prompt = data.get("prompt")
            view.note = "" if prompt is None else str(prompt)
            self._count()
            if self.lines:
                self._line(stage, view)
        elif kind == "input.received":
            view.status = "running"
            view.note = "input given"
        elif kind == "input.timed_out":
            applied = data.get("applied") == "default"
            view.note = "deadline passed" + (": on_timeout's value given" if applied else "")
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
                self._line(stage, view)
        elif kind.startswith("custom."):
            view.note = str(data.get("note", "")) or " ".join(f"{k}={v}" for k, v in data.items())

    async def emit(self, event: Event) -> None:
        """Same as :meth:`try_emit`."""
        self.try_emit(event)

    def _line(self, name: str, view: StageView) -> None:
        tries = f"{view.attempts} attempt{'s' if view.attempts != 1 else ''}"
        note = "  ".join(text for text in (view.progress(), view.note) if text)
        self.console.print(
            f"{view.shown_status():<9} {name:<{self.width}}  {tries}  "
            f"{_seconds(view.duration)}{'  ' if note else ''}{note}",
            markup=False,
            highlight=False,
        )

    def _item_line(self, name: str, attempts: int, data: Any) -> None:
        """The line of an item that failed: ``failed score[7]  1 attempt  0.20s  why``."""
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        reason = data.get("reason")
        self.console.print(
            f"{'failed':<9} {name}[{data.get('item')}]  {tries}  {_seconds(data.get('duration'))}"
            + (f"  {reason}" if reason else ""),
            markup=False,
            highlight=False,
        )

    def _count(self) -> None:
        """The bar counts the graph's stages that finished; beside it, how the others
        ended, and those that wait for input."""
        views = [self.stages[name] for name in self.top]
        ends: dict[str, int] = {}
        for view in views:
            if view.status in ("failed", "skipped", "cancelled", "waiting"):
                ends[view.shown_status()] = ends.get(view.shown_status(), 0) + 1
        self.progress.update(
            self.task,
            completed=sum(1 for view in views if view.finished),
            ends=", ".join(f"{n} {status}" for status, n in ends.items()),
        )

    def _rows(self) -> Iterator[tuple[str, StageView]]:
        """The table's rows: each of the graph's stages, then the rows inside it but
        those of a loop's earlier iterations (or of a retried loop's later ones)."""
        stages = self.stages
        for name in self.top:
            yield name, stages[name]
            for inner in self.nested.get(name, ()):
                view = stages[inner]
                if all(_current(stages.get(loop), n) for loop, n in view.within):
                    yield inner, view

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
        for name, view in self._rows():
            elapsed = view.elapsed()
            progress = view.progress()
            table.add_row(
                name,
                f"[{STYLE.get(view.status, '')}]{view.shown_status()}"
                + (f" {progress}" if progress else ""),
                str(view.attempts) if view.attempts else "",
                "" if elapsed is None else _seconds(elapsed),
                view.note,
            )
        return Group(table, self.progress)


def _current(loop: StageView | None, iteration: int) -> bool:
    """Whether ``iteration`` is the one the loop ``loop`` shows (runs, or ended with)."""
    return loop is None or loop.iteration is None or loop.iteration == iteration


def _seconds(value: Any) -> str:
    if not isinstance(value, int | float):
        return "-"
    return f"{value:.2f}s"
