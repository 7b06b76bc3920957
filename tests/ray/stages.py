"""Stage functions the Ray tests run in Ray workers (a module the workers import)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any


class Pinned(Exception):
    """An exception with a field that pickles (its __reduce__ rebuilds it)."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> Any:
        return (_pinned, (str(self), self.code))


def _pinned(message: str, code: int) -> Pinned:
    return Pinned(message, code=code)


class Unpicklable(Exception):
    """An exception whose keyword-only field pickle cannot rebuild."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


async def where(ctx: Any) -> dict[str, Any]:
    """Where the call ran, and the numbers it was given."""
    return {"pid": os.getpid(), "n": int(ctx.data.get("n", 3))}


def square(ctx: Any) -> dict[str, Any]:
    """A sync stage (run in the worker's thread) reading its dependency's output."""
    n = ctx.inputs.get_from("where", "n", type=int)
    return {"pid": os.getpid(), "square": n * n}


def spend(ctx: Any) -> dict[str, Any]:
    ctx.usage.report(model="m", input_tokens=300, output_tokens=100)
    return {"spent": 400}


def pinned(ctx: Any) -> None:
    raise Pinned(f"attempt {ctx.attempt} failed", code=7)


def unpicklable(ctx: Any) -> None:
    raise Unpicklable("bad", code=1)


def dies_first(ctx: Any) -> dict[str, Any]:
    """Kills its own worker process on the first attempt; the second completes."""
    if ctx.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"attempt": ctx.attempt, "pid": os.getpid()}


def blocks(ctx: Any) -> dict[str, Any]:
    """Writes its pid to data["pidfile"], then waits for data["release"] to exist."""
    Path(ctx.data["pidfile"]).write_text(str(os.getpid()))
    release = Path(ctx.data["release"])
    while not release.exists():
        time.sleep(0.02)
    return {"released": True}


def assigned(ctx: Any) -> dict[str, Any]:
    import ray

    return {"resources": ray.get_runtime_context().get_assigned_resources()}


async def doubled(ctx: Any) -> dict[str, Any]:
    return {"v": ctx.item * 2, "pid": os.getpid()}


async def items(ctx: Any) -> dict[str, Any]:
    return {"items": [1, 2, 3, 4]}


async def step(ctx: Any) -> dict[str, Any]:
    """A loop body's stage: its iteration and the previous iteration's output."""
    previous = ctx.loop.previous
    state = await ctx.state.load(0)
    await ctx.state.save(state + 1)
    return {"n": ctx.loop.iteration, "was": None if previous is None else previous["n"],
            "key": ctx.idempotency_key}  # fmt: skip
