#!/usr/bin/env python3
"""Where does stageflow's time per stage go? cProfile over stageflow runs of one workload.

Usage::

    python benchmarks/profile_engine.py W1            # chain of 1000, 50 runs
    python benchmarks/profile_engine.py W2 --stages 10000 --runs 5 --top 25
    python benchmarks/profile_engine.py BUILD         # 1000 with_stage + build(), new functions
    python benchmarks/profile_engine.py W2 --impl bare   # the floor, for comparison

For W1-W3 the graph and the Engine are made first and one untimed run warms up, exactly as
in ``run.py``; only the runs are profiled. Times are shown in µs per stage (the total over
all profiled runs divided by runs x stages). cProfile inflates every function call by a
roughly constant amount, so read the ranking and the proportions, not the absolute figures
(``run.py`` has those).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bare import bare_build
from workloads import IMPLS, Impl, Spec, chain, fan, layered, stageflow_build

REPO_ROOT = Path(__file__).resolve().parent.parent

SHAPES: dict[str, Callable[[int], Spec]] = {
    "W1": chain,
    "W2": fan,
    "W3": lambda n: layered(width=max(n // 20, 3)),
    "BUILD": lambda n: layered(width=max(n // 20, 3)),
}


async def profile_runs(impl: Impl, spec: Spec, runs: int, profiler: cProfile.Profile) -> None:
    prepared = impl.prepare("profile", spec)
    impl.verify(await impl.runner(prepared)(), len(spec))  # warm-up
    for _ in range(runs):
        go = impl.runner(prepared)
        profiler.enable()
        result = await go()
        profiler.disable()
        impl.verify(result, len(spec))


def profile_builds(
    impl: Impl, make: Callable[[], Spec], runs: int, profiler: cProfile.Profile
) -> None:
    build = bare_build if impl.name == "bare" else lambda s: stageflow_build("profile", s)
    build(make())  # warm-up: imports stageflow outside the profile
    specs = [make() for _ in range(runs)]  # new stage functions for every build
    for spec in specs:
        profiler.enable()
        build(spec)
        profiler.disable()


def report(profiler: cProfile.Profile, per: int, top: int, sort: str) -> None:
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for _, _, tt, _, _ in entries.values())
    key = {"tottime": 2, "cumtime": 3}[sort]
    rows = sorted(entries.items(), key=lambda item: -item[1][key])[:top]
    print(f"total {total * 1e6 / per:.2f} µs/stage under cProfile (sum of own times)\n")
    print(f"{'own µs/st':>9}  {'own %':>5}  {'cum µs/st':>9}  {'calls/st':>8}  function")
    for (filename, line, func), (_, ncalls, tottime, cumtime, _) in rows:
        where = Path(filename).name if filename != "~" else ""
        label = f"{where}:{line}({func})" if where else func
        print(
            f"{tottime * 1e6 / per:9.3f}  {100 * tottime / total:5.1f}  "
            f"{cumtime * 1e6 / per:9.3f}  {ncalls / per:8.2f}  {label}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=sorted(SHAPES))
    parser.add_argument("--stages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--sort", choices=("tottime", "cumtime"), default="tottime")
    parser.add_argument("--impl", choices=sorted(IMPLS), default="stageflow")
    args = parser.parse_args(argv)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(1, str(REPO_ROOT))

    profiler = cProfile.Profile()
    make = SHAPES[args.workload]
    stages = len(make(args.stages))
    impl = IMPLS[args.impl]
    if args.workload == "BUILD":
        profile_builds(impl, lambda: make(args.stages), args.runs, profiler)
    else:
        asyncio.run(profile_runs(impl, make(args.stages), args.runs, profiler))
    print(f"{impl.name} {args.workload}: {stages} stages x {args.runs} profiled runs")
    report(profiler, stages * args.runs, args.top, args.sort)
    return 0


if __name__ == "__main__":
    sys.exit(main())
