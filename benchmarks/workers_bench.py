"""WORKERS: queued runs (``Engine.submit``) driven by ``stageflow worker`` processes.

On a throwaway PostgreSQL server of the tests' harness (``tests/_postgres.py``; a fresh
database per measurement), with real ``stageflow worker`` subprocesses started from the repo
root on the catalog below (``one``: a single stage that logs when it starts, then sleeps
``data["sleep"]`` seconds):

* **claim-to-start latency.** One idle worker (``--poll`` :data:`POLL`, concurrency 1);
  runs are submitted one at a time from this process, each once the previous completed
  (the worker is idle again) and a random pause of up to two poll intervals passed.
  Latency is ``submit()`` returning -> the stage starting in the worker (both
  ``time.time()`` on this machine); p50 and p99 over the runs. The poll interval bounds it
  from above when the queue is idle: the figure is what a user with that ``--poll`` waits.
* **throughput.** :data:`RUNS` runs of a 20 ms stage, submitted at once to started, idle
  workers; wall time from the first ``submit`` to the store saying all completed (polled
  every 10 ms). With 1 worker, then 4 (concurrency 4 each); runs/s and the ratio 4 v 1
  (16 slots against 4: on a 2-core machine the processes share the cores, so less than 4x).

Every measurement checks its store afterwards (each run completed, its stage called once);
what is wrong goes into ``problems``. Without the PostgreSQL binaries the benchmark says so
and exits 0 with no figures (``measure()`` returns ``{"skipped": reason}``).

Run alone: ``python benchmarks/workers_bench.py [RUNS] [LATENCY_RUNS]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stageflow import Catalog, Pipeline, StageContext

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
TARGET = "benchmarks.workers_bench:catalog"
PIPELINE = "one"
QUEUE = "bench"
CALLS_ENV = "WORKERS_BENCH_CALLS"  # not STAGEFLOW_*: those configure the CLI
RUNS = 200
LATENCY_RUNS = 50
STAGE_SECONDS = 0.02
POLL = 0.01  # the workers' --poll: what bounds the claim latency of an idle queue
CONCURRENCY = 4
STARTUP = 60.0  # seconds for a worker to say worker.started
DEADLINE = 120.0  # seconds for one measurement's runs to complete


def _append(line: str) -> None:
    """One ``write`` on an ``O_APPEND`` descriptor: lines of several processes never mix."""
    path = os.environ.get(CALLS_ENV)
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


async def _one(ctx: StageContext) -> dict[str, int]:
    # Logged first: the latency figure is "submitted -> started", not "-> done".
    _append(json.dumps({"run_id": ctx.run_id, "start": time.time(), "pid": os.getpid()}) + "\n")
    await asyncio.sleep(float(ctx.data.get("sleep", STAGE_SECONDS)))
    return {"v": 1}


catalog = Catalog().add(PIPELINE, Pipeline(PIPELINE).with_stage("s", _one), description="1 stage")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def read_calls(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# --------------------------------------------------------------------------- workers


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path

    def started(self) -> bool:
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and '"worker.started"' in line:
                return True
        return False

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


def _stageflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "stageflow.cli", *args]


def _env(calls: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["TTY_COMPATIBLE"] = "0"
    env[CALLS_ENV] = str(calls)
    return env


def start_workers(
    url: str, count: int, concurrency: int, folder: Path, calls: Path
) -> list[Worker]:
    """``count`` workers on :data:`QUEUE`, returned once each said ``worker.started``."""
    workers = []
    for i in range(count):
        log = folder / f"worker-{uuid.uuid4().hex[:8]}-{i}.err"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                _stageflow("worker", "--store", url, "--pipelines", TARGET, "--queue", QUEUE,
                           "--concurrency", str(concurrency), "--poll", str(POLL), "--log-json"),
                cwd=REPO_ROOT, env=_env(calls), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
        workers.append(Worker(process, log))
    deadline = time.monotonic() + STARTUP
    try:
        while not all(w.started() for w in workers):
            for w in workers:
                if w.process.poll() is not None:
                    raise RuntimeError(f"a worker exited {w.process.returncode}: {w.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start in {STARTUP}s: {workers[0].tail()}")
            time.sleep(0.02)
    except BaseException:
        stop_workers(workers)
        raise
    return workers


def stop_workers(workers: list[Worker]) -> None:
    """SIGTERM each worker (it stops claiming and exits 0); SIGKILL any that hangs."""
    for w in workers:
        if w.process.poll() is None:
            w.process.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.process.wait(45)
        except subprocess.TimeoutExpired:
            w.process.kill()
            w.process.wait()


# --------------------------------------------------------------------------- measurements


async def _check(store: Any, ids: list[str], calls: list[dict[str, Any]]) -> list[str]:
    """What is wrong: a run not completed, a stage called other than once."""
    from stageflow import RunStatus

    problems = []
    for run in await store.list_runs():
        if run.run_id in ids and run.status is not RunStatus.COMPLETED:
            problems.append(f"{run.run_id}: {run.status.value}")
    counts: dict[str, int] = {}
    for call in calls:
        counts[call["run_id"]] = counts.get(call["run_id"], 0) + 1
    problems += [f"{i}: called {counts.get(i, 0)} times" for i in ids if counts.get(i) != 1]
    return problems


async def _latency(url: str, runs: int, folder: Path) -> dict[str, Any]:
    from stageflow import Engine, RunStatus
    from stageflow.adapters.sqlalchemy import SQLAlchemyStore

    calls = folder / "latency-calls.jsonl"
    store = SQLAlchemyStore(url)
    await store.list_runs(limit=1)  # the schema exists before the worker polls it
    workers = start_workers(url, 1, 1, folder, calls)
    try:
        engine = Engine(store=store)
        graph = catalog[PIPELINE].graph
        latencies, submits, ids = [], [], []
        jitter = random.Random(0)
        for i in range(runs):
            # Submitting right after the previous run completed would lock the submissions
            # to the worker's poll cycle (which restarted when it claimed): a random pause
            # spreads them over it, so the percentiles are those of an arbitrary moment.
            await asyncio.sleep(jitter.uniform(0, 2 * POLL))
            begin = time.time()
            run_id = await engine.submit(graph, {"sleep": 0}, queue=QUEUE, run_id=f"lat-{i}")
            returned = time.time()
            submits.append(returned - begin)
            ids.append(run_id)
            deadline = time.monotonic() + DEADLINE
            while (len(seen := read_calls(calls)) <= i) or (
                (await store.get_run(run_id)).status is not RunStatus.COMPLETED
            ):  # the stage started, then the run completed: the worker is idle again
                if time.monotonic() > deadline:
                    raise RuntimeError(f"run {run_id} did not complete: {workers[0].tail()}")
                await asyncio.sleep(0.001)
            start = next(c["start"] for c in seen if c["run_id"] == run_id)
            latencies.append(start - returned)
        problems = await _check(store, ids, read_calls(calls))
    finally:
        stop_workers(workers)
        await store.aclose()
    return {"latency": latencies, "submit": submits, "problems": problems}


async def _throughput(url: str, runs: int, count: int, folder: Path) -> dict[str, Any]:
    from stageflow import Engine, RunStatus
    from stageflow.adapters.sqlalchemy import SQLAlchemyStore

    calls = folder / f"rate-{count}-calls.jsonl"
    store = SQLAlchemyStore(url)
    await store.list_runs(limit=1)
    workers = start_workers(url, count, CONCURRENCY, folder, calls)
    try:
        engine = Engine(store=store)
        graph = catalog[PIPELINE].graph
        data = {"sleep": STAGE_SECONDS}
        began = time.perf_counter()
        ids = [
            await engine.submit(graph, data, queue=QUEUE, run_id=f"rate{count}-{i}")
            for i in range(runs)
        ]
        submitted = time.perf_counter() - began
        deadline = time.monotonic() + DEADLINE
        while len(await store.list_runs(status=RunStatus.COMPLETED)) < runs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{runs} runs did not complete: {workers[0].tail()}")
            await asyncio.sleep(0.01)
        wall = time.perf_counter() - began
        problems = await _check(store, ids, read_calls(calls))
    finally:
        stop_workers(workers)
        await store.aclose()
    return {"wall": wall, "submit_all": submitted, "problems": problems}


def measure(runs: int = RUNS, latency_runs: int = LATENCY_RUNS) -> dict[str, Any]:
    """All figures (seconds), or ``{"skipped": why}`` where PostgreSQL cannot run."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(1, str(REPO_ROOT))  # tests._postgres, and the working tree's stageflow
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        return {"skipped": "asyncpg is not installed"}
    try:
        from tests._postgres import PostgresCluster, PostgresUnavailable
    except ImportError as exc:
        return {"skipped": f"the PostgreSQL harness tests/_postgres.py cannot be imported: {exc}"}
    try:
        cluster = PostgresCluster.start()
    except PostgresUnavailable as exc:
        return {"skipped": str(exc)}
    try:
        with tempfile.TemporaryDirectory(prefix="stageflow-bench-workers-") as tmp:
            folder = Path(tmp)
            result: dict[str, Any] = {"runs": runs, "latency_runs": latency_runs}
            database = cluster.create_database("bench_latency")
            result["latency"] = asyncio.run(_latency(database.url, latency_runs, folder))
            for count in (1, 4):
                database = cluster.create_database(f"bench_rate_{count}")
                result[f"rate_{count}"] = asyncio.run(
                    _throughput(database.url, runs, count, folder)
                )
            return result
    finally:
        cluster.stop()


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The figures a table shows (ms, runs/s), or ``{"skipped": why}``."""
    if "skipped" in result:
        return {"skipped": result["skipped"]}
    latency, one, four = result["latency"], result["rate_1"], result["rate_4"]
    runs = result["runs"]
    rate_1, rate_4 = runs / one["wall"], runs / four["wall"]
    return {
        "runs": runs,
        "latency_runs": result["latency_runs"],
        "poll_s": POLL,
        "stage_s": STAGE_SECONDS,
        "concurrency": CONCURRENCY,
        "latency_p50_ms": 1e3 * percentile(latency["latency"], 0.5),
        "latency_p99_ms": 1e3 * percentile(latency["latency"], 0.99),
        "latency_mean_ms": 1e3 * statistics.fmean(latency["latency"]),
        "submit_p50_ms": 1e3 * percentile(latency["submit"], 0.5),
        "rate_1_worker_runs_per_s": rate_1,
        "rate_4_workers_runs_per_s": rate_4,
        "ratio_4v1": rate_4 / rate_1,
        "problems": (latency["problems"] + one["problems"] + four["problems"])[:20],
    }


def render(figures: dict[str, Any]) -> str:
    if "skipped" in figures:
        return f"WORKERS skipped: {figures['skipped']}"
    n, s = figures["runs"], figures["stage_s"]
    rows = [
        (f"claim-to-start p50, 1 idle worker, --poll {figures['poll_s']:g}",
         f"{figures['latency_p50_ms']:.1f}", "ms"),
        (f"claim-to-start p99 ({figures['latency_runs']} runs)",
         f"{figures['latency_p99_ms']:.1f}", "ms"),
        (f"{n} runs x 1 stage of {s * 1e3:.0f} ms, 1 worker x{figures['concurrency']}",
         f"{figures['rate_1_worker_runs_per_s']:.1f}", "runs/s"),
        (f"{n} runs x 1 stage of {s * 1e3:.0f} ms, 4 workers x{figures['concurrency']}",
         f"{figures['rate_4_workers_runs_per_s']:.1f}", "runs/s"),
        ("throughput ratio 4 workers / 1", f"{figures['ratio_4v1']:.2f}", "x"),
    ]  # fmt: skip
    width = max(len(label) for label, _, _ in rows)
    lines = [f"{label.ljust(width)}  {value:>8}  {unit}" for label, value, unit in rows]
    if figures["problems"]:
        lines.append(f"PROBLEMS: {figures['problems']}")
    return "\n".join(lines)


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    print(render(summary(measure(*args))))
