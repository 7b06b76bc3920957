"""RAY: a Ray-dispatched trivial stage against a raw ``ray.remote`` round trip; and
RAY-HANDOFF: a chain of remote stages handing their outputs on as Ray objects against
the same chain fetching each output to the driver (which sends it up again).

Both sides run on one local Ray cluster (2 CPUs) started here: "bare" awaits a trivial
remote function ``n`` times in a row, each call taking the previous result (a chain: one
round trip at a time); "stageflow" runs a chain of ``n`` stages, each ``runner="ray"``
(a trivial stage function as the task), through an ``Engine`` with its default
interceptors. Both sides are warmed up first (the workers started), then alternate; the
best of ``reps`` passes is kept, per call / per stage.

RAY-HANDOFF: ``n`` stages, each passing on a ``size``-byte blob it read from its
dependency (so every output is in Ray's object store); "handed" is ``RayRunner`` as it is,
"fetched" a runner that fetches each output to the driver when its call returns and
gives the engine the data, as a runner without the hand-off would: the next stage's
call carries it up from the driver again.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any


def trivial(x: int) -> int:
    return x + 1


async def trivial_stage(ctx: Any) -> dict[str, Any]:
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

    from stageflow import Engine, Pipeline
    from stageflow.adapters.ray import RayRunner

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(max_retries=0)(trivial)
        pipeline = Pipeline("ray-chain")
        for i in range(n):
            deps = (f"s{i - 1}",) if i else ()
            pipeline = pipeline.with_stage(f"s{i}", trivial_stage, dependencies=deps, runner="ray")
        graph = pipeline.build()
        engine = Engine(runners={"ray": RayRunner()})

        async def bare() -> float:
            x = 0
            start = time.perf_counter()
            for _ in range(n):
                x = await remote.remote(x)
            return (time.perf_counter() - start) / n

        async def staged() -> float:
            start = time.perf_counter()
            result = await engine.run(graph)
            elapsed = time.perf_counter() - start
            assert result.ok, result
            return elapsed / n

        asyncio.run(bare())  # warm-up: workers started, functions exported
        asyncio.run(staged())
        bares, stageds = [], []
        for _ in range(reps):
            gc.collect()
            bares.append(asyncio.run(bare()))
            gc.collect()
            stageds.append(asyncio.run(staged()))
        return {"bare_us": min(bares) * 1e6, "stageflow_us": min(stageds) * 1e6, "n": n,
                "reps": reps}  # fmt: skip
    finally:
        ray.shutdown()


if __name__ == "__main__":
    print(measure())
    print(measure_handoff())
