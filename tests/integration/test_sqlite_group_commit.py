"""Writes that share a commit: on SQLite, the stage records (and input waits) arriving in one
loop iteration after its first write wait for one transaction that commits them all. Each
keeps its own outcome: fencing per run, an error of its own, the order they came in.

PostgreSQL has no group commit; the same gathers must end the same way there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from stageflow import (
    Engine,
    LeaseLostError,
    MapItemError,
    Pipeline,
    RunRecord,
    RunStatus,
    StageRecord,
    StageStatus,
    StoreError,
)
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.ports import InputRecord, Lease

BOOL = '{"type":"boolean"}'
STUCK = 60.0  # seconds: no real wait, a guard against a group that never commits
LONE_SURROGATE = '"\ud800"'  # JSON text sqlite3 cannot encode as UTF-8


def run(run_id: str) -> RunRecord:
    return RunRecord(run_id, "p", "fp", "{}", RunStatus.RUNNING, 0.0, 0.0)


def stage(run_id: str, name: str, output: str = "{}") -> StageRecord:
    return StageRecord(run_id, name, StageStatus.COMPLETED, output, 1, 0.0, 0.1)


async def together(first: Awaitable[Any], *writes: Awaitable[Any]) -> list[Any]:
    """Start the writes in one loop iteration: ``first`` is committed alone, the others
    (on SQLite) wait for one commit of them all. Each one's outcome, exceptions included."""
    gathered = asyncio.gather(first, *writes, return_exceptions=True)
    outcomes = await asyncio.wait_for(gathered, STUCK)
    assert outcomes[0] is None, f"the first write failed: {outcomes[0]!r}"
    return outcomes[1:]


async def leases(store: SQLAlchemyStore) -> tuple[Lease, Lease]:
    """A held lease of run "live", and a stale one of run "taken" (taken over since)."""
    for run_id in ("live", "taken"):
        await store.create_run(run(run_id))
    live = await store.acquire_lease("live", "me", 30)
    stale = await store.acquire_lease("taken", "me", 30)
    await store.acquire_lease("taken", "other", 30, take_over=True)
    return live, stale


class TestFencing:
    def test_a_stale_lease_among_the_group_writes_nothing_and_the_others_land(self, backend):
        url, _ = backend

        async def main():
            store = SQLAlchemyStore(url)
            try:
                live, stale = await leases(store)
                outcomes = await together(
                    store.record_stage(live, stage("live", "first")),
                    *(store.record_stage(live, stage("live", f"a{k}")) for k in range(10)),
                    store.record_stage(stale, stage("taken", "a0")),
                    *(store.record_stage(live, stage("live", f"b{k}")) for k in range(10)),
                )
                return (
                    outcomes,
                    await store.stage_records("live"),
                    await store.stage_records("taken"),
                )
            finally:
                await store.aclose()

        outcomes, live, taken = asyncio.run(main())

        assert outcomes[:10] + outcomes[11:] == [None] * 20
        assert isinstance(outcomes[10], LeaseLostError)
        assert outcomes[10].token == 1
        assert set(live) == {"first"} | {f"a{k}" for k in range(10)} | {f"b{k}" for k in range(10)}
        assert taken == {}, "the stale driver's record must write nothing"

    def test_a_group_of_one_stale_lease_writes_nothing(self, backend):
        url, _ = backend

        async def main():
            store = SQLAlchemyStore(url)
            try:
                live, stale = await leases(store)
                outcomes = await together(
                    store.record_stage(live, stage("live", "first")),
                    *(store.record_stage(stale, stage("taken", f"s{k}")) for k in range(5)),
                )
                return outcomes, await store.stage_records("taken")
            finally:
                await store.aclose()

        outcomes, taken = asyncio.run(main())

        assert all(isinstance(outcome, LeaseLostError) for outcome in outcomes), outcomes
        assert taken == {}


class TestOutcomes:
    # Order is SQLite's: PostgreSQL runs concurrent writes on connections of their own.
    @pytest.mark.parametrize("others", [False, True], ids=["records", "with-an-input-wait"])
    def test_a_later_record_of_a_stage_in_the_same_group_replaces_the_earlier(
        self, tmp_path, others
    ):
        async def main():
            store = SQLAlchemyStore(f"sqlite:///{tmp_path / 'runs.db'}")
            try:
                live, _ = await leases(store)
                item = InputRecord("live", "approve", BOOL, None, None, 1.0)
                between = store.wait_input(live, item) if others else asyncio.sleep(0)
                outcomes = await together(
                    store.record_stage(live, stage("live", "first")),
                    store.record_stage(live, stage("live", "a", '{"v":1}')),
                    between,
                    store.record_stage(live, stage("live", "a", '{"v":2}')),
                )
                return outcomes, await store.stage_records("live")
            finally:
                await store.aclose()

        outcomes, records = asyncio.run(main())

        assert outcomes[0] is None
        assert outcomes[2] is None
        assert records["a"] == stage("live", "a", '{"v":2}')

    def test_records_and_input_waits_in_one_group_each_keep_their_outcome(self, backend):
        url, _ = backend

        async def main():
            store = SQLAlchemyStore(url)
            try:
                live, stale = await leases(store)
                item = InputRecord("live", "approve[0]", BOOL, None, None, 1.0)
                outcomes = await together(
                    store.record_stage(live, stage("live", "first")),
                    store.record_stage(live, stage("live", "a", '{"v":1}')),
                    store.wait_input(live, item),
                    store.record_stage(stale, stage("taken", "a")),
                    store.wait_input(stale, InputRecord("taken", "approve[0]", BOOL)),
                    store.record_stage(live, stage("live", "b", '{"v":2}')),
                )
                return (
                    item,
                    outcomes,
                    await store.stage_records("live"),
                    await store.stage_records("taken"),
                    await store.load_inputs("live"),
                    await store.load_inputs("taken"),
                )
            finally:
                await store.aclose()

        item, outcomes, live, taken, live_inputs, taken_inputs = asyncio.run(main())

        assert outcomes[0] is None
        assert outcomes[1] == item
        assert isinstance(outcomes[2], LeaseLostError)
        assert isinstance(outcomes[3], LeaseLostError)
        assert outcomes[4] is None
        assert live == {
            "first": stage("live", "first"),
            "a": stage("live", "a", '{"v":1}'),
            "b": stage("live", "b", '{"v":2}'),
        }
        assert live_inputs == {item.name: item}
        assert taken == {}
        assert taken_inputs == {}


class TestErrors:
    """sqlite3 refuses some values only when it binds them: a str it cannot encode."""

    def test_a_record_that_cannot_be_written_fails_alone_and_the_group_lands(self, tmp_path):
        async def main():
            store = SQLAlchemyStore(f"sqlite:///{tmp_path / 'runs.db'}")
            try:
                live, _ = await leases(store)
                outcomes = await together(
                    store.record_stage(live, stage("live", "first")),
                    *(store.record_stage(live, stage("live", f"s{k}")) for k in range(3)),
                    store.record_stage(live, stage("live", "bad", LONE_SURROGATE)),
                    *(store.record_stage(live, stage("live", f"t{k}")) for k in range(3)),
                )
                after = await together(  # the store goes on: no transaction was left open
                    store.record_stage(live, stage("live", "later")),
                    store.record_stage(live, stage("live", "later2")),
                )
                return outcomes, after, await store.stage_records("live")
            finally:
                await store.aclose()

        outcomes, after, records = asyncio.run(main())

        assert outcomes[:3] + outcomes[4:] == [None] * 6
        assert isinstance(outcomes[3], StoreError)
        assert "surrogates not allowed" in str(outcomes[3])
        assert after == [None]
        assert set(records) == {"first", "later", "later2"} | {
            f"{p}{k}" for p in "st" for k in range(3)
        }

    def test_a_record_that_cannot_be_written_alone_is_a_store_error(self, tmp_path):
        async def main():
            store = SQLAlchemyStore(f"sqlite:///{tmp_path / 'runs.db'}")
            try:
                live, _ = await leases(store)
                with pytest.raises(StoreError, match="surrogates not allowed"):
                    await store.record_stage(live, stage("live", "bad", LONE_SURROGATE))
                await store.record_stage(live, stage("live", "good"))
                return await store.stage_records("live")
            finally:
                await store.aclose()

        assert set(asyncio.run(main())) == {"good"}

    def test_a_map_item_whose_output_cannot_be_written_fails_the_map_not_the_loop(self, tmp_path):
        async def split(ctx):
            return {"items": list(range(20))}

        async def item(ctx):
            return {"s": "\ud800" if ctx.item == 7 else "ok"}

        graph = (
            Pipeline("p")
            .with_stage("split", split)
            .with_map("m", item, over="split.items", dependencies=("split",))
            .build()
        )

        async def main():
            store = SQLAlchemyStore(f"sqlite:///{tmp_path / 'runs.db'}")
            try:
                result = await asyncio.wait_for(Engine(store=store).run(graph, run_id="r"), STUCK)
                return result, await store.stage_records("r")
            finally:
                await store.aclose()

        result, records = asyncio.run(main())

        assert result.status == RunStatus.FAILED
        error = result["m"].error
        assert isinstance(error, MapItemError)
        assert error.index == 7
        assert "surrogates not allowed" in str(error)
        assert "m[7]" not in records
