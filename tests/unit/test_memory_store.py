"""MemoryStore passes the RunStore and RunCatalog contracts; the suites catch broken stores."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from stageflow import ConfigurationError, Lease, RunRecord, RunStatus, StageRecord, UnknownRunError
from stageflow._usage import Usage, UsageSummary
from stageflow.adapters._shared import usage_of_run
from stageflow.adapters.memory import MemoryStore
from stageflow.ports import UsageRecord
from stageflow.testing import (
    RUN_CATALOG_CHECKS,
    RUN_STORE_CHECKS,
    ManualClock,
    check_checkpoint_store,
    check_run_catalog,
    check_run_store,
)
from stageflow.testing._store_contract import (
    check_a_lease_excludes_other_owners_until_it_expires,
    check_a_lease_of_a_run_that_does_not_exist_writes_nothing,
    check_a_leased_run_is_neither_deleted_nor_pruned,
    check_a_record_of_another_run_is_refused,
    check_a_stale_token_can_write_nothing,
    check_a_take_over_takes_an_unexpired_lease,
    check_delete_and_prune_forget_usage,
    check_list_runs_filters_newest_first,
    check_reads_of_an_unknown_run_raise,
    check_state_round_trip,
    check_usage_filters_combine,
    check_usage_is_fenced,
    check_usage_is_kept_exactly_in_recorded_order,
    check_usage_sums_by_stage_model_and_pipeline,
)


async def memory(clock: ManualClock) -> MemoryStore:
    return MemoryStore(clock=clock)


class TestMemoryStoreContract:
    @pytest.mark.parametrize("check", RUN_STORE_CHECKS, ids=lambda c: c.__name__)
    def test_it_keeps_the_run_store_contract(self, check):
        asyncio.run(check(memory))

    @pytest.mark.parametrize("check", RUN_CATALOG_CHECKS, ids=lambda c: c.__name__)
    def test_it_keeps_the_run_catalog_contract(self, check):
        asyncio.run(check(memory))

    def test_each_suite_runs_in_one_call_and_both_in_one(self):
        asyncio.run(check_run_store(memory))
        asyncio.run(check_run_catalog(memory))
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

    async def acquire_lease(self, run_id: str, owner: str, ttl: float, **options: Any) -> Lease:
        lease = await super().acquire_lease(run_id, owner, ttl, **options)
        return Lease(lease.run_id, lease.owner, 1, lease.expires_at)


class _NoTakeOver(MemoryStore):
    """Broken on purpose: ``take_over=True`` is refused like any acquisition."""

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float, *, take_over: bool = False
    ) -> Lease:
        return await super().acquire_lease(run_id, owner, ttl)


class _TakeOverKeepsTheToken(MemoryStore):
    """Broken on purpose: a take-over keeps the old token, so the old owner still writes."""

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float, *, take_over: bool = False
    ) -> Lease:
        run = self._get(run_id)
        if take_over and run.lease is not None:
            run.lease = replace(run.lease, owner=owner, expires_at=self._clock() + ttl)
            return run.lease
        return await super().acquire_lease(run_id, owner, ttl, take_over=take_over)


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
                raise ConfigurationError("another run", field="records", value=record)
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


class _EmptyForUnknownRuns(MemoryStore):
    """Broken on purpose: reads of a run that does not exist answer as if it had nothing."""

    async def stage_records(self, run_id: str) -> dict[str, StageRecord]:
        return dict(self._runs[run_id].stages) if run_id in self._runs else {}

    async def load_usage(self, run_id: str) -> list[UsageRecord]:
        return list(self._runs[run_id].usage) if run_id in self._runs else []

    async def load_state(self, run_id: str, stage: str) -> str | None:
        return self._runs[run_id].states.get(stage) if run_id in self._runs else None


class _StagesOfAnyRun(MemoryStore):
    """Broken on purpose: a stage record is stored under its own run, whatever the lease."""

    async def record_stage(self, lease: Lease, record: StageRecord) -> None:
        self._fenced(lease)
        self._get(record.run_id).stages[record.stage] = record


class _UnknownRunForAGhostLease(MemoryStore):
    """Broken on purpose: a fenced write to a run that is gone raises UnknownRunError."""

    def _fenced(self, lease: Lease) -> Any:
        self._get(lease.run_id)
        return super()._fenced(lease)


class _FirstStateKept(MemoryStore):
    """Broken on purpose: a stage's first state is never replaced."""

    async def save_state(self, lease: Lease, stage: str, state: str) -> None:
        self._fenced(lease).states.setdefault(stage, state)


class _OneStatePerRun(MemoryStore):
    """Broken on purpose: a run keeps one state, whatever the stage."""

    async def save_state(self, lease: Lease, stage: str, state: str) -> None:
        await super().save_state(lease, "", state)

    async def load_state(self, run_id: str, stage: str) -> str | None:
        return await super().load_state(run_id, "")


class _PrunesLeasedRuns(MemoryStore):
    """Broken on purpose: prune deletes finished runs even while they are leased."""

    def _leased(self, run: Any) -> bool:
        return False


class _AnyLimit(MemoryStore):
    """Broken on purpose: a negative limit drops the oldest runs instead of being refused."""

    async def list_runs(self, **filters: Any) -> list[RunRecord]:
        limit = filters.pop("limit", None)
        runs = await super().list_runs(**filters)
        return runs if limit is None else runs[:limit]


class TestTheContractCanFail:
    @pytest.mark.parametrize(
        ("broken", "check", "complaint"),
        [
            (_Unfenced, check_a_stale_token_can_write_nothing, "stale fencing token"),
            (
                _NoTakeover,
                check_a_lease_excludes_other_owners_until_it_expires,
                "greater fencing token",
            ),
            (_NoTakeOver, check_a_take_over_takes_an_unexpired_lease, "not raise RunLeasedError"),
            (
                _TakeOverKeepsTheToken,
                check_a_take_over_takes_an_unexpired_lease,
                "greater fencing token",
            ),
            (_EmptyForUnknownRuns, check_reads_of_an_unknown_run_raise, "UnknownRunError"),
            (_StagesOfAnyRun, check_a_record_of_another_run_is_refused, "ConfigurationError"),
            (
                _UnknownRunForAGhostLease,
                check_a_lease_of_a_run_that_does_not_exist_writes_nothing,
                "LeaseLostError, not UnknownRunError",
            ),
            (_FirstStateKept, check_state_round_trip, "replaces"),
            (_OneStatePerRun, check_state_round_trip, "its own state"),
            (_PrunesLeasedRuns, check_a_leased_run_is_neither_deleted_nor_pruned, "leased"),
            (_AnyLimit, check_list_runs_filters_newest_first, "limit=-1"),
        ],
        ids=lambda v: v.__name__ if isinstance(v, type) else "",
    )
    def test_a_store_that_breaks_it_is_caught(self, broken, check, complaint):
        async def factory(clock: ManualClock) -> MemoryStore:
            return broken(clock=clock)

        with pytest.raises(AssertionError, match=complaint):
            asyncio.run(check(factory))
        with pytest.raises(AssertionError):  # perhaps by an earlier check
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
        with pytest.raises(UnknownRunError):
            asyncio.run(store.load_state("nope", "a"))

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
