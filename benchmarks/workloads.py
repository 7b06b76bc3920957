"""Workload graphs and the two scheduler adapters (bare asyncio and stageflow).

Both schedulers receive the very same stage function objects: a no-op ``async def`` of one
context argument that returns a small dict (W4's stages sleep first). stageflow is imported
lazily so that a bare-only subprocess never pays for it (in time or in RSS).

W5 is W1's chain with per-stage resilience options (a ``bare.Resilience``): stageflow gets
them as ``timeout=``, ``retry=`` and ``circuit_breaker=`` on every ``with_stage``, the bare
scheduler does the same work by hand (``bare.run_bare_guarded``).

W7-W9 (issue 13) have sides of their own (``map_impls``, ``routed_impls``, ``loop_impls``):
W7 maps one item function over a dependency's list of 10 000 items (``with_map``, against
``bare.gathered``); W8 is W3 with every tenth stage a ROUTE choosing all its successors and a
``when=`` on every stage, against stageflow's own W3; W9 is a ``with_loop`` of 1 000
iterations of a one-stage body, against ``bare.looped``.
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
    gathered,
    looped,
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


# --------------------------------------------------------------------------- issue 13: dynamic

W7_ITEMS = 10_000  # items of W7's (and W7-durable's) map
W9_ITERATIONS = 1_000  # iterations of W9's loop
ROUTE_EVERY = 10  # W8: stage i is a ROUTE when i % ROUTE_EVERY == 0 (and it has successors)


def items_stage(n: int) -> StageFn:
    """A stage returning ``{"items": [0, ..., n-1]}`` (one list, made once)."""
    items = list(range(n))

    async def stage(ctx: Any) -> dict[str, list[int]]:
        return {"items": items}

    return stage


def map_spec(n: int = W7_ITEMS) -> Spec:
    """W7: ``split`` (n items) -> ``score``, whose function runs once per item.

    The second entry's function is the per-item function (a no-op returning ``{"v": 1}``);
    how it is mapped is each side's business.
    """
    return [("split", items_stage(n), ()), ("score", noop_stage(1), ("split",))]


def body_spec() -> Spec:
    """W9: the loop body's one stage (a no-op returning ``{"v": 0}``)."""
    return [("step", noop_stage(0), ())]


def always(ctx: Any) -> bool:
    """W8's ``when=``: true."""
    return True


class Countdown:
    """An ``until`` that is false until its ``n``-th call; ``reset()`` before every run."""

    __slots__ = ("left", "n")

    def __init__(self, n: int) -> None:
        self.n = n
        self.left = n

    def reset(self) -> None:
        self.left = self.n

    def __call__(self, output: Any) -> bool:
        self.left -= 1
        return self.left <= 0


def successors_of(spec: Sequence[StageSpec]) -> dict[str, tuple[str, ...]]:
    """Each stage's direct successors, in spec order."""
    found: dict[str, list[str]] = {name: [] for name, _, _ in spec}
    for name, _, deps in spec:
        for dep in deps:
            found[dep].append(name)
    return {name: tuple(names) for name, names in found.items()}


def route_stage(i: int, targets: tuple[str, ...]) -> StageFn:
    """A ROUTE stage choosing every one of ``targets``, with ``{"v": i}`` as its data."""
    from stageflow import StageOutput

    route = StageOutput.route

    async def stage(ctx: Any) -> Any:
        return route(*targets, v=i)

    return stage


def routed_build(name: str, spec: Sequence[StageSpec]) -> Any:
    """W8: ``spec`` (W3) with ``when=always`` on every stage and every ``ROUTE_EVERY``-th
    stage that has successors a ROUTE stage whose routes are all of them, all chosen.

    (A stage without successors cannot route: a ROUTE must choose at least one.)
    """
    from stageflow import Pipeline, StageKind

    successors = successors_of(spec)
    pipeline = Pipeline(name)
    for i, (stage_name, fn, deps) in enumerate(spec):
        targets = successors[stage_name]
        if i % ROUTE_EVERY == 0 and targets:
            pipeline = pipeline.with_stage(
                stage_name,
                route_stage(i, targets),
                StageKind.ROUTE,
                dependencies=deps,
                when=always,
                routes=targets,
            )
        else:
            pipeline = pipeline.with_stage(stage_name, fn, dependencies=deps, when=always)
    return pipeline.build()


def map_build(name: str, spec: Sequence[StageSpec]) -> Any:
    """W7: ``with_stage(split)`` then ``with_map(score, fn, over="split.items")``."""
    from stageflow import Pipeline

    (source, source_fn, _), (map_name, fn, deps) = spec
    pipeline = Pipeline(name).with_stage(source, source_fn)
    return pipeline.with_map(map_name, fn, over=f"{source}.items", dependencies=deps).build()


def loop_build(name: str, spec: Sequence[StageSpec], until: Countdown, iterations: int) -> Any:
    """W9: ``with_loop("loop", <spec's one stage>, until=..., max_iterations=iterations)``."""
    from stageflow import Pipeline

    ((stage_name, fn, _),) = spec
    body = Pipeline(f"{name}-body").with_stage(stage_name, fn)
    return Pipeline(name).with_loop("loop", body, until=until, max_iterations=iterations).build()


def _completed(result: Any, stages: int) -> None:
    """A stageflow run completed with ``stages`` stages (nested ones included), every one
    of them completed (no condition false, no route not taken)."""
    if result.status != "completed":
        raise RuntimeError(f"stageflow run ended with status {result.status!r}")
    done = len(result.with_status("completed"))
    if len(result) != stages or done != stages:
        raise RuntimeError(f"{done} of {len(result)} stages completed, not all {stages}")


def map_impls(with_stageflow: bool) -> list[Impl]:
    """W7: ``bare.gathered`` in a bare node against ``with_map``; per item."""

    def bare_prepare(name: str, spec: Sequence[StageSpec], options: Resilience | None) -> Any:
        (source, source_fn, _), (map_name, fn, deps) = spec
        return BareGraph([(source, source_fn, ()), (map_name, gathered(fn, 0, "items"), deps)])

    def bare_verify(result: list[Any], n: int) -> None:
        if len(result) != 2 or len(result[1]["results"]) != n:
            raise RuntimeError("the bare map did not run every item")

    def sf_prepare(name: str, spec: Sequence[StageSpec], options: Resilience | None) -> Any:
        from stageflow import Engine

        return Engine(max_parallel=None), map_build(name, spec)

    def sf_verify(result: Any, n: int) -> None:
        _completed(result, 2)  # split and score; score's items are its own
        items = result["score"].items
        done = sum(1 for item in items if item.status == "completed")
        if len(result["score"].data["results"]) != n or done != n:
            raise RuntimeError(f"{done} of {len(items)} items completed, not all {n}")

    impls = [Impl("bare", bare_prepare, _bare_runner, bare_verify)]
    if with_stageflow:
        impls.append(Impl("stageflow", sf_prepare, _stageflow_runner, sf_verify))
    return impls


def routed_impls(with_stageflow: bool) -> list[Impl]:
    """W8: stageflow's own W3 (the "bare" side) against W3 with routes and conditions."""
    from stageflow import Engine

    def plain_prepare(name: str, spec: Sequence[StageSpec], options: Resilience | None) -> Any:
        return Engine(max_parallel=None), stageflow_build(name, spec)

    def routed_prepare(name: str, spec: Sequence[StageSpec], options: Resilience | None) -> Any:
        return Engine(max_parallel=None), routed_build(name, spec)

    return [
        Impl("bare", plain_prepare, _stageflow_runner, _completed),
        Impl("stageflow", routed_prepare, _stageflow_runner, _completed),
    ]


def loop_impls(iterations: int) -> Callable[[bool], list[Impl]]:
    """W9: ``bare.looped`` as the one node of a bare graph against ``with_loop``; per
    iteration. Each side has its own ``Countdown``, reset before every run (untimed)."""

    def bare_prepare(name: str, spec: Sequence[StageSpec], options: Resilience | None) -> Any:
        ((_, fn, _),) = spec
        until = Countdown(iterations)
        return BareGraph([("loop", looped(fn, until, iterations), ())]), until

    def bare_runner(prepared: tuple[BareGraph, Countdown]) -> Runner:
        graph, until = prepared
        until.reset()
        return lambda: run_bare(graph)

    def bare_verify(result: list[Any], n: int) -> None:
        if len(result) != 1 or result[0]["iterations"] != n:
            raise RuntimeError(f"the bare loop did not run {n} iterations")

    def sf_prepare(name: str, spec: Sequence[StageSpec], options: Resilience | None) -> Any:
        from stageflow import Engine

        until = Countdown(iterations)
        return Engine(max_parallel=None), loop_build(name, spec, until, iterations), until

    def sf_runner(prepared: tuple[Any, Any, Countdown]) -> Runner:
        engine, graph, until = prepared
        until.reset()
        return lambda: engine.run(graph)

    def sf_verify(result: Any, n: int) -> None:
        _completed(result, 1 + n)  # the loop and its body's stage once per iteration
        if f"loop[{n}].step" not in result:
            raise RuntimeError(f"the loop did not run {n} iterations")

    def sides(with_stageflow: bool) -> list[Impl]:
        impls = [Impl("bare", bare_prepare, bare_runner, bare_verify)]
        if with_stageflow:
            impls.append(Impl("stageflow", sf_prepare, sf_runner, sf_verify))
        return impls

    return sides
