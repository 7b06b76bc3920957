"""A durable driver whose stages run on an existing Ray cluster: the crash test starts it,
SIGKILLs it mid-run, and resumes its run.

``python -m tests.ray._crash_child ADDRESS URL RUN_ID CALLS [--ttl S] [--sleep S]`` from the
repo root: connects to the Ray cluster at ADDRESS (its GCS address), starts run RUN_ID of
:func:`chain` in the store at URL with ``lease_ttl`` S, each stage appending its call to
CALLS. On stdout: ``go`` right before the run starts, then one JSON line at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from stageflow import Engine, Pipeline
from stageflow.adapters.ray import RayRunner
from stageflow.adapters.sqlalchemy import SQLAlchemyStore

from . import stages

ROOT = Path(__file__).resolve().parents[2]
STAGES = 6


def chain() -> Any:
    """``s0 -> s1 -> ... -> s5``, every stage :func:`stages.recorded`, on Ray."""
    pipeline = Pipeline("ray-crash")
    for i in range(STAGES):
        deps = () if i == 0 else (f"s{i - 1}",)
        pipeline = pipeline.with_stage(f"s{i}", stages.recorded, dependencies=deps, runner="ray")
    return pipeline.build()


def runner(address: str | None) -> RayRunner:
    """A RayRunner on the cluster at ``address``, its workers importing this repository."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return RayRunner(address, init={"runtime_env": {"env_vars": {"PYTHONPATH": path}}})


async def main(args: argparse.Namespace) -> int:
    store = SQLAlchemyStore(args.url)
    try:
        engine = Engine(store=store, runners={"ray": runner(args.address)}, lease_ttl=args.ttl)
        print("go", flush=True)
        result = await engine.run(
            chain(), run_id=args.run_id, data={"calls": args.calls, "sleep": args.sleep}
        )
        print(json.dumps({"status": result.status.value, "pid": os.getpid()}), flush=True)
        return 0
    finally:
        await store.aclose()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.ray._crash_child")
    parser.add_argument("address")
    parser.add_argument("url")
    parser.add_argument("run_id")
    parser.add_argument("calls")
    parser.add_argument("--ttl", type=float, default=1.0, help="the engine's lease_ttl")
    parser.add_argument("--sleep", type=float, default=0.3, help="each stage's seconds")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
