"""A durable run whose stages run on Ray, its driver SIGKILLed mid-run, resumes: the
stages it completed are restored from the store (their remote calls not made again), the
rest run on the same cluster, and the outputs are an uninterrupted run's.

The driver is a child process (``tests.ray._crash_child``) connected to this session's
cluster; the resume is driven here, once the killed driver's lease has expired."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stageflow import Engine, RunStatus, StageStatus
from stageflow._codec import loads
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.errors import RunLeasedError
from stageflow.ports import StageRecord

from ._crash_child import STAGES, chain, runner

ROOT = Path(__file__).resolve().parents[2]
TTL = 1.0  # the killed driver's lease: the resume waits this long at most
KILL_AT = "s3"  # SIGKILL the driver as soon as this stage's call starts: s0..s2 are stored
NAMES = [f"s{i}" for i in range(STAGES)]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/runs.db"
    return str(request.getfixturevalue("postgres_url"))


def calls_of(path: Path, run_id: str) -> list[tuple[str, int]]:
    """``(stage, attempt)`` of every call the run's stages started, in order."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [(p[1], int(p[2])) for p in (line.split() for line in lines) if p[0] == run_id]


def wait_for(check: Any, what: str, child: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if child.poll() is not None:
            raise AssertionError(f"the driver ended ({child.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds}s")
        time.sleep(0.01)


async def records(url: str, run_id: str) -> dict[str, StageRecord]:
    store = SQLAlchemyStore(url)
    try:
        return await store.stage_records(run_id)
    finally:
        await store.aclose()


async def settle(url: str, seconds: float = 10.0) -> None:
    """On PostgreSQL: until the killed driver's connections are gone (a statement it sent
    may still commit until then)."""
    if not url.startswith("postgresql"):
        return
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        deadline = time.monotonic() + seconds
        query = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND pid <> pg_backend_pid()")  # fmt: skip
        while await conn.fetchval(query):
            assert time.monotonic() < deadline, "the killed driver's connections stayed"
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def resume(url: str, run_id: str) -> Any:
    """Resume the run here, on the same cluster, once the killed driver's lease expired."""
    store = SQLAlchemyStore(url)
    try:
        engine = Engine(store=store, runners={"ray": runner(None)}, lease_ttl=TTL)
        for _ in range(20):
            try:
                return await engine.resume(run_id, chain())
            except RunLeasedError as error:
                await asyncio.sleep(min(max(error.expires_at - time.time(), 0.0) + 0.05, TTL))
        raise AssertionError("the killed driver's lease never expired")
    finally:
        await store.aclose()


def test_a_killed_driver_s_run_resumes_restoring_its_completed_remote_stages(
    ray_cluster: Any, store_url: str, tmp_path: Path
) -> None:
    address = ray_cluster.get_runtime_context().gcs_address
    run_id = "ray-crash"
    calls = tmp_path / "calls"
    stderr = (tmp_path / "child.err").open("w")
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.ray._crash_child", address, store_url, run_id,
         str(calls), "--ttl", str(TTL), "--sleep", "0.3"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        started = lambda: any(stage == KILL_AT for stage, _ in calls_of(calls, run_id))  # noqa: E731
        wait_for(started, f"{KILL_AT} started", child, 60)
        child.send_signal(signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        stderr.close()
    asyncio.run(settle(store_url))
    before = asyncio.run(records(store_url, run_id))
    stored = [name for name in NAMES if name in before]
    assert stored == NAMES[: NAMES.index(KILL_AT)], (
        f"stored at the kill: {stored}\n{(tmp_path / 'child.err').read_text()[-3000:]}"
    )
    assert all(r.status is StageStatus.COMPLETED for r in before.values())
    calls_at_kill = Counter(stage for stage, _ in calls_of(calls, run_id))

    result = asyncio.run(resume(store_url, run_id))

    assert result.status is RunStatus.COMPLETED, result.error
    assert [result[name].data["v"] for name in NAMES] == list(range(1, STAGES + 1))
    after = asyncio.run(records(store_url, run_id))
    assert set(after) == set(NAMES)
    assert all(r.status is StageStatus.COMPLETED for r in after.values())
    ran = Counter(stage for stage, _ in calls_of(calls, run_id))
    for name in stored:  # restored: not called again, the output the killed driver stored
        assert ran[name] == 1, f"{name} was stored before the kill but called {ran[name]} times"
        assert after[name] == before[name]
        assert dict(result[name].data) == loads(before[name].output)
    in_flight = NAMES[len(stored)]  # its call started; its completion was never stored
    assert calls_at_kill[in_flight] == 1
    assert ran[in_flight] == 2  # called again by the resume
    for name in NAMES[len(stored) + 1 :]:
        assert ran[name] == 1, f"{name}: called {ran[name]} times"
    assert all(attempt == 1 for _, attempt in calls_of(calls, run_id))
