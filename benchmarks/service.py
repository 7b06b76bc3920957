"""SERVICE: runs started through ``stageflow serve`` (HTTP) against the same runs in-process.

A real ``stageflow serve`` subprocess on 127.0.0.1, a free port and a fresh SQLite file,
with the catalog below (``chain10``: ten no-op async stages in a chain). ``runs`` runs are
started with ``POST /runs``, at most ``concurrency`` in flight; each one's start ->
completed is timed from sending its POST to reading ``run.completed`` on its SSE stream
(``GET /runs/{id}/events``: the event as it is stored, no polling interval in the figure).
Then the server stops and the store is checked: every run completed, ten stage records,
one ``run.started``, one ``stage.started`` per stage (none lost, none driven twice).
The in-process side runs the same graph on ``Engine(store=SQLAlchemyStore(file),
event_log=store)``, the same number of runs, as many at a time.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from stageflow import Catalog, Pipeline, StageContext

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
STAGES = 10
PIPELINE = "chain10"
STARTUP = 30.0


async def _noop(ctx: StageContext) -> dict[str, int]:
    return {"v": 1}


def chain10() -> Pipeline:
    pipeline = Pipeline(PIPELINE)
    for i in range(STAGES):
        pipeline = pipeline.with_stage(f"s{i}", _noop, dependencies=(f"s{i - 1}",) if i else ())
    return pipeline


catalog = Catalog().add(PIPELINE, chain10(), description="Ten no-op stages in a chain")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_server(folder: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    from stageflow.adapters.http import new_token

    secret, token = new_token("bench", ["run", "read"])
    (folder / "tokens").write_text(f"{token.line}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    port = _free_port()
    log = folder / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "stageflow.cli", "serve",
             "--store", f"sqlite:///{folder / 'api.db'}",
             "--pipelines", "benchmarks.service:catalog",
             "--port", str(port), "--tokens-file", str(folder / "tokens"),
             "--log-level", "warning"],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return process, f"http://127.0.0.1:{port}", secret


def _wait_healthy(process: subprocess.Popen[bytes], url: str, folder: Path) -> None:
    import httpx

    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"stageflow serve did not start:\n{(folder / 'server.log').read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _drive_api(url: str, secret: str, runs: int, concurrency: int) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=2 * concurrency + 10)
    headers = {"Authorization": f"Bearer {secret}"}
    gate = asyncio.Semaphore(concurrency)
    post: list[float] = []
    total: list[float] = []
    ids: list[str] = []

    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=60, limits=limits
    ) as client:

        async def one(i: int) -> None:
            async with gate:
                begin = time.perf_counter()
                response = await client.post("/runs", json={"pipeline": PIPELINE, "data": {}})
                post.append(time.perf_counter() - begin)
                if response.status_code != 201:
                    raise RuntimeError(f"POST /runs -> {response.status_code}: {response.text}")
                run_id = str(response.json()["run_id"])
                ids.append(run_id)
                async with client.stream("GET", f"/runs/{run_id}/events") as stream:
                    async for line in stream.aiter_lines():
                        if line.startswith("event:") and line[6:].strip() == "run.completed":
                            total.append(time.perf_counter() - begin)
                            return
                        if line.startswith("event:") and line[6:].strip() == "run.failed":
                            raise RuntimeError(f"run {run_id} failed")
                raise RuntimeError(f"stream of {run_id} ended before run.completed")

        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(runs)))
        wall = time.perf_counter() - began
    return {"wall": wall, "post": post, "total": total, "ids": ids}


async def _drive_inprocess(path: Path, runs: int, concurrency: int) -> dict[str, Any]:
    from stageflow import Engine
    from stageflow.adapters.sqlalchemy import SQLAlchemyStore

    store = SQLAlchemyStore(f"sqlite:///{path}")
    await store.list_runs()
    engine = Engine(store=store, event_log=store)
    graph = chain10().build()
    gate = asyncio.Semaphore(concurrency)
    total: list[float] = []
    ids = [f"inproc-{uuid.uuid4().hex}" for _ in range(runs)]

    async def one(run_id: str) -> None:
        async with gate:
            begin = time.perf_counter()
            await engine.run(graph, run_id=run_id)
            total.append(time.perf_counter() - begin)

    began = time.perf_counter()
    await asyncio.gather(*(one(run_id) for run_id in ids))
    wall = time.perf_counter() - began
    problems = await _check_store(store, ids)
    close = getattr(store, "close", None)
    if close is not None:
        await close()
    return {"wall": wall, "total": total, "ids": ids, "problems": problems}


async def _check_store(store: Any, ids: list[str]) -> list[str]:
    """What is wrong with the stored runs: not completed, stages missing, driven twice."""
    problems: list[str] = []
    stored = {run.run_id: run for run in await store.list_runs(limit=len(ids) + 10)}
    for run_id in ids:
        run = stored.get(run_id) or await store.get_run(run_id)
        status = str(getattr(run.status, "value", run.status))
        if status != "completed":
            problems.append(f"{run_id}: {status}")
        records = await store.stage_records(run_id)
        if len(records) != STAGES:
            problems.append(f"{run_id}: {len(records)} stage records")
        kinds = collections.Counter(event.type for event in await store.read_events(run_id))
        if kinds["run.started"] != 1 or kinds["stage.started"] != STAGES:
            problems.append(f"{run_id}: {kinds['run.started']} run.started, "
                            f"{kinds['stage.started']} stage.started")  # fmt: skip
        if kinds["run.completed"] != 1:
            problems.append(f"{run_id}: {kinds['run.completed']} run.completed")
    if len(stored) > len(ids):
        problems.append(f"{len(stored)} runs stored, {len(ids)} started")
    return problems


async def _check_api_store(path: Path, ids: list[str]) -> list[str]:
    from stageflow.adapters.sqlalchemy import SQLAlchemyStore

    store = SQLAlchemyStore(f"sqlite:///{path}")
    try:
        return await _check_store(store, ids)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            await close()


def measure(runs: int, concurrency: int) -> dict[str, Any]:
    """Both sides; figures in seconds, and the problems found in each store."""
    with tempfile.TemporaryDirectory(prefix="stageflow-bench-svc-") as tmp:
        folder = Path(tmp)
        process, url, secret = _start_server(folder)
        try:
            _wait_healthy(process, url, folder)
            api = asyncio.run(_drive_api(url, secret, runs, concurrency))
        finally:
            _stop(process)
        api["problems"] = asyncio.run(_check_api_store(folder / "api.db", api["ids"]))
        if len(set(api["ids"])) != runs:
            api["problems"].append(f"{len(set(api['ids']))} distinct run ids for {runs} runs")
        local = asyncio.run(_drive_inprocess(folder / "inproc.db", runs, concurrency))
    return {"api": api, "inprocess": local, "runs": runs, "concurrency": concurrency}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    api, local, runs = result["api"], result["inprocess"], result["runs"]
    return {
        "runs": runs,
        "concurrency": result["concurrency"],
        "api_runs_per_s": runs / api["wall"],
        "inprocess_runs_per_s": runs / local["wall"],
        "post_p50_ms": 1e3 * percentile(api["post"], 0.5),
        "post_p99_ms": 1e3 * percentile(api["post"], 0.99),
        "api_total_p50_ms": 1e3 * percentile(api["total"], 0.5),
        "api_total_p99_ms": 1e3 * percentile(api["total"], 0.99),
        "inprocess_total_p50_ms": 1e3 * percentile(local["total"], 0.5),
        "inprocess_total_p99_ms": 1e3 * percentile(local["total"], 0.99),
        "api_total_mean_ms": 1e3 * statistics.fmean(api["total"]),
        "api_problems": api["problems"][:20],
        "inprocess_problems": local["problems"][:20],
    }


if __name__ == "__main__":
    n, c = (int(a) for a in [*sys.argv[1:], "100", "20"][:2])
    print(json.dumps(summary(measure(n, c)), indent=2))
