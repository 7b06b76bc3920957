"""The contract every CheckpointStore must keep, as a reusable suite of checks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeAlias, TypeVar

from .._status import RunStatus, StageStatus
from .._usage import Usage, UsageSummary
from ..errors import LeaseLostError, RunExistsError, RunLeasedError, UnknownRunError
from ..ports import CheckpointStore, RunRecord, StageRecord, UsageRecord

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


async def check_labels_round_trip(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    labels = {
        "stageflow.target": "examples/research.py:pipeline",
        "ünïcode ✓": 'owls 🦉, "quoted", back\\slash, new\nline, tab\t, nul\x00',
        "empty": "",
        "json": '{"not": "parsed"}',
        "long": "x" * 1024,
    }
    given = dict(labels)
    labelled = replace(_run("labelled", created_at=clock()), labels=given)
    plain = _run("plain", created_at=clock() + 1)  # the default: no labels
    emptied = replace(_run("emptied", created_at=clock() + 2), labels={})
    for record in (labelled, plain, emptied):
        await store.create_run(record)
    given["added later"] = "x"  # the caller's mapping, changed after create_run
    del given["empty"]
    got = await store.get_run("labelled")
    assert dict(got.labels) == labels, f"get_run must return the labels exactly: {got.labels!r}"
    assert got == replace(labelled, labels=labels)
    for run_id in ("plain", "emptied"):
        assert dict((await store.get_run(run_id)).labels) == {}, "no labels must stay none"
    listed = {r.run_id: dict(r.labels) for r in await store.list_runs()}
    assert listed == {"labelled": labels, "plain": {}, "emptied": {}}, (
        f"list_runs must return the labels exactly: {listed!r}"
    )
    lease = await store.acquire_lease("labelled", "me", 30)
    await store.set_status(lease, RunStatus.FAILED, "boom")
    failed = await store.get_run("labelled")
    assert (failed.status, dict(failed.labels)) == (RunStatus.FAILED, labels), (
        "set_status must not change the labels"
    )
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


def _usage(
    run_id: str,
    stage: str,
    at: float,
    tokens: tuple[int, int] = (10, 2),
    cost: float | None = 0.5,
    model: str | None = "m1",
    attempt: int = 1,
) -> UsageRecord:
    return UsageRecord(run_id, stage, attempt, model, tokens[0], tokens[1], cost, at)


async def check_usage_is_fenced(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    for run_id in ("r1", "r2"):
        await store.create_run(_run(run_id, created_at=clock()))
    old = await store.acquire_lease("r1", "alpha", 30)
    first = _usage("r1", "a", clock())
    await store.record_usage(old, [first])
    await _raises(
        ValueError,
        store.record_usage(old, [_usage("r1", "a", clock()), _usage("r2", "a", clock())]),
        "a usage record of another run than the lease's must be refused with a ValueError",
    )
    assert await store.load_usage("r1") == [first], "a refused batch must write nothing"
    assert await store.load_usage("r2") == [], "a refused batch must write nothing"
    clock.advance(31)
    new = await store.acquire_lease("r1", "beta", 30)
    stale = [_usage("r1", "b", clock()), _usage("r1", "c", clock(), cost=None)]
    for batch in (stale, []):
        lost = await _raises(
            LeaseLostError,
            store.record_usage(old, batch),
            "record_usage with a stale fencing token must raise LeaseLostError, even when "
            "it has nothing to write",
        )
        assert lost.token == old.token
    assert await store.load_usage("r1") == [first], "a stale lease must write no usage"
    summary = await store.usage()
    assert summary.total == Usage(10, 2, 0.5), f"a stale lease must write no usage: {summary!r}"
    await store.record_usage(new, [])  # nothing to write: a no-op
    assert await store.load_usage("r1") == [first]
    await store.record_usage(new, stale)
    assert await store.load_usage("r1") == [first, *stale], "the current lease must record usage"
    await store.release_lease(new)
    await _raises(
        LeaseLostError,
        store.record_usage(new, [_usage("r1", "d", clock())]),
        "a released lease must not record usage",
    )
    assert len(await store.load_usage("r1")) == 3
    await store.aclose()


async def check_usage_is_kept_exactly_in_recorded_order(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    for run_id in ("r1", "r2"):
        await store.create_run(_run(run_id, created_at=clock()))
    assert await store.load_usage("r1") == [], "a run without usage has an empty list"
    t = clock() + 0.123456789
    first = [
        _usage("r1", "z", t, (3_000_000_000, 7), 0.1 + 0.2, "prov/ünï-model", attempt=1),
        _usage("r1", "a", t + 1e-6, (0, 0), None, None, attempt=2),
        _usage("r1", "z", t - 5.5, (1, 1), 1e-12, "m1", attempt=1),  # later, though earlier "at"
    ]
    second = [_usage("r1", "m", t + 2.0, (5, 6), 123456.789, "")]
    lease1 = await store.acquire_lease("r1", "alpha", 30)
    lease2 = await store.acquire_lease("r2", "alpha", 30)
    await store.record_usage(lease1, first)
    await store.record_usage(lease2, [_usage("r2", "a", t)])
    await store.record_usage(lease1, second)
    loaded = await store.load_usage("r1")
    assert loaded == first + second, (
        f"load_usage must return every report exactly, in recorded order: {loaded!r}"
    )
    assert loaded[1].cost is None, "a cost of None must stay None"
    assert loaded[1].model is None, "a model of None must stay None"
    assert loaded[3].model == "", "an empty model name must stay empty, not become None"
    assert await store.load_usage("r2") == [_usage("r2", "a", t)]
    await store.aclose()


def _spending(t: float) -> list[UsageRecord]:
    """Two runs of pipeline "alpha" (r1, r3) and one of "beta" (r2), ten seconds apart."""
    return [
        _usage("r1", "draft", t + 0, (100, 10), 0.5, "m1"),
        _usage("r1", "draft", t + 10, (200, 20), 0.25, "m1", attempt=2),
        _usage("r1", "review", t + 20, (50, 5), None, "m2"),
        _usage("r2", "draft", t + 30, (1000, 100), 1.5, "m2"),
        _usage("r2", "embed", t + 40, (7, 0), None, None),
        _usage("r3", "review", t + 50, (3, 4), 2.0, "m1"),
    ]


async def _spent(factory: StoreFactory) -> tuple[CheckpointStore, float]:
    clock = ManualClock()
    store = await factory(clock)
    t = clock()
    for run_id, pipeline in (("r1", "alpha"), ("r2", "beta"), ("r3", "alpha")):
        await store.create_run(_run(run_id, pipeline, created_at=t))
        lease = await store.acquire_lease(run_id, "me", 30)
        await store.record_usage(lease, [u for u in _spending(t) if u.run_id == run_id])
    return store, t


async def check_usage_sums_by_stage_model_and_pipeline(factory: StoreFactory) -> None:
    store, _ = await _spent(factory)
    summary = await store.usage()
    expected = UsageSummary(
        Usage(1360, 139, 4.25),
        by_stage={
            "draft": Usage(1300, 130, 2.25),
            "review": Usage(53, 9, 2.0),
            "embed": Usage(7, 0, None),
        },
        by_model={"m1": Usage(303, 34, 2.75), "m2": Usage(1050, 105, 1.5), "": Usage(7, 0)},
        by_pipeline={"alpha": Usage(353, 39, 2.75), "beta": Usage(1007, 100, 1.5)},
    )
    assert summary == expected, f"usage() must sum every run's reports: {summary!r}"
    assert summary.by_stage["embed"].cost is None, "a cost summed from no known cost is None"
    await store.aclose()


async def check_usage_filters_combine(factory: StoreFactory) -> None:
    store, t = await _spent(factory)
    cases: list[tuple[dict[str, str | float], Usage]] = [
        ({"pipeline": "alpha"}, Usage(353, 39, 2.75)),
        ({"pipeline": "beta"}, Usage(1007, 100, 1.5)),
        ({"stage": "review"}, Usage(53, 9, 2.0)),
        ({"stage": "embed"}, Usage(7, 0, None)),
        ({"model": "m2"}, Usage(1050, 105, 1.5)),
        ({"model": ""}, Usage(7, 0, None)),  # the reports without a model
        ({"since": t + 10}, Usage(1260, 129, 3.75)),  # inclusive
        ({"until": t + 10}, Usage(100, 10, 0.5)),  # exclusive
        ({"since": t + 10, "until": t + 40}, Usage(1250, 125, 1.75)),
        ({"pipeline": "alpha", "model": "m1", "since": t + 5}, Usage(203, 24, 2.25)),
        ({"stage": "review", "model": "m2"}, Usage(50, 5, None)),
        ({"stage": "draft", "pipeline": "beta"}, Usage(1000, 100, 1.5)),
        ({"pipeline": "gamma"}, Usage()),
        ({"since": t + 60}, Usage()),
    ]
    for filters, total in cases:
        summary = await store.usage(**filters)  # type: ignore[arg-type]
        assert summary.total == total, f"usage({filters}) must be {total!r}, not {summary!r}"
        assert sum(u.tokens for u in summary.by_pipeline.values()) == total.tokens
    alpha = await store.usage(pipeline="alpha")
    assert dict(alpha.by_stage) == {"draft": Usage(300, 30, 0.75), "review": Usage(53, 9, 2.0)}
    assert dict(alpha.by_pipeline) == {"alpha": Usage(353, 39, 2.75)}
    assert await store.usage(pipeline="gamma") == UsageSummary(), "nothing matched: all empty"
    await store.aclose()


async def check_delete_and_prune_forget_usage(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    for run_id in ("done", "gone", "kept"):
        await store.create_run(_run(run_id, created_at=clock()))
        lease = await store.acquire_lease(run_id, "me", 30)
        await store.record_usage(lease, [_usage(run_id, "a", clock())])
        if run_id == "done":
            await store.set_status(lease, RunStatus.COMPLETED)
        await store.release_lease(lease)
    clock.advance(100)
    await store.delete_run("gone")
    assert await store.prune(finished_before=clock()) == 1  # "done"
    summary = await store.usage()
    assert summary.total == Usage(10, 2, 0.5), f"usage of deleted runs must go: {summary!r}"
    assert set(summary.by_pipeline) == {"p"}
    for run_id in ("done", "gone"):  # a new run of the same id starts with no usage
        await store.create_run(_run(run_id, created_at=clock()))
        assert await store.load_usage(run_id) == [], f"{run_id!r}: usage must go with its run"
    assert (await store.usage()).total == Usage(10, 2, 0.5)
    await store.aclose()


CHECKPOINT_STORE_CHECKS: tuple[Callable[[StoreFactory], Awaitable[None]], ...] = (
    check_runs_round_trip,
    check_labels_round_trip,
    check_list_runs_filters_newest_first,
    check_a_lease_excludes_other_owners_until_it_expires,
    check_a_stale_token_can_write_nothing,
    check_renewal_keeps_the_lease,
    check_a_released_lease_is_free_at_once,
    check_stage_records_are_kept_verbatim_per_stage,
    check_delete_and_prune,
    check_concurrent_acquirers_get_one_lease,
    check_a_stale_write_in_a_crowd_fails_alone,
    check_usage_is_fenced,
    check_usage_is_kept_exactly_in_recorded_order,
    check_usage_sums_by_stage_model_and_pipeline,
    check_usage_filters_combine,
    check_delete_and_prune_forget_usage,
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
