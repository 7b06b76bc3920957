"""SQLAlchemyStore as a RunQueue, on a real SQLite file and a real PostgreSQL server.

Pinned, on both backends (the store's clock is a list the tests move: no real sleeps):

- enqueue stores the run queued, with its labels, configuration and inputs; a taken run id
  raises RunExistsError and writes nothing (its inputs neither); a bad queue name, priority
  (not an int, a bool, beyond 32 bits) or an input of another run is refused by name, and
  nothing is written;
- claim takes the highest priority first, then the oldest, then the least run id; never a
  run of another queue; None from an empty queue; it returns the run and a lease of the
  owner (token >= 1, expiring at now + ttl);
- a claimed run is claimed once: not by another owner while its lease holds, and of many
  claims at once from four stores on one database, each run goes to exactly one;
- a run whose lease expired is taken over by another owner with a greater token, and the
  old lease's writes are refused; a released lease of a running run is claimable at once;
- a limit counts the queue's unexpired leases (of every owner, not other queues'): a
  release or an expiry makes room again;
- a waiting run is claimable again once an input is given, or once its input's deadline
  passes (not before), and not again when it waits anew with nothing new (no busy loop);
- a run set back to queued and released is claimable at once;
- workers: beat_worker records and refreshes them, list_workers filters by seen_at and
  lists the runs each holds (unexpired leases only), forget_worker removes one (an unknown
  one is no error);
- a version 6 database (without the queue's columns, index and workers' table) is
  upgraded when opened, its runs kept, and the queue works on it;
- a finished run is never claimed;
- Engine.submit records a queued run labelled with its queue; an engine whose store keeps
  no queue (MemoryStore, none) is refused with field "store".

(Workers driving runs: test_worker.py; real processes: tests/workers.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from stageflow import (
    ConfigurationError,
    Engine,
    LeaseLostError,
    Pipeline,
    RunExistsError,
    RunRecord,
    RunStatus,
    StageContext,
    StageRecord,
    StageStatus,
    UnknownRunError,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.adapters.sqlalchemy._schema import SCHEMA_VERSION
from stageflow.ports import InputRecord, RunQueue, WorkerRecord

from ._sql import VERSION, raw

BOOL = '{"type":"boolean"}'
T0 = 1_000_000.0  # the store clock's start
TTL = 30.0


def queued(
    run_id: str,
    at: float = 0.0,
    *,
    labels: dict[str, str] | None = None,
    config: str = "",
) -> RunRecord:
    return RunRecord(
        run_id, "p", "fp", '{"n":1}', RunStatus.QUEUED, at, at, None, '{"s":[]}',
        labels or {}, config,
    )  # fmt: skip


def using(url: str, body: Callable[[SQLAlchemyStore, list[float]], Awaitable[Any]]) -> Any:
    """Run ``body(store, now)`` on a fresh store of ``url`` whose clock reads ``now[0]``."""
    now = [T0]

    async def main() -> Any:
        store = SQLAlchemyStore(url, clock=lambda: now[0])
        try:
            return await body(store, now)
        finally:
            await store.aclose()

    return asyncio.run(main())


async def claimed_id(store: SQLAlchemyStore, queue: str = "q", owner: str = "w") -> str | None:
    got = await store.claim(queue, owner, TTL)
    return None if got is None else got[0].run_id


def stage(run_id: str) -> StageRecord:
    return StageRecord(run_id, "s", StageStatus.COMPLETED, "{}", 1, 1.0, 2.0)


class TestEnqueue:
    def test_it_is_a_run_queue(self, backend):
        url, _ = backend

        assert isinstance(SQLAlchemyStore(url), RunQueue)

    def test_an_enqueued_run_is_stored_queued_with_its_labels_config_and_inputs(self, backend):
        url, _ = backend
        record = queued("r1", 5.0, labels={"team": "a", "stageflow.queue": "q"}, config='{"x":1}')
        inputs = [
            InputRecord("r1", "approve", BOOL),
            InputRecord("r1", "note", '{"type":"string"}'),
        ]

        async def body(store, now):
            await store.enqueue(record, queue="q", priority=3, inputs=inputs)
            return await store.get_run("r1"), await store.load_inputs("r1")

        got, declared = using(url, body)

        assert got == record
        assert got.status is RunStatus.QUEUED
        assert got.labels == {"team": "a", "stageflow.queue": "q"}
        assert got.config == '{"x":1}'
        assert declared == {i.name: i for i in inputs}

    def test_a_taken_run_id_raises_run_exists_and_writes_nothing(self, backend):
        url, _ = backend

        async def body(store, now):
            await store.enqueue(queued("r1", 1.0), queue="q")
            with pytest.raises(RunExistsError):
                await store.enqueue(
                    queued("r1", 2.0, labels={"k": "v"}),
                    queue="other",
                    priority=9,
                    inputs=[InputRecord("r1", "approve", BOOL)],
                )
            return (
                await store.get_run("r1"),
                await store.load_inputs("r1"),
                await claimed_id(store, "other"),
                await store.list_runs(),
            )

        got, inputs, from_other, runs = using(url, body)

        assert got == queued("r1", 1.0), "the first run must stay as it was"
        assert inputs == {}, "the refused enqueue must declare no input"
        assert from_other is None, "the refused enqueue must not move the run to its queue"
        assert [r.run_id for r in runs] == ["r1"]

    def test_an_id_taken_by_a_run_not_submitted_raises_run_exists(self, backend):
        url, _ = backend

        async def body(store, now):
            await store.create_run(RunRecord("r1", "p", "fp", "{}", RunStatus.RUNNING, 0.0, 0.0))
            with pytest.raises(RunExistsError):
                await store.enqueue(queued("r1"), queue="q", inputs=[InputRecord("r1", "a", BOOL)])
            return await store.load_inputs("r1"), await claimed_id(store)

        assert using(url, body) == ({}, None)

    @pytest.mark.parametrize(
        ("changes", "field"),
        [
            ({"queue": ""}, "queue"),
            ({"queue": "no such!"}, "queue"),
            ({"queue": "q" * 129}, "queue"),
            ({"queue": 3}, "queue"),
            ({"queue": None}, "queue"),
            ({"priority": "high"}, "priority"),
            ({"priority": 1.5}, "priority"),
            ({"priority": True}, "priority"),
            ({"priority": 2**31}, "priority"),
            ({"priority": -(2**31) - 1}, "priority"),
            ({"inputs": [InputRecord("another", "approve", BOOL)]}, "inputs"),
            (
                {"inputs": [InputRecord("r1", "approve", BOOL), InputRecord("x", "a", BOOL)]},
                "inputs",
            ),
        ],
        ids=lambda v: v if isinstance(v, str) else None,
    )
    def test_bad_arguments_are_refused_by_name_and_nothing_is_written(
        self, backend, changes, field
    ):
        url, where = backend
        arguments: dict[str, Any] = {"queue": "q", "priority": 0, "inputs": ()} | changes

        async def body(store, now):
            with pytest.raises(ConfigurationError) as caught:
                await store.enqueue(queued("r1"), **arguments)
            with pytest.raises(UnknownRunError):
                await store.get_run("r1")
            return caught.value.field, await store.list_runs()

        said, runs = using(url, body)

        assert said == field
        assert runs == []
        assert asyncio.run(raw(where, "SELECT run_id FROM stageflow_inputs")) == []

    def test_the_priorities_at_the_ends_of_32_bits_are_kept_and_ordered(self, backend):
        url, _ = backend

        async def body(store, now):
            await store.enqueue(queued("low", 1.0), queue="q", priority=-(2**31))
            await store.enqueue(queued("high", 2.0), queue="q", priority=2**31 - 1)
            await store.enqueue(queued("zero", 0.0), queue="q")
            return [await claimed_id(store) for _ in range(4)]

        assert using(url, body) == ["high", "zero", "low", None]


class TestClaimOrder:
    def test_the_highest_priority_is_claimed_first_then_the_oldest_then_the_least_run_id(
        self, backend
    ):
        url, _ = backend
        made = [  # (run_id, priority, created_at), enqueued in this scrambled order
            ("b-same", 0, 3.0),
            ("neg", -1, 0.0),
            ("high-new", 5, 9.0),
            ("low-old", 0, 1.0),
            ("a-same", 0, 3.0),
            ("high-old", 5, 2.0),
        ]

        async def body(store, now):
            for run_id, priority, at in made:
                await store.enqueue(queued(run_id, at), queue="q", priority=priority)
            return [await claimed_id(store, owner=f"w{i}") for i in range(len(made) + 1)]

        assert using(url, body) == [
            "high-old",
            "high-new",
            "low-old",
            "a-same",
            "b-same",
            "neg",
            None,
        ]

    def test_a_run_of_another_queue_is_never_claimed_and_an_empty_queue_gives_none(self, backend):
        url, _ = backend

        async def body(store, now):
            empty = await store.claim("q", "w", TTL)
            await store.enqueue(queued("other-run"), queue="other", priority=100)
            await store.enqueue(queued("mine", 50.0), queue="q")
            first = await claimed_id(store, "q")
            second = await claimed_id(store, "q")
            return empty, first, second, await claimed_id(store, "other")

        empty, first, second, other = using(url, body)

        assert empty is None
        assert (first, second) == ("mine", None)
        assert other == "other-run"

    def test_a_queue_without_runs_of_its_own_gives_none_however_long_one_waits(self, backend):
        url, _ = backend

        async def body(store, now):
            await store.enqueue(queued("r1"), queue="other")
            got = [await store.claim("q", "w", TTL)]
            now[0] += 1e6
            got.append(await store.claim("q", "w", TTL))
            return got

        assert using(url, body) == [None, None]

    def test_the_claim_returns_the_run_and_a_lease_of_the_owner_until_now_plus_ttl(self, backend):
        url, _ = backend
        record = queued("r1", 7.0, labels={"k": "v"}, config='{"c":2}')

        async def body(store, now):
            await store.enqueue(record, queue="q", priority=2)
            got = await store.claim("q", "host:1:abc", 12.5)
            return got, await store.get_run("r1")

        (claimed, lease), stored = using(url, body)

        assert claimed == record == stored
        assert lease.run_id == "r1"
        assert lease.owner == "host:1:abc"
        assert lease.token >= 1
        assert lease.expires_at == T0 + 12.5

    def test_the_claim_s_lease_fences_writes_as_an_acquired_one(self, backend):
        url, _ = backend

        async def body(store, now):
            await store.enqueue(queued("r1"), queue="q")
            _, lease = await store.claim("q", "w", TTL)
            await store.set_status(lease, RunStatus.RUNNING)
            await store.record_stage(lease, stage("r1"))
            renewed = await store.renew_lease(lease, 60.0)
            return renewed, await store.get_run("r1"), await store.stage_records("r1")

        renewed, got, stages = using(url, body)

        assert renewed.expires_at == T0 + 60.0
        assert got.status is RunStatus.RUNNING
        assert stages == {"s": stage("r1")}


class TestExactlyOnce:
    def test_a_claimed_run_is_not_claimable_by_another_owner_while_its_lease_holds(self, backend):
        url, _ = backend

        async def body(store, now):
            await store.enqueue(queued("r1"), queue="q")
            first = await claimed_id(store, owner="w1")
            again = [await claimed_id(store, owner="w2"), await claimed_id(store, owner="w1")]
            now[0] += TTL - 0.001
            again.append(await claimed_id(store, owner="w2"))
            return first, again

        assert using(url, body) == ("r1", [None, None, None])

    def test_claims_racing_from_four_stores_claim_each_run_exactly_once(self, backend):
        url, _ = backend
        runs = [f"r{i:02d}" for i in range(10)]

        async def main():
            stores = [SQLAlchemyStore(url, clock=lambda: T0) for _ in range(4)]
            try:
                for store in stores:
                    await store.open()
                for i, run_id in enumerate(runs):
                    await stores[0].enqueue(queued(run_id, float(i)), queue="q")
                return await asyncio.gather(
                    *(stores[i % 4].claim("q", f"w{i}", TTL) for i in range(20))
                )
            finally:
                for store in stores:
                    await store.aclose()

        got = asyncio.run(main())
        claimed = [(record.run_id, lease) for record, lease in (g for g in got if g is not None)]

        assert sorted(run_id for run_id, _ in claimed) == runs, "each run claimed exactly once"
        assert got.count(None) == 10
        assert all(lease.run_id == run_id and lease.token == 1 for run_id, lease in claimed)
        assert len({lease.owner for _, lease in claimed}) == 10


class TestTakeOver:
    def test_an_expired_lease_is_taken_over_by_another_owner_with_a_greater_token(self, backend):
        url, _ = backend

        async def body(store, now):
            await store.enqueue(queued("r1"), queue="q")
            _, old = await store.claim("q", "w1", TTL)
            await store.set_status(old, RunStatus.RUNNING)
            await store.record_stage(old, stage("r1"))
            now[0] += TTL + 1
            got = await store.claim("q", "w2", TTL)
            assert got is not None
            record, new = got
            with pytest.raises(LeaseLostError):
                await store.record_stage(old, stage("r1"))
            with pytest.raises(LeaseLostError):
                await store.set_status(old, RunStatus.COMPLETED)
            await store.record_stage(new, stage("r1"))
            return old, record, new, await store.get_run("r1")

        old, record, new, stored = using(url, body)

        assert record.run_id == "r1"
        assert record.status is RunStatus.RUNNING, "a take-over claims the running run"
        assert new.owner == "w2"
        assert new.token > old.token
        assert new.expires_at == T0 + TTL + 1 + TTL
        assert stored.status is RunStatus.RUNNING, "the old lease's set_status must not land"

    def test_a_released_lease_of_a_running_run_is_claimable_at_once(self, backend):
        url, _ = backend

        async def body(store, now):
            await store.enqueue(queued("r1"), queue="q")
            _, old = await store.claim("q", "w1", TTL)
            await store.set_status(old, RunStatus.RUNNING)
            await store.release_lease(old)
            got = await store.claim("q", "w2", TTL)
            return old, got

        old, got = using(url, body)

        assert got is not None
        record, new = got
        assert (record.run_id, record.status) == ("r1", RunStatus.RUNNING)
        assert new.owner == "w2"
        assert new.token > old.token


class TestLimit:
    def test_no_run_is_claimed_while_the_limit_of_the_queue_s_leases_is_reached(self, backend):
        url, _ = backend

        async def body(store, now):
            for i, run_id in enumerate(["a", "b", "c", "d"]):
                await store.enqueue(queued(run_id, float(i)), queue="q")
            for i in range(3):  # three runs leased in another queue: they do not count
                await store.enqueue(queued(f"o{i}"), queue="other")
                assert await store.claim("other", "elsewhere", 1e6) is not None
            seen: list[Any] = []
            a = await store.claim("q", "w1", 10.0, limit=2)  # expires first
            b = await store.claim("q", "w2", 100.0, limit=2)
            seen.append(await store.claim("q", "w3", 100.0, limit=2))
            assert a is not None
            assert b is not None
            await store.release_lease(b[1])
            c = await store.claim("q", "w3", 100.0, limit=2)
            seen.append(await store.claim("q", "w4", 100.0, limit=2))
            now[0] += 11.0  # a's lease expires
            d = await store.claim("q", "w4", 100.0, limit=2)
            seen.append(await store.claim("q", "w5", 100.0, limit=2))
            return a, b, c, d, seen

        a, b, c, d, seen = using(url, body)

        assert (a[0].run_id, b[0].run_id) == ("a", "b")
        assert seen == [None, None, None], "no claim while two leases of the queue hold"
        assert c is not None, "a released lease makes room"
        assert d is not None, "an expired lease makes room"

    def test_without_a_limit_the_same_claims_succeed(self, backend):
        url, _ = backend

        async def body(store, now):
            for run_id in ["a", "b", "c"]:
                await store.enqueue(queued(run_id), queue="q")
            return [await claimed_id(store, owner=f"w{i}") for i in range(4)]

        assert sorted(filter(None, using(url, body))) == ["a", "b", "c"]


class TestWaiting:
    def test_a_waiting_run_is_claimable_again_once_an_input_is_given(self, backend):
        url, _ = backend

        async def body(store, now):
            await store.enqueue(
                queued("r1"), queue="q", inputs=[InputRecord("r1", "approve", BOOL)]
            )
            _, lease = await store.claim("q", "w1", TTL)
            await store.set_status(lease, RunStatus.RUNNING)
            await store.wait_input(lease, InputRecord("r1", "approve", BOOL, waiting_since=now[0]))
            await store.set_status(lease, RunStatus.WAITING)
            await store.release_lease(lease)
            before = [await claimed_id(store, owner="w2")]
            now[0] += 1e6  # no deadline: time alone never wakes it
            before.append(await claimed_id(store, owner="w2"))
            await store.give_input("r1", "approve", "true", now[0])
            got = await store.claim("q", "w2", TTL)
            assert got is not None
            record, again = got
            await store.set_status(again, RunStatus.WAITING)  # waits anew, nothing new given
            await store.release_lease(again)
            after = await claimed_id(store, owner="w3")
            return before, record.status, after

        before, status, after = using(url, body)

        assert before == [None, None]
        assert status is RunStatus.WAITING
        assert after is None, "a run waiting anew with nothing new given must not be claimable"

    def test_an_input_given_before_the_first_claim_does_not_wake_the_run_again(self, backend):
        url, _ = backend

        async def body(store, now):
            await store.enqueue(
                queued("r1"), queue="q", inputs=[InputRecord("r1", "approve", BOOL)]
            )
            await store.give_input("r1", "approve", "true", now[0])
            _, lease = await store.claim("q", "w1", TTL)
            await store.set_status(lease, RunStatus.WAITING)
            await store.release_lease(lease)
            return await claimed_id(store, owner="w2")

        assert using(url, body) is None

    def test_a_waiting_run_is_claimable_when_its_input_deadline_passes_and_not_before(
        self, backend
    ):
        url, _ = backend

        async def body(store, now):
            await store.enqueue(
                queued("r1"), queue="q", inputs=[InputRecord("r1", "approve", BOOL)]
            )
            _, lease = await store.claim("q", "w1", TTL)
            await store.set_status(lease, RunStatus.RUNNING)
            waiting = InputRecord("r1", "approve", BOOL, deadline=now[0] + 10, waiting_since=now[0])
            await store.wait_input(lease, waiting)
            await store.set_status(lease, RunStatus.WAITING)
            await store.release_lease(lease)
            before = [await claimed_id(store, owner="w2")]
            now[0] += 9.9
            before.append(await claimed_id(store, owner="w2"))
            now[0] += 0.2
            got = await store.claim("q", "w2", TTL)
            return before, got

        before, got = using(url, body)

        assert before == [None, None]
        assert got is not None, "the passed deadline must wake it"
        assert got[0].run_id == "r1"

    def test_a_run_waiting_anew_after_its_deadline_woke_it_is_not_claimable_again(self, backend):
        url, _ = backend

        async def body(store, now):
            await store.enqueue(
                queued("r1"), queue="q", inputs=[InputRecord("r1", "approve", BOOL)]
            )
            _, lease = await store.claim("q", "w1", TTL)
            waiting = InputRecord("r1", "approve", BOOL, deadline=now[0] + 10, waiting_since=now[0])
            await store.wait_input(lease, waiting)
            await store.set_status(lease, RunStatus.WAITING)
            await store.release_lease(lease)
            now[0] += 11
            woken = await store.claim("q", "w2", TTL)
            assert woken is not None
            await store.set_status(woken[1], RunStatus.WAITING)  # nothing new given
            await store.release_lease(woken[1])
            return await claimed_id(store, owner="w3")

        assert using(url, body) is None, "claimable again at once: a worker would busy-loop"

    def test_a_run_waiting_on_a_second_input_after_the_first_timed_out_is_not_claimable(
        self, backend
    ):
        # The first input's deadline passed (its stage went on with on_timeout, its row has
        # no value); the run then waits for the second input, which has no deadline.
        url, _ = backend
        inputs = [InputRecord("r1", "first", BOOL), InputRecord("r1", "second", BOOL)]

        async def body(store, now):
            await store.enqueue(queued("r1"), queue="q", inputs=inputs)
            _, lease = await store.claim("q", "w1", TTL)
            first = InputRecord("r1", "first", BOOL, deadline=now[0] + 10, waiting_since=now[0])
            await store.wait_input(lease, first)
            await store.set_status(lease, RunStatus.WAITING)
            await store.release_lease(lease)
            now[0] += 11
            woken = await store.claim("q", "w2", TTL)
            assert woken is not None
            second = InputRecord("r1", "second", BOOL, waiting_since=now[0])
            await store.wait_input(woken[1], second)
            await store.set_status(woken[1], RunStatus.WAITING)
            await store.release_lease(woken[1])
            return await claimed_id(store, owner="w3")

        assert using(url, body) is None, "claimable again at once: a worker would busy-loop"


class TestRequeue:
    def test_a_run_set_back_to_queued_and_released_is_claimable_at_once_by_another_owner(
        self, backend
    ):
        url, _ = backend

        async def body(store, now):
            await store.enqueue(queued("r1"), queue="q")
            _, lease = await store.claim("q", "w1", TTL)
            await store.set_status(lease, RunStatus.RUNNING)
            await store.record_stage(lease, stage("r1"))
            await store.set_status(lease, RunStatus.QUEUED)
            await store.release_lease(lease)
            got = await store.claim("q", "w2", TTL)
            return lease, got, await store.stage_records("r1")

        old, got, stages = using(url, body)

        assert got is not None
        record, new = got
        assert (record.run_id, record.status) == ("r1", RunStatus.QUEUED)
        assert (new.owner, new.token > old.token) == ("w2", True)
        assert stages == {"s": stage("r1")}, "what completed is kept for the next driver"


class TestWorkers:
    def test_a_second_beat_refreshes_seen_at_queues_and_concurrency_not_started_at(self, backend):
        url, _ = backend
        first = WorkerRecord("h:1:a", "h", 1, ("q",), 2, 100.0, 100.0)
        second = WorkerRecord("h:1:a", "h", 1, ("q", "r"), 4, 999.0, 150.0)

        async def body(store, now):
            await store.beat_worker(first)
            registered = await store.list_workers()
            await store.beat_worker(second)
            return registered, await store.list_workers()

        registered, refreshed = using(url, body)

        assert registered == [first]
        assert refreshed == [WorkerRecord("h:1:a", "h", 1, ("q", "r"), 4, 100.0, 150.0)]

    def test_list_workers_filters_by_seen_at_oldest_first_with_the_runs_each_holds(self, backend):
        url, _ = backend
        old = WorkerRecord("h:1:old", "h", 1, ("q",), 4, 10.0, 100.0)
        mid = WorkerRecord("h:2:mid", "h", 2, ("q",), 1, 20.0, 150.0)
        new = WorkerRecord("g:3:new", "g", 3, ("q", "x"), 1, 30.0, 200.0)

        async def body(store, now):
            for worker in (new, old, mid):
                await store.beat_worker(worker)
            for run_id in ["r1", "r2", "r3", "r4", "r5"]:
                await store.enqueue(queued(run_id), queue="q")
            held = [await store.claim("q", old.owner, TTL) for _ in range(3)]  # r1, r2, r3
            await store.release_lease(held[2][1])  # r3: released
            assert (await store.claim("q", old.owner, 5.0))[0].run_id == "r4"  # expires soon
            assert (await store.claim("q", new.owner, TTL))[0].run_id == "r5"
            now[0] += 6.0  # r4's lease has expired
            return (
                await store.list_workers(),
                await store.list_workers(seen_after=150.0),
                await store.list_workers(seen_after=200.5),
            )

        every, recent, none = using(url, body)

        assert [w.owner for w in every] == [old.owner, mid.owner, new.owner]
        assert [w.runs for w in every] == [("r1", "r2"), (), ("r5",)]
        assert every[2] == WorkerRecord("g:3:new", "g", 3, ("q", "x"), 1, 30.0, 200.0, ("r5",))
        assert [w.owner for w in recent] == [mid.owner, new.owner]
        assert none == []

    def test_forget_worker_removes_it_and_an_unknown_one_is_no_error(self, backend):
        url, _ = backend
        one = WorkerRecord("h:1:a", "h", 1, ("q",), 1, 1.0, 1.0)
        two = WorkerRecord("h:2:b", "h", 2, ("q",), 1, 2.0, 2.0)

        async def body(store, now):
            await store.beat_worker(one)
            await store.beat_worker(two)
            await store.forget_worker("h:1:a")
            await store.forget_worker("h:1:a")
            await store.forget_worker("nobody")
            return await store.list_workers()

        assert using(url, body) == [two]


def columns(where: str) -> set[str]:
    if where.startswith("postgresql://"):
        statement = (
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'stageflow_runs'"
        )
    else:
        statement = "SELECT name FROM pragma_table_info('stageflow_runs')"
    return {str(name) for (name,) in asyncio.run(raw(where, statement))}


def tables(where: str) -> set[str]:
    if where.startswith("postgresql://"):
        rows = asyncio.run(raw(where, "SELECT tablename FROM pg_tables"))
    else:
        rows = asyncio.run(raw(where, "SELECT name FROM sqlite_master WHERE type = 'table'"))
    return {str(name) for (name,) in rows}


QUEUE_COLUMNS = {"queue", "priority", "ready_at", "given_count"}


class TestSchemaUpgrade:
    def test_a_version_6_database_gains_the_queue_when_opened(self, backend):
        url, where = backend
        old_run = RunRecord("old", "p", "fp", "{}", RunStatus.RUNNING, 1.0, 1.0, labels={"k": "v"})

        async def make_old() -> None:  # the current code's database, taken back to version 6
            store = SQLAlchemyStore(url)
            await store.create_run(old_run)
            await store.aclose()
            await raw(
                where,
                "DROP INDEX stageflow_runs_queue",
                *(f"ALTER TABLE stageflow_runs DROP COLUMN {c}" for c in sorted(QUEUE_COLUMNS)),
                "DROP TABLE stageflow_workers",
                "UPDATE stageflow_meta SET value = '6' WHERE key = 'schema_version'",
            )

        async def reopen(store, now):
            got = await store.get_run("old")
            await store.enqueue(queued("new"), queue="q", inputs=[InputRecord("new", "a", BOOL)])
            claimed = await store.claim("q", "w", TTL)
            await store.beat_worker(WorkerRecord("w", "h", 1, ("q",), 1, 1.0, T0))
            return got, claimed, await claimed_id(store), await store.list_workers()

        asyncio.run(make_old())
        assert not QUEUE_COLUMNS & columns(where)
        assert "stageflow_workers" not in tables(where)
        assert asyncio.run(raw(where, VERSION)) == [("6",)]
        got, claimed, next_claim, workers = using(url, reopen)

        assert got == old_run, "the runs of the version 6 database must be kept"
        assert claimed is not None
        assert claimed[0].run_id == "new"
        assert next_claim is None, "the old run, never submitted, is in no queue"
        assert [w.runs for w in workers] == [("new",)]
        assert columns(where) >= QUEUE_COLUMNS
        assert SCHEMA_VERSION == 7
        assert asyncio.run(raw(where, VERSION)) == [("7",)]


class TestFinished:
    @pytest.mark.parametrize(
        "status", [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED], ids=str
    )
    def test_a_finished_submitted_run_is_never_claimed(self, backend, status):
        url, _ = backend

        async def body(store, now):
            await store.enqueue(queued("released"), queue="q")
            await store.enqueue(queued("expired"), queue="q")
            for _ in range(2):
                _, lease = await store.claim("q", "w1", TTL)
                await store.set_status(lease, RunStatus.RUNNING)
                await store.set_status(lease, status)
                if lease.run_id == "released":
                    await store.release_lease(lease)
            got = [await claimed_id(store, owner="w2")]
            now[0] += 1e6  # the other lease expires too
            got.append(await claimed_id(store, owner="w2"))
            return got

        assert using(url, body) == [None, None]


def graph_of(name: str, *, ask: bool = False) -> Any:
    async def work(ctx: StageContext) -> dict[str, Any]:
        return {}

    pipeline = Pipeline(name).with_stage("work", work)
    if ask:
        pipeline = pipeline.with_input("approve", schema=bool, dependencies=["work"])
    return pipeline.build()


class TestSubmit:
    def test_submit_records_a_queued_run_labelled_with_its_queue(self, backend):
        url, _ = backend

        async def main():
            store = SQLAlchemyStore(url)
            try:
                engine = Engine(store=store)
                low = await engine.submit(graph_of("p"), {"n": 1}, queue="jobs")
                high = await engine.submit(
                    graph_of("ask", ask=True), {"n": 2}, queue="jobs", priority=5,
                    labels={"team": "a"},
                )  # fmt: skip
                records = {run_id: await store.get_run(run_id) for run_id in (low, high)}
                inputs = await store.load_inputs(high)
                order = [await claimed_id(store, "jobs") for _ in range(3)]
                return low, high, records, inputs, order
            finally:
                await store.aclose()

        low, high, records, inputs, order = asyncio.run(main())

        assert all(r.status is RunStatus.QUEUED for r in records.values())
        assert records[low].labels == {"stageflow.queue": "jobs"}
        assert records[high].labels == {"team": "a", "stageflow.queue": "jobs"}
        assert records[high].pipeline == "ask"
        assert list(inputs) == ["approve"]
        assert inputs["approve"].value is None
        assert order == [high, low, None]

    @pytest.mark.parametrize("store", [MemoryStore(), None], ids=["memory", "none"])
    def test_submit_to_a_store_that_keeps_no_queue_is_refused(self, store):
        with pytest.raises(ConfigurationError) as caught:
            asyncio.run(Engine(store=store).submit(graph_of("p")))

        assert caught.value.field == "store"

    def test_submit_to_an_engine_without_a_store_is_refused(self):
        with pytest.raises(ConfigurationError) as caught:
            asyncio.run(Engine().submit(graph_of("p")))

        assert caught.value.field == "store"
