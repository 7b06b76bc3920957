#!/usr/bin/env python3
"""Where does stageflow's time per stage go? cProfile over stageflow runs of one workload.

Usage::

    python benchmarks/profile_engine.py W1            # chain of 1000, 50 runs
    python benchmarks/profile_engine.py W5            # W1 + timeout/retry/breaker per stage
    python benchmarks/profile_engine.py W5 --compare W1   # per-function µs/stage, W5 - W1
    python benchmarks/profile_engine.py LAYERS        # real µs of each W5 wrapper, no profiler
    python benchmarks/profile_engine.py STORE         # real µs of each step of W6's write path
    python benchmarks/profile_engine.py W2 --stages 10000 --runs 5 --top 25
    python benchmarks/profile_engine.py BUILD         # 1000 with_stage + build(), new functions
    python benchmarks/profile_engine.py W2 --impl bare   # the floor, for comparison
    python benchmarks/profile_engine.py W6 --stages 200   # chain on a SQLite store
    python benchmarks/profile_engine.py W6 --compare W1 --stages 200   # the store's share
    python benchmarks/profile_engine.py W7 --stages 10000 --runs 10   # a map, µs per item
    python benchmarks/profile_engine.py W8 --compare W3   # what routes and conditions add
    python benchmarks/profile_engine.py W9 --runs 50      # a loop, µs per iteration
    python benchmarks/profile_engine.py W7-DURABLE --stages 10000 --runs 5   # a map on SQLite

For W1-W3 and W5 the graph and the Engine are made first and one untimed run warms up, exactly as
in ``run.py``; only the runs are profiled. Times are shown in µs per stage (the total over
all profiled runs divided by runs x stages). cProfile inflates every function call by a
roughly constant amount, so read the ranking and the proportions, not the absolute figures
(``run.py`` has those).

``--compare W1`` profiles the other workload too (same stage count and runs) and prints, per
function, the µs/stage of each and the difference: for W5 against W1 that is the cost of
each resilience layer (``retried``, ``guarded``, ``timed`` with ``asyncio.timeout``'s own
functions, and the engine's ``normalized`` layer), which only W5's stages go through.

W6 (W1's chain, every completion committed to a SQLite file through
``Engine(store=SQLAlchemyStore(...))``; with ``--impl bare``, stdlib sqlite3 by hand, see
``durable.py``) uses a fresh database file per profiled run, created and opened before the
profiler is enabled; ``--compare W1`` then shows what the store path adds per stage
(``checkpointed``, ``_codec``, ``record_stage``, ``sqlite3`` ``execute``, the ``normalized``
layer the checkpoint interceptor brings in). W6-WIDE is the same on W2's shape.

W7, W9 and W7-DURABLE (issue 13) divide by items (W7's map over ``--stages`` items) or
iterations (W9's loop of ``--stages`` iterations) instead of stages; each side is the one
``run.py`` measures (``--impl bare``: ``bare.gathered``, ``bare.looped``, the gather with
``durable.GroupCommit``). W8 is W3 with routes and conditions (its ``--impl bare`` is
stageflow's plain W3, as in ``run.py``); ``W8 --compare W3`` shows what they add.

``STORE`` needs no profiler either: it times, in real µs per call (best of ``--runs`` rounds
of 2 000 calls, each on a fresh SQLite file in WAL mode with ``synchronous=NORMAL``), each
step of a W6 completion on its own: encoding the output (``json.dumps``, ``_codec.dumps``),
the bare reference's INSERT + COMMIT, a plain autocommit INSERT, the store's own
``RECORD_STAGE`` statement on a connection set up as the store's (with named and with
positional parameters), and ``await store.record_stage(...)`` as the interceptor calls it.

``LAYERS`` needs no profiler: it awaits one W5 stage's call 20 000 times in a loop (in chunks
of 1 000, yielding to the loop between chunks so that cancelled timers get cleaned up as in a
run), wrapped in nothing, in each single layer, and in the whole stack stageflow builds, and
prints the real µs per call of each minus the bare call, best of ``--runs`` (max 15) rounds,
next to the same work written inline (as ``bare.run_bare_guarded`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bare import Breaker, CircuitOpen, Resilience, bare_build
from durable import Side, SQLiteBare, SQLiteMapBare, SQLiteMapStageflow, SQLiteStageflow
from workloads import (
    IMPLS,
    Impl,
    Spec,
    body_spec,
    chain,
    fan,
    layered,
    loop_impls,
    map_impls,
    map_spec,
    routed_impls,
    stageflow_build,
)

REPO_ROOT = Path(__file__).resolve().parent.parent

SHAPES: dict[str, Callable[[int], Spec]] = {
    "W1": chain,
    "W2": fan,
    "W3": lambda n: layered(width=max(n // 20, 3)),
    "W5": chain,
    "W6": chain,
    "W6-WIDE": fan,
    "BUILD": lambda n: layered(width=max(n // 20, 3)),
    "W7": map_spec,  # n items
    "W8": lambda n: layered(width=max(n // 20, 3)),
    "W9": lambda n: body_spec(),  # n iterations
    "W7-DURABLE": map_spec,
}
DURABLE = {"W6", "W6-WIDE", "W7-DURABLE"}
PER_UNIT = {"W7", "W9", "W7-DURABLE"}  # figures per item or iteration, not per stage
# Workloads whose sides are their own (run.py's), given --stages.
SIDES: dict[str, Callable[[int], Callable[[bool], Sequence[Impl]]]] = {
    "W7": lambda n: map_impls,
    "W8": lambda n: routed_impls,
    "W9": loop_impls,
}
OPTIONS: dict[str, Resilience] = {"W5": Resilience(timeout=30.0, attempts=3, failure_threshold=5)}


async def profile_runs(
    impl: Impl,
    spec: Spec,
    options: Resilience | None,
    runs: int,
    profiler: cProfile.Profile,
    n: int | None = None,
) -> None:
    n = len(spec) if n is None else n  # what verify() checks: stages, items or iterations
    prepared = impl.prepare("profile", spec, options)
    impl.verify(await impl.runner(prepared)(), n)  # warm-up
    for _ in range(runs):
        go = impl.runner(prepared)
        profiler.enable()
        result = await go()
        profiler.disable()
        impl.verify(result, n)


async def profile_durable(
    impl: Impl,
    spec: Spec,
    runs: int,
    profiler: cProfile.Profile,
    directory: Path,
    n: int | None = None,
) -> None:
    """W6 (W7-DURABLE with ``n`` items): each profiled run on a fresh SQLite file, opened
    (and closed) unprofiled."""
    side: Side
    if n is None:
        side = (SQLiteBare if impl.name == "bare" else SQLiteStageflow)(spec, directory)
        n = len(spec)
    else:
        side = (SQLiteMapBare if impl.name == "bare" else SQLiteMapStageflow)(spec, directory)
    await side.start()
    try:
        for run in range(runs + 1):  # run 0: warm-up
            go = await side.prepare(str(run))
            try:
                if run:
                    profiler.enable()
                result = await go()
                profiler.disable()
                await side.check(result, n)
            finally:
                await side.cleanup()
    finally:
        await side.close()


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


Key = tuple[str, int, str]
Entry = tuple[int, float, float]  # calls, own time, cumulative time (seconds)


def entries(profiler: cProfile.Profile) -> dict[Key, Entry]:
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    return {key: (ncalls, tt, ct) for key, (_, ncalls, tt, ct, _) in stats.items()}


def label(key: Key) -> str:
    filename, line, func = key
    where = Path(filename).name if filename != "~" else ""
    return f"{where}:{line}({func})" if where else func


def report(profiler: cProfile.Profile, per: int, top: int, sort: str) -> None:
    found = entries(profiler)
    total = sum(tt for _, tt, _ in found.values())
    index = {"tottime": 1, "cumtime": 2}[sort]
    rows = sorted(found.items(), key=lambda item: -item[1][index])[:top]
    print(f"total {total * 1e6 / per:.2f} µs/stage under cProfile (sum of own times)\n")
    print(f"{'own µs/st':>9}  {'own %':>5}  {'cum µs/st':>9}  {'calls/st':>8}  function")
    for key, (ncalls, tottime, cumtime) in rows:
        print(
            f"{tottime * 1e6 / per:9.3f}  {100 * tottime / total:5.1f}  "
            f"{cumtime * 1e6 / per:9.3f}  {ncalls / per:8.2f}  {label(key)}"
        )


def report_difference(
    base: cProfile.Profile, other: cProfile.Profile, names: tuple[str, str], per: int, top: int
) -> None:
    """Own µs/stage per function in ``other`` and ``base``, largest difference first."""
    a, b = entries(base), entries(other)
    total_a = sum(tt for _, tt, _ in a.values()) * 1e6 / per
    total_b = sum(tt for _, tt, _ in b.values()) * 1e6 / per
    print(
        f"\n{names[1]} - {names[0]}: {total_b:.2f} - {total_a:.2f} = "
        f"{total_b - total_a:+.2f} µs/stage under cProfile (sum of own times)\n"
    )
    keys = set(a) | set(b)

    def own(entries_: dict[Key, Entry], key: Key) -> float:
        return entries_.get(key, (0, 0.0, 0.0))[1] * 1e6 / per

    def calls(entries_: dict[Key, Entry], key: Key) -> float:
        return entries_.get(key, (0, 0.0, 0.0))[0] / per

    rows = sorted(keys, key=lambda k: -abs(own(b, k) - own(a, k)))[:top]
    head = f"{names[1] + ' µs':>9}  {names[0] + ' µs':>9}  {'diff µs':>8}  {'calls/st':>13}"
    print(f"{head}  function (own time per stage)")
    for key in rows:
        print(
            f"{own(b, key):9.3f}  {own(a, key):9.3f}  {own(b, key) - own(a, key):+8.3f}  "
            f"{calls(b, key):5.2f} vs {calls(a, key):4.2f}  {label(key)}"
        )


def profile(workload: str, impl: Impl, stages: int, runs: int) -> tuple[cProfile.Profile, int]:
    profiler = cProfile.Profile()
    make = SHAPES[workload]
    n = stages if workload in PER_UNIT else len(make(stages))
    units = n if workload in PER_UNIT else None
    if workload in SIDES:
        impl = {side.name: side for side in SIDES[workload](stages)(True)}[impl.name]
    if workload == "BUILD":
        profile_builds(impl, lambda: make(stages), runs, profiler)
    elif workload in DURABLE:
        with tempfile.TemporaryDirectory(
            prefix="stageflow-profile-w6-", ignore_cleanup_errors=True
        ) as tmp:
            asyncio.run(profile_durable(impl, make(stages), runs, profiler, Path(tmp), units))
    else:
        spec = make(stages)
        asyncio.run(profile_runs(impl, spec, OPTIONS.get(workload), runs, profiler, units))
    return profiler, n


# --------------------------------------------------------------------------- LAYERS


async def _per_call(call: Callable[[Any], Awaitable[Any]], ctx: Any, chunks: int) -> float:
    """Seconds per ``await call(ctx)``, over ``chunks`` x 1000 calls."""
    elapsed = 0.0
    for _ in range(chunks):
        start = time.perf_counter()
        for _ in range(1000):
            await call(ctx)
        elapsed += time.perf_counter() - start
        await asyncio.sleep(0)  # let the loop drop the cancelled timers, as a run would
    return elapsed / (chunks * 1000)


def _layer_calls(options: Resilience) -> dict[str, Callable[[Any], Awaitable[Any]]]:
    """The calls to time: a raw stage, each wrapper layer alone, and the composed stacks."""
    from stageflow import Engine
    from stageflow._scheduler import normalize_output
    from stageflow.interceptors import (
        CircuitBreakerInterceptor,
        RetryInterceptor,
        TimeoutInterceptor,
    )

    graph = stageflow_build("layers", chain(1), options)
    spec = graph.stages[0]
    raw = spec.call
    name = spec.name
    limit = options.timeout

    async def normalized(ctx: Any) -> Any:  # as Engine._compose writes it
        return normalize_output(name, await raw(ctx))

    timed = TimeoutInterceptor().wrap(spec, raw)
    guarded = CircuitBreakerInterceptor().wrap(spec, raw)
    retried = RetryInterceptor().wrap(spec, raw)
    full_normalized = RetryInterceptor().wrap(
        spec,
        CircuitBreakerInterceptor().wrap(spec, TimeoutInterceptor().wrap(spec, normalized)),
    )
    engine_stack = Engine().calls(graph)[0]

    breaker = Breaker(name, options.failure_threshold)

    async def inline_timeout(ctx: Any) -> Any:
        async with asyncio.timeout(limit):
            return await raw(ctx)

    async def inline_all(ctx: Any) -> Any:  # bare.run_bare_guarded's first attempt
        try:
            if not breaker.closed:
                raise CircuitOpen(breaker.key)
            try:
                async with asyncio.timeout(limit):
                    out = await raw(ctx)
            except Exception:
                breaker.failed()
                raise
            breaker.failures = 0
        except Exception:
            raise  # (the retry loop would go here)
        return out

    async def passthrough(ctx: Any) -> Any:  # the price of any coroutine layer
        return await raw(ctx)

    return {
        "raw stage": raw,
        "an empty async layer (async def f(ctx): return await g(ctx))": passthrough,
        "normalized (Engine._compose)": normalized,
        "timed (TimeoutInterceptor, asyncio.timeout)": timed,
        "guarded (CircuitBreakerInterceptor)": guarded,
        "retried (RetryInterceptor)": retried,
        "stack the engine builds now (Engine.calls)": engine_stack,
        "retried > guarded > timed > normalized": full_normalized,
        "bare: asyncio.timeout inline": inline_timeout,
        "bare: breaker + timeout + try, inline": inline_all,
    }


async def measure_layers(options: Resilience, rounds: int) -> dict[str, float]:
    calls = _layer_calls(options)
    ctx = SimpleNamespace(attempt=1)  # wrappers read the context only when a call fails
    for call in calls.values():
        await _per_call(call, ctx, 2)  # warm-up
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(rounds):
        for label_, call in calls.items():
            gc.collect()
            best[label_] = min(best[label_], await _per_call(call, ctx, 20))
    return best


def report_layers(best: dict[str, float]) -> None:
    raw = best["raw stage"]
    print(f"µs per call, best of rounds; 'added' = minus the raw stage ({raw * 1e6:.3f} µs)\n")
    print(f"{'µs/call':>8}  {'added':>7}  layer")
    for label_, seconds in best.items():
        added = "" if label_ == "raw stage" else f"{(seconds - raw) * 1e6:+7.3f}"
        print(f"{seconds * 1e6:8.3f}  {added:>7}  {label_}")


# --------------------------------------------------------------------------- STORE


STORE_CALLS = 2000


async def measure_store(rounds: int) -> dict[str, float]:
    """Real seconds per call of each step of W6's write path (see the module docstring)."""
    import json
    import re
    import sqlite3

    from durable import BARE_TABLE

    from stageflow import _codec
    from stageflow._result import RunStatus
    from stageflow._stage import StageStatus
    from stageflow.adapters.sqlalchemy import SQLAlchemyStore
    from stageflow.adapters.sqlalchemy import _schema as sql
    from stageflow.ports import RunRecord, StageRecord

    names = [f"s{i}" for i in range(STORE_CALLS)]
    outputs = [{"v": i} for i in range(STORE_CALLS)]
    where = "the output of stage 's0'"
    positional = re.sub(r":(\w+)", "?", sql.RECORD_STAGE)
    order = re.findall(r":(\w+)", sql.RECORD_STAGE)
    best: dict[str, float] = {}

    def keep(label_: str, seconds: float) -> None:
        best[label_] = min(best.get(label_, float("inf")), seconds / STORE_CALLS)

    def since(start: float) -> float:
        return time.perf_counter() - start

    plain = (
        "INSERT INTO stageflow_stages (run_id, stage, output, status, attempts) "
        "VALUES (?, ?, ?, 'completed', 1)"
    )

    for rnd in range(rounds):
        with tempfile.TemporaryDirectory(
            prefix="stageflow-profile-store-", ignore_cleanup_errors=True
        ) as tmp:
            directory = Path(tmp)
            gc.collect()
            start = time.perf_counter()
            for out in outputs:
                json.dumps(out)
            keep("json.dumps({'v': i})", since(start))
            start = time.perf_counter()
            for out in outputs:
                _codec.dumps(dict(out), where)
            keep("_codec.dumps(dict(output), where), as the interceptor calls it", since(start))

            bare = sqlite3.connect(directory / "bare.db")
            bare.execute("PRAGMA journal_mode = WAL")
            bare.execute("PRAGMA synchronous = NORMAL")
            bare.execute(BARE_TABLE)
            bare.commit()
            insert = "INSERT INTO bench_stages (run_id, stage, output) VALUES (?, ?, ?)"
            gc.collect()
            start = time.perf_counter()
            for name, out in zip(names, outputs, strict=True):
                bare.execute(insert, ("r", name, json.dumps(out)))
                bare.commit()
            keep("bare: INSERT + COMMIT, stdlib sqlite3 (W6's reference)", since(start))
            bare.close()

            store = SQLAlchemyStore(f"sqlite:///{directory / 'store.db'}")
            now = time.time()
            for run_id in ("auto", "named", "positional", "store"):
                await store.create_run(
                    RunRecord(run_id, "p", "f", "{}", RunStatus.RUNNING, now, now, structure="{}")
                )
            leases = {
                run_id: await store.acquire_lease(run_id, "me", 30.0)
                for run_id in ("named", "positional", "store")
            }
            conn = store._db.conn  # type: ignore[union-attr]
            gc.collect()
            start = time.perf_counter()
            for name, out in zip(names, outputs, strict=True):
                conn.execute(plain, ("auto", name, json.dumps(out))).fetchall()
            keep("plain INSERT, autocommit, on the store's connection", since(start))

            def params(run_id: str, token: int, name: str, out: dict[str, int]) -> dict[str, Any]:
                return {
                    "run_id": run_id, "token": token, "stage": name,
                    "status": "completed", "output": json.dumps(out), "attempts": 1,
                    "started": 0.1, "ended": 0.2, "reason": None,
                }  # fmt: skip

            token = leases["named"].token
            prepared = [params("named", token, n, o) for n, o in zip(names, outputs, strict=True)]
            gc.collect()
            start = time.perf_counter()
            for p in prepared:
                conn.execute(sql.RECORD_STAGE, p).fetchall()
            keep("RECORD_STAGE (fenced INSERT ... RETURNING), named params", since(start))
            token = leases["positional"].token
            prepared_pos = [
                tuple(params("positional", token, n, o)[k] for k in order)
                for n, o in zip(names, outputs, strict=True)
            ]
            gc.collect()
            start = time.perf_counter()
            for p in prepared_pos:
                conn.execute(positional, p).fetchall()
            keep("RECORD_STAGE, positional params", since(start))

            lease = leases["store"]
            records = [
                StageRecord("store", n, StageStatus.COMPLETED, json.dumps(o), 1, 0.1, 0.2, None)
                for n, o in zip(names, outputs, strict=True)
            ]
            gc.collect()
            start = time.perf_counter()
            for record in records:
                await store.record_stage(lease, record)
            keep("await store.record_stage(lease, record)", since(start))
            await store.aclose()
            print(f"round {rnd + 1}/{rounds}", file=sys.stderr, flush=True)
    return best


def report_store(best: dict[str, float]) -> None:
    print(f"µs per call, best of rounds of {STORE_CALLS} calls\n")
    print(f"{'µs/call':>8}  step")
    for label_, seconds in best.items():
        print(f"{seconds * 1e6:8.2f}  {label_}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=[*sorted(SHAPES), "LAYERS", "STORE"])
    parser.add_argument("--stages", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--sort", choices=("tottime", "cumtime"), default="tottime")
    parser.add_argument("--impl", choices=sorted(IMPLS), default="stageflow")
    parser.add_argument(
        "--compare",
        choices=sorted(set(SHAPES) - {"BUILD"}),
        metavar="WORKLOAD",
        help="also profile WORKLOAD and print the per-function difference",
    )
    args = parser.parse_args(argv)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(1, str(REPO_ROOT))

    if args.workload == "STORE":
        report_store(asyncio.run(measure_store(min(args.runs, 15))))
        return 0
    if args.workload == "LAYERS":
        report_layers(asyncio.run(measure_layers(OPTIONS["W5"], min(args.runs, 15))))
        return 0
    impl = IMPLS[args.impl]
    profiler, stages = profile(args.workload, impl, args.stages, args.runs)
    unit = {"W7": "items", "W7-DURABLE": "items", "W9": "iterations"}.get(args.workload)
    what = f"{unit} (µs/stage below: per one of them)" if unit else "stages"
    print(f"{impl.name} {args.workload}: {stages} {what} x {args.runs} profiled runs")
    report(profiler, stages * args.runs, args.top, args.sort)
    if args.compare:
        base, base_stages = profile(args.compare, impl, args.stages, args.runs)
        if base_stages != stages:
            raise SystemExit(f"{args.compare} has {base_stages} stages, {args.workload} {stages}")
        names = (args.compare, args.workload)
        report_difference(base, profiler, names, stages * args.runs, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
