"""The program the crash and lease tests run, kill, stop and race: one durable driver.

Run it as ``python -m tests.crash._child URL RUN_ID SEED MODE [options]`` from the repo root.

It builds the deterministic graph of ``SEED`` (:func:`build_graph`) and drives run ``RUN_ID``
in the store at ``URL``:

- ``run``: start the run (``Engine.run``);
- ``resume``: resume it (``Engine.resume``), waiting out another driver's lease up to
  ``--lease-tries`` times (``0``: give up at the first ``RunLeasedError``);
- ``probe``: try to resume it ``--tries`` times, ``--every`` seconds apart, and expect to be
  refused each time (a run that someone else drives); it drives the run if it is let in;
- ``stdin``: start up, say ``ready``, then read ``MODE RUN_ID SEED`` on stdin (the crash
  harness starts the next driver while the current one still runs; RUN_ID and SEED on the
  command line are then placeholders);
- ``serve``: read ``resume RUN_ID`` lines on stdin and answer each with one JSON line, so
  that two long-lived processes can race for many runs without paying for start-up each time.

Every stage reports usage (``tokens_of(stage)`` input tokens, 1 output token) under a run
budget far above what a run spends, then, right before it returns, appends ``stage attempt pid`` to
``LOG_DIR/RUN_ID.log`` (flushed and fsync'd): the parent counts completed attempts there.
A driver that completes the run pickles its outputs to ``LOG_DIR/RUN_ID.pickle`` and writes
its ``result.usage`` (input tokens by stage) to ``LOG_DIR/RUN_ID.usage.json``.

On stdout, one line per step, flushed: ``go`` right before each call into the engine,
``wait SECONDS`` before sleeping out a lease, and at the end one JSON object
(``{"outcome": ..., "pid": ...}``). Exit codes are below (``EXIT_*``).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import math
import os
import pickle
import random
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stageflow import Budget, Engine, Pipeline, RunResult, RunStatus
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.errors import LeaseLostError, RunLeasedError

EXIT_COMPLETED = 0
EXIT_LEASE_LOST = 3  # the run ended because another driver took its lease over
EXIT_FAILED = 4  # the run ended failed or cancelled for another reason
EXIT_LEASED = 75  # another driver held the run every time we tried

STAGES = 200
WINDOW = 10
EPOCH = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
MODEL = "crash-model"
# A run budget far above what a run spends: every admission and report goes through the
# budget's accounting (restored on resume), and a doubled or reset count would show.
BUDGET = Budget(max_tokens=10**9, warn_at=0.5, policy="notify")


def shape(
    seed: int, stages: int = STAGES, max_ms: float = 5.0
) -> list[tuple[str, tuple[str, ...], float]]:
    """``(name, dependencies, seconds)`` of each stage: up to 3 earlier stages, 0..max_ms.

    Dependencies come from the last ``WINDOW`` stages, and few stages are roots, so the
    graph is deep (its critical path is ~70 stages): a run lasts long enough to be killed
    in the middle, with several stages in flight at any time.
    """
    rng = random.Random(seed)
    out = []
    for i in range(stages):
        low = max(0, i - WINDOW)
        k = 0 if rng.random() < 0.03 else rng.randint(min(1, i), min(3, i - low))
        picked = sorted(rng.sample(range(low, i), k))
        out.append((f"s{i:03d}", tuple(f"s{j:03d}" for j in picked), rng.uniform(0, max_ms) / 1e3))
    return out


def output_of(name: str, inputs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A stage's output: a function of its name and its inputs, typed values included.

    The digest covers the ``repr`` of each input's tuple, datetime and bytes, so an input
    restored with another type (a list for a tuple, a str for a datetime) changes every
    output downstream of it.
    """
    digest = hashlib.sha256(name.encode())
    for dep in sorted(inputs):
        value = inputs[dep]
        digest.update(f"|{dep}:{value['digest']}:{value['pair']!r}:{value['at']!r}".encode())
        digest.update(value["raw"])
    hex_ = digest.hexdigest()
    n = int(hex_[:12], 16)
    return {
        "digest": hex_,
        "pair": (n % 1000, hex_[:6]),
        "at": EPOCH + dt.timedelta(seconds=n % 10**8, microseconds=n % 10**6),
        "raw": bytes.fromhex(hex_[:8]),
    }


def tokens_of(stage: str) -> int:
    """The input tokens each attempt of ``stage`` reports (its output tokens: 1)."""
    return 10 + int(stage[1:])


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def build_graph(
    seed: int, *, log_dir: Path | None = None, sleep: bool = True, max_ms: float = 5.0
) -> Any:
    """The graph of ``seed``; with ``log_dir``, each completion is logged there (see above)."""
    pipeline = Pipeline(f"crash-{seed}")
    for name, deps, seconds in shape(seed, max_ms=max_ms):

        async def stage(ctx: Any, deps: tuple[str, ...] = deps, seconds: float = seconds) -> Any:
            if sleep:
                await asyncio.sleep(seconds)
            out = output_of(ctx.stage, {dep: ctx.inputs[dep] for dep in deps})
            ctx.usage.report(model=MODEL, input_tokens=tokens_of(ctx.stage), output_tokens=1)
            if log_dir is not None:
                _append(log_dir / f"{ctx.run_id}.log", f"{ctx.stage} {ctx.attempt} {os.getpid()}\n")
            return out

        pipeline = pipeline.with_stage(name, stage, dependencies=deps)
    return pipeline.build()


def reference(seed: int) -> dict[str, dict[str, Any]]:
    """The outputs of an uninterrupted run of ``seed``'s graph, in this process, no store."""
    return outputs(asyncio.run(Engine().run(build_graph(seed, sleep=False))))


def completions(log_dir: Path, run_id: str) -> list[tuple[str, int, int]]:
    """``(stage, attempt, pid)`` of each completed attempt the drivers of a run logged."""
    path = log_dir / f"{run_id}.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        stage, attempt, pid = line.split(" ")
        out.append((stage, int(attempt), int(pid)))
    return out


def outputs(result: RunResult) -> dict[str, dict[str, Any]]:
    return {stage.stage: dict(stage.data) for stage in result}


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def verdict(result: RunResult) -> tuple[int, dict[str, Any]]:
    error = result.error
    summary = {
        "outcome": result.status.value,
        "error": None if error is None else type(error).__name__,
        "pid": os.getpid(),
    }
    if result.status is RunStatus.COMPLETED:
        return EXIT_COMPLETED, summary
    return (EXIT_LEASE_LOST if isinstance(error, LeaseLostError) else EXIT_FAILED), summary


def leased(error: RunLeasedError) -> dict[str, Any]:
    return {
        "outcome": "leased",
        "owner": error.owner,
        "expires_at": error.expires_at,
        "pid": os.getpid(),
    }


async def main(args: argparse.Namespace) -> int:
    if args.mode == "stdin":  # started ahead of time: told what to do when it is needed
        say("ready")
        args.mode, args.run_id, seed = sys.stdin.readline().split()
        args.seed = int(seed)
    graph = build_graph(args.seed, log_dir=args.log_dir, max_ms=args.max_ms)
    store = SQLAlchemyStore(args.url)
    try:
        if args.mode == "serve":
            return await serve(store, graph, args)
        engine = Engine(store=store, lease_ttl=args.ttl, budget=BUDGET)
        if args.mode == "run":
            say("go")
            result = await engine.run(graph, data={"seed": args.seed}, run_id=args.run_id)
        elif args.mode == "probe":
            return await probe(engine, graph, args)
        else:
            result = await resume(engine, graph, args)
            if result is None:
                return EXIT_LEASED
        code, summary = verdict(result)
        if code == EXIT_COMPLETED and args.log_dir is not None:
            path = args.log_dir / f"{args.run_id}.pickle"
            path.write_bytes(pickle.dumps(outputs(result)))
            usage = {name: u.input_tokens for name, u in result.usage.by_stage.items()}
            (args.log_dir / f"{args.run_id}.usage.json").write_text(json.dumps(usage))
        say(json.dumps(summary))
        return code
    finally:
        await store.aclose()


async def resume(engine: Engine, graph: Any, args: argparse.Namespace) -> RunResult | None:
    for tries in range(args.lease_tries + 1):
        say("go")
        try:
            return await engine.resume(
                args.run_id, graph, timeout=math.inf
            )  # to the end, whatever limit stopped it
        except RunLeasedError as error:
            if tries == args.lease_tries:
                say(json.dumps(leased(error)))
                return None
            wait = min(max(error.expires_at - time.time(), 0.0) + 0.02, 5.0)
            say(f"wait {wait:.3f}")
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


async def probe(engine: Engine, graph: Any, args: argparse.Namespace) -> int:
    for k in range(args.tries):
        if k:
            await asyncio.sleep(args.every)
        say("go")
        try:
            result = await engine.resume(args.run_id, graph, timeout=math.inf)
        except RunLeasedError as error:
            say(json.dumps(leased(error)))
            continue
        say(json.dumps(verdict(result)[1]))  # let in: this probe drove the run
        return EXIT_FAILED
    return EXIT_LEASED


async def serve(store: SQLAlchemyStore, graph: Any, args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    say("ready")
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.strip():
            return EXIT_COMPLETED
        read_at = time.time()
        command, run_id = line.split()
        assert command == "resume", line
        engine = Engine(store=store, lease_ttl=args.ttl)  # a new owner for every run
        try:
            result = await engine.resume(run_id, graph, timeout=math.inf)
        except RunLeasedError as error:
            reply = leased(error)
        else:
            reply = verdict(result)[1]
        say(json.dumps({"run_id": run_id, "read_at": read_at, "ended_at": time.time(), **reply}))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.crash._child")
    parser.add_argument("url")
    parser.add_argument("run_id")
    parser.add_argument("seed", type=int)
    parser.add_argument("mode", choices=("run", "resume", "probe", "serve", "stdin"))
    parser.add_argument("--log-dir", type=Path, default=None)
    parser.add_argument("--ttl", type=float, default=0.5, help="the engine's lease_ttl")
    parser.add_argument("--max-ms", type=float, default=5.0, help="longest stage duration")
    parser.add_argument("--lease-tries", type=int, default=20)
    parser.add_argument("--tries", type=int, default=3, help="probe: attempts")
    parser.add_argument("--every", type=float, default=0.3, help="probe: seconds between")
    return parser.parse_args(argv)


if __name__ == "__main__":
    code = asyncio.run(main(parse(sys.argv[1:])))
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is committed, fsync'd and closed by now; skipping the interpreter's
    # teardown (~100 ms) keeps the harness's kills where they matter: while the run is driven.
    os._exit(code)
