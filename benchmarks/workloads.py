"""Workload graphs and the two scheduler adapters (bare asyncio and stageflow).

Both schedulers receive the very same stage function objects: a no-op ``async def`` of one
context argument that returns a small dict (W4's stages sleep first). stageflow is imported
lazily so that a bare-only subprocess never pays for it (in time or in RSS).

W5 is W1's chain with per-stage resilience options (a ``bare.Resilience``): stageflow gets
them as ``timeout=``, ``retry=`` and ``circuit_breaker=`` on every ``with_stage``, the bare
scheduler does the same work by hand (``bare.run_bare_guarded``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bare import (
    BareGraph,
    GuardedGraph,
    Resilience,
    StageFn,
    StageSpec,
    run_bare,
    run_bare_guarded,
)

Spec = list[StageSpec]


# --------------------------------------------------------------------------- stage functions


def noop_stage(i: int) -> StageFn:
    """A no-op stage returning ``{"v": i}``."""

    async def stage(ctx: Any) -> dict[str, int]:
        return {"v": i}

    return stage


def sleep_stage(i: int, delay: float) -> StageFn:
    """A stage that sleeps ``delay`` seconds, then returns ``{"v": i}``."""

    async def stage(ctx: Any) -> dict[str, int]:
        await asyncio.sleep(delay)
        return {"v": i}

    return stage


# --------------------------------------------------------------------------- graph shapes


def chain(n: int) -> Spec:
    """W1: ``s0 -> s1 -> ... -> s{n-1}``."""
    return [(f"s{i}", noop_stage(i), (f"s{i - 1}",) if i else ()) for i in range(n)]


def fan(n: int) -> Spec:
    """W2: ``root -> p0..p{n-1} -> sink`` (n + 2 stages)."""
    spec: Spec = [("root", noop_stage(-1), ())]
    spec += [(f"p{i}", noop_stage(i), ("root",)) for i in range(n)]
    spec.append(("sink", noop_stage(n), tuple(f"p{i}" for i in range(n))))
    return spec


def layered(layers: int = 20, width: int = 50, fan_in: int = 3, seed: int = 42) -> Spec:
    """W3: ``layers`` x ``width`` stages; each stage of layer k>0 depends on ``fan_in``
    distinct random stages of layer k-1 (``random.Random(seed)``)."""
    rng = random.Random(seed)
    spec: Spec = []
    for k in range(layers):
        for j in range(width):
            deps = tuple(f"l{k - 1}_{d}" for d in rng.sample(range(width), fan_in)) if k else ()
            spec.append((f"l{k}_{j}", noop_stage(k * width + j), deps))
    return spec


def sleepers(n: int = 100, delay: float = 0.01) -> Spec:
    """W4: ``n`` independent stages, each sleeping ``delay`` seconds."""
    return [(f"z{i}", sleep_stage(i, delay), ()) for i in range(n)]


SCALABLE: dict[str, Callable[[int], Spec]] = {"W1": chain, "W2": fan}


# --------------------------------------------------------------------------- adapters


Runner = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Impl:
    """How one scheduler builds a graph, gets ready to run it, runs it and checks the result.

    ``prepare`` (graph and engine construction, given the workload's name, its stages and
    its per-stage resilience options or None) and ``runner`` (per-repetition setup) are
    never timed for W1-W5; only awaiting the returned ``Runner()`` is. ``close``, when
    given, releases what the side kept for the workload once it is measured (W5-otel's
    telemetry providers), so that no later measurement runs with it on the heap.
    """

    name: str
    prepare: Callable[[str, Sequence[StageSpec], Resilience | None], Any]
    runner: Callable[[Any], Runner]
    verify: Callable[[Any, int], None]
    close: Callable[[], None] | None = None


def _bare_prepare(
    name: str, spec: Sequence[StageSpec], options: Resilience | None = None
) -> BareGraph:
    return BareGraph(spec) if options is None else GuardedGraph(spec, options)


def _bare_runner(graph: BareGraph) -> Runner:
    if isinstance(graph, GuardedGraph):
        return lambda: run_bare_guarded(graph)
    return lambda: run_bare(graph)


def _bare_verify(result: list[Any], n: int) -> None:
    if len(result) != n or any(r is None for r in result):
        raise RuntimeError("bare scheduler did not run every stage")


def stageflow_build(name: str, spec: Sequence[StageSpec], options: Resilience | None = None) -> Any:
    """``len(spec)`` ``Pipeline.with_stage`` calls, then ``build()``.

    With ``options``, every stage gets ``timeout=``, ``retry=RetryPolicy(...)`` and its own
    ``circuit_breaker=CircuitBreakerPolicy(key=<stage name>, ...)``: one breaker per stage,
    one RetryPolicy object shared by all of them.
    """
    from stageflow import Pipeline

    pipeline = Pipeline(name)
    if options is None:
        for stage_name, fn, deps in spec:
            pipeline = pipeline.with_stage(stage_name, fn, dependencies=deps)
        return pipeline.build()

    from stageflow import CircuitBreakerPolicy, RetryPolicy

    retry = RetryPolicy(attempts=options.attempts, backoff="exponential", base=options.base)
    for stage_name, fn, deps in spec:
        pipeline = pipeline.with_stage(
            stage_name,
            fn,
            dependencies=deps,
            timeout=options.timeout,
            retry=retry,
            circuit_breaker=CircuitBreakerPolicy(
                failure_threshold=options.failure_threshold, key=stage_name
            ),
        )
    return pipeline.build()


def _stageflow_prepare(
    name: str, spec: Sequence[StageSpec], options: Resilience | None = None
) -> tuple[Any, Any]:
    """The built graph and one default Engine, shared by all runs like in an application."""
    from stageflow import Engine

    return Engine(max_parallel=None), stageflow_build(name, spec, options)


def _stageflow_runner(prepared: tuple[Any, Any]) -> Runner:
    engine, graph = prepared
    return lambda: engine.run(graph)


def _stageflow_verify(result: Any, n: int) -> None:
    if result.status != "completed":
        raise RuntimeError(f"stageflow run ended with status {result.status!r}")


BARE = Impl("bare", _bare_prepare, _bare_runner, _bare_verify)
STAGEFLOW = Impl("stageflow", _stageflow_prepare, _stageflow_runner, _stageflow_verify)
IMPLS: dict[str, Impl] = {impl.name: impl for impl in (BARE, STAGEFLOW)}
