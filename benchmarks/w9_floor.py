#!/usr/bin/env python3
"""W9's floor: what keeping a record of each loop iteration costs a bare ``for`` loop.

W9's target (issue 13) is a ``with_loop`` of 1 000 iterations at most 1.5x ``bare.looped``, a
plain ``for`` loop awaiting the body's function. Every loop iteration of stageflow must keep
more than that loop does: a context for the iteration's stage (``ctx.loop``), its times, and
a record of its outcome (``refine[2].critique`` in the result, a resume's unit of work). This
script times the bare loop against the same loop doing only that minimum by hand, with no
scheduler, no events and no interceptor: the floor under any loop implementation that keeps
per-iteration results. Usage::

    python benchmarks/w9_floor.py            # best of 200 runs, three rounds
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

N = 1_000  # iterations, as W9


class Record:
    """The least an iteration's outcome holds: name, start, end, status, output."""

    __slots__ = ("end", "name", "output", "start", "status")

    def __init__(self, name: str, start: float, end: float, status: int, output: Any) -> None:
        self.name, self.start, self.end, self.status, self.output = name, start, end, status, output


class Context:
    """The least an iteration's stage sees: the run, its iteration, the previous output."""

    __slots__ = ("iteration", "previous", "run")

    def __init__(self, run: Any, iteration: int, previous: Any) -> None:
        self.run, self.iteration, self.previous = run, iteration, previous


async def body(ctx: Any) -> dict[str, int]:
    return {"v": 0}


def until(out: Any) -> bool:
    return False


async def bare() -> None:
    """``bare.looped``: await the body, ask ``until``."""
    for _ in range(1, N + 1):
        out = await body(None)
        if until(out):
            break


async def recorded() -> list[Record]:
    """The same, keeping per iteration a context, two clock reads, an output check and a
    named record."""
    out: Any = None
    records: list[Record] = []
    now = time.monotonic
    for i in range(1, N + 1):
        ctx = Context(None, i, out)
        start = now()
        out = await body(ctx)
        if type(out) is not dict:
            raise TypeError(out)
        records.append(Record(f"loop[{i}].step", start, now(), 1, out))
        if until(out):
            break
    return records


def best(loop: asyncio.AbstractEventLoop, fn: Any, reps: int = 200) -> float:
    fastest = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        loop.run_until_complete(fn())
        fastest = min(fastest, time.perf_counter() - start)
    return fastest / N * 1e6


def main() -> None:
    loop = asyncio.new_event_loop()
    try:
        for _ in range(3):
            floor, minimum = best(loop, bare), best(loop, recorded)
            print(
                f"bare loop {floor:.3f} µs/iteration; with a record per iteration "
                f"{minimum:.3f} µs/iteration = {minimum / floor:.2f}x"
            )
    finally:
        loop.close()


if __name__ == "__main__":
    main()
