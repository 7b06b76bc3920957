"""MemoryStore passes the CheckpointStore contract; the contract catches broken stores."""

from __future__ import annotations

import asyncio

import pytest

from stageflow import ConfigurationError, Lease, StageRecord
from stageflow.adapters.memory import MemoryStore
from stageflow.testing import CHECKPOINT_STORE_CHECKS, ManualClock, check_checkpoint_store


async def memory(clock: ManualClock) -> MemoryStore:
    return MemoryStore(clock=clock)


class TestMemoryStoreContract:
    @pytest.mark.parametrize("check", CHECKPOINT_STORE_CHECKS, ids=lambda c: c.__name__)
    def test_it_keeps_the_contract(self, check):
        asyncio.run(check(memory))

    def test_the_whole_suite_runs_in_one_call(self):
        asyncio.run(check_checkpoint_store(memory))

    def test_a_bad_clock_is_refused(self):
        with pytest.raises(ConfigurationError, match="clock"):
            MemoryStore(clock=5)  # type: ignore[arg-type]


class _Unfenced(MemoryStore):
    """Broken on purpose: it accepts writes from any lease."""

    async def record_stage(self, lease: Lease, record: StageRecord) -> None:
        self._get(lease.run_id).stages[record.stage] = record


class _NoTakeover(MemoryStore):
    """Broken on purpose: an expired lease is never taken over with a greater token."""

    async def acquire_lease(self, run_id: str, owner: str, ttl: float) -> Lease:
        lease = await super().acquire_lease(run_id, owner, ttl)
        return Lease(lease.run_id, lease.owner, 1, lease.expires_at)


class TestTheContractCanFail:
    @pytest.mark.parametrize(
        ("broken", "complaint"),
        [(_Unfenced, "stale fencing token"), (_NoTakeover, "greater fencing token")],
    )
    def test_a_store_that_breaks_it_is_caught(self, broken, complaint):
        async def factory(clock: ManualClock) -> MemoryStore:
            return broken(clock=clock)

        with pytest.raises(AssertionError, match=complaint):
            asyncio.run(check_checkpoint_store(factory))


class TestRetention:
    def test_finished_runs_older_than_the_retention_are_pruned_as_runs_arrive(self):
        from stageflow import RunRecord, RunStatus

        clock = ManualClock()
        store = MemoryStore(clock=clock, retention=100)

        async def main():
            for run_id in ("old", "running"):
                await store.create_run(
                    RunRecord(run_id, "p", "fp", "{}", RunStatus.RUNNING, clock(), clock())
                )
            lease = await store.acquire_lease("old", "me", 30)
            await store.set_status(lease, RunStatus.COMPLETED)
            await store.release_lease(lease)
            clock.advance(150)
            await store.create_run(
                RunRecord("new", "p", "fp", "{}", RunStatus.RUNNING, clock(), clock())
            )
            return {r.run_id for r in await store.list_runs()}

        assert asyncio.run(main()) == {"running", "new"}

    @pytest.mark.parametrize("retention", [0, -5, True, "1d"])
    def test_a_bad_retention_is_refused(self, retention):
        with pytest.raises(ConfigurationError, match="retention"):
            MemoryStore(retention=retention)
