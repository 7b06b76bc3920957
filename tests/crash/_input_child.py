"""The program the input race and crash tests run, race and kill: a sender or a driver.

Run it as ``python -m tests.crash._input_child URL MODE --log-dir DIR [options]`` from the
repo root. Its graph (:func:`build_graph`) is ``draft -> approval -> publish``:
``approval`` is an input stage (schema :class:`Approval`) and ``publish`` returns the note
it was given. Every call of ``draft`` and ``publish`` first appends ``STAGE PID`` to
``LOG_DIR/RUN_ID.calls`` (``os.write`` + ``fsync``): the parent counts the calls there.

- ``serve``: read commands on stdin, one a line, and answer each with one JSON line; two
  such processes race for many runs without paying for start-up each time. A command is
  ``send RUN_ID NOTE DELAY`` (``DELAY`` seconds after ``go``, give ``approval`` the value
  ``{"approved": true, "note": NOTE}``)
  or ``resume RUN_ID`` (resume the run once, without waiting). For each, the child makes
  a new engine, reads the run once (its connection is open and warm), says ``ready``, and
  waits for a line ``go`` before it calls the engine: the parent says ``go`` to both racers
  once both are ready. An empty line ends it.
- ``run``: start run ``RUN_ID`` with ``wait=True`` (polling the store every
  ``--poll`` seconds), its lease ``--ttl``; with ``--block``, ``publish`` says ``blocked``
  once it has logged its call and then waits until the process is killed.

On stdout, flushed: ``waiting NAME`` and ``received NAME`` as the driver's input waits and
gets its value (a sink of the driver's events), ``blocked publish``, and at the end of a
drive one JSON object (``{"outcome": ..., "pid": ...}``). Exit codes: those of
``tests.crash._child``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from stageflow import Engine, Event, Pipeline, RunResult, RunStatus, StageContext, StageGraph
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.errors import StageflowError

from ._child import EXIT_COMPLETED, EXIT_FAILED, _append


class Approval(BaseModel):
    approved: bool
    note: str = ""


def build_graph(log_dir: Path, *, block: bool = False) -> StageGraph:
    """``draft -> approval (input) -> publish``, logging their calls under ``log_dir``."""

    async def draft(ctx: StageContext) -> dict[str, Any]:
        _append(log_dir / f"{ctx.run_id}.calls", f"draft {os.getpid()}\n")
        return {"text": f"the report of {ctx.run_id}"}

    async def publish(ctx: StageContext) -> dict[str, Any]:
        _append(log_dir / f"{ctx.run_id}.calls", f"publish {os.getpid()}\n")
        if block:
            say("blocked publish")
            await asyncio.Event().wait()  # until SIGKILL
        approval = ctx.inputs["approval"]
        return {"approved": approval["approved"], "note": approval["note"]}

    return (
        Pipeline("approve")
        .with_stage("draft", draft)
        .with_input(
            "approval",
            schema=Approval,
            dependencies=("draft",),
            prompt=lambda ctx: f"publish {ctx.inputs['draft']['text']}?",
        )
        .with_stage("publish", publish, dependencies=("approval",))
        .build()
    )


def calls_of(log_dir: Path, run_id: str) -> list[tuple[str, int]]:
    """``(stage, pid)`` of each call logged for the run, in order."""
    path = log_dir / f"{run_id}.calls"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [(stage, int(pid)) for stage, pid in (line.split(" ") for line in lines)]


class Announce:
    """An EventSink that says on stdout when an input waits and when it gets its value."""

    def try_emit(self, event: Event) -> None:
        if event.type == "input.waiting":
            say(f"waiting {event.stage}")
        elif event.type == "input.received":
            say(f"received {event.stage}")

    async def emit(self, event: Event) -> None:
        self.try_emit(event)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def summary(result: RunResult) -> dict[str, Any]:
    error = result.error
    return {
        "outcome": result.status.value,
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "waiting_for": [p.name for p in result.waiting_for],
        "publish": dict(result["publish"].data) if result["publish"].ok else None,
        "pid": os.getpid(),
    }


async def serve(store: SQLAlchemyStore, graph: StageGraph) -> int:
    loop = asyncio.get_running_loop()

    async def line() -> str:
        read: str = await loop.run_in_executor(None, sys.stdin.readline)
        return read.strip()

    say("ready")
    while command := await line():
        what, run_id, *rest = command.split(" ")
        engine = Engine(store=store)  # a new engine for each: another owner, nothing live
        await store.get_run(run_id)  # the connection is open before the race
        say("ready")
        go = await line()
        assert go == "go", go
        reply: dict[str, Any]
        began = time.time()
        try:
            if what == "send":
                note, delay = rest
                await asyncio.sleep(float(delay))  # the parent spreads the instants it sends at
                value = {"approved": True, "note": note}
                row = await engine.send(run_id, "approval", value, graph=graph)
                reply = {"outcome": "accepted", "given_at": row.given_at}
            else:
                assert what == "resume", command
                reply = summary(await engine.resume(run_id, graph))
        except StageflowError as error:
            reply = {"outcome": "refused", "error": type(error).__name__}
        ended = time.time()
        say(
            json.dumps(
                {"run_id": run_id, **reply, "began": began, "ended": ended, "pid": os.getpid()}
            )
        )
    return EXIT_COMPLETED


async def main(args: argparse.Namespace) -> int:
    graph = build_graph(args.log_dir, block=args.block)
    store = SQLAlchemyStore(args.url)
    try:
        if args.mode == "serve":
            return await serve(store, graph)
        engine = Engine(store=store, lease_ttl=args.ttl, input_poll=args.poll, sink=Announce())
        say("go")
        result = await engine.run(graph, run_id=args.run_id, wait=True)
        say(json.dumps(summary(result)))
        return EXIT_COMPLETED if result.status is RunStatus.COMPLETED else EXIT_FAILED
    finally:
        await store.aclose()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.crash._input_child")
    parser.add_argument("url")
    parser.add_argument("mode", choices=("serve", "run"))
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument("--run-id", default="input-1", help="run: the run to start")
    parser.add_argument("--block", action="store_true", help="run: publish waits to be killed")
    parser.add_argument("--ttl", type=float, default=5.0, help="run: the engine's lease_ttl")
    parser.add_argument("--poll", type=float, default=0.02, help="run: the engine's input_poll")
    return parser.parse_args(argv)


if __name__ == "__main__":
    code = asyncio.run(main(parse(sys.argv[1:])))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # everything is committed and closed by now: skip the teardown
