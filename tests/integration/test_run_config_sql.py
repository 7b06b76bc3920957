"""SQLAlchemyStore keeps a run's governing configuration: the column, the upgrade from
version 3, and a resume that restores the budget from it.

That the text round-trips exactly is in the contract (``check_config_round_trip``).
"""

from __future__ import annotations

import asyncio
import json

from stageflow import Budget, BudgetExceededError, Engine, Pipeline, RunRecord, RunStatus
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.adapters.sqlalchemy._schema import SCHEMA_VERSION

from ._sql import VERSION, raw
from .test_run_labels_sql import columns

DROP_CONFIG = "ALTER TABLE stageflow_runs DROP COLUMN config"


def record(run_id: str, config: str = "") -> RunRecord:
    return RunRecord(run_id, "p", "fp", "{}", RunStatus.RUNNING, 0.0, 0.0, config=config)


def test_a_version_3_database_gains_the_config_column_when_opened(backend):
    url, where = backend

    async def make_old() -> None:
        store = SQLAlchemyStore(url)
        await store.create_run(record("old"))
        await store.aclose()
        await raw(
            where, DROP_CONFIG, "UPDATE stageflow_meta SET value = '3' WHERE key = 'schema_version'"
        )

    async def reopen() -> tuple[RunRecord, RunRecord]:
        store = SQLAlchemyStore(url)
        try:
            await store.create_run(record("new", '{"version":1}'))
            return await store.get_run("old"), await store.get_run("new")
        finally:
            await store.aclose()

    asyncio.run(make_old())
    assert "config" not in columns(where)
    old, new = asyncio.run(reopen())

    assert old.config == "", "a run of the older database has no stored configuration"
    assert new.config == '{"version":1}'
    assert asyncio.run(raw(where, VERSION)) == [(str(SCHEMA_VERSION),)]


def test_a_resume_from_another_store_object_restores_the_budget(backend):
    url, _ = backend
    calls: list[str] = []

    async def spend(ctx):
        calls.append(ctx.stage)
        ctx.usage.report(input_tokens=600)
        if ctx.stage == "b" and calls.count("b") == 1:
            raise ConnectionError("down")
        return {}

    graph = (
        Pipeline("p")
        .with_stage("a", spend, estimate=600)
        .with_stage("b", spend, dependencies=["a"], estimate=100)
        .build()
    )

    async def main():
        store = SQLAlchemyStore(url)
        try:
            await Engine(store=store, budget=Budget(max_tokens=1000)).run(graph, run_id="r1")
            config = json.loads((await store.get_run("r1")).config)
        finally:
            await store.aclose()
        again = SQLAlchemyStore(url)
        try:
            return config, await Engine(store=again).resume("r1", graph)
        finally:
            await again.aclose()

    config, resumed = asyncio.run(main())

    assert config["budget"]["max_tokens"] == 1000
    assert isinstance(resumed["b"].error, BudgetExceededError), "1200 spent > the stored 1000"
