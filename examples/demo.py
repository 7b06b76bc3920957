"""`make demo`: run the research pipeline with live progress, then show the result.

One source fails (and is reported), one branch skips itself, the rest completes.
No network: every "fetch" is simulated.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))

from research import pipeline

from stageflow import Engine, Event, RunResult, StageStatus

STYLE = {
    "pending": "dim",
    "running": "yellow",
    "retrying": "yellow",
    "completed": "green",
    "failed": "red",
    "skipped": "blue",
    "cancelled": "magenta",
}


class ProgressSink:
    """An EventSink that keeps the live state of each stage for the display."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.state = dict.fromkeys(names, "pending")
        self.notes: dict[str, str] = {}
        self.progress = Progress(
            TextColumn("[bold]stages"), BarColumn(), MofNCompleteColumn(), transient=False
        )
        self.task = self.progress.add_task("stages", total=len(names))

    def try_emit(self, event: Event) -> None:
        if event.stage is None:
            return
        kind = event.type.split(".", 1)[1]
        if event.type == "stage.started":
            self.state[event.stage] = "running"
        elif event.type == "stage.retrying":
            self.state[event.stage] = "retrying"
            self.notes[event.stage] = (
                f"attempt {event.data['attempt']} in {event.data['delay']:.1f}s "
                f"after {event.data['error']}"
            )
        elif event.type.startswith("custom."):
            self.notes[event.stage] = str(event.data.get("note", ""))
        elif kind in STYLE:
            self.state[event.stage] = kind
            if "reason" in event.data:
                self.notes[event.stage] = str(event.data["reason"])
            self.progress.advance(self.task)

    async def emit(self, event: Event) -> None:
        self.try_emit(event)

    def __rich__(self) -> Group:
        table = Table(box=None, pad_edge=False)
        table.add_column("stage")
        table.add_column("status")
        table.add_column("note", overflow="fold")
        for name, state in self.state.items():
            table.add_row(name, f"[{STYLE[state]}]{state}", self.notes.get(name, ""))
        return Group(table, self.progress)


def show(console: Console, result: RunResult) -> None:
    table = Table(title=f"run {result.run_id} — {result.status.value}")
    for column in ("stage", "status", "attempts", "started", "duration", "reason"):
        table.add_column(column)
    for r in result:
        table.add_row(
            r.stage,
            f"[{STYLE[r.status.value]}]{r.status.value}",
            str(r.attempts),
            "-" if r.started is None else f"{r.started:.2f}s",
            "-" if r.duration is None else f"{r.duration:.2f}s",
            r.reason or "",
        )
    console.print(table)
    if result["report"].status is StageStatus.COMPLETED:
        console.print(Panel(result["report"].data["report"], title="report"))
    failed = result.with_status(StageStatus.FAILED)
    if failed:
        console.print(
            f"[red]{len(failed)} stage(s) failed and were reported: {', '.join(failed)}; "
            "their dependents ran anyway because the dependency is optional."
        )


async def main() -> int:
    console = Console()
    graph = pipeline.build()
    console.print(Panel(graph.to_mermaid(), title=f"pipeline {graph.name!r} (mermaid)"))
    sink = ProgressSink(graph.names)
    engine = Engine(sink=sink, fail_fast=False, max_parallel=4)
    with Live(sink, console=console, refresh_per_second=12):
        result = await engine.run(graph, data={"topic": "owls", "language": "en"})
    console.print()
    show(console, result)
    console.print(f"finished in {result.duration:.2f}s")
    return 0 if result["report"].ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
