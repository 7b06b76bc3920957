"""MemoryStore passes the CheckpointStore contract; the contract catches broken stores."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from stageflow import ConfigurationError, Lease, RunRecord, RunStatus, StageRecord, UnknownRunError
from stageflow._usage import Usage, UsageSummary
from stageflow.adapters.memory import MemoryStore, usage_of_run
from stageflow.ports import UsageRecord
from stageflow.testing import CHECKPOINT_STORE_CHECKS, ManualClock, check_checkpoint_store
from stageflow.testing._store_contract import (
    check_delete_and_prune_forget_usage,
    check_usage_filters_combine,
    check_usage_is_fenced,
    check_usage_is_kept_exactly_in_recorded_order,
    check_usage_sums_by_stage_model_and_pipeline,
)


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


class _UnfencedUsage(MemoryStore):
    """Broken on purpose: it records usage with any lease."""

    async def record_usage(self, lease: Lease, records: Sequence[UsageRecord]) -> None:
        self._get(lease.run_id).usage.extend(usage_of_run(lease, records))


class _UsageOfAnyRun(MemoryStore):
    """Broken on purpose: it records a batch's records up to one of another run."""

    async def record_usage(self, lease: Lease, records: Sequence[UsageRecord]) -> None:
        run = self._fenced(lease)
        for record in records:
            if record.run_id != lease.run_id:
                raise ConfigurationError("another run", "records", record)
            run.usage.append(record)


class _UsageByTime(MemoryStore):
    """Broken on purpose: it returns a run's usage ordered by time, not as recorded."""

    async def load_usage(self, run_id: str) -> list[UsageRecord]:
        return sorted(await super().load_usage(run_id), key=lambda r: r.at)


class _ZeroCost(MemoryStore):
    """Broken on purpose: an unknown cost comes back as 0.0."""

    async def load_usage(self, run_id: str) -> list[UsageRecord]:
        return [
            UsageRecord(r.run_id, r.stage, r.attempt, r.model, r.input_tokens, r.output_tokens,
                        r.cost or 0.0, r.at)
            for r in await super().load_usage(run_id)
        ]  # fmt: skip


class _UntilInclusive(MemoryStore):
    """Broken on purpose: ``until`` includes the reports made at that time."""

    async def usage(self, **filters: object) -> UsageSummary:
        until = filters.pop("until", None)
        if isinstance(until, float):
            filters["until"] = until + 1e-3
        return await super().usage(**filters)  # type: ignore[arg-type]


class _NoPipelines(MemoryStore):
    """Broken on purpose: every run counts under one pipeline."""

    async def usage(self, **filters: object) -> UsageSummary:
        summary = await super().usage(**filters)  # type: ignore[arg-type]
        return UsageSummary(
            summary.total,
            by_stage=summary.by_stage,
            by_model=summary.by_model,
            by_pipeline={"all": summary.total},
        )


class _UsageOutlivesItsRun(MemoryStore):
    """Broken on purpose: a run's usage comes back when a run of its id is created again."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.orphans: dict[str, list[UsageRecord]] = {}

    async def delete_run(self, run_id: str) -> None:
        self.orphans[run_id] = list(self._get(run_id).usage)
        await super().delete_run(run_id)

    async def create_run(self, run: RunRecord) -> None:
        await super().create_run(run)
        self._get(run.run_id).usage.extend(self.orphans.pop(run.run_id, []))


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

    @pytest.mark.parametrize(
        ("broken", "check", "complaint"),
        [
            (_UnfencedUsage, check_usage_is_fenced, "stale fencing token"),
            (_UsageOfAnyRun, check_usage_is_fenced, "refused batch must write nothing"),
            (_UsageByTime, check_usage_is_kept_exactly_in_recorded_order, "recorded order"),
            (_ZeroCost, check_usage_is_kept_exactly_in_recorded_order, "exactly"),
            (_UntilInclusive, check_usage_filters_combine, "until"),
            (_NoPipelines, check_usage_sums_by_stage_model_and_pipeline, "sum every run"),
            (_UsageOutlivesItsRun, check_delete_and_prune_forget_usage, "usage must go"),
        ],
        ids=lambda v: v.__name__ if isinstance(v, type) else "",
    )
    def test_a_store_that_breaks_the_usage_contract_is_caught(self, broken, check, complaint):
        async def factory(clock: ManualClock) -> MemoryStore:
            return broken(clock=clock)

        with pytest.raises(AssertionError, match=complaint):
            asyncio.run(check(factory))
        with pytest.raises(AssertionError):  # perhaps by an earlier check
            asyncio.run(check_checkpoint_store(factory))


class TestUsage:
    def test_usage_of_an_unknown_run_is_an_unknown_run_error_like_its_stage_records(self):
        store = MemoryStore()

        with pytest.raises(UnknownRunError):
            asyncio.run(store.stage_records("nope"))
        with pytest.raises(UnknownRunError):
            asyncio.run(store.load_usage("nope"))

    def test_the_store_keeps_its_own_list_of_the_records(self):
        store = MemoryStore()
        record = UsageRecord("r1", "a", 1, None, 1, 2, None, 0.0)

        async def main():
            await store.create_run(RunRecord("r1", "p", "fp", "{}", RunStatus.RUNNING, 0.0, 0.0))
            lease = await store.acquire_lease("r1", "me", 30)
            batch = [record]
            await store.record_usage(lease, batch)
            batch.append(record)  # the caller's list changes after the call
            loaded = await store.load_usage("r1")
            loaded.append(record)  # and so does the list it got back
            return await store.load_usage("r1"), await store.usage()

        loaded, summary = asyncio.run(main())

        assert loaded == [record]
        assert summary.total == Usage(1, 2)


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
