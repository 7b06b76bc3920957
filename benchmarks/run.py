#!/usr/bin/env python3
"""stageflow benchmark suite: stageflow's scheduling overhead against a bare asyncio floor.

Usage::

    python benchmarks/run.py [--quick] [--json PATH] [--check] [--only W1,W5,...]

Methodology
-----------
* **Reference.** Every workload also runs on ``bare.py``, a minimal hand-written asyncio DAG
  scheduler (dependency counters, one task per ready node, a completion Future). It is the
  honest floor: no validation, no events, no context objects. The ratio stageflow/bare is
  therefore the price of stageflow's features per stage; 1.0 would mean "free".
* **Same stages.** Both schedulers run the very same stage function objects (a no-op
  ``async def`` returning ``{"v": i}``), built by ``workloads.py``.
* **Resilience (W5).** W5 is W1's chain with ``timeout=``, ``retry=`` and
  ``circuit_breaker=`` on every stage and nothing failing; its bare reference does the same
  by hand (``bare.run_bare_guarded``: ``asyncio.timeout`` around each call, a retry loop
  entered only on failure, a per-stage breaker checked and reset), so the ratio is the price
  of stageflow's resilience layers over the same work written plainly.
* **Telemetry (W5-otel).** W5 plus ``TracingInterceptor(tracer_provider=tp)`` and
  ``MetricsInterceptor(meter_provider=mp)``, with SDK providers exporting to memory
  (``SimpleSpanProcessor(InMemorySpanExporter())``, ``InMemoryMetricReader``; never the
  global ones). Its reference is ``telemetry.run_bare_traced``: ``run_bare_guarded`` with the
  same telemetry by hand, as plainly as a careful user would write it: a run span and, per
  stage, an SDK span made current around the call (``context.attach``/``detach``) with the
  interceptor's attributes, its duration recorded in an SDK histogram under the same bounded
  attributes and its outcome counted in a plain dict an observable counter reads. Each side
  has its own providers; the span exporter is cleared before each repetition and every
  run's spans are checked after it (the metrics after the warm-up), all untimed.
* **Telemetry without an SDK (W1-noop).** W1 on an ``Engine`` with ``TracingInterceptor()``,
  ``MetricsInterceptor()`` and ``LoggingInterceptor()`` (its logger at the default WARNING
  level: nothing is logged), no provider configured in the process, against W1 on a plain
  ``Engine()``: both sides are stageflow, the "bare" column is the plain engine. The first
  row has tracing and metrics (what an SDK would make costly); the ``+logging`` row adds the
  LoggingInterceptor, whose records are all off by level: it reads the level once per run
  (``applies``) and then wraps no stage, logging the failed ones, if any, when the run ends;
  both rows have the same target. W5-otel and W1-noop are skipped, with the reason, where
  OpenTelemetry is missing.
* **Durable runs (W6).** W6, W6-pg and W6-wide commit every stage's completion before its
  dependents start: stageflow through ``Engine(store=SQLAlchemyStore(...))``, the floor through
  ``bare.run_bare_committed`` with one stdlib ``sqlite3`` INSERT + COMMIT (WAL,
  ``synchronous=NORMAL``) or one asyncpg prepared INSERT per stage (``durable.py``). Each
  repetition starts on a fresh SQLite file (made and opened untimed) with a new run id;
  PostgreSQL runs on the tests' throwaway server, skipped (not failed) where it cannot start.
* **Dynamic graphs (W7-W9, W7-durable; issue 13).** W7 maps a no-op item function over a
  dependency's list of 10 000 items (``with_map``, unlimited parallelism) against a bare node
  doing one ``asyncio.gather`` of the same function's coroutines (``bare.gathered``), per
  item. W8 is W3 with every tenth stage (that has successors) a ROUTE choosing all of them
  and ``when=`` true on every stage, against stageflow's own W3: both sides are stageflow.
  W9 is a ``with_loop`` of 1 000 iterations of a one-stage body (``until`` false until the
  last) against one bare node awaiting the same function in a ``for`` loop
  (``bare.looped``), per iteration. W7-durable is W7 on a SQLite file store
  (``sqlite+aiosqlite://``) against the bare gather with each item's row written through
  ``durable.GroupCommit``, the store's group commit by hand (first write of a loop
  iteration alone, the rest of it in one transaction), per item.
* **What is timed.** For W1-W5, W5-otel and W1-noop only awaiting the run is timed: graphs
  (and the ``Engine``) are constructed beforehand, building is measured on its own by BUILD.
  Timing uses ``time.perf_counter`` inside one long-lived event loop, so loop creation is
  excluded.
* **Interleaving.** Repetitions alternate bare, stageflow, bare, stageflow, ... after one
  untimed warm-up run each, so slow drifts of the machine (frequency scaling, noisy
  neighbours) hit both sides alike. ``gc.collect()`` runs before every timed repetition;
  nothing else (the cyclic GC in particular) is disabled.
* **Best-of.** The table shows the best (minimum) repetition of each side and the ratio of
  the two: the minimum is the least noisy estimate of the intrinsic cost on a shared
  machine. Medians and every sample are kept in the JSON file.
* **Subprocesses for 100k.** Each 100 000-stage run executes in a fresh interpreter of its
  own: peak RSS is a high-water mark of the whole process, so only a separate process per
  (workload, scheduler) can attribute peak memory to one scheduler; it also keeps the big
  heaps from disturbing the other measurements. On Linux the peak is read from ``VmHWM``
  rather than ``ru_maxrss``, which a child inherits from its parent across ``exec`` (both are
  in the JSON file). Each subprocess first times the same workload at 1 000 stages, so the
  scaling ratio (100k per-stage cost / 1k per-stage cost) compares like with like; a bare
  subprocess never imports stageflow.
* **Import time.** ``python -c "import stageflow"`` minus ``python -c "pass"``, both in fresh
  interpreters, interleaved, best of several (after one untimed run that writes ``.pyc``).

The exit code is 0 even when a target is missed (benchmarks report, they are not tests),
unless ``--check`` is given: then any miss or error exits with 1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import gc
import importlib
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import conditions
import declarative
from bare import Resilience, bare_build
from durable import (
    PostgresBare,
    PostgresStageflow,
    Side,
    SQLiteBare,
    SQLiteEventLogged,
    SQLiteMapBare,
    SQLiteMapStageflow,
    SQLiteReference,
    SQLiteStageflow,
)
from workloads import (
    BARE,
    IMPLS,
    SCALABLE,
    STAGEFLOW,
    W7_ITEMS,
    W9_ITERATIONS,
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
    sleepers,
    stageflow_build,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_JSON = BENCH_DIR / "results.json"
SECTIONS = (
    "W1", "W2", "W3", "W4", "W5", "W1-NOOP", "W1-ASSIST", "W5-OTEL", "W7", "W8", "W9", "W3-CEL",
    "W3-CEL-DEP",
    "W6", "W6-PG", "W6-WIDE", "W7-DURABLE", "W10", "SERVICE", "RAY", "WORKERS", "BUILD", "LOAD",
    "SCALE",
    "IMPORT",
)  # fmt: skip
WORKLOAD_TIMEOUT = 120.0  # seconds for one in-process workload, or one scaling subprocess


def log(message: str) -> None:
    """Progress goes to stderr so stdout holds only the table."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Config:
    reps: int  # timed repetitions per scheduler for W1-W5 and BUILD
    import_reps: int  # fresh interpreters per side for the import time
    scale_stages: int  # stage count of the scaling runs
    scale_reps: int  # timed repetitions of the big run in each subprocess
    scale_small_reps: int  # timed repetitions of the 1 000-stage run in each subprocess
    sections: tuple[str, ...]
    durable_reps: int  # timed repetitions per side of W6, W6-pg, W6-wide and W7-durable
    service_runs: int = 1000  # SERVICE: runs started through the API (and in-process)
    service_concurrency: int = 50  # SERVICE: runs in flight at most
    cel_evaluations: int = 100_000  # CEL-eval (with W3-CEL/W3-CEL-DEP): evaluations per pass


FULL = Config(20, 7, 100_000, 5, 10, SECTIONS, 15, 1000, 50, 100_000)
QUICK = Config(
    5, 3, 100_000, 1, 3, tuple(s for s in SECTIONS if s not in ("SCALE", "W6-PG", "WORKERS")), 3,
    100, 20, 10_000,
)  # fmt: skip


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Target:
    """An upper bound on either the stageflow/bare ratio or stageflow's own figure."""

    subject: Literal["ratio", "stageflow"]
    limit: float

    def describe(self) -> str:
        return f"{'ratio' if self.subject == 'ratio' else 'sf'} <= {self.limit:g}"


@dataclass
class Row:
    """One line of the table (best-of figures) plus everything else for the JSON file."""

    key: str
    label: str
    unit: str
    bare: float | None = None
    stageflow: float | None = None
    ratio: float | None = None
    target: Target | None = None
    error: str | None = None
    skipped: str | None = None  # why the row could not be measured here (not a failure)
    reference: str | None = None  # what the "bare" column holds, when it is not bare.py
    details: dict[str, Any] = field(default_factory=dict)
    note: str | None = None  # one more line under the table (what a figure means, its parts)

    @property
    def status(self) -> str:
        if self.error:
            return "ERR"
        if self.skipped:
            return "skip"
        if self.target is None:
            return "-"
        value = self.ratio if self.target.subject == "ratio" else self.stageflow
        if value is None:
            return "n/a"
        return "ok" if value <= self.target.limit else "MISS"

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "unit": self.unit,
            "bare": self.bare,
            "stageflow": self.stageflow,
            "ratio": self.ratio,
            "target": None
            if self.target is None
            else {"subject": self.target.subject, "limit": self.target.limit},
            "status": self.status,
            "error": self.error,
            "skipped": self.skipped,
            "reference": self.reference,
            "note": self.note,
            "details": self.details,
        }


def summarize(samples: Sequence[float], factor: float) -> dict[str, Any]:
    """Best, median and all samples (seconds), each multiplied by ``factor``."""
    scaled = [s * factor for s in samples]
    return {"best": min(scaled), "median": statistics.median(scaled), "samples": scaled}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def fill(row: Row, stats: dict[str, dict[str, Any]]) -> Row:
    """Put the best-of figures of ``stats`` (keyed by scheduler name) into ``row``."""
    row.details.update(stats)
    row.bare = stats.get("bare", {}).get("best")
    row.stageflow = stats.get("stageflow", {}).get("best")
    row.ratio = ratio(row.stageflow, row.bare)
    if "bare" in stats and "stageflow" in stats:
        row.details["ratio_median"] = ratio(stats["stageflow"]["median"], stats["bare"]["median"])
    return row


# --------------------------------------------------------------------------- timing


async def timed_run(impl: Impl, prepared: Any, n: int) -> float:
    """One timed run (seconds) after ``gc.collect()``; the result is verified untimed."""
    go = impl.runner(prepared)
    gc.collect()
    start = time.perf_counter()
    result = await go()
    elapsed = time.perf_counter() - start
    impl.verify(result, n)
    return elapsed


async def time_runs(
    impls: Sequence[Impl], graphs: dict[str, Any], n: int, reps: int
) -> dict[str, list[float]]:
    """Interleaved timed runs (seconds) of each scheduler on its prepared graph."""
    for impl in impls:  # warm-up, untimed
        impl.verify(await impl.runner(graphs[impl.name])(), n)
    samples: dict[str, list[float]] = {impl.name: [] for impl in impls}
    for _ in range(reps):
        for impl in impls:
            samples[impl.name].append(await timed_run(impl, graphs[impl.name], n))
    return samples


def time_calls(calls: Mapping[str, Callable[[], object]], reps: int) -> dict[str, list[float]]:
    """Interleaved timed calls (seconds) of synchronous functions, after one warm-up each."""
    for call in calls.values():
        call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            gc.collect()
            start = time.perf_counter()
            call()
            samples[name].append(time.perf_counter() - start)
    return samples


# --------------------------------------------------------------------------- in-process sections


class Unavailable(Exception):
    """A workload cannot run here (a missing optional package): its row says skip, and why."""


@dataclass(frozen=True)
class RunWorkload:
    key: str
    label: str
    make: Callable[[], Spec]
    unit: Literal["µs/stage", "µs/item", "µs/iteration", "ms"]
    target: Target | None = None
    options: Resilience | None = None  # per-stage timeout, retry and breaker (W5)
    section: str | None = None  # its --only name, when not its key upper-cased (W1-NOOP's rows)
    # The two sides, named "bare" and "stageflow", when they are not BARE and STAGEFLOW;
    # given whether stageflow imports. May raise Unavailable.
    sides: Callable[[bool], Sequence[Impl]] | None = None
    reference: str | None = None  # what the "bare" side is, when it is not bare.py
    # What a µs figure is per, when not a stage of the spec: W7's items, W9's iterations.
    units: int | None = None
    note: str | None = None  # a line under the table (Row.note)

    @property
    def in_section(self) -> str:
        return self.section or self.key.upper()


def telemetry_module(*, sdk: bool) -> Any:
    """``telemetry.py``, or Unavailable when OpenTelemetry (with ``sdk``, its SDK) is missing."""
    try:
        importlib.import_module("opentelemetry.trace")
        if sdk:
            importlib.import_module("opentelemetry.sdk.trace")
    except ImportError as exc:
        package = "opentelemetry-sdk" if sdk else "opentelemetry-api"
        raise Unavailable(f"{package} is not importable ({exc})") from exc
    return importlib.import_module("telemetry")


def w5_otel_sides(with_stageflow: bool) -> Sequence[Impl]:
    impls: Sequence[Impl] = telemetry_module(sdk=True).w5_otel_impls(with_stageflow)
    return impls


def w8_sides(with_stageflow: bool) -> Sequence[Impl]:
    if not with_stageflow:
        raise Unavailable("both sides are stageflow, which does not import")
    return routed_impls(with_stageflow)


def w1_noop_sides(with_logging: bool) -> Callable[[bool], Sequence[Impl]]:
    def sides(with_stageflow: bool) -> Sequence[Impl]:
        if not with_stageflow:
            raise Unavailable("both sides are stageflow, which does not import")
        impls: Sequence[Impl] = telemetry_module(sdk=False).w1_noop_impls(with_logging)
        return impls

    return sides


def w1_assist_sides(with_stageflow: bool) -> Sequence[Impl]:
    """W1 on a plain Engine, and on one with an AssistanceInterceptor whose stages ask for
    no assistance: what assistance costs the stages that do not use it (issue 18)."""
    if not with_stageflow:
        raise Unavailable("both sides are stageflow, which does not import")
    from stageflow import AssistanceInterceptor, Engine
    from stageflow.testing import ScriptedAssistant

    assisted = AssistanceInterceptor(ScriptedAssistant())

    def prepare(interceptors: list[Any]) -> Callable[..., Any]:
        def prepared(name: str, spec: Sequence[Any], options: Resilience | None) -> Any:
            engine = Engine(max_parallel=None, interceptors=interceptors)
            return engine, stageflow_build(name, spec)

        return prepared

    def runner(prepared: tuple[Any, Any]) -> Any:
        engine, graph = prepared
        return lambda: engine.run(graph)

    def verify(result: Any, n: int) -> None:
        if result.status != "completed" or len(result) != n:
            raise RuntimeError(f"stageflow run ended with status {result.status!r}")
        if assisted.assistant.calls:  # type: ignore[attr-defined]
            raise RuntimeError("a stage without assist= was assisted")

    return [Impl("bare", prepare([]), runner, verify),
            Impl("stageflow", prepare([assisted]), runner, verify)]  # fmt: skip


RUN_WORKLOADS = (
    RunWorkload("W1", "W1 chain 1000", lambda: chain(1000), "µs/stage", Target("ratio", 1.5)),
    RunWorkload("W2", "W2 fan-out 1000", lambda: fan(1000), "µs/stage", Target("ratio", 1.5)),
    RunWorkload("W3", "W3 layers 20x50", layered, "µs/stage", Target("ratio", 1.5)),
    RunWorkload("W4", "W4 100 x sleep 10ms", sleepers, "ms", Target("ratio", 1.05)),
    RunWorkload(
        "W5",
        "W5 chain 1000 +timeout/retry/breaker",
        lambda: chain(1000),
        "µs/stage",
        Target("ratio", 1.3),
        Resilience(timeout=30.0, attempts=3, failure_threshold=5),
    ),
    # W1-noop before W5-otel: measured in a process that has not even imported the SDK.
    RunWorkload(
        "W1-noop",
        "W1-noop chain 1000 +tracing/metrics, no SDK",
        lambda: chain(1000),
        "µs/stage",
        Target("ratio", 1.1),
        sides=w1_noop_sides(with_logging=False),
        reference="stageflow on a plain Engine()",
    ),
    RunWorkload(
        "W1-noop-log",
        "W1-noop +logging (records off by level)",
        lambda: chain(1000),
        "µs/stage",
        Target("ratio", 1.1),  # records off: the run's stages go unwrapped (applies)
        section="W1-NOOP",
        sides=w1_noop_sides(with_logging=True),
        reference="stageflow on a plain Engine()",
    ),
    RunWorkload(
        "W1-assist",
        "W1-assist chain 1000 +AssistanceInterceptor, no assist=",
        lambda: chain(1000),
        "µs/stage",
        Target("ratio", 1.05),  # it wraps nothing: the same calls
        sides=w1_assist_sides,
        reference="stageflow on a plain Engine()",
    ),
    RunWorkload(
        "W5-otel",
        "W5-otel W5 +span+metrics (in-memory SDK)",
        lambda: chain(1000),
        "µs/stage",
        Target("ratio", 1.3),
        Resilience(timeout=30.0, attempts=3, failure_threshold=5),
        sides=w5_otel_sides,
        reference="W5 with the same span and metrics by hand (telemetry.run_bare_traced)",
    ),
    # Issue 13: dynamic graphs.
    RunWorkload(
        "W7",
        f"W7 map {W7_ITEMS:,} items",
        map_spec,
        "µs/item",
        Target("ratio", 1.5),
        sides=map_impls,
        reference="asyncio.gather of the item coroutines in a bare node (bare.gathered)",
        units=W7_ITEMS,
    ),
    RunWorkload(
        "W8",
        "W8 W3 +ROUTE every 10th, when= on all",
        layered,
        "µs/stage",
        Target("ratio", 1.1),
        sides=w8_sides,
        reference="stageflow's W3 (plain stages)",
    ),
    RunWorkload(
        "W9",
        f"W9 loop {W9_ITERATIONS:,} iterations",
        body_spec,
        "µs/iteration",
        Target("ratio", 1.5),
        sides=loop_impls(W9_ITERATIONS),
        reference="a for loop awaiting the body's function in one bare node (bare.looped)",
        units=W9_ITERATIONS,
    ),
    # Issue 16: pipeline files. Both sides are stageflow: Python conditions vs a file's CEL.
    RunWorkload(
        "W3-CEL",
        'W3-CEL W3, when: "$inputs.enabled" on all',
        layered,
        "µs/stage",
        Target("ratio", 1.3),
        sides=conditions.cel_impls("input"),
        reference="W3 with when= a Python function reading the run data",
    ),
    RunWorkload(
        "W3-CEL-DEP",
        'W3-CEL-DEP W3, when: "$<dep>.v >= 0" (memo misses)',
        declarative.counting_spec,  # a new value per stage and run: the memo never answers
        "µs/stage",
        sides=conditions.cel_impls("dep"),
        reference="W3 with when= a Python function reading the dependency's value",
        note="every evaluation misses the loader's memo and reaches the CEL library: the "
        "honest miss-path cost (no target)",
    ),
)


async def measure_workload(work: RunWorkload, impls: Sequence[Impl], reps: int) -> Row:
    row = Row(work.key, work.label, work.unit, target=work.target)
    spec = work.make()
    n = work.units or len(spec)  # what the figure is per, and what verify() checks
    graphs = {impl.name: impl.prepare(work.key.lower(), spec, work.options) for impl in impls}
    samples = await time_runs(impls, graphs, n, reps)
    factor = 1e3 if work.unit == "ms" else 1e6 / n
    row.details["stages"] = len(spec)
    if work.units is not None:
        row.details[work.unit.removeprefix("µs/") + "s"] = n
    return fill(row, {name: summarize(s, factor) for name, s in samples.items()})


def release(sides: Sequence[Impl]) -> None:
    """Let each side release what it kept (W5-otel's providers, and through their callbacks
    its graphs): a bigger heap would slow every later measurement (each gc.collect())."""
    for side in sides:
        if side.close is not None:
            side.close()


async def measure_workloads(cfg: Config, impls: Sequence[Impl]) -> list[Row]:
    rows = []
    with_stageflow = any(impl.name == "stageflow" for impl in impls)
    for work in RUN_WORKLOADS:
        if work.in_section not in cfg.sections:
            continue
        log(f"  {work.label} ...")
        sides: Sequence[Impl] = ()  # (dropping the previous workload's, before it runs)
        try:
            sides = impls if work.sides is None else work.sides(with_stageflow)
            # A generous bound around the whole workload (not each timed run), so that a
            # run that never ends is reported instead of hanging the suite.
            async with asyncio.timeout(WORKLOAD_TIMEOUT):
                row = await measure_workload(work, sides, cfg.reps)
        except Unavailable as exc:
            row = Row(work.key, work.label, work.unit, target=work.target, skipped=str(exc))
        except Exception as exc:  # report and carry on with the other workloads
            error = (
                f"no result after {WORKLOAD_TIMEOUT:g}s"
                if isinstance(exc, TimeoutError)
                else repr(exc)
            )
            row = Row(work.key, work.label, work.unit, target=work.target, error=error)
        finally:
            release(sides)
        row.reference = work.reference
        row.note = work.note
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- W6: durable runs

W6_STAGES = 200  # the chain of W6 and W6-pg
W6_WIDE = 1000  # parallel stages of W6-wide (W2's shape)


async def time_durable(sides: Sequence[Side], n: int, reps: int) -> dict[str, list[float]]:
    """Interleaved timed runs (seconds) of each side, each repetition on fresh ground.

    ``prepare`` (a new database file, the store opened, a new run id), ``check`` (the run's
    status and the rows it stored) and ``cleanup`` are untimed; so is one warm-up run each.
    """
    started: list[Side] = []
    try:
        for side in sides:
            await side.start()
            started.append(side)
        for side in sides:
            go = await side.prepare("warm")
            try:
                await side.check(await go(), n)
            finally:
                await side.cleanup()
        samples: dict[str, list[float]] = {side.name: [] for side in sides}
        for rep in range(reps):
            for side in sides:
                go = await side.prepare(str(rep))
                try:
                    gc.collect()
                    start = time.perf_counter()
                    result = await go()
                    elapsed = time.perf_counter() - start
                    await side.check(result, n)
                finally:
                    await side.cleanup()
                samples[side.name].append(elapsed)
        return samples
    finally:
        for side in started:
            await side.close()


async def measure_durable_row(row: Row, sides: Sequence[Side], n: int, reps: int) -> Row:
    try:
        async with asyncio.timeout(WORKLOAD_TIMEOUT):
            samples = await time_durable(sides, n, reps)
    except Exception as exc:
        row.error = (
            f"no result after {WORKLOAD_TIMEOUT:g}s" if isinstance(exc, TimeoutError) else repr(exc)
        )
        return row
    row.details["stages"] = n
    return fill(row, {name: summarize(s, 1e6 / n) for name, s in samples.items()})


def measure_durable(cfg: Config, *, with_stageflow: bool) -> list[Row]:
    """W6 (SQLite chain), W6-pg (PostgreSQL chain), W6-wide (SQLite fan-out), W7-durable
    (SQLite map)."""
    rows: list[Row] = []
    wanted = [key for key in ("W6", "W6-PG", "W6-WIDE", "W7-DURABLE", "W10") if key in cfg.sections]
    if not wanted:
        return rows
    reps = cfg.durable_reps
    w6: Row | None = None
    with tempfile.TemporaryDirectory(
        prefix="stageflow-bench-w6-", ignore_cleanup_errors=True
    ) as tmp:
        directory = Path(tmp)

        def sqlite_sides(spec: Spec) -> list[Side]:
            sides: list[Side] = [SQLiteBare(spec, directory)]
            if with_stageflow:
                sides.append(SQLiteStageflow(spec, directory))
            return sides

        if "W6" in wanted:
            w6 = Row(
                "W6", f"W6 chain {W6_STAGES}, SQLite store", "µs/stage", target=Target("ratio", 3.0)
            )
            log(f"  {w6.label} ...")
            spec = chain(W6_STAGES)
            rows.append(asyncio.run(measure_durable_row(w6, sqlite_sides(spec), len(spec), reps)))
        if "W6-PG" in wanted:
            rows.append(measure_postgres(reps, with_stageflow=with_stageflow))
        if "W6-WIDE" in wanted:
            wide = Row("W6-wide", f"W6-wide fan-out {W6_WIDE}, SQLite store", "µs/stage")
            log(f"  {wide.label} ...")
            spec = fan(W6_WIDE)
            rows.append(asyncio.run(measure_durable_row(wide, sqlite_sides(spec), len(spec), reps)))
            if w6 is not None and not (w6.error or wide.error):
                # < 1 would mean completions landing together cost less each (group commit).
                rows.append(
                    Row(
                        "W6-wide-vs-W6",
                        "W6-wide / W6, per stage",
                        "x",
                        bare=ratio(wide.bare, w6.bare),
                        stageflow=ratio(wide.stageflow, w6.stageflow),
                    )
                )
        if "W7-DURABLE" in wanted:
            mapped = Row(
                "W7-durable",
                f"W7-durable map {W7_ITEMS:,} items, SQLite store",
                "µs/item",
                target=Target("ratio", 2.0),
                reference="bare.gathered_committed + sqlite3 group commit (durable.GroupCommit)",
            )
            log(f"  {mapped.label} ...")
            spec = map_spec()
            sides: list[Side] = [SQLiteMapBare(spec, directory)]
            if with_stageflow:
                sides.append(SQLiteMapStageflow(spec, directory))
            rows.append(asyncio.run(measure_durable_row(mapped, sides, W7_ITEMS, reps)))
            mapped.details["items"] = W7_ITEMS
        if "W10" in wanted and with_stageflow:
            logged = Row(
                "W10",
                "W10 W6 + event log, SQLite store",
                "µs/stage",
                target=Target("ratio", 1.3),
                reference="stageflow's W6 (the same durable run, no event log)",
            )
            log(f"  {logged.label} ...")
            spec = chain(W6_STAGES)
            sides = [SQLiteReference(spec, directory), SQLiteEventLogged(spec, directory)]
            rows.append(asyncio.run(measure_durable_row(logged, sides, len(spec), reps)))
    return rows


def measure_service(cfg: Config) -> list[Row]:
    """SERVICE (``service.py``): ``cfg.service_runs`` 10-stage runs started with ``POST /runs``
    on a ``stageflow serve`` subprocess (SQLite), at most ``cfg.service_concurrency`` in
    flight, start -> completed read off each run's SSE stream; against the same runs on an
    in-process ``Engine`` on the same kind of store. One pass (no best-of): the figures are
    percentiles over the runs. ERR when a run is lost, not completed or driven twice."""
    n, c = cfg.service_runs, cfg.service_concurrency
    where = f"{n:,} runs, {c} at a time"
    log(f"  SERVICE {where} ...")
    reference = "the same runs in-process: Engine(store=SQLite, event_log=store)"
    try:
        import service

        figures = service.summary(service.measure(n, c))
    except Exception as exc:
        return [Row("SERVICE", f"SERVICE {where}", "runs/s", error=repr(exc))]
    problems = figures["api_problems"] + figures["inprocess_problems"]
    rows = [
        Row(
            "SERVICE-rate",
            f"SERVICE runs/s, {where} (higher is better)",
            "runs/s",
            bare=figures["inprocess_runs_per_s"],
            stageflow=figures["api_runs_per_s"],
            ratio=ratio(figures["api_runs_per_s"], figures["inprocess_runs_per_s"]),
            reference=reference,
            details=figures,
            error=f"{len(problems)} problem(s): {problems[:3]}" if problems else None,
        ),
        Row("SERVICE-post-p50", "SERVICE POST /runs p50", "ms", stageflow=figures["post_p50_ms"]),
        Row("SERVICE-post-p99", "SERVICE POST /runs p99", "ms", stageflow=figures["post_p99_ms"]),
    ]
    for q in ("p50", "p99"):
        api, local = figures[f"api_total_{q}_ms"], figures[f"inprocess_total_{q}_ms"]
        rows.append(
            Row(
                f"SERVICE-run-{q}",
                f"SERVICE start -> completed {q}, 10 stages",
                "ms",
                bare=local,
                stageflow=api,
                ratio=ratio(api, local),
                reference=reference,
            )
        )
    return rows


def measure_ray(cfg: Config) -> list[Row]:
    """RAY (``ray_bench.py``): a chain of trivial stages, each ``runner="ray"``, against the
    same number of raw ``ray.remote`` round trips in a row, on one local Ray cluster; and
    RAY-HANDOFF: a chain of stages passing a 4 MB blob on, handed on as Ray objects (the
    default) against fetched to the driver after each stage."""
    n = 50
    row = Row(
        "RAY",
        f'RAY chain {n}, runner="ray" vs raw ray.remote (medians)',
        "µs/stage",
        target=Target("ratio", 1.2),
        reference="a raw ray.remote round trip (await f.remote(x)), the same cluster",
    )
    log(f"  {row.label} ...")
    try:
        import ray_bench

        figures = ray_bench.measure(n, max(7, cfg.durable_reps))
    except Exception as exc:
        row.error = repr(exc)
        return [row]
    row.bare, row.stageflow = figures["bare_us"], figures["stageflow_us"]
    row.ratio = figures["ratio"]  # the median of the passes' ratios
    row.details = figures
    row.note = (f"stageflow's own code, both sides, is {figures['engine_part_us']:.0f} µs "
                f"of each stage (measured without Ray); best passes {figures['best_bare_us']:.0f}"
                f" vs {figures['best_stageflow_us']:.0f} µs; an async stage "
                f"{figures['async_us']:.0f} µs")  # fmt: skip
    handoff = Row(
        "RAY-HANDOFF",
        "RAY-HANDOFF chain 20, a 4 MB output handed on vs fetched to the driver",
        "ms/stage",
        reference="the same chain, each output fetched to the driver and sent up again",
    )
    log(f"  {handoff.label} ...")
    try:
        passed = ray_bench.measure_handoff(20, 4_000_000, max(3, cfg.durable_reps // 3))
    except Exception as exc:
        handoff.error = repr(exc)
        return [row, handoff]
    handoff.bare, handoff.stageflow = passed["fetched_ms"], passed["handed_ms"]
    handoff.ratio = ratio(handoff.stageflow, handoff.bare)
    handoff.details = passed
    return [row, handoff]


def measure_workers(cfg: Config) -> list[Row]:
    """WORKERS (``workers_bench.py``): queued runs driven by ``stageflow worker`` processes
    on a throwaway PostgreSQL server: an idle worker's submit -> start latency, and runs/s
    of 4 workers against 1 (concurrency 4 each). One pass; skipped without PostgreSQL."""
    label = "WORKERS queued runs"
    log(f"  {label} (a throwaway server, worker processes) ...")
    try:
        import workers_bench

        figures = workers_bench.summary(workers_bench.measure())
    except Exception as exc:
        return [Row("WORKERS", label, "runs/s", error=repr(exc))]
    if "skipped" in figures:
        return [Row("WORKERS", label, "runs/s", skipped=figures["skipped"])]
    problems = figures["problems"]
    poll, n = figures["poll_s"], figures["runs"]
    return [
        Row("WORKERS-start-p50", f"WORKERS submit -> start p50, --poll {poll:g}", "ms",
            stageflow=figures["latency_p50_ms"], details=figures,
            error=f"{len(problems)} problem(s): {problems[:3]}" if problems else None),
        Row("WORKERS-start-p99", f"WORKERS submit -> start p99, --poll {poll:g}", "ms",
            stageflow=figures["latency_p99_ms"]),
        Row("WORKERS-rate", f"WORKERS runs/s, {n} runs, 4 workers vs 1 (higher is better)",
            "runs/s", bare=figures["rate_1_worker_runs_per_s"],
            stageflow=figures["rate_4_workers_runs_per_s"], ratio=figures["ratio_4v1"],
            reference="1 worker of concurrency 4, the same runs"),
    ]  # fmt: skip


def measure_postgres(reps: int, *, with_stageflow: bool) -> Row:
    """W6-pg on a throwaway server of the tests' harness; skipped when it cannot run here."""
    row = Row(
        "W6-pg",
        f"W6-pg chain {W6_STAGES}, PostgreSQL store",
        "µs/stage",
        target=Target("ratio", 2.0),
    )
    log(f"  {row.label} (starting a throwaway server) ...")
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        row.skipped = "asyncpg is not installed"
        return row
    try:
        from tests._postgres import PostgresCluster, PostgresUnavailable
    except ImportError as exc:
        row.skipped = f"the PostgreSQL harness tests/_postgres.py cannot be imported: {exc}"
        return row
    try:
        cluster = PostgresCluster.start()
    except PostgresUnavailable as exc:
        row.skipped = str(exc)
        return row
    except Exception as exc:
        row.error = f"the throwaway PostgreSQL server did not start: {str(exc).splitlines()[0]}"
        return row
    try:
        database = cluster.create_database("stageflow_bench")
        spec = chain(W6_STAGES)
        sides: list[Side] = [PostgresBare(spec, database.dsn)]
        if with_stageflow:
            sides.append(PostgresStageflow(spec, database.url))
        asyncio.run(measure_durable_row(row, sides, len(spec), reps))
        row.details["server"] = {"bin_dir": str(cluster.bin_dir), "fsync": "off"}
    except Exception as exc:
        row.error = repr(exc)
    finally:
        cluster.stop()
    return row


def cycling(build: Callable[[Spec], object], specs: Sequence[Spec]) -> Callable[[], object]:
    """A call that builds the next of ``specs`` each time (round robin)."""
    spec_iter = itertools.cycle(specs)
    return lambda: build(next(spec_iter))


def measure_build(cfg: Config, impls: Sequence[Impl]) -> list[Row]:
    """BUILD: the W3 graph via 1000 ``with_stage`` + ``build()`` vs a dict + graphlib.

    The main row gives every repetition stage functions never seen before (made outside the
    timed region), as in an application's one build: anything stageflow caches per function
    is then paid for. The second row reuses one set of functions for every build.
    """
    rows = []
    for fresh in (True, False):
        label = "BUILD W3 graph" if fresh else "BUILD W3 graph, same fns"
        row = Row(
            "BUILD" if fresh else "BUILD-same-fns",
            label,
            "µs/stage",
            target=Target("ratio", 1.0) if fresh else None,
        )
        log(f"  {row.label} ...")
        count = cfg.reps + 1 if fresh else 1  # +1: the warm-up
        specs = {impl.name: [layered() for _ in range(count)] for impl in impls}
        builders: dict[str, Callable[[Spec], object]] = {
            "bare": bare_build,
            "stageflow": lambda spec: stageflow_build("w3", spec),
        }
        calls = {name: cycling(builders[name], specs[name]) for name in specs}
        try:
            samples = time_calls(calls, cfg.reps)
        except Exception as exc:
            row.error = repr(exc)
        else:
            n = len(specs["bare"][0])
            row.details["stages"] = n
            row.details["fresh_functions"] = fresh
            fill(row, {name: summarize(s, 1e6 / n) for name, s in samples.items()})
        rows.append(row)
        del specs, calls  # free this variant's graphs before the next one is measured
    return rows


# --------------------------------------------------------------------------- issue 16: files


def measure_cel_eval(cfg: Config) -> Row:
    """CEL-eval: one loaded ``when:`` (``$a.v >= 0``) with a fresh value per evaluation (the
    memo misses) against the compiled CEL program alone; the parts in the note."""
    n = cfg.cel_evaluations
    row = Row(
        "CEL-eval",
        f'CEL-eval "$a.v >= 0", {n:,} fresh values',
        "µs/eval",
        reference="the compiled program alone (cel-expr-python: eval(data=) + plain_value())",
    )
    log(f"  {row.label} ...")
    try:
        parts = declarative.cel_evaluation(n)
    except Exception as exc:
        row.error = repr(exc)
        return row
    row.details.update(parts, evaluations=n)
    row.bare, row.stageflow = parts["library"], parts["condition"]
    row.ratio = ratio(row.stageflow, row.bare)
    row.note = (
        f"µs per evaluation: the CEL library {parts['library']:.2f}; the loader's when: "
        f"{parts['condition']:.2f} on a memo miss (Expression.evaluate "
        f"{parts['expression']:.2f}, its reference alone {parts['resolve']:.2f}), "
        f"{parts['hit']:.2f} on a memo hit"
    )
    return row


def measure_load(cfg: Config, *, with_stageflow: bool) -> Row:
    """LOAD: ``loads_pipeline`` of W3 as a 1 000-stage file (``with:`` and ``when:`` on each
    stage) against building the same graph in Python; best of ``cfg.reps``, in ms."""
    spec = declarative.load_spec()
    row = Row(
        "LOAD",
        f"LOAD a {len(spec):,}-stage file (W3, with: + when: each)",
        "ms",
        reference="the same graph in Python: with_stage x 1000 + build()",
    )
    log(f"  {row.label} ...")
    if not with_stageflow:
        row.skipped = "stageflow does not import"
        return row
    try:
        text, handlers = declarative.load_text("load", spec), declarative.handlers_of(spec)
        first_ms = declarative.first_load_ms(text, handlers)
        calls: dict[str, Callable[[], object]] = {
            "bare": lambda: declarative.python_build("load", spec),
            "stageflow": lambda: declarative.file_load(text, handlers),
        }
        samples = time_calls(calls, cfg.reps)
        declarative.check_same(
            declarative.file_load(text, handlers).graph,
            declarative.python_build("load", spec),
            len(spec),
        )
    except Exception as exc:
        row.error = repr(exc)
        return row
    row.details.update(stages=len(spec), file_chars=len(text), first_load_ms=first_ms)
    fill(row, {name: summarize(s, 1e3) for name, s in samples.items()})
    row.note = f"the first load in this process: {first_ms:.0f} ms"
    return row


# --------------------------------------------------------------------------- subprocesses


def subprocess_env() -> dict[str, str]:
    """The current environment with the repository root first on PYTHONPATH."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def ru_maxrss_kib() -> int:
    """``ru_maxrss`` of this process (KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss


def peak_rss_kib() -> int:
    """Peak resident set size of this process so far, in KiB.

    On Linux this is ``VmHWM``, the high-water mark of the process's own address space.
    ``ru_maxrss`` is not usable there for a subprocess: it carries over ``exec`` from the
    (v)forked parent, so a child of a 300 MiB parent starts at 300 MiB. Elsewhere, where
    ``/proc`` is missing, fall back to ``ru_maxrss`` (keep the parent small).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return ru_maxrss_kib()


async def scale_worker(
    workload: str, impl: Impl, n: int, reps: int, small_reps: int
) -> dict[str, Any]:
    """Body of one scaling subprocess: 1k and n-stage runs, interleaved, plus peak RSS."""
    make = SCALABLE[workload]
    small_spec = make(1000)
    small_n = len(small_spec)
    small_graph = impl.prepare("small", small_spec, None)
    impl.verify(await impl.runner(small_graph)(), small_n)  # warm-up
    del small_spec
    gc.collect()
    rss_baseline = peak_rss_kib()

    start = time.perf_counter()
    spec = make(n)
    spec_s = time.perf_counter() - start
    total = len(spec)
    start = time.perf_counter()
    graph = impl.prepare(workload.lower(), spec, None)
    prepare_s = time.perf_counter() - start
    del spec
    rss_built = peak_rss_kib()

    # Small and big runs alternate, so that a drift of the machine affects both alike.
    small: list[float] = []
    samples: list[float] = []
    for _ in range(reps):
        for _ in range(-(-small_reps // reps)):
            small.append(await timed_run(impl, small_graph, small_n))
        samples.append(await timed_run(impl, graph, total))
    rss_peak = peak_rss_kib()

    small_stats = summarize(small, 1e6 / small_n)
    big_stats = summarize(samples, 1e6 / total)
    return {
        "workload": workload,
        "impl": impl.name,
        "stages": total,
        "small_stages": small_n,
        "small": small_stats,
        "big": big_stats,
        "scale": big_stats["best"] / small_stats["best"],
        "spec_s": spec_s,
        "prepare_s": prepare_s,
        "rss_baseline_kib": rss_baseline,
        "rss_after_prepare_kib": rss_built,
        "rss_peak_kib": rss_peak,
        "rss_bytes_per_stage": (rss_peak - rss_baseline) * 1024 / total,
        "ru_maxrss_kib": ru_maxrss_kib(),  # includes the parent's RSS on Linux: see peak_rss_kib
    }


def run_scale_subprocess(workload: str, impl: Impl, cfg: Config) -> dict[str, Any]:
    cmd = [
        sys.executable, str(Path(__file__).resolve()),
        "--worker", workload, "--impl", impl.name, "--stages", str(cfg.scale_stages),
        "--reps", str(cfg.scale_reps), "--small-reps", str(cfg.scale_small_reps),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=WORKLOAD_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"worker exited with {proc.returncode}: {' | '.join(tail)}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def measure_scale(cfg: Config, impls: Sequence[Impl]) -> list[Row]:
    rows: list[Row] = []
    k = cfg.scale_stages // 1000
    for workload in SCALABLE:
        shape = "chain" if workload == "W1" else "fan-out"
        run = Row(f"{workload}-{k}k", f"{workload} {shape} {k}k", "µs/stage")
        scale = Row(
            f"{workload}-scale", f"{workload} scaling {k}k/1k", "x", target=Target("stageflow", 1.2)
        )
        rss = Row(f"{workload}-rss", f"{workload} {k}k peak RSS", "MiB")
        per_stage = Row(f"{workload}-rss-stage", f"{workload} {k}k RSS growth", "B/stage")
        group = (run, scale, rss, per_stage)
        for impl in impls:
            log(f"  {run.label} on {impl.name} (subprocess) ...")
            try:
                res = run_scale_subprocess(workload, impl, cfg)
            except Exception as exc:
                for row in group:
                    row.error = f"{impl.name}: {exc!r}"
                continue
            setattr(run, impl.name, res["big"]["best"])
            setattr(scale, impl.name, res["scale"])
            setattr(rss, impl.name, res["rss_peak_kib"] / 1024)
            setattr(per_stage, impl.name, res["rss_bytes_per_stage"])
            run.details[impl.name] = res
        for row in group:
            row.ratio = ratio(row.stageflow, row.bare)
        rows += group
    return rows


def measure_import(cfg: Config) -> Row:
    row = Row("IMPORT", "import stageflow", "ms", target=Target("stageflow", 150.0))
    log(f"  {row.label} (subprocesses) ...")
    with tempfile.TemporaryDirectory(prefix="stageflow-bench-pycache-") as cache:
        # Measure imports as installed code sees them, with bytecode caches, even where
        # PYTHONDONTWRITEBYTECODE is set; the caches go to a throwaway directory.
        env = subprocess_env()
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = cache
        return _measure_import(row, env, cfg.import_reps)


def _measure_import(row: Row, env: dict[str, str], reps: int) -> Row:
    commands = {"baseline": "pass", "stageflow": "import stageflow"}

    def interpreter(code: str) -> None:
        subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    try:
        calls = {name: functools.partial(interpreter, code) for name, code in commands.items()}
        samples = time_calls(calls, reps)
        row.details["import_breakdown"] = import_breakdown(env)
    except subprocess.CalledProcessError as exc:
        row.error = f"import failed: {exc.stderr.decode().strip().splitlines()[-1:]}"
        return row
    stats = {name: summarize(s, 1e3) for name, s in samples.items()}
    row.details.update(stats)
    row.stageflow = stats["stageflow"]["best"] - stats["baseline"]["best"]
    row.details["interpreter_ms"] = stats["baseline"]["best"]
    return row


def import_breakdown(env: dict[str, str], top: int = 8) -> dict[str, Any]:
    """``-X importtime``: stageflow's cumulative import time and its heaviest direct imports."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import stageflow"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    children: list[tuple[str, int]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        if depth == 1:
            children.append((name.strip(), int(cumulative)))
        elif depth == 0:
            if name.strip() == "stageflow":
                heaviest = sorted(children, key=lambda c: -c[1])[:top]
                return {
                    "stageflow_cumulative_ms": int(cumulative) / 1e3,
                    "direct_imports_ms": {mod: us / 1e3 for mod, us in heaviest},
                }
            children = []
    return {}


# --------------------------------------------------------------------------- report


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_table(rows: Sequence[Row]) -> str:
    header = ("workload", "unit", "bare", "stageflow", "sf/bare", "target", "status")
    lines = [
        (
            row.label,
            row.unit,
            fmt(row.bare),
            fmt(row.stageflow),
            "-" if row.ratio is None else f"{row.ratio:.2f}x",
            row.target.describe() if row.target else "-",
            row.status,
        )
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in (header, *lines)) for i in range(len(header))]
    left = {0, 1, 5, 6}

    def render(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [render(header), "  ".join("-" * w for w in widths)]
    out += [render(cells) for cells in lines]
    out += [f"  {row.label}: {row.error}" for row in rows if row.error]
    out += [f"  {row.label}: skipped: {row.skipped}" for row in rows if row.skipped]
    out += [f"  {row.label}: bare = {row.reference}" for row in rows if row.reference and row.bare]
    out += [f"  {row.label}: {row.note}" for row in rows if row.note and not row.error]
    return "\n".join(out)


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git_commit() -> str | None:
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return proc.stdout.strip() or None


def machine_info() -> dict[str, Any]:
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "python_version": platform.python_version(),
        "python": sys.version,
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(affinity(0)) if affinity else None,
        "event_loop_policy": type(asyncio.get_event_loop_policy()).__name__,
    }


# --------------------------------------------------------------------------- entry point


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer repetitions and no 100k subprocess runs (smoke test)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        metavar="PATH",
        help=f"where to write all figures (default: {DEFAULT_JSON.name} here)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit with 1 if a target is missed or a workload fails"
    )
    parser.add_argument(
        "--only", metavar="LIST", help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument("--reps", type=int, help="override the number of timed repetitions")
    # internal: one scaling run in a fresh interpreter (see measure_scale)
    parser.add_argument("--worker", choices=sorted(SCALABLE), help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=sorted(IMPLS), help=argparse.SUPPRESS)
    parser.add_argument("--stages", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--small-reps", type=int, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def configure(args: argparse.Namespace) -> Config:
    cfg = QUICK if args.quick else FULL
    sections = cfg.sections
    if args.only:
        wanted = {s.strip().upper() for s in args.only.split(",") if s.strip()}
        if unknown := wanted - set(SECTIONS):
            raise SystemExit(f"unknown section(s): {', '.join(sorted(unknown))}")
        sections = tuple(s for s in SECTIONS if s in wanted)
    return Config(
        args.reps or cfg.reps,
        cfg.import_reps,
        cfg.scale_stages,
        cfg.scale_reps,
        cfg.scale_small_reps,
        sections,
        args.reps or cfg.durable_reps,
        cfg.service_runs,
        cfg.service_concurrency,
        cfg.cel_evaluations,
    )


def stageflow_version() -> tuple[str | None, str | None]:
    """``(version, None)`` when stageflow imports, else ``(None, error)``."""
    try:
        stageflow = importlib.import_module("stageflow")
        for name in ("Engine", "Pipeline"):  # the API under test must exist
            getattr(stageflow, name)
    except Exception as exc:
        return None, repr(exc)
    return str(getattr(stageflow, "__version__", "unknown")), None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(1, str(REPO_ROOT))  # the working tree's stageflow, installed or not

    if args.worker:
        res = asyncio.run(
            scale_worker(args.worker, IMPLS[args.impl], args.stages, args.reps, args.small_reps)
        )
        print(json.dumps(res))
        return 0

    cfg = configure(args)
    version, sf_error = stageflow_version()
    impls: list[Impl] = [BARE] if sf_error else [BARE, STAGEFLOW]
    if sf_error:
        log(f"stageflow unavailable ({sf_error}): running the bare scheduler only")
    log(f"stageflow benchmarks ({'quick' if args.quick else 'full'}, {cfg.reps} reps)")
    started = time.perf_counter()

    rows = asyncio.run(measure_workloads(cfg, impls))
    if {"W3-CEL", "W3-CEL-DEP"} & set(cfg.sections) and not sf_error:
        rows.append(measure_cel_eval(cfg))
    rows += measure_durable(cfg, with_stageflow=not sf_error)
    if "SERVICE" in cfg.sections and not sf_error:
        rows += measure_service(cfg)
    if "RAY" in cfg.sections and not sf_error:
        rows += measure_ray(cfg)
    if "WORKERS" in cfg.sections and not sf_error:
        rows += measure_workers(cfg)
    if "BUILD" in cfg.sections:
        rows += measure_build(cfg, impls)
    if "LOAD" in cfg.sections:
        rows.append(measure_load(cfg, with_stageflow=not sf_error))
    if "SCALE" in cfg.sections:
        rows += measure_scale(cfg, impls)
    if "IMPORT" in cfg.sections and not sf_error:
        rows.append(measure_import(cfg))
    elapsed = time.perf_counter() - started

    print(render_table(rows))
    print(
        f"\nbest-of figures; ratio = stageflow / bare (1.00x = no overhead over the floor). "
        f"{elapsed:.0f}s total."
    )
    if sf_error:
        print(f"stageflow unavailable: {sf_error}")

    report = {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "stageflow_version": version,
        "stageflow_error": sf_error,
        "git_commit": git_commit(),
        "machine": machine_info(),
        "config": {
            "quick": args.quick,
            "reps": cfg.reps,
            "import_reps": cfg.import_reps,
            "scale_stages": cfg.scale_stages,
            "scale_reps": cfg.scale_reps,
            "scale_small_reps": cfg.scale_small_reps,
            "sections": list(cfg.sections),
            "durable_reps": cfg.durable_reps,
            "service_runs": cfg.service_runs,
            "service_concurrency": cfg.service_concurrency,
            "cel_evaluations": cfg.cel_evaluations,
            "statistic": "best-of (min); medians in details",
        },
        "elapsed_s": elapsed,
        "rows": [row.to_json() for row in rows],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    log(f"wrote {args.json}")

    failed = [row for row in rows if row.status in ("MISS", "ERR")]
    return 1 if args.check and (failed or sf_error) else 0


if __name__ == "__main__":
    sys.exit(main())
