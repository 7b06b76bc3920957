"""A fenced write racing a take-over on PostgreSQL: it lands before the take-over or not at
all, never after it (READ COMMITTED would let a plain EXISTS check read the old token)."""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]
import pytest

from stageflow import RunStatus, StageStatus
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.errors import LeaseLostError
from stageflow.ports import RunRecord, StageRecord

TAKE_OVER = """
UPDATE stageflow_runs SET lease_owner = 'next', lease_token = lease_token + 1
WHERE run_id = 'r1'"""


async def _race(url: str, dsn: str, write: str) -> tuple[bool, list[tuple[object, ...]]]:
    """Start a take-over, leave it uncommitted, race the old lease's write against it."""
    store = SQLAlchemyStore(url)
    await store.open()
    try:
        await store.create_run(RunRecord("r1", "p", "f", "{}", RunStatus.RUNNING, 1.0, 1.0))
        lease = await store.acquire_lease("r1", "old", 30.0)
        taker = await asyncpg.connect(dsn)
        try:
            async with taker.transaction():
                await taker.execute(TAKE_OVER)
                if write == "stage":
                    record = StageRecord("r1", "a", StageStatus.COMPLETED, "{}", 1, 0.0, 1.0)
                    pending = asyncio.ensure_future(store.record_stage(lease, record))
                else:
                    pending = asyncio.ensure_future(store.save_state(lease, "a", '{"n": 1}'))
                await asyncio.sleep(0.3)  # real time: the write's round trip, had it not waited
                waited = not pending.done()
            with pytest.raises(LeaseLostError):
                await pending
        finally:
            await taker.close()
        table = "stageflow_stages" if write == "stage" else "stageflow_states"
        conn = await asyncpg.connect(dsn)
        try:
            rows = [tuple(r) for r in await conn.fetch(f"SELECT stage FROM {table}")]
        finally:
            await conn.close()
        return waited, rows
    finally:
        await store.aclose()


@pytest.mark.parametrize("write", ["stage", "state"])
def test_a_write_of_the_old_lease_waits_for_the_take_over_then_writes_nothing(
    postgres_database, write: str
) -> None:
    waited, rows = asyncio.run(_race(postgres_database.url, postgres_database.dsn, write))

    assert waited  # it did not land beside an uncommitted take-over
    assert rows == []
