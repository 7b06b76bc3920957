"""``stageflow submit``, ``stageflow worker`` and ``stageflow workers`` in process (typer's
CliRunner) on a SQLite file: a submitted run is queued with its data checked; a worker
drives it and stops on SIGTERM; the workers listing; bad options are one line and exit 2.
(Real worker processes: tests/workers.)"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stageflow import RunStatus, WorkerRecord
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.cli import app

FLOWS = """
from stageflow import Catalog, Pipeline

async def hello(ctx):
    return {"greeting": "hello " + ctx.data.get("name", "you")}

catalog = Catalog({"hello": Pipeline("hello").with_stage("hello", hello)})
"""


@pytest.fixture
def setup(tmp_path: Path) -> tuple[str, str]:
    (tmp_path / "flows.py").write_text(FLOWS)
    return f"{tmp_path / 'flows.py'}:catalog", f"sqlite:///{tmp_path / 'runs.db'}"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def read(url: str, body):
    async def main():
        store = SQLAlchemyStore(url)
        try:
            return await body(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


def test_submit_queues_a_run_that_a_worker_drives_until_sigterm(setup):
    target, url = setup
    made = invoke("submit", "hello", "--pipelines", target, "--store", url, "--queue", "q",
                  "--priority", "3", "--data", '{"name": "owls"}', "--json")  # fmt: skip
    assert made.exit_code == 0, made.output
    run_id = json.loads(made.stdout)["run_id"]
    queued = read(url, lambda s: s.get_run(run_id))
    assert queued.status is RunStatus.QUEUED
    assert queued.labels["stageflow.queue"] == "q"

    timer = threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        ran = invoke("worker", "--pipelines", target, "--store", url, "--queue", "q",
                     "--poll", "0.05", "--grace", "1", "--log-json")  # fmt: skip
    finally:
        timer.cancel()
    assert ran.exit_code == 0, ran.output
    done = read(url, lambda s: s.get_run(run_id))
    assert done.status is RunStatus.COMPLETED
    assert read(url, lambda s: s.list_workers()) == [], "a stopped worker removes its record"


def test_submit_prints_the_id_and_refuses_bad_input_in_one_line(setup):
    target, url = setup
    plain = invoke("submit", "hello", "--pipelines", target, "--store", url)
    assert plain.exit_code == 0
    assert len(plain.stdout.strip()) == 26  # a ULID
    for args, said in [
        (["nope"], "no pipeline 'nope'"),
        (["hello", "--data", "[1]"], "JSON object"),
        (["hello", "--queue", "bad queue"], "queue"),
    ]:
        result = invoke("submit", *args, "--pipelines", target, "--store", url)
        assert result.exit_code == 2, result.output
        assert said in result.output


def test_workers_lists_live_workers_and_their_runs(setup):
    _, url = setup

    async def beat(store):
        now = __import__("time").time()
        await store.beat_worker(WorkerRecord("vm:1:ab", "vm", 1, ("q",), 4, now, now))
        await store.beat_worker(WorkerRecord("vm:2:cd", "vm", 2, ("q",), 2, 0.0, 0.0))

    read(url, beat)
    listed = json.loads(invoke("workers", "--store", url, "--json").stdout)
    assert [w["owner"] for w in listed] == ["vm:1:ab"], "one not heard from is not live"
    every = json.loads(invoke("workers", "--store", url, "--all", "--json").stdout)
    assert {w["owner"] for w in every} == {"vm:1:ab", "vm:2:cd"}
    table = invoke("workers", "--store", url)
    assert "vm:1:ab" in table.stdout
    assert "0/4" in table.stdout


def test_workers_of_an_empty_store_says_so(setup, tmp_path):
    _, url = setup
    missing = invoke("workers", "--store", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.exit_code == 2
    read(url, lambda s: s.list_workers())
    empty = invoke("workers", "--store", url)
    assert empty.exit_code == 0
    assert "no live workers" in empty.output


@pytest.mark.parametrize("limit", ["small", "small=0", "small=x", "bad queue=2"])
def test_worker_refuses_a_bad_limit_before_claiming(setup, limit):
    target, url = setup
    result = invoke("worker", "--pipelines", target, "--store", url, "--limit", limit)
    assert result.exit_code == 2, result.output
    assert "limit" in result.output
