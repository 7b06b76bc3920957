"""The contract every CheckpointStore must keep, as a reusable suite of checks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar

from .._result import RunStatus
from .._stage import StageStatus
from ..errors import LeaseLostError, RunExistsError, RunLeasedError, UnknownRunError
from ..ports import CheckpointStore, RunRecord, StageRecord

E = TypeVar("E", bound=BaseException)


class ManualClock:
    """A wall clock that moves only when told: ``clock()`` reads it, ``advance(s)`` moves it.

    Example:
        >>> clock = ManualClock(1000.0)
        >>> clock.advance(5)
        >>> clock()
        1005.0
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        """The current time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += seconds


StoreFactory: TypeAlias = Callable[[ManualClock], Awaitable[CheckpointStore]]
"""Makes a fresh, empty store whose clock is the given ManualClock."""


async def _raises(expected: type[E], awaitable: Awaitable[object], message: str) -> E:
    """The exception ``awaitable`` raised, which must be an ``expected``."""
    try:
        await awaitable
    except expected as error:
        return error
    raise AssertionError(message)


def _run(run_id: str = "r1", pipeline: str = "p", created_at: float = 0.0) -> RunRecord:
    return RunRecord(
        run_id, pipeline, "fp", '{"topic":"owls"}', RunStatus.RUNNING, created_at, created_at
    )


def _stage(run_id: str, stage: str, output: str = '{"n":1}') -> StageRecord:
    return StageRecord(run_id, stage, StageStatus.COMPLETED, output, 1, 0.0, 0.5)


async def check_runs_round_trip(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    record = _run(created_at=clock())
    await store.create_run(record)
    assert await store.get_run("r1") == record, "get_run must return what create_run stored"
    exists = await _raises(
        RunExistsError, store.create_run(record), "creating a run twice must raise RunExistsError"
    )
    assert exists.run_id == "r1"
    unknown = await _raises(
        UnknownRunError, store.get_run("nope"), "get_run of an unknown id must raise"
    )
    assert unknown.run_id == "nope"
    await store.aclose()


async def check_list_runs_filters_newest_first(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    for k, pipeline in enumerate(["a", "b", "a"]):
        await store.create_run(_run(f"r{k}", pipeline, created_at=clock() + k))
    assert [r.run_id for r in await store.list_runs()] == ["r2", "r1", "r0"]
    assert [r.run_id for r in await store.list_runs(pipeline="a")] == ["r2", "r0"]
    assert [r.run_id for r in await store.list_runs(limit=1)] == ["r2"]
    lease = await store.acquire_lease("r1", "me", 30)
    await store.set_status(lease, RunStatus.FAILED, "boom")
    failed = await store.list_runs(status=RunStatus.FAILED)
    assert [(r.run_id, r.error) for r in failed] == [("r1", "boom")]
    await store.aclose()


async def check_a_lease_excludes_other_owners_until_it_expires(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    await store.create_run(_run(created_at=clock()))
    first = await store.acquire_lease("r1", "alpha", 30)
    assert first.owner == "alpha"
    assert first.expires_at == clock() + 30
    leased = await _raises(
        RunLeasedError,
        store.acquire_lease("r1", "beta", 30),
        "a second owner must get RunLeasedError while the lease holds",
    )
    assert (leased.owner, leased.expires_at) == ("alpha", first.expires_at)
    clock.advance(31)
    second = await store.acquire_lease("r1", "beta", 30)  # a takeover
    assert second.token > first.token, "a takeover must get a greater fencing token"
    await store.aclose()


async def check_a_stale_token_can_write_nothing(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    await store.create_run(_run(created_at=clock()))
    old = await store.acquire_lease("r1", "alpha", 30)
    await store.record_stage(old, _stage("r1", "a"))
    clock.advance(31)
    new = await store.acquire_lease("r1", "beta", 30)
    writes: tuple[Callable[[], Awaitable[object]], ...] = (
        lambda: store.record_stage(old, _stage("r1", "b")),
        lambda: store.set_status(old, RunStatus.COMPLETED),
        lambda: store.save_state(old, "b", '"half"'),
        lambda: store.renew_lease(old, 30),
    )
    for write in writes:
        lost = await _raises(
            LeaseLostError, write(), "a write with a stale fencing token must raise LeaseLostError"
        )
        assert lost.token == old.token
    await store.release_lease(old)  # a no-op: the lease is beta's
    assert set(await store.stage_records("r1")) == {"a"}
    assert (await store.get_run("r1")).status == RunStatus.RUNNING
    assert await store.load_state("r1", "b") is None
    await store.record_stage(new, _stage("r1", "b"))
    assert set(await store.stage_records("r1")) == {"a", "b"}
    await store.aclose()


async def check_renewal_keeps_the_lease(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    await store.create_run(_run(created_at=clock()))
    lease = await store.acquire_lease("r1", "alpha", 10)
    for _ in range(5):
        clock.advance(8)
        lease = await store.renew_lease(lease, 10)
        assert lease.expires_at == clock() + 10
    await _raises(
        RunLeasedError,
        store.acquire_lease("r1", "beta", 10),
        "a renewed lease must keep excluding other owners",
    )
    await store.record_stage(lease, _stage("r1", "a"))  # the token did not change
    await store.aclose()


async def check_a_released_lease_is_free_at_once(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    await store.create_run(_run(created_at=clock()))
    first = await store.acquire_lease("r1", "alpha", 30)
    await store.release_lease(first)
    second = await store.acquire_lease("r1", "beta", 30)
    assert second.token > first.token
    await _raises(
        LeaseLostError,
        store.record_stage(first, _stage("r1", "a")),
        "a released lease must not write",
    )
    await store.aclose()


async def check_stage_records_are_kept_verbatim_per_stage(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    await store.create_run(_run(created_at=clock()))
    lease = await store.acquire_lease("r1", "alpha", 30)
    text = '{"é":"ünïcode","n":[1,2.5,null]}'
    await store.record_stage(lease, _stage("r1", "a", text))
    await store.record_stage(lease, _stage("r1", "b"))
    replaced = StageRecord("r1", "b", StageStatus.FAILED, "{}", 3, 1.0, 2.0, "boom")
    await store.record_stage(lease, replaced)
    records = await store.stage_records("r1")
    assert records["a"] == _stage("r1", "a", text), "outputs must be kept verbatim"
    assert records["b"] == replaced, "a stage's later record replaces its earlier one"
    assert await store.stage_records("r1") == records
    await store.save_state(lease, "a", '"step 1"')
    await store.save_state(lease, "a", '"step 2"')
    assert await store.load_state("r1", "a") == '"step 2"'
    await store.aclose()


async def check_delete_and_prune(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    for run_id in ("old", "young", "running"):
        await store.create_run(_run(run_id, created_at=clock()))
    for run_id in ("old", "young"):
        lease = await store.acquire_lease(run_id, "me", 30)
        await store.set_status(lease, RunStatus.COMPLETED)
        await store.release_lease(lease)
        clock.advance(100)
    assert await store.prune(finished_before=clock() - 150) == 1  # "old" only
    assert {r.run_id for r in await store.list_runs()} == {"young", "running"}
    lease = await store.acquire_lease("running", "me", 30)
    await _raises(
        RunLeasedError, store.delete_run("running"), "a run being driven must not be deleted"
    )
    await store.release_lease(lease)
    await store.delete_run("running")
    await _raises(
        UnknownRunError,
        store.delete_run("running"),
        "deleting an unknown run must raise UnknownRunError",
    )
    await store.aclose()


async def check_concurrent_acquirers_get_one_lease(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    await store.create_run(_run(created_at=clock()))
    results = await asyncio.gather(
        *(store.acquire_lease("r1", f"owner{k}", 30) for k in range(20)),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    assert len(won) == 1, f"exactly one of 20 concurrent acquirers must win, not {len(won)}"
    assert all(isinstance(r, RunLeasedError) for r in results if r is not won[0])
    lease = won[0]
    await asyncio.gather(*(store.record_stage(lease, _stage("r1", f"s{k}")) for k in range(50)))
    assert len(await store.stage_records("r1")) == 50, "no concurrent write may be lost"
    await store.aclose()


async def check_a_stale_write_in_a_crowd_fails_alone(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    for run_id in ("stale", "live"):
        await store.create_run(_run(run_id, created_at=clock()))
    old = await store.acquire_lease("stale", "alpha", 30)
    clock.advance(31)
    await store.acquire_lease("stale", "beta", 30)  # alpha's token is stale now
    live = await store.acquire_lease("live", "gamma", 30)
    writes = [store.record_stage(live, _stage("live", f"s{k}")) for k in range(10)]
    writes.insert(5, store.record_stage(old, _stage("stale", "x")))
    results = await asyncio.gather(*writes, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(failed) == 1, f"only the stale write may fail, not {failed!r}"
    assert isinstance(failed[0], LeaseLostError)
    assert len(await store.stage_records("live")) == 10, "the others must all land"
    assert await store.stage_records("stale") == {}
    await store.aclose()


CHECKPOINT_STORE_CHECKS: tuple[Callable[[StoreFactory], Awaitable[None]], ...] = (
    check_runs_round_trip,
    check_list_runs_filters_newest_first,
    check_a_lease_excludes_other_owners_until_it_expires,
    check_a_stale_token_can_write_nothing,
    check_renewal_keeps_the_lease,
    check_a_released_lease_is_free_at_once,
    check_stage_records_are_kept_verbatim_per_stage,
    check_delete_and_prune,
    check_concurrent_acquirers_get_one_lease,
    check_a_stale_write_in_a_crowd_fails_alone,
)
"""Each check takes a factory of fresh stores; parametrize your tests over them."""


async def check_checkpoint_store(factory: StoreFactory) -> None:
    """Run every check of the CheckpointStore contract against stores from ``factory``.

    Example:
        >>> import asyncio
        >>> from stageflow.adapters.memory import MemoryStore
        >>> async def memory(clock):
        ...     return MemoryStore(clock=clock)
        >>> asyncio.run(check_checkpoint_store(memory))
    """
    for check in CHECKPOINT_STORE_CHECKS:
        await check(factory)
