"""RAY: a Ray-dispatched trivial stage against a raw ``ray.remote`` round trip.

Both sides run on one local Ray cluster (2 CPUs) started here: "bare" awaits a trivial
remote function ``n`` times in a row, each call taking the previous result (a chain: one
round trip at a time); "stageflow" runs a chain of ``n`` stages, each ``runner="ray"``
(a trivial stage function as the task), through an ``Engine`` with its default
interceptors. Both sides are warmed up first (the workers started), then alternate; the
best of ``reps`` passes is kept, per call / per stage.
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
