"""RAY: a Ray-dispatched trivial stage against a raw ``ray.remote`` round trip; and
RAY-HANDOFF: a chain of remote stages handing their outputs on as Ray objects against
the same chain fetching each output to the driver (which sends it up again).

Both sides run on one local Ray cluster (2 CPUs) started here: "bare" awaits a trivial
remote function ``n`` times in a row, each call taking the previous result (a chain: one
round trip at a time); "stageflow" runs a chain of ``n`` stages, each ``runner="ray"``
(``trivial_stage``, a plain function as ``trivial`` is, as the task), through an
``Engine`` with its default interceptors; ``async_us`` is the same chain of an async
stage (run on the worker's event loop). Both sides are warmed up first (the workers
started), then alternate; the figures are the medians of ``reps`` passes, per call / per
stage, the ratio the median of each pass's. ``engine_part_us`` is what stageflow's own
code costs per stage (measured in-process, Ray's calls replaced by completed futures).

RAY-HANDOFF: ``n`` stages, each passing on a ``size``-byte blob it read from its
dependency (so every output is in Ray's object store); "handed" is ``RayRunner`` as it is,
"fetched" a runner that fetches each output to the driver when its call returns and
gives the engine the data, as a runner without the hand-off would: the next stage's
call carries it up from the driver again.
"""

from __future__ import annotations

import asyncio
import gc
import math
import statistics
import time
from typing import Any


def trivial(x: int) -> int:
    return x + 1


def trivial_stage(ctx: Any) -> dict[str, Any]:
    """The stage twin of ``trivial``: a plain function, called in the worker's thread."""
    return {}


async def async_stage(ctx: Any) -> dict[str, Any]:
    """The same as an async function: run on the worker's event loop."""
    return {}


def blob_stage(ctx: Any) -> dict[str, Any]:
    """A blob of data["size"] bytes: its dependency's, passed on, or a new one."""
    for dependency in ctx.inputs:
        return {"blob": ctx.inputs.get_from(dependency, "blob")}
    return {"blob": b"x" * ctx.data["size"]}


def _fetching_runner() -> Any:
    from stageflow import StageOutput
    from stageflow.adapters.ray import RayRunner

    class FetchingRayRunner(RayRunner):
        """RayRunner, each output fetched to the driver when the call returns."""

        def bind(self, spec: Any, call: Any) -> Any:
            remote_call = super().bind(spec, call)

            async def fetched(ctx: Any) -> Any:
                out = await remote_call(ctx)
                return StageOutput(out.status, dict(await out.data.fetch()), out.reason)

            return fetched

    return FetchingRayRunner()


def measure_handoff(n: int = 20, size: int = 4_000_000, reps: int = 3) -> dict[str, Any]:
    import ray

    from stageflow import Engine, Pipeline
    from stageflow.adapters.ray import RayRunner

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        pipeline = Pipeline("ray-handoff")
        for i in range(n):
            deps = (f"s{i - 1}",) if i else ()
            pipeline = pipeline.with_stage(f"s{i}", blob_stage, dependencies=deps, runner="ray")
        graph = pipeline.build()
        engines = {"handed": Engine(runners={"ray": RayRunner()}),
                   "fetched": Engine(runners={"ray": _fetching_runner()})}  # fmt: skip

        async def timed(engine: Any) -> float:
            start = time.perf_counter()
            result = await engine.run(graph, {"size": size})
            elapsed = time.perf_counter() - start
            assert result.ok, result
            assert len(result[f"s{n - 1}"].data["blob"]) == size
            return elapsed / n

        for engine in engines.values():  # warm-up
            asyncio.run(timed(engine))
        best: dict[str, float] = {}
        for _ in range(reps):
            for name, engine in engines.items():
                gc.collect()
                took = asyncio.run(timed(engine))
                best[name] = min(best.get(name, took), took)
        return {"handed_ms": best["handed"] * 1e3, "fetched_ms": best["fetched"] * 1e3,
                "n": n, "size_bytes": size, "reps": reps}  # fmt: skip
    finally:
        ray.shutdown()


def measure(n: int = 50, reps: int = 5) -> dict[str, Any]:
    import ray

    from stageflow import Engine
    from stageflow.adapters.ray import RayRunner

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(max_retries=0)(trivial)
        graph, async_graph = _chain(trivial_stage, n), _chain(async_stage, n)
        engine = Engine(runners={"ray": RayRunner()})

        async def bare() -> float:
            x = 0
            start = time.perf_counter()
            for _ in range(n):
                x = await remote.remote(x)
            return (time.perf_counter() - start) / n

        async def staged(graph: Any) -> float:
            start = time.perf_counter()
            result = await engine.run(graph)
            elapsed = time.perf_counter() - start
            assert result.ok, result
            return elapsed / n

        asyncio.run(bare())  # warm-up: workers started, functions exported
        asyncio.run(staged(graph))
        asyncio.run(staged(async_graph))
        bares, stageds, asyncs = [], [], []
        for _ in range(reps):
            gc.collect()
            bares.append(asyncio.run(bare()))
            gc.collect()
            stageds.append(asyncio.run(staged(graph)))
            gc.collect()
            asyncs.append(asyncio.run(staged(async_graph)))
    finally:
        ray.shutdown()
    # A round trip varies by a third from pass to pass on a shared 2-core machine: the
    # ratio is the median of each pass's (the two sides run back to back), the figures
    # the medians; the best passes are in the details.
    paired = statistics.median(s / b for s, b in zip(stageds, bares, strict=True))
    return {"bare_us": statistics.median(bares) * 1e6,
            "stageflow_us": statistics.median(stageds) * 1e6, "ratio": paired,
            "best_bare_us": min(bares) * 1e6, "best_stageflow_us": min(stageds) * 1e6,
            "async_us": statistics.median(asyncs) * 1e6,
            "engine_part_us": engine_part(), "n": n, "reps": reps}  # fmt: skip


def _chain(stage: Any, n: int) -> Any:
    from stageflow import Pipeline

    pipeline = Pipeline("ray-chain")
    for i in range(n):
        deps = (f"s{i - 1}",) if i else ()
        pipeline = pipeline.with_stage(f"s{i}", stage, dependencies=deps, runner="ray")
    return pipeline.build()


def engine_part(n: int = 200, reps: int = 20) -> float:
    """µs per stage that stageflow's own code costs, both sides (the engine's chain and
    scheduler, detach, the wire, the call in the worker, attach): a chain of ``n``
    stages through RayRunner with Ray's task calls replaced by completed futures, run in
    this process (a plain-function stage: no worker event loop)."""
    from stageflow import Engine
    from stageflow.adapters.ray import _runner

    class Done:  # a remote function whose call has already returned
        def __init__(self, execute: Any) -> None:
            self.execute = execute

        def options(self, **options: Any) -> Done:
            return self

        def remote(self, *args: Any) -> tuple[Any, Any]:
            told, data = self.execute(*args)
            loop = asyncio.get_running_loop()
            first, second = loop.create_future(), loop.create_future()
            first.set_result(told)
            second.set_result(data)
            return first, second

    class NoRay:
        class exceptions:
            class RayTaskError(Exception):
                pass

        def is_initialized(self) -> bool:
            return True

        def remote(self, **options: Any) -> Any:
            return Done

    graph = _chain(trivial_stage, n)
    real, _runner._ray = _runner._ray, NoRay  # type: ignore[assignment]
    try:
        engine = Engine(runners={"ray": _runner.RayRunner()})
        asyncio.run(engine.run(graph))
        best = math.inf
        for _ in range(reps):
            start = time.perf_counter()
            result = asyncio.run(engine.run(graph))
            best = min(best, time.perf_counter() - start)
            assert result.ok, result
    finally:
        _runner._ray = real
    return best / n * 1e6


if __name__ == "__main__":
    print(measure())
    print(measure_handoff())
