"""MemoryStore passes the InputStore contract; the suite catches stores that break it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

import pytest

from stageflow import ConfigurationError, Lease, RunRecord, RunStatus
from stageflow.adapters.memory import MemoryStore
from stageflow.ports import InputRecord, InputStore
from stageflow.testing import INPUT_STORE_CHECKS, ManualClock, check_input_store
from stageflow.testing._input_contract import (
    check_a_passed_deadline_refuses_the_value,
    check_a_value_given_early_is_found_by_the_wait,
    check_a_waiting_run_is_not_pruned,
    check_an_ended_run_takes_no_input,
    check_an_input_is_given_once,
    check_an_item_is_given_when_its_stage_is_declared,
    check_an_unknown_input_is_refused,
    check_declaring_keeps_the_rows_that_exist,
    check_input_writes_are_fenced,
    check_of_senders_racing_exactly_one_wins,
    check_wait_input_inserts_and_merges_once,
)


async def memory(clock: ManualClock) -> MemoryStore:
    return MemoryStore(clock=clock)


class TestMemoryInputStoreContract:
    @pytest.mark.parametrize("check", INPUT_STORE_CHECKS, ids=lambda c: c.__name__)
    def test_it_keeps_the_input_store_contract(self, check):
        asyncio.run(check(memory))

    def test_the_suite_runs_in_one_call(self):
        asyncio.run(check_input_store(memory))

    def test_it_is_an_input_store(self):
        assert isinstance(MemoryStore(), InputStore)

    def test_an_input_of_another_run_is_refused_and_nothing_is_written(self):
        async def main() -> tuple[list[str], dict[str, InputRecord]]:
            store = MemoryStore()
            await store.create_run(RunRecord("r1", "p", "fp", "{}", RunStatus.RUNNING, 0.0, 0.0))
            lease = await store.acquire_lease("r1", "me", 30)
            ours, theirs = InputRecord("r1", "a", "{}"), InputRecord("r2", "b", "{}")
            refused = []
            for call in (
                store.declare_inputs(lease, [ours, theirs]),
                store.wait_input(lease, theirs),
            ):
                with pytest.raises(ConfigurationError, match="'r2'") as error:
                    await call
                refused.append(error.value.field)
            return refused, await store.load_inputs("r1")

        refused, stored = asyncio.run(main())

        assert refused == ["record", "record"]
        assert stored == {}


# Stores broken on purpose, each in one way the contract forbids.


class _GivesTwice(MemoryStore):
    """A second value replaces the first."""

    async def give_input(self, run_id: str, name: str, value: str, at: float) -> InputRecord:
        run = self._get(run_id)
        if name in run.inputs:
            run.inputs[name] = replace(run.inputs[name], value=None)
        return await super().give_input(run_id, name, value, at)


class _RacyGive(MemoryStore):
    """Reads, awaits, then writes: racing senders all think they won."""

    async def give_input(self, run_id: str, name: str, value: str, at: float) -> InputRecord:
        run = self._get(run_id)
        before = run.inputs.get(name)
        await asyncio.sleep(0)  # the other senders read it too, meanwhile
        if before is None:
            run.inputs.pop(name, None)
        else:
            run.inputs[name] = before  # writes on what it read: another's value is lost
        return await super().give_input(run_id, name, value, at)


class _UnfencedDeclare(MemoryStore):
    """Declares with any lease."""

    async def declare_inputs(self, lease: Lease, records: Sequence[InputRecord]) -> None:
        for record in records:
            self._get(lease.run_id).inputs.setdefault(record.name, record)


class _DeclareReplaces(MemoryStore):
    """Declaring replaces the rows that exist (and their values)."""

    async def declare_inputs(self, lease: Lease, records: Sequence[InputRecord]) -> None:
        self._fenced(lease).inputs.update((r.name, r) for r in records)


class _WaitReplaces(MemoryStore):
    """Every wait takes the record's deadline: a resume would move it."""

    async def wait_input(self, lease: Lease, record: InputRecord) -> InputRecord:
        inputs = self._fenced(lease).inputs
        if record.name in inputs:
            inputs[record.name] = replace(inputs[record.name], waiting_since=None)
        return await super().wait_input(lease, record)


class _WaitForgetsTheValue(MemoryStore):
    """A wait writes its record whole, the value given early with it."""

    async def wait_input(self, lease: Lease, record: InputRecord) -> InputRecord:
        self._fenced(lease).inputs[record.name] = record
        return record


class _NoDeadline(MemoryStore):
    """A value is taken after the deadline."""

    async def give_input(self, run_id: str, name: str, value: str, at: float) -> InputRecord:
        run = self._get(run_id)
        if name in run.inputs:
            run.inputs[name] = replace(run.inputs[name], deadline=None)
        return await super().give_input(run_id, name, value, at)


class _EndedTakesInput(MemoryStore):
    """A run that ended still takes input."""

    async def give_input(self, run_id: str, name: str, value: str, at: float) -> InputRecord:
        run = self._get(run_id)
        status = run.record.status
        run.record = replace(run.record, status=RunStatus.RUNNING)
        try:
            return await super().give_input(run_id, name, value, at)
        finally:
            run.record = replace(run.record, status=status)


class _ItemWithoutSchema(MemoryStore):
    """An item of a declared stage gets a row without its stage's schema."""

    async def give_input(self, run_id: str, name: str, value: str, at: float) -> InputRecord:
        run = self._get(run_id)
        if "[" in name and name.partition("[")[0] in run.inputs:
            run.inputs.setdefault(name, InputRecord(run_id, name, "{}"))
        return await super().give_input(run_id, name, value, at)


class _AnyName(MemoryStore):
    """Any name is an input."""

    async def give_input(self, run_id: str, name: str, value: str, at: float) -> InputRecord:
        run = self._get(run_id)
        run.inputs.setdefault(name, InputRecord(run_id, name, "{}"))
        return await super().give_input(run_id, name, value, at)


class _PrunesWaitingRuns(MemoryStore):
    """A waiting run counts as finished."""

    async def prune(self, *, finished_before: float) -> int:
        for run in self._runs.values():
            if run.record.status is RunStatus.WAITING and run.lease is None:
                run.record = replace(run.record, status=RunStatus.COMPLETED)
        return await super().prune(finished_before=finished_before)


class TestTheSuiteCatchesBrokenStores:
    @pytest.mark.parametrize(
        ("broken", "check", "complaint"),
        [
            (_GivesTwice, check_an_input_is_given_once, "InputAlreadyGivenError"),
            (_RacyGive, check_of_senders_racing_exactly_one_wins, "exactly one"),
            (_UnfencedDeclare, check_input_writes_are_fenced, "stale lease"),
            (_DeclareReplaces, check_declaring_keeps_the_rows_that_exist, "value given early"),
            (_WaitReplaces, check_wait_input_inserts_and_merges_once, "keep its own"),
            (_WaitForgetsTheValue, check_a_value_given_early_is_found_by_the_wait, "before"),
            (_NoDeadline, check_a_passed_deadline_refuses_the_value, "InputTimeoutError"),
            (_EndedTakesInput, check_an_ended_run_takes_no_input, "UnknownInputError"),
            (
                _ItemWithoutSchema,
                check_an_item_is_given_when_its_stage_is_declared,
                "stage's schema",
            ),
            (_AnyName, check_an_unknown_input_is_refused, "UnknownInputError"),
            (_PrunesWaitingRuns, check_a_waiting_run_is_not_pruned, "not finished"),
        ],
        ids=lambda v: v.__name__ if isinstance(v, type) else "",
    )
    def test_a_store_that_breaks_the_input_contract_is_caught(self, broken, check, complaint):
        async def factory(clock: ManualClock) -> MemoryStore:
            return broken(clock=clock)

        with pytest.raises(AssertionError, match=complaint):
            asyncio.run(check(factory))
        with pytest.raises(AssertionError):  # perhaps by an earlier check
            asyncio.run(check_input_store(factory))
