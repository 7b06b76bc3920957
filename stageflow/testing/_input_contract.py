"""The contract of :class:`~stageflow.ports.InputStore`, as a reusable suite of checks.

:data:`INPUT_STORE_CHECKS` check a store that keeps the inputs of runs that wait for a
person. The runs they give inputs to are created, leased, ended, deleted and pruned
through the store's RunStore and RunCatalog sides, so the factory makes a store that is
a :class:`~stageflow.ports.CheckpointStore` and an InputStore both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol, TypeAlias

from .._status import RunStatus
from ..errors import (
    InputAlreadyGivenError,
    InputTimeoutError,
    LeaseLostError,
    UnknownInputError,
    UnknownRunError,
)
from ..ports import CheckpointStore, InputRecord, InputStore, Lease
from ._clock import ManualClock
from ._store_contract import _raises, _run


class _InputCheckpointStore(CheckpointStore, InputStore, Protocol):
    """A store that is a CheckpointStore and an InputStore (what the checks need)."""


InputStoreFactory: TypeAlias = Callable[[ManualClock], Awaitable[_InputCheckpointStore]]
"""Makes a fresh, empty store that is an InputStore and a CheckpointStore, on the given clock.

The checks create, lease, end and delete the runs whose inputs they write through its
RunStore and RunCatalog sides.
"""

_BOOL = '{"type":"boolean"}'
_NOTE = '{"properties":{"note":{"type":"string"}},"type":"object"}'
# stageflow's JSON text, which a store keeps verbatim (escapes and all).
_VALUE = '{"note":"ünï 🦉, \\"quoted\\", back\\\\slash, nul \\u0000","n":1.25}'


async def _leased(
    factory: InputStoreFactory, run_id: str = "r1"
) -> tuple[_InputCheckpointStore, ManualClock, Lease]:
    """A fresh store with one run, leased by ``alpha``."""
    clock = ManualClock()
    store = await factory(clock)
    await store.create_run(_run(run_id, created_at=clock()))
    return store, clock, await store.acquire_lease(run_id, "alpha", 30)


def _waiting(record: InputRecord, at: float, deadline: float | None = None) -> InputRecord:
    """The record of ``record``'s stage as it waits: with a prompt, a deadline and a start."""
    return replace(record, prompt=f"{record.name}?", deadline=deadline, waiting_since=at)


async def check_declared_inputs_are_loaded(factory: InputStoreFactory) -> None:
    store, _, lease = await _leased(factory)
    assert await store.load_inputs("r1") == {}, "a run without inputs has {}"
    approve, review = InputRecord("r1", "approve", _BOOL), InputRecord("r1", "review", _NOTE)
    await store.declare_inputs(lease, [approve, review])
    loaded = await store.load_inputs("r1")
    assert loaded == {"approve": approve, "review": review}, (
        f"load_inputs must return each declared input exactly, by name: {loaded!r}"
    )
    await store.declare_inputs(lease, [])  # nothing to add: still fenced, writes nothing
    assert await store.load_inputs("r1") == loaded
    await store.aclose()


async def check_declaring_keeps_the_rows_that_exist(factory: InputStoreFactory) -> None:
    store, clock, lease = await _leased(factory)
    early, waited = InputRecord("r1", "early", _BOOL), InputRecord("r1", "waited", _NOTE)
    await store.declare_inputs(lease, [early, waited])
    given = await store.give_input("r1", "early", "true", clock())
    waiting = await store.wait_input(lease, _waiting(waited, clock(), clock() + 60))
    clock.advance(5)
    added = InputRecord("r1", "added", _BOOL)
    await store.declare_inputs(  # a resume declares them all again
        lease, [InputRecord("r1", "early", _NOTE), InputRecord("r1", "waited", _BOOL), added]
    )
    loaded = await store.load_inputs("r1")
    assert loaded["early"] == given, f"declaring must keep a value given early: {loaded!r}"
    assert loaded["waited"] == waiting, f"declaring must keep a row that waited: {loaded!r}"
    assert loaded["added"] == added, "declaring must add the inputs without a row"
    assert set(loaded) == {"early", "waited", "added"}
    await store.aclose()


async def check_wait_input_inserts_and_merges_once(factory: InputStoreFactory) -> None:
    store, clock, lease = await _leased(factory)
    t = clock() + 0.123456  # a deadline is kept exactly
    item = InputRecord("r1", "approve[doc-17]", _BOOL, "ok doc-17?", t + 60, t)
    got = await store.wait_input(lease, item)
    assert got == item, f"wait_input without a row must insert the record: {got!r}"
    declared = InputRecord("r1", "approve", _BOOL)
    await store.declare_inputs(lease, [declared])
    first = InputRecord("r1", "approve", _NOTE, "approve?", t + 60, t)
    got = await store.wait_input(lease, first)
    assert got == first, (
        f"a row that never waited must take the record's schema, prompt, deadline and "
        f"waiting_since: {got!r}"
    )
    clock.advance(30)  # the run resumed: its stage waits again, with a later deadline
    again = await store.wait_input(
        lease, InputRecord("r1", "approve", _BOOL, "new?", t + 90, t + 30)
    )
    assert again == first, f"a row that waited must keep its own (a deadline is fixed): {again!r}"
    loaded = await store.load_inputs("r1")
    assert loaded == {"approve": first, "approve[doc-17]": item}, f"stored: {loaded!r}"
    await store.declare_inputs(lease, [InputRecord("r1", "other", _BOOL)])
    forged = InputRecord("r1", "other", _BOOL, "other?", None, clock(), '"forged"', clock())
    got = await store.wait_input(lease, forged)
    assert (got.value, got.given_at) == (None, None), (
        f"wait_input must never change value or given_at: {got!r}"
    )
    assert (await store.load_inputs("r1"))["other"] == got
    await store.aclose()


async def check_an_input_is_given_once(factory: InputStoreFactory) -> None:
    store, clock, lease = await _leased(factory)
    await store.declare_inputs(lease, [InputRecord("r1", "review", _NOTE)])
    row = await store.give_input("r1", "review", _VALUE, clock())
    assert row == InputRecord("r1", "review", _NOTE, value=_VALUE, given_at=clock()), (
        f"give_input must return the row with the value, verbatim, and when: {row!r}"
    )
    clock.advance(1)
    again = await _raises(
        InputAlreadyGivenError,
        store.give_input("r1", "review", '{"note":"second"}', clock()),
        "a second value for one input must raise InputAlreadyGivenError",
    )
    assert (again.run_id, again.input) == ("r1", "review"), "the error must name run and input"
    assert await store.load_inputs("r1") == {"review": row}, "the first value must stay"
    await store.aclose()


async def check_an_unknown_input_is_refused(factory: InputStoreFactory) -> None:
    store, clock, lease = await _leased(factory)
    records = [InputRecord("r1", name, _BOOL) for name in ("a", "b", "c")]
    await store.declare_inputs(lease, records)
    await store.give_input("r1", "b", "true", clock())
    before = await store.load_inputs("r1")
    unknown = await _raises(
        UnknownInputError,
        store.give_input("r1", "nope", "true", clock()),
        "an input the run has not must raise UnknownInputError",
    )
    assert (unknown.run_id, unknown.input) == ("r1", "nope"), "the error must name run and input"
    assert sorted(unknown.known) == ["a", "c"], (
        f"the error must name the inputs that can still be given: {unknown.known!r}"
    )
    assert await store.load_inputs("r1") == before, "a refused input must write nothing"
    await store.aclose()


async def check_an_item_is_given_when_its_stage_is_declared(factory: InputStoreFactory) -> None:
    store, clock, lease = await _leased(factory)
    await store.declare_inputs(lease, [InputRecord("r1", "approve", _NOTE)])
    row = await store.give_input("r1", "approve[doc-17]", _VALUE, clock())
    assert row == InputRecord("r1", "approve[doc-17]", _NOTE, value=_VALUE, given_at=clock()), (
        f"an item of a declared stage must get a row, with the stage's schema: {row!r}"
    )
    assert (await store.load_inputs("r1"))["approve[doc-17]"] == row
    await _raises(
        InputAlreadyGivenError,
        store.give_input("r1", "approve[doc-17]", _VALUE, clock()),
        "an item given twice must raise InputAlreadyGivenError",
    )
    unknown = await _raises(
        UnknownInputError,
        store.give_input("r1", "reject[doc-17]", "true", clock()),
        "an item of a stage the run does not declare must raise UnknownInputError",
    )
    assert unknown.input == "reject[doc-17]"
    assert set(await store.load_inputs("r1")) == {"approve", "approve[doc-17]"}, (
        "a refused item must write nothing"
    )
    await store.aclose()


async def check_an_ended_run_takes_no_input(factory: InputStoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    for status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.WAITING):
        run_id = f"run-{status}"
        await store.create_run(_run(run_id, created_at=clock()))
        lease = await store.acquire_lease(run_id, "alpha", 30)
        await store.declare_inputs(lease, [InputRecord(run_id, "approve", _BOOL)])
        await store.set_status(lease, status)
        await store.release_lease(lease)
        if status is RunStatus.WAITING:  # stopped to wait for it, not ended
            row = await store.give_input(run_id, "approve", "true", clock())
            assert row.value == "true", f"a waiting run must take its input: {row!r}"
            continue
        for name in ("approve", "approve[doc-17]"):
            ended = await _raises(
                UnknownInputError,
                store.give_input(run_id, name, "true", clock()),
                f"an input of a {status} run must raise UnknownInputError",
            )
            assert (ended.run_id, ended.input) == (run_id, name)
        assert await store.load_inputs(run_id) == {"approve": InputRecord(run_id, "approve", _BOOL)}
    await store.aclose()


async def check_a_passed_deadline_refuses_the_value(factory: InputStoreFactory) -> None:
    store, clock, lease = await _leased(factory)
    t = clock()
    records = [InputRecord("r1", name, _BOOL) for name in ("late", "timely", "open")]
    await store.declare_inputs(lease, records)
    for record in records[:2]:
        await store.wait_input(lease, _waiting(record, t, deadline=t + 10))
    await store.wait_input(lease, _waiting(records[2], t))  # no deadline
    late = await _raises(
        InputTimeoutError,
        store.give_input("r1", "late", "true", t + 10),
        "a value given at the input's deadline must raise InputTimeoutError",
    )
    assert (late.stage, late.deadline) == ("late", t + 10), "the error must name input, deadline"
    assert (await store.load_inputs("r1"))["late"].value is None, "a late value is not stored"
    timely = await store.give_input("r1", "timely", "true", t + 9.5)
    assert timely.value == "true", "a value given before the deadline must be stored"
    assert (await store.give_input("r1", "open", "true", t + 1e6)).value == "true", (
        "an input without a deadline must take a value at any time"
    )
    await store.aclose()


async def check_a_value_given_early_is_found_by_the_wait(factory: InputStoreFactory) -> None:
    store, clock, lease = await _leased(factory)
    declared = InputRecord("r1", "approve", _BOOL)
    await store.declare_inputs(lease, [declared])
    given_at = clock()
    await store.give_input("r1", "approve", "false", given_at)
    clock.advance(5)
    got = await store.wait_input(lease, _waiting(declared, clock(), clock() + 60))
    assert got == replace(
        _waiting(declared, clock(), clock() + 60), value="false", given_at=given_at
    ), f"wait_input must return the value given before the stage waited: {got!r}"
    await store.aclose()


async def check_input_writes_are_fenced(factory: InputStoreFactory) -> None:
    store, clock, old = await _leased(factory)
    declared = InputRecord("r1", "approve", _BOOL)
    await store.declare_inputs(old, [declared])
    clock.advance(1)
    new = await store.acquire_lease("r1", "beta", 30, take_over=True)
    writes: dict[str, Callable[[], Awaitable[object]]] = {
        "declare_inputs": lambda: store.declare_inputs(old, [InputRecord("r1", "b", _BOOL)]),
        "declare_inputs([])": lambda: store.declare_inputs(old, []),
        "wait_input": lambda: store.wait_input(old, _waiting(declared, clock(), clock() + 5)),
        "wait_input (new row)": lambda: store.wait_input(old, InputRecord("r1", "c[k]", _BOOL)),
    }
    for name, write in writes.items():
        lost = await _raises(
            LeaseLostError, write(), f"{name} with a stale lease must raise LeaseLostError"
        )
        assert lost.token == old.token
    assert await store.load_inputs("r1") == {"approve": declared}, (
        "a write with a stale lease must write nothing"
    )
    waited = await store.wait_input(new, _waiting(declared, clock(), clock() + 5))
    assert waited == _waiting(declared, clock(), clock() + 5), "the new lease must write"
    await _raises(
        LeaseLostError,
        store.wait_input(old, _waiting(declared, clock(), clock() + 5)),
        "wait_input of a row that waited, with a stale lease, must raise LeaseLostError",
    )
    await store.aclose()


async def check_inputs_of_an_unknown_run(factory: InputStoreFactory) -> None:
    store, clock, _ = await _leased(factory)
    reads: dict[str, Callable[[], Awaitable[object]]] = {
        "give_input": lambda: store.give_input("nope", "approve", "true", clock()),
        "give_input (an item)": lambda: store.give_input("nope", "approve[k]", "true", clock()),
        "load_inputs": lambda: store.load_inputs("nope"),
    }
    for name, read in reads.items():
        unknown = await _raises(
            UnknownRunError, read(), f"{name} of an unknown run must raise UnknownRunError"
        )
        assert unknown.run_id == "nope", f"{name}: the error must name the run"
    await store.aclose()


async def check_of_senders_racing_exactly_one_wins(factory: InputStoreFactory) -> None:
    store, clock, lease = await _leased(factory)
    await store.declare_inputs(lease, [InputRecord("r1", "approve", _BOOL)])
    for name in ("approve", "approve[doc-17]"):  # a row to update; an item's row to insert
        values = [f'{{"sender":{k}}}' for k in range(8)]
        outcomes = await asyncio.gather(
            *(store.give_input("r1", name, value, clock()) for value in values),
            return_exceptions=True,
        )
        won = [o for o in outcomes if isinstance(o, InputRecord)]
        lost = [o for o in outcomes if isinstance(o, InputAlreadyGivenError)]
        assert len(won) == 1, f"{name}: exactly one of 8 racing senders must win: {outcomes!r}"
        assert len(lost) == 7, f"{name}: the others must get InputAlreadyGivenError: {outcomes!r}"
        stored = (await store.load_inputs("r1"))[name]
        assert stored == won[0], f"{name}: the winner's value must be stored: {stored!r}"
    await store.aclose()


async def check_deleting_or_pruning_a_run_deletes_its_inputs(factory: InputStoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    leases: dict[str, Lease] = {}
    for run_id in ("deleted", "pruned"):
        await store.create_run(_run(run_id, created_at=clock()))
        lease = leases[run_id] = await store.acquire_lease(run_id, "alpha", 30)
        await store.declare_inputs(lease, [InputRecord(run_id, "approve", _BOOL)])
        await store.give_input(run_id, "approve", "true", clock())
        await store.wait_input(lease, InputRecord(run_id, "approve[k]", _BOOL))
        if run_id == "pruned":
            await store.set_status(lease, RunStatus.COMPLETED)
        await store.release_lease(lease)
    clock.advance(100)
    await store.delete_run("deleted")
    assert await store.prune(finished_before=clock()) == 1
    for run_id, lease in leases.items():
        await _raises(
            UnknownRunError,
            store.load_inputs(run_id),
            f"load_inputs of a {run_id} run must raise UnknownRunError",
        )
        await _raises(
            LeaseLostError,
            store.wait_input(lease, InputRecord(run_id, "approve", _BOOL)),
            f"wait_input of a {run_id} run must raise LeaseLostError, not UnknownRunError",
        )
        await store.create_run(_run(run_id, created_at=clock()))  # the same id, anew
        assert await store.load_inputs(run_id) == {}, f"{run_id!r}: inputs must go with the run"
    await store.aclose()


async def check_a_waiting_run_is_not_pruned(factory: InputStoreFactory) -> None:
    store, clock, lease = await _leased(factory)
    declared = InputRecord("r1", "approve", _BOOL)
    await store.declare_inputs(lease, [declared])
    await store.set_status(lease, RunStatus.WAITING)
    await store.release_lease(lease)  # a waiting run may have no driver at all
    clock.advance(1e6)
    assert await store.prune(finished_before=clock()) == 0, "a waiting run has not finished"
    assert await store.load_inputs("r1") == {"approve": declared}, "its inputs must stay"
    row = await store.give_input("r1", "approve", "true", clock())
    assert row.value == "true", "a waiting run must still take its input after a prune"
    await store.aclose()


INPUT_STORE_CHECKS: tuple[Callable[[InputStoreFactory], Awaitable[None]], ...] = (
    check_declared_inputs_are_loaded,
    check_declaring_keeps_the_rows_that_exist,
    check_wait_input_inserts_and_merges_once,
    check_an_input_is_given_once,
    check_an_unknown_input_is_refused,
    check_an_item_is_given_when_its_stage_is_declared,
    check_an_ended_run_takes_no_input,
    check_a_passed_deadline_refuses_the_value,
    check_a_value_given_early_is_found_by_the_wait,
    check_input_writes_are_fenced,
    check_inputs_of_an_unknown_run,
    check_of_senders_racing_exactly_one_wins,
    check_deleting_or_pruning_a_run_deletes_its_inputs,
    check_a_waiting_run_is_not_pruned,
)
"""The InputStore contract: each check takes a factory of fresh stores; parametrize over them."""


async def check_input_store(factory: InputStoreFactory) -> None:
    """Run every check of the InputStore contract against stores from ``factory``.

    The stores must be CheckpointStores too: the checks create, lease, end, delete and
    prune, through them, the runs whose inputs they write.

    Example:
        >>> import asyncio
        >>> from stageflow.adapters.memory import MemoryStore
        >>> async def memory(clock):
        ...     return MemoryStore(clock=clock)
        >>> asyncio.run(check_input_store(memory))
    """
    for check in INPUT_STORE_CHECKS:
        await check(factory)
