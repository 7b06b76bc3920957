"""SQLAlchemyStore keeps inputs on a real SQLite file and a real PostgreSQL server: the
contract, the table, the upgrade from version 4, and waits that share a commit.

Racing senders in separate processes are in test_input_store_race.py.
"""

from __future__ import annotations

import asyncio

import pytest

from stageflow import LeaseLostError, RunRecord, RunStatus, StoreError
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.adapters.sqlalchemy._schema import SCHEMA_VERSION
from stageflow.ports import InputRecord, InputStore
from stageflow.testing import INPUT_STORE_CHECKS, ManualClock

from ._sql import VERSION, raw

BOOL = '{"type":"boolean"}'


def run(run_id: str) -> RunRecord:
    return RunRecord(run_id, "p", "fp", "{}", RunStatus.RUNNING, 0.0, 0.0)


def tables(where: str) -> set[str]:
    if where.startswith("postgresql://"):
        rows = asyncio.run(raw(where, "SELECT tablename FROM pg_tables"))
    else:
        rows = asyncio.run(raw(where, "SELECT name FROM sqlite_master WHERE type = 'table'"))
    return {str(name) for (name,) in rows}


class TestContract:
    @pytest.mark.parametrize("check", INPUT_STORE_CHECKS, ids=lambda c: c.__name__)
    def test_it_keeps_the_input_store_contract(self, backend, check):
        url, _ = backend

        async def factory(clock: ManualClock) -> SQLAlchemyStore:
            return SQLAlchemyStore(url, clock=clock)

        asyncio.run(check(factory))

    def test_it_is_an_input_store(self, backend):
        url, _ = backend

        assert isinstance(SQLAlchemyStore(url), InputStore)


class TestTheTable:
    def test_an_input_is_one_row_of_stageflow_inputs_deleted_with_its_run(self, backend):
        url, where = backend
        count = "SELECT run_id, name, value FROM stageflow_inputs ORDER BY name"

        async def main():
            store = SQLAlchemyStore(url)
            try:
                await store.create_run(run("r1"))
                lease = await store.acquire_lease("r1", "me", 30)
                await store.declare_inputs(lease, [InputRecord("r1", "approve", BOOL)])
                await store.give_input("r1", "approve[k]", "true", 1.0)
                await store.release_lease(lease)
                before = await raw(where, count)
                await store.delete_run("r1")
                return before, await raw(where, count)
            finally:
                await store.aclose()

        before, after = asyncio.run(main())

        assert before == [("r1", "approve", None), ("r1", "approve[k]", "true")]
        assert after == [], "deleting a run must delete its input rows"

    def test_an_item_name_of_512_characters_is_kept(self, backend):
        url, _ = backend
        name = "approve[" + "k" * 503 + "]"

        async def main():
            store = SQLAlchemyStore(url)
            try:
                await store.create_run(run("r1"))
                lease = await store.acquire_lease("r1", "me", 30)
                await store.declare_inputs(lease, [InputRecord("r1", "approve", BOOL)])
                await store.give_input("r1", name, "true", 1.0)
                return await store.load_inputs("r1")
            finally:
                await store.aclose()

        assert len(name) == 512
        assert asyncio.run(main())[name].value == "true"

    def test_a_postgresql_error_of_an_input_becomes_a_store_error(self, postgres_url):
        async def main():
            store = SQLAlchemyStore(postgres_url)
            try:
                await store.create_run(run("r1"))
                lease = await store.acquire_lease("r1", "me", 30)
                await store.declare_inputs(lease, [InputRecord("r1", "approve", BOOL)])
                await store.give_input("r1", "approve", "nul \x00", 1.0)
            finally:
                await store.aclose()

        with pytest.raises(StoreError, match="0x00"):
            asyncio.run(main())


class TestSchemaUpgrade:
    def test_a_version_4_database_gains_the_inputs_table_when_opened(self, backend):
        url, where = backend

        async def make_old() -> None:  # the current code's database, taken back to version 4
            store = SQLAlchemyStore(url)
            await store.create_run(run("old"))
            await store.aclose()
            await raw(
                where,
                "DROP TABLE stageflow_inputs",
                "UPDATE stageflow_meta SET value = '4' WHERE key = 'schema_version'",
            )

        async def reopen():
            store = SQLAlchemyStore(url)
            try:
                lease = await store.acquire_lease("old", "me", 30)
                await store.declare_inputs(lease, [InputRecord("old", "approve", BOOL)])
                given = await store.give_input("old", "approve", "true", 1.0)
                return await store.get_run("old"), given
            finally:
                await store.aclose()

        asyncio.run(make_old())
        assert "stageflow_inputs" not in tables(where)
        assert asyncio.run(raw(where, VERSION)) == [("4",)]
        old, given = asyncio.run(reopen())

        assert old.run_id == "old", "the runs of the version 4 database must be kept"
        assert given == InputRecord("old", "approve", BOOL, value="true", given_at=1.0)
        assert "stageflow_inputs" in tables(where)
        assert SCHEMA_VERSION == 7
        assert asyncio.run(raw(where, VERSION)) == [("7",)]


class TestWaitsTogether:
    def test_waits_arriving_together_land_and_a_stale_lease_among_them_writes_nothing(
        self, backend
    ):
        # On SQLite, writes of one loop iteration share one commit (the group commit):
        # the waits of a map's items, and among them one of a driver taken over.
        url, _ = backend

        async def main():
            store = SQLAlchemyStore(url)
            try:
                for run_id in ("live", "taken"):
                    await store.create_run(run(run_id))
                live = await store.acquire_lease("live", "me", 30)
                stale = await store.acquire_lease("taken", "me", 30)
                await store.acquire_lease("taken", "other", 30, take_over=True)
                items = [
                    InputRecord("live", f"approve[{k}]", BOOL, None, None, 1.0) for k in range(40)
                ]
                outcomes = await asyncio.gather(
                    *(store.wait_input(live, item) for item in items[:20]),
                    store.wait_input(stale, InputRecord("taken", "approve[0]", BOOL)),
                    *(store.wait_input(live, item) for item in items[20:]),
                    return_exceptions=True,
                )
                return (
                    items,
                    outcomes,
                    await store.load_inputs("live"),
                    await store.load_inputs("taken"),
                )
            finally:
                await store.aclose()

        items, outcomes, live, taken = asyncio.run(main())

        assert outcomes[:20] + outcomes[21:] == items
        assert isinstance(outcomes[20], LeaseLostError)
        assert live == {item.name: item for item in items}
        assert taken == {}, "the stale driver's wait must write nothing"
