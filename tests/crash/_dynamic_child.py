"""The program the dynamic-graph crash tests run and SIGKILL: one durable driver.

Run it as ``python -m tests.crash._dynamic_child URL RUN_ID CASE MODE [options]`` from the
repo root. It builds the deterministic dynamic graph of ``CASE`` (:func:`build_graph`) and
drives run ``RUN_ID`` in the store at ``URL``: ``run`` starts it, ``resume`` resumes it
(``take_over=True``: the harness resumes only once the last driver is dead).

- ``map``: ``split`` lists ``ITEMS`` items, ``score`` maps over them (``max_parallel=``
  :data:`MAP_PARALLEL`, keys ``d000`` ...), ``total`` sums the scores;
- ``route``: ``intake`` and ``side`` (roots), ``classify`` (a ROUTE stage choosing
  ``careful`` of ``fast``/``careful``), ``join`` after both; with ``--broken`` ``classify``
  raises;
- ``loop``: ``seed``, then ``refine``, a loop of the body ``draft -> critique`` whose
  ``until`` holds at iteration :data:`LOOP_DONE_AT`, then ``publish``;
- ``subgraph``: ``prep``, then ``etl`` (``fetch -> transform -> load``), then ``report``.

Every call of a stage (a map item, a loop body stage, a subgraph stage included) and every
call of the loop's ``until`` first appends ``LABEL PID`` to ``LOG_DIR/RUN_ID.calls``
(``os.write`` + ``fsync``): ``LABEL`` is the stage's name in the run (``score[d042]``,
``refine[3].critique``, ``etl.transform``) or ``until[N]`` for the verdict of iteration
``N``. The parent counts the calls of each there.

On stdout, one line per step, flushed: ``go`` right before the call into the engine,
``done N`` each time a map item's function returns (``N``: the items done by this driver),
``blocked STAGE`` when the stage named by ``--block`` starts (it then waits until the
driver is killed), and at the end one JSON object (``{"outcome": ..., "pid": ...}``). A
driver that completes the run pickles its outputs (:func:`outputs`) to
``LOG_DIR/RUN_ID.pickle``. Exit codes: those of ``tests.crash._child``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import pickle
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stageflow import Engine, Pipeline, RunResult, RunStatus, StageKind, StageOutput
from stageflow.adapters.sqlalchemy import SQLAlchemyStore

from ._child import EXIT_COMPLETED, EXIT_FAILED, _append

CASES = ("map", "route", "loop", "subgraph")
ITEMS = 500
MAP_PARALLEL = 8
LOOP_MAX = 6
LOOP_DONE_AT = 5  # the iteration whose output satisfies until


def digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


class Calls:
    """What a driver does besides its stages' work: log calls, report, block."""

    def __init__(
        self,
        log: Path | None = None,
        *,
        block: str | None = None,
        broken: bool = False,
        progress: bool = False,
    ) -> None:
        self.log = log
        self.block = block
        self.broken = broken
        self.progress = progress
        self.done = 0

    async def called(self, label: str) -> None:
        """Log a call of ``label``; block forever if it is the stage to block in."""
        if self.log is not None:
            _append(self.log, f"{label} {os.getpid()}\n")
        if label == self.block:
            say(f"blocked {label}")
            await asyncio.Event().wait()  # until SIGKILL

    def item_done(self) -> None:
        self.done += 1
        if self.progress:
            say(f"done {self.done}")


def build_graph(case: str, calls: Calls) -> Any:
    """The graph of ``case`` (see the module's docstring); its stages report to ``calls``."""
    return {"map": _map, "route": _route, "loop": _loop, "subgraph": _subgraph}[case](calls)


def _map(calls: Calls) -> Any:
    async def split(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        return {"items": [{"id": f"d{i:03d}", "n": i} for i in range(ITEMS)]}

    async def score(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        item = ctx.item
        # 0-1 ms, varied: items finish out of order and several are in flight at once
        await asyncio.sleep((item["n"] * 7919 % 11) / 10_000)
        calls.item_done()
        value = int(digest("score", item["id"], item["n"])[:6], 16) % 1000
        return {"id": item["id"], "score": value, "index": ctx.item_index, "key": ctx.item_key}

    async def total(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        results = ctx.inputs["score"]["results"]
        return {
            "sum": sum(r["score"] for r in results),
            "order": digest([r["id"] for r in results]),
            "count": len(results),
        }

    return (
        Pipeline("dynamic-map")
        .with_stage("split", split)
        .with_map(
            "score",
            score,
            over="split.items",
            key=lambda item: item["id"],
            max_parallel=MAP_PARALLEL,
            dependencies=["split"],
        )
        .with_stage("total", total, dependencies=["score"])
        .build()
    )


def _route(calls: Calls) -> Any:
    async def intake(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        return {"text": "the patient reports a persistent cough", "urgency": 7}

    async def side(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        return {"audit": digest("side")}

    async def classify(ctx: Any) -> StageOutput:
        await calls.called(ctx.stage)
        if calls.broken:
            raise RuntimeError("the classifier is down")
        urgency = ctx.inputs["intake"]["urgency"]
        return StageOutput.route("careful" if urgency > 5 else "fast", urgency=urgency)

    async def fast(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        return {"answer": "fast", "of": ctx.inputs["classify"]["urgency"]}

    async def careful(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        return {"answer": "careful", "of": ctx.inputs["classify"]["urgency"]}

    async def join(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        taken = sorted(n for n in ("fast", "careful") if ctx.inputs.get(n) is not None)
        return {"taken": taken, "answers": [ctx.inputs[n]["answer"] for n in taken]}

    return (
        Pipeline("dynamic-route")
        .with_stage("intake", intake)
        .with_stage("side", side)
        .with_stage(
            "classify",
            classify,
            StageKind.ROUTE,
            dependencies=["intake"],
            routes=("fast", "careful"),
        )
        .with_stage("fast", fast, dependencies=["classify"])
        .with_stage("careful", careful, dependencies=["classify"])
        .with_stage("join", join, dependencies=["fast", "careful", "side"])
        .build()
    )


def _loop(calls: Calls) -> Any:
    async def seed(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        return {"text": "v0"}

    async def draft(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        loop = ctx.loop
        before = ctx.inputs["seed"]["text"] if loop.previous is None else loop.previous["text"]
        return {"text": f"{before}+d{loop.iteration}", "iteration": loop.iteration}

    async def critique(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        text = ctx.inputs["draft"]["text"]
        iteration = ctx.loop.iteration
        return {"text": f"{text}+c{iteration}", "iteration": iteration, "score": 20 * iteration}

    def until(output: Mapping[str, Any]) -> bool:
        if calls.log is not None:
            _append(calls.log, f"until[{output['iteration']}] {os.getpid()}\n")
        return bool(output["score"] >= 20 * LOOP_DONE_AT)

    async def publish(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        return {"final": ctx.inputs["refine"]["text"], "digest": digest(ctx.inputs["refine"])}

    body = (
        Pipeline("refine-body")
        .with_stage("draft", draft)
        .with_stage("critique", critique, dependencies=["draft"])
    )
    return (
        Pipeline("dynamic-loop")
        .with_stage("seed", seed)
        .with_loop("refine", body, until=until, max_iterations=LOOP_MAX, dependencies=["seed"])
        .with_stage("publish", publish, dependencies=["refine"])
        .build()
    )


def _subgraph(calls: Calls) -> Any:
    async def prep(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        return {"rows": [3, 1, 4, 1, 5, 9, 2, 6]}

    async def fetch(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        return {"rows": [r * 10 for r in ctx.inputs["prep"]["rows"]]}

    async def transform(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        return {"rows": sorted(ctx.inputs["fetch"]["rows"])}

    async def load(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        rows = ctx.inputs["transform"]["rows"]
        return {"loaded": len(rows), "digest": digest(rows)}

    async def report(ctx: Any) -> dict[str, Any]:
        await calls.called(ctx.stage)
        return {"summary": f"{ctx.inputs['etl']['loaded']} rows", **ctx.inputs["etl"]}

    etl = (
        Pipeline("etl")
        .with_stage("fetch", fetch)
        .with_stage("transform", transform, dependencies=["fetch"])
        .with_stage("load", load, dependencies=["transform"])
    )
    return (
        Pipeline("dynamic-subgraph")
        .with_stage("prep", prep)
        .with_subgraph("etl", etl, dependencies=["prep"])
        .with_stage("report", report, dependencies=["etl"])
        .build()
    )


def outputs(result: RunResult) -> dict[str, tuple[str, dict[str, Any], str | None]]:
    """Each stage's (and map item's) status, output data and reason."""
    out = {}
    for stage in result:
        for one in (stage, *stage.items):
            data = dict(one.data) if one.ok else {}
            out[one.stage] = (one.status.value, data, one.reason)
    return out


def reference(
    case: str, log: Path | None = None
) -> dict[str, tuple[str, dict[str, Any], str | None]]:
    """The outputs of an uninterrupted run of ``case``'s graph, in this process, no store."""
    graph = build_graph(case, Calls(log))
    return outputs(asyncio.run(Engine().run(graph, run_id="reference")))


def calls_of(log: Path) -> list[tuple[str, int]]:
    """``(label, pid)`` of each call logged, in order."""
    if not log.exists():
        return []
    return [
        (label, int(pid))
        for label, pid in (line.split(" ") for line in log.read_text().splitlines())
    ]


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> int:
    calls = Calls(
        args.log_dir / f"{args.run_id}.calls", block=args.block, broken=args.broken, progress=True
    )
    graph = build_graph(args.case, calls)
    store = SQLAlchemyStore(args.url)
    try:
        engine = Engine(store=store, lease_ttl=args.ttl)
        say("go")
        if args.mode == "run":
            result = await engine.run(graph, run_id=args.run_id)
        else:
            result = await engine.resume(args.run_id, graph, timeout=math.inf, take_over=True)
        error = result.error
        summary = {
            "outcome": result.status.value,
            "error": None if error is None else f"{type(error).__name__}: {error}",
            "pid": os.getpid(),
        }
        if result.status is RunStatus.COMPLETED:
            (args.log_dir / f"{args.run_id}.pickle").write_bytes(pickle.dumps(outputs(result)))
        say(json.dumps(summary))
        return EXIT_COMPLETED if result.status is RunStatus.COMPLETED else EXIT_FAILED
    finally:
        await store.aclose()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.crash._dynamic_child")
    parser.add_argument("url")
    parser.add_argument("run_id")
    parser.add_argument("case", choices=CASES)
    parser.add_argument("mode", choices=("run", "resume"))
    parser.add_argument("--log-dir", type=Path, required=True)
    parser.add_argument("--block", default=None, help="the stage that blocks until killed")
    parser.add_argument("--broken", action="store_true", help="route: classify raises")
    parser.add_argument("--ttl", type=float, default=5.0, help="the engine's lease_ttl")
    return parser.parse_args(argv)


if __name__ == "__main__":
    code = asyncio.run(main(parse(sys.argv[1:])))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # everything is committed and closed by now: skip the teardown
