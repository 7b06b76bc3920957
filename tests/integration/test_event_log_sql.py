"""SQLAlchemyStore as an EventLog, on a real SQLite file and a real PostgreSQL server: events
round-trip, the first write of a (run_id, seq) wins, reads page by seq, deleting a run
deletes its events, a batch is one transaction however large, a version 5 database gains the
table, bad arguments are refused by name, and writers racing on one database all land.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3

import pytest

from stageflow import (
    ConfigurationError,
    Event,
    EventType,
    RunLeasedError,
    RunRecord,
    RunStatus,
    StoreError,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.adapters.sqlalchemy._schema import SCHEMA_VERSION
from stageflow.ports import EventLog

from ._sql import VERSION, raw

ROWS = "SELECT run_id, seq FROM stageflow_events ORDER BY run_id, seq"


def event(run_id: str, seq: int, **data: object) -> Event:
    return Event(EventType.STAGE_COMPLETED, run_id, "p", "s", seq, 1_700_000_000.0 + seq, 1, data)


def run(run_id: str, status: RunStatus = RunStatus.RUNNING, at: float = 0.0) -> RunRecord:
    return RunRecord(run_id, "p", "fp", "{}", status, at, at)


def tables(where: str) -> set[str]:
    if where.startswith("postgresql://"):
        rows = asyncio.run(raw(where, "SELECT tablename FROM pg_tables"))
    else:
        rows = asyncio.run(raw(where, "SELECT name FROM sqlite_master WHERE type = 'table'"))
    return {str(name) for (name,) in rows}


def using(url: str, body):
    """Run ``body(store)`` on a fresh store of ``url``, closed afterwards; its result."""

    async def main():
        store = SQLAlchemyStore(url)
        try:
            return await body(store)
        finally:
            await store.aclose()

    return asyncio.run(main())


class Unjsonable:
    def __repr__(self) -> str:
        return "<Unjsonable>"


# Everything an event may carry: run events (no stage, attempt 0), custom types, text beyond
# ASCII, floats that must come back to the last bit, nested data, and values JSON cannot hold.
VARIED = [
    Event(EventType.RUN_STARTED, "r1", "pipé", None, 1, 1_700_000_000.123456789),
    Event(
        EventType.STAGE_COMPLETED, "r1", "pipé", "fetch", 2, 1_700_000_000.5, 3,
        {"duration": 0.1 + 0.2, "tiny": 5e-324, "big": 1.7976931348623157e308, "neg": -0.0,
         "int": 2**62, "none": None, "flag": True},
    ),
    Event(
        "custom.progress", "r1", "pipé", "naïve-中文-🚀", 3, 1.0, 1,
        {"text": "zero \x00 quote \" backslash \\ tab \t é 中文 🚀", "emoji🚀": "key"},
    ),
    Event(
        EventType.ITEM_COMPLETED, "r1", "pipé", "approve[doc-17]", 4, 2.0, 1,
        {"nested": {"list": [1, [2, {"three": 3.5}]], "empty": {}, "also": []},
         "tuple": (1, "two"), "odd": Unjsonable(), "nan": math.nan, "inf": math.inf},
    ),
    Event(EventType.RUN_COMPLETED, "r1", "pipé", None, 5, 3.0, 0, {}),
]  # fmt: skip


class TestThePort:
    def test_it_is_an_event_log(self, backend):
        url, _ = backend

        assert isinstance(SQLAlchemyStore(url), EventLog)


class TestRoundTrip:
    def test_events_come_back_as_appended_with_data_as_json_holds_it(self, backend):
        url, _ = backend

        async def body(store):
            await store.append_events(VARIED)
            return await store.read_events("r1")

        read = using(url, body)

        assert read[0] == VARIED[0], "a run event (no stage, attempt 0, no data)"
        assert read[0].ts == 1_700_000_000.123456789
        assert read[1] == VARIED[1], "floats must come back exactly"
        assert math.copysign(1.0, read[1].data["neg"]) == -1.0
        assert read[2] == VARIED[2], "custom types and text beyond ASCII, NUL included"
        assert read[2].stage == "naïve-中文-🚀"
        assert read[3].stage == "approve[doc-17]"
        assert read[3].data["nested"] == {"list": [1, [2, {"three": 3.5}]], "empty": {}, "also": []}
        assert read[3].data["tuple"] == [1, "two"], "a tuple comes back as a list"
        assert read[3].data["odd"] == "<Unjsonable>", "what JSON cannot hold comes as its repr"
        assert read[4] == VARIED[4]
        assert [e.type for e in read] == [e.type for e in VARIED]

    def test_it_reads_back_exactly_what_the_memory_store_does(self, backend):
        # MemoryStore is the reference implementation of the port.
        url, _ = backend

        async def body(store):
            await store.append_events(VARIED)
            return await store.read_events("r1")

        async def reference():
            memory = MemoryStore()
            await memory.append_events(VARIED)
            return await memory.read_events("r1")

        read, expected = using(url, body), asyncio.run(reference())

        assert [e.to_dict() for e in read] == [e.to_dict() for e in expected]

    def test_a_run_with_no_events_has_none(self, backend):
        url, _ = backend

        async def body(store):
            await store.append_events([event("other", 1)])
            return await store.read_events("nobody"), await store.last_event_seq("nobody")

        assert using(url, body) == ([], 0)

    def test_events_are_kept_for_a_run_that_has_no_row(self, backend):
        # No foreign key: an event log may be written before (or without) the run's row.
        url, where = backend

        async def body(store):
            await store.append_events([event("ghost", 1), event("ghost", 2)])
            return await store.read_events("ghost")

        assert using(url, body) == [event("ghost", 1), event("ghost", 2)]
        assert asyncio.run(raw(where, "SELECT COUNT(*) FROM stageflow_runs")) == [(0,)]

    def test_an_empty_batch_writes_nothing(self, backend):
        url, where = backend

        async def body(store):
            await store.append_events([])
            await store.append_events(())
            return await store.last_event_seq("r1")

        assert using(url, body) == 0
        assert asyncio.run(raw(where, ROWS)) == []


class TestFirstWriteWins:
    def test_an_event_whose_seq_is_stored_is_ignored(self, backend):
        url, _ = backend

        async def body(store):
            await store.append_events([event("r1", 1, by="first")])
            await store.append_events([event("r1", 1, by="second"), event("r1", 2, by="second")])
            return await store.read_events("r1")

        assert using(url, body) == [event("r1", 1, by="first"), event("r1", 2, by="second")]

    def test_within_one_batch_the_first_of_a_seq_wins(self, backend):
        url, where = backend
        batch = [
            event("r1", 2, by="first"),
            event("r1", 1, by="first"),
            event("r1", 2, by="second"),
            event("r2", 1, by="first"),
            event("r1", 1, by="second"),
        ]

        async def body(store):
            await store.append_events(batch)
            return await store.read_events("r1"), await store.read_events("r2")

        r1, r2 = using(url, body)

        assert r1 == [event("r1", 1, by="first"), event("r1", 2, by="first")]
        assert r2 == [event("r2", 1, by="first")]
        assert asyncio.run(raw(where, ROWS)) == [("r1", 1), ("r1", 2), ("r2", 1)]

    def test_a_batch_written_twice_changes_nothing(self, backend):
        url, where = backend
        batch = [event("r1", seq, n=seq) for seq in range(1, 51)]

        async def body(store):
            await store.append_events(batch)
            await store.append_events(batch)
            return await store.read_events("r1")

        assert using(url, body) == batch
        assert len(asyncio.run(raw(where, ROWS))) == 50


class TestReading:
    def test_after_and_limit_page_through_a_run_in_seq_order(self, backend):
        url, _ = backend
        shuffled = [event("r1", seq) for seq in (7, 3, 10, 1, 9, 2, 8, 5, 4, 6)]

        async def body(store):
            await store.append_events(shuffled)
            await store.append_events([event("r2", seq) for seq in range(1, 20)])
            return {
                "all": await store.read_events("r1"),
                "after 3": await store.read_events("r1", after=3),
                "after 3, 4": await store.read_events("r1", after=3, limit=4),
                "limit 2": await store.read_events("r1", limit=2),
                "limit 0": await store.read_events("r1", limit=0),
                "after the last": await store.read_events("r1", after=10),
                "beyond": await store.read_events("r1", after=99, limit=5),
            }

        pages = {name: [e.seq for e in read] for name, read in using(url, body).items()}

        assert pages == {
            "all": list(range(1, 11)),
            "after 3": list(range(4, 11)),
            "after 3, 4": [4, 5, 6, 7],
            "limit 2": [1, 2],
            "limit 0": [],
            "after the last": [],
            "beyond": [],
        }

    def test_seqs_are_ordered_as_numbers(self, backend):
        url, _ = backend

        async def body(store):
            await store.append_events([event("r1", seq) for seq in (100, 9, 10, 2**40)])
            return [e.seq for e in await store.read_events("r1", after=9)]

        assert using(url, body) == [10, 100, 2**40]

    def test_the_last_seq_is_the_highest_stored_with_gaps(self, backend):
        url, _ = backend

        async def body(store):
            await store.append_events([event("r1", 5), event("r1", 1), event("r2", 9)])
            first = await store.last_event_seq("r1")
            await store.append_events([event("r1", 2)])  # a late write below the highest
            return first, await store.last_event_seq("r1"), await store.last_event_seq("r2")

        assert using(url, body) == (5, 5, 9)

    def test_a_read_on_another_store_sees_what_one_wrote(self, backend):
        url, _ = backend

        async def main():
            writer, reader = SQLAlchemyStore(url), SQLAlchemyStore(url)
            try:
                await writer.append_events([event("r1", 1), event("r1", 2)])
                return await reader.read_events("r1", after=1), await reader.last_event_seq("r1")
            finally:
                await writer.aclose()
                await reader.aclose()

        assert asyncio.run(main()) == ([event("r1", 2)], 2)


class TestDeletion:
    def test_deleting_a_run_deletes_its_events_and_no_others(self, backend):
        url, where = backend

        async def body(store):
            for run_id in ("gone", "kept"):
                await store.create_run(run(run_id))
            await store.append_events([event("gone", 1), event("kept", 1), event("gone", 2)])
            await store.delete_run("gone")
            return await store.read_events("gone"), await store.last_event_seq("gone")

        assert using(url, body) == ([], 0)
        assert asyncio.run(raw(where, ROWS)) == [("kept", 1)]

    def test_a_run_that_is_driven_is_not_deleted_nor_are_its_events(self, backend):
        url, where = backend

        async def body(store):
            await store.create_run(run("r1"))
            await store.acquire_lease("r1", "driver", 30)
            await store.append_events([event("r1", 1)])
            with pytest.raises(RunLeasedError):
                await store.delete_run("r1")

        using(url, body)
        assert asyncio.run(raw(where, ROWS)) == [("r1", 1)]

    def test_prune_deletes_the_events_of_the_runs_it_deletes(self, backend):
        url, where = backend

        async def body(store):
            await store.create_run(run("old", RunStatus.COMPLETED, at=10.0))
            await store.create_run(run("older", RunStatus.FAILED, at=5.0))
            await store.create_run(run("recent", RunStatus.COMPLETED, at=1_000.0))
            await store.create_run(run("running", RunStatus.RUNNING, at=10.0))
            await store.append_events(
                [event(r, s) for r in ("old", "older", "recent", "running") for s in (1, 2)]
            )
            return await store.prune(finished_before=100.0)

        assert using(url, body) == 2
        assert asyncio.run(raw(where, ROWS)) == [
            ("recent", 1), ("recent", 2), ("running", 1), ("running", 2),
        ]  # fmt: skip


class TestLargeBatches:
    def test_ten_thousand_events_are_written_in_one_call(self, backend):
        url, where = backend
        batch = [event(f"r{seq % 3}", seq, n=seq, text="x" * 40) for seq in range(1, 10_001)]

        async def body(store):
            await store.append_events(batch)
            return (
                await store.read_events("r1"),
                await store.last_event_seq("r0"),
                await store.read_events("r2", after=9_000, limit=3),
            )

        r1, last_r0, page = using(url, body)

        assert r1 == [e for e in batch if e.run_id == "r1"]
        assert last_r0 == 9_999
        assert [e.seq for e in page] == [9_002, 9_005, 9_008]
        assert asyncio.run(raw(where, "SELECT COUNT(*) FROM stageflow_events")) == [(10_000,)]

    @pytest.mark.parametrize("size", [10, 10_000], ids=["small", "large"])
    def test_a_batch_is_one_transaction_a_bad_event_writes_none(self, backend, size):
        # On SQLite a small batch is written on the loop's connection, a large one in a
        # worker thread: both all or nothing. seq None breaks the table's NOT NULL.
        url, where = backend
        bad = Event(EventType.STAGE_STARTED, "r1", "p", "s", None, 1.0)  # type: ignore[arg-type]
        batch = [event("r1", seq) for seq in range(1, size + 1)] + [bad]

        async def body(store):
            with pytest.raises(StoreError) as caught:
                await store.append_events(batch)
            return caught.value, await store.read_events("r1")

        error, read = using(url, body)

        assert read == [], "no event of a failed batch may be stored"
        assert "stageflow_events" in str(error)
        assert "seq" in str(error)
        assert asyncio.run(raw(where, ROWS)) == []


class TestSchemaUpgrade:
    def test_a_version_5_database_gains_the_events_table_when_opened(self, backend):
        url, where = backend

        async def make_old() -> None:  # the current code's database, taken back to version 5
            store = SQLAlchemyStore(url)
            await store.create_run(run("old"))
            await store.aclose()
            await raw(
                where,
                "DROP TABLE stageflow_events",
                "UPDATE stageflow_meta SET value = '5' WHERE key = 'schema_version'",
            )

        async def reopen(store):
            await store.append_events([event("old", 1), event("old", 2)])
            return await store.get_run("old"), await store.read_events("old")

        asyncio.run(make_old())
        assert "stageflow_events" not in tables(where)
        assert asyncio.run(raw(where, VERSION)) == [("5",)]
        old, read = using(url, reopen)

        assert old.run_id == "old", "the runs of the version 5 database must be kept"
        assert read == [event("old", 1), event("old", 2)]
        assert "stageflow_events" in tables(where)
        assert SCHEMA_VERSION == 7
        assert asyncio.run(raw(where, VERSION)) == [("7",)]

    def test_deleting_a_run_of_an_upgraded_database_works(self, backend):
        url, where = backend

        async def make_old() -> None:
            store = SQLAlchemyStore(url)
            await store.create_run(run("old"))
            await store.aclose()
            await raw(
                where,
                "DROP TABLE stageflow_events",
                "UPDATE stageflow_meta SET value = '5' WHERE key = 'schema_version'",
            )

        async def delete(store):
            await store.delete_run("old")
            return await store.list_runs()

        asyncio.run(make_old())

        assert using(url, delete) == []


class TestBadInput:
    @pytest.mark.parametrize(
        ("events", "refused"),
        [
            (event("r1", 1), event("r1", 1)),
            (None, None),
            ([event("r1", 1), "x"], "x"),
            ([event("r1", 1), {"seq": 2}], {"seq": 2}),
            ("events", ...),  # a str is a sequence (of str): refused all the same
        ],
        ids=["an-event", "none", "a-str-in-the-list", "a-dict-in-the-list", "a-str"],
    )
    def test_append_events_refuses_what_is_no_list_of_events_and_writes_nothing(
        self, backend, events, refused
    ):
        url, where = backend

        async def body(store):
            await store.open()
            with pytest.raises(ConfigurationError) as caught:
                await store.append_events(events)
            return caught.value

        error = using(url, body)

        assert error.field == "events"
        if refused is not ...:
            assert error.value == refused
        assert asyncio.run(raw(where, ROWS)) == [], "a refused batch writes nothing"

    @pytest.mark.parametrize(
        ("arguments", "field", "value"),
        [
            ({"after": -1}, "after", -1),
            ({"after": "3"}, "after", "3"),
            ({"after": 1.5}, "after", 1.5),
            ({"after": True}, "after", True),
            ({"limit": -1}, "limit", -1),
            ({"limit": "10"}, "limit", "10"),
        ],
    )
    def test_read_events_refuses_a_bad_after_or_limit_by_name(
        self, backend, arguments, field, value
    ):
        url, _ = backend

        async def body(store):
            with pytest.raises(ConfigurationError) as caught:
                await store.read_events("r1", **arguments)
            return caught.value

        error = using(url, body)

        assert (error.field, error.value) == (field, value)
        assert repr(value) in str(error)

    def test_a_postgresql_error_of_an_event_becomes_a_store_error(self, postgres_url):
        # PostgreSQL text cannot hold NUL (data can: JSON escapes it).
        async def body(store):
            await store.append_events([Event("custom.x", "r1", "p", "nul \x00", 1, 1.0)])

        with pytest.raises(StoreError, match="postgresql"):
            using(postgres_url, body)


class TestConcurrentWriters:
    def test_appends_from_two_stores_on_one_database_all_land(self, backend):
        # Each store writes its own run in batches, and both write one shared run, in
        # opposite orders and in batches large enough to overlap (on SQLite: worker threads
        # racing for the write lock; on PostgreSQL: two connections inserting the same keys).
        url, where = backend
        shared = [event("shared", seq, by="a") for seq in range(1, 3_001)]
        mirrored = [event("shared", seq, by="b") for seq in range(3_000, 0, -1)]

        async def writes(store, run_id, shared_batch):
            await store.append_events(shared_batch)
            for start in range(1, 1_001, 100):
                await store.append_events([event(run_id, seq) for seq in range(start, start + 100)])

        async def main():
            a, b = SQLAlchemyStore(url), SQLAlchemyStore(url)
            try:
                await asyncio.gather(a.open(), b.open())
                await asyncio.gather(writes(a, "a", shared), writes(b, "b", mirrored))
                return (
                    await b.read_events("a"),
                    await a.read_events("b"),
                    await a.read_events("shared"),
                )
            finally:
                await a.aclose()
                await b.aclose()

        of_a, of_b, of_shared = asyncio.run(main())

        assert [e.seq for e in of_a] == list(range(1, 1_001))
        assert [e.seq for e in of_b] == list(range(1, 1_001))
        assert [e.seq for e in of_shared] == list(range(1, 3_001)), "each seq stored once"
        assert {e.data["by"] for e in of_shared} <= {"a", "b"}
        count = "SELECT COUNT(*) FROM stageflow_events"
        assert asyncio.run(raw(where, count)) == [(5_000,)]

    def test_an_append_that_meets_another_writers_lock_waits_for_it(self, tmp_path):
        # SQLite: another connection (as another process would) holds the write lock; the
        # append waits for it in a worker thread, the loop free meanwhile, and then lands.
        path = tmp_path / "runs.db"

        async def main():
            store = SQLAlchemyStore(f"sqlite:///{path}")
            other = sqlite3.connect(path, isolation_level=None)
            try:
                await store.open()
                other.execute("BEGIN IMMEDIATE")
                other.execute(
                    "INSERT INTO stageflow_events VALUES ('o', 1, 't', 'p', NULL, 1, 0, '{}')"
                )
                append = asyncio.ensure_future(store.append_events([event("r1", 1)]))
                for _ in range(5):
                    await asyncio.sleep(0)  # the loop goes on while the append waits
                waited = not append.done()
                other.execute("COMMIT")
                await append
                return waited, await store.read_events("r1"), await store.read_events("o")
            finally:
                other.close()
                await store.aclose()

        waited, read, others = asyncio.run(main())

        assert waited, "the append cannot land while another connection holds the lock"
        assert read == [event("r1", 1)]
        assert [e.seq for e in others] == [1]
