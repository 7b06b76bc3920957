"""The catalog the worker tests' processes run: ``--pipelines tests.workers.flows:catalog``.

Imported both by the test (to submit runs of these graphs) and by each ``stageflow worker``
process (started from the repo root with it on ``PYTHONPATH``): the graphs must be the same
in both, or a worker would refuse a run whose fingerprint is another graph's.

Every stage call, right before it returns, appends one JSON line to the file named by
``$STAGEFLOW_TEST_CALLS`` (``{"run_id", "stage", "pid", "start", "end"}``, epoch seconds)
with a single ``write`` on an ``O_APPEND`` descriptor, so that lines of concurrent calls in
several processes never interleave. A call killed before that leaves no line; one killed
after it, before the engine recorded its outcome, legitimately runs again on take-over.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stageflow import Catalog, Pipeline, StageContext

__all__ = ["CALLS_ENV", "CHAIN", "SMALL", "STAGES", "Call", "catalog", "read_calls"]

CALLS_ENV = "STAGEFLOW_TEST_CALLS"
STAGES = ("a", "b", "c")  # a -> b -> c
CHAIN = "chain"  # the pipeline of the unlimited queue
SMALL = "chain_small"  # the same shape, for the queue with a global limit
SECONDS = 0.03  # each call's sleep, unless the run's data says {"sleep": seconds}


@dataclass(frozen=True)
class Call:
    """One completed call of a stage, as its line in the calls file says."""

    run_id: str
    stage: str
    pid: int
    start: float
    end: float


def _append(line: str) -> None:
    """One ``write`` of a whole line in append mode: atomic against the other writers."""
    path = os.environ.get(CALLS_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def _stage(ctx: StageContext) -> dict[str, Any]:
    start = time.time()
    await asyncio.sleep(float(ctx.data.get("sleep", SECONDS)))
    end = time.time()
    record = {"run_id": ctx.run_id, "stage": ctx.stage, "pid": os.getpid(), "start": start}
    _append(json.dumps({**record, "end": end}) + "\n")  # after the work: a killed call logs none
    return {"stage": ctx.stage, "pid": os.getpid()}


def chain(name: str) -> Pipeline:
    """Three stages a -> b -> c, each sleeping then logging its call."""
    pipeline = Pipeline(name)
    previous: tuple[str, ...] = ()
    for stage in STAGES:
        pipeline = pipeline.with_stage(stage, _stage, dependencies=previous)
        previous = (stage,)
    return pipeline


catalog = Catalog({CHAIN: chain(CHAIN), SMALL: chain(SMALL)})


def read_calls(path: Path) -> list[Call]:
    """Every call logged in ``path`` (none if it does not exist yet).

    Strict on purpose: a line that does not parse means two writers' lines interleaved,
    which the single ``O_APPEND`` write rules out; better a loud error than a lost call.
    """
    if not path.exists():
        return []
    calls = []
    for line in path.read_text().splitlines():
        raw = json.loads(line)
        calls.append(Call(raw["run_id"], raw["stage"], raw["pid"], raw["start"], raw["end"]))
    return calls
