"""A driver waiting for input, SIGKILLed, is resumed to completion with the stored input.

A ``tests.crash._input_child`` drives a run with ``wait=True``; this process gives the
input (``Engine.send`` with the graph) once the child says its input waits, and the child
is SIGKILLed either while it still waits, or once the value reached it and the stage after
the input started (it blocks there, having logged its call). Then this process resumes the
run, taking the dead driver's lease over or waiting out its expiry, and the run completes
with the value that was stored, the stage before the input having run once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from stageflow import Engine, RunLeasedError, RunStatus, StageStatus
from stageflow._codec import loads
from stageflow.adapters.sqlalchemy import SQLAlchemyStore

from ._input_child import build_graph, calls_of
from .conftest import Backend, Child

pytestmark = pytest.mark.slow  # real processes: a second or two each

MODULE = "tests.crash._input_child"
RUN_ID = "input-1"
TTL = 1.0  # the child's lease: what a resume that does not take over waits out
VALUE = {"approved": True, "note": "ship it"}


async def give(backend: Backend, graph: Any) -> None:
    store = SQLAlchemyStore(backend.url)
    try:
        await Engine(store=store).send(RUN_ID, "approval", VALUE, graph=graph)
    finally:
        await store.aclose()


async def resume(backend: Backend, graph: Any, take_over: bool) -> tuple[Any, int]:
    """Resume the run, taking the lease over or waiting out its expiry; the refusals."""
    store = SQLAlchemyStore(backend.url)
    try:
        engine = Engine(store=store)
        for refused in range(5):
            try:
                return await engine.resume(RUN_ID, graph, take_over=take_over), refused
            except RunLeasedError as error:  # the dead driver's lease has not expired yet
                await asyncio.sleep(max(error.expires_at - time.time(), 0.0) + 0.02)
        raise AssertionError(f"{RUN_ID} still leased after 5 tries")
    finally:
        await store.aclose()


async def inputs(backend: Backend) -> Any:
    store = SQLAlchemyStore(backend.url)
    try:
        return await store.load_inputs(RUN_ID)
    finally:
        await store.aclose()


@pytest.mark.parametrize("take_over", [True, False], ids=["take-over", "lease-expired"])
@pytest.mark.parametrize("killed", ["waiting", "after-the-input"])
def test_a_driver_killed_around_its_input_is_resumed_with_the_stored_value(
    backend: Backend,
    log_dir: Path,
    tmp_path: Path,
    children: list[Child],
    take_over: bool,
    killed: str,
):
    where = f"{backend.name}, killed {killed}, {'take over' if take_over else 'lease expired'}"
    graph = build_graph(log_dir)  # this process's: its publish does not block
    args = [backend.url, "run", "--run-id", RUN_ID, "--log-dir", str(log_dir), "--block"]
    child = Child.start([*args, "--ttl", str(TTL)], tmp_path / "driver.err", module=MODULE)
    children.append(child)
    child.expect("waiting approval")  # the input's row is marked waiting by now
    if killed == "waiting":
        child.signal(signal.SIGKILL)
        child.wait(10)
        asyncio.run(backend.settle())
        asyncio.run(give(backend, graph))  # nobody drives the run: the store keeps it
    else:
        asyncio.run(give(backend, graph))
        child.expect("received approval")  # found by polling the store
        child.expect("blocked publish")  # publish started, and logged its call
        child.signal(signal.SIGKILL)
        child.wait(10)
    after = asyncio.run(backend.snapshot(RUN_ID))
    stored = asyncio.run(inputs(backend))["approval"]

    assert after.run is not None
    assert after.run.status is RunStatus.RUNNING, f"{where}: {after.run}"
    assert after.lease_owner is not None
    assert after.lease_owner.split(":")[-2] == str(child.pid), f"{where}: {after.lease_owner}"
    expected_records = {"draft"} if killed == "waiting" else {"draft", "approval"}
    assert set(after.records) == expected_records, f"{where}: {sorted(after.records)}"
    assert stored.value is not None
    assert loads(stored.value) == VALUE, f"{where}: {stored}"
    assert stored.waiting_since is not None, f"{where}: {stored}"

    result, refused = asyncio.run(resume(backend, graph, take_over))
    final = asyncio.run(backend.snapshot(RUN_ID))
    again = asyncio.run(inputs(backend))["approval"]

    assert result.status is RunStatus.COMPLETED, f"{where}: {result.error}"
    assert result["approval"].data == VALUE, where
    assert result["publish"].data == VALUE, where
    assert (refused == 0) == take_over, f"{where}: refused {refused} times"
    assert final.run is not None
    assert final.run.status is RunStatus.COMPLETED, where
    assert final.lease_owner is None, f"{where}: lease held by {final.lease_owner}"
    assert final.records["publish"].status is StageStatus.COMPLETED
    assert loads(final.records["publish"].output) == VALUE, where
    for name, record in after.records.items():
        assert final.records[name] == record, f"{where}: {name} was rewritten"
    assert again == stored, f"{where}: the stored input changed: {stored} -> {again}"
    calls = calls_of(log_dir, RUN_ID)
    assert [c for c in calls if c[0] == "draft"] == [("draft", child.pid)], f"{where}: {calls}"
    ran_publish = [pid for stage, pid in calls if stage == "publish"]
    # Killed while it waited, the child never ran publish; killed in it, publish runs
    # again (a stage in flight at a kill runs at least once, as always).
    expected = [os.getpid()] if killed == "waiting" else [child.pid, os.getpid()]
    assert ran_publish == expected, f"{where}: {calls}"
