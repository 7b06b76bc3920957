"""The contracts of the store ports, as two reusable suites of checks.

:data:`RUN_STORE_CHECKS` check a :class:`~stageflow.ports.RunStore`,
:data:`RUN_CATALOG_CHECKS` a :class:`~stageflow.ports.RunCatalog`. A catalog's runs are
written through a RunStore, so the catalog suite's factory makes a store that is both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeAlias, TypeVar

from .._status import RunStatus, StageStatus
from .._usage import Usage, UsageSummary
from ..errors import (
    ConfigurationError,
    LeaseLostError,
    RunExistsError,
    RunLeasedError,
    UnknownRunError,
)
from ..ports import (
    CheckpointStore,
    Lease,
    RunCatalog,
    RunRecord,
    RunStore,
    StageRecord,
    UsageRecord,
)
from ._clock import ManualClock

E = TypeVar("E", bound=BaseException)


RunStoreFactory: TypeAlias = Callable[[ManualClock], Awaitable[RunStore]]
"""Makes a fresh, empty RunStore whose clock is the given ManualClock."""

StoreFactory: TypeAlias = Callable[[ManualClock], Awaitable[CheckpointStore]]
"""Makes a fresh, empty store that is both a RunStore and a RunCatalog, on the given clock.

The catalog suite needs one: it writes the runs it then lists through the RunStore side.
A StoreFactory is a RunStoreFactory too.
"""


async def _raises(expected: type[E], awaitable: Awaitable[object], message: str) -> E:
    """The exception ``awaitable`` raised, which must be an ``expected``."""
    try:
        await awaitable
    except expected as error:
        return error
    except Exception as error:
        raise AssertionError(f"{message}, not {type(error).__name__}: {error}") from error
    raise AssertionError(message)


def _run(run_id: str = "r1", pipeline: str = "p", created_at: float = 0.0) -> RunRecord:
    return RunRecord(
        run_id, pipeline, "fp", '{"topic":"owls"}', RunStatus.RUNNING, created_at, created_at
    )


def _stage(run_id: str, stage: str, output: str = '{"n":1}') -> StageRecord:
    return StageRecord(run_id, stage, StageStatus.COMPLETED, output, 1, 0.0, 0.5)


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


# --------------------------------------------------------------------------- RunStore


async def check_runs_round_trip(factory: RunStoreFactory) -> None:
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


_LABELS = {
    "stageflow.target": "examples/research.py:pipeline",
    "ünïcode ✓": 'owls 🦉, "quoted", back\\slash, new\nline, tab\t, nul\x00',
    "empty": "",
    "json": '{"not": "parsed"}',
    "long": "x" * 1024,
}


async def check_labels_round_trip(factory: RunStoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    labels = dict(_LABELS)
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
    lease = await store.acquire_lease("labelled", "me", 30)
    await store.set_status(lease, RunStatus.FAILED, "boom")
    failed = await store.get_run("labelled")
    assert (failed.status, dict(failed.labels)) == (RunStatus.FAILED, labels), (
        "set_status must not change the labels"
    )
    await store.aclose()


_CONFIG = (
    '{"budget":{"max_cost":0.5,"max_tokens":1000,"policy":"downgrade","warn_at":0.8},'
    '"fail_fast":false,"max_parallel":2,"note":"ünï 🦉 \\u0000","timeout":1.25,"version":1}'
)


async def check_config_round_trip(factory: RunStoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    configured = replace(_run("configured", created_at=clock()), config=_CONFIG)
    plain = _run("plain", created_at=clock() + 1)  # the default: no configuration
    for record in (configured, plain):
        await store.create_run(record)
    got = await store.get_run("configured")
    assert got.config == _CONFIG, f"get_run must return the config text exactly: {got.config!r}"
    assert got == configured
    assert (await store.get_run("plain")).config == "", "no config must stay none"
    lease = await store.acquire_lease("configured", "me", 30)
    await store.set_status(lease, RunStatus.CANCELLED, "stopped")
    assert (await store.get_run("configured")).config == _CONFIG, (
        "set_status must not change the config"
    )
    await store.aclose()


async def check_set_status_sets_status_error_and_updated_at(factory: RunStoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    record = _run(created_at=clock())
    await store.create_run(record)
    lease = await store.acquire_lease("r1", "alpha", 30)
    clock.advance(5)
    await store.set_status(lease, RunStatus.FAILED, "boom")
    assert await store.get_run("r1") == replace(
        record, status=RunStatus.FAILED, error="boom", updated_at=clock()
    ), "set_status must set the status, the error and updated_at (the store's now), only"
    clock.advance(5)
    await store.set_status(lease, RunStatus.RUNNING)
    assert await store.get_run("r1") == replace(record, updated_at=clock()), (
        "set_status with an error of None must clear the error"
    )
    await store.aclose()


async def check_reads_of_an_unknown_run_raise(factory: RunStoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    await store.create_run(_run("known", created_at=clock()))
    assert await store.stage_records("known") == {}, "a run without stage records has {}"
    assert await store.load_usage("known") == [], "a run without usage has []"
    assert await store.load_state("known", "a") is None, "a stage without state has None"
    reads: dict[str, Callable[[], Awaitable[object]]] = {
        "get_run": lambda: store.get_run("nope"),
        "stage_records": lambda: store.stage_records("nope"),
        "load_usage": lambda: store.load_usage("nope"),
        "load_state": lambda: store.load_state("nope", "a"),
        "acquire_lease": lambda: store.acquire_lease("nope", "me", 30),
    }
    for name, read in reads.items():
        unknown = await _raises(
            UnknownRunError, read(), f"{name} of an unknown run must raise UnknownRunError"
        )
        assert unknown.run_id == "nope", f"{name}: the error must name the run"
    await store.aclose()


async def check_a_lease_excludes_other_owners_until_it_expires(factory: RunStoreFactory) -> None:
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


async def check_a_lease_is_taken_by_its_owner_or_at_its_expiry(factory: RunStoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    await store.create_run(_run(created_at=clock()))
    first = await store.acquire_lease("r1", "alpha", 30)
    again = await store.acquire_lease("r1", "alpha", 30)
    assert again.token > first.token, "its owner re-acquiring a lease must get a greater token"
    await _raises(
        LeaseLostError,
        store.record_stage(first, _stage("r1", "a")),
        "the token its owner re-acquired over must be stale",
    )
    clock.advance(30)  # exactly its expiry, and nobody took it over
    await store.record_stage(again, _stage("r1", "a"))  # expiry alone takes nothing away
    again = await store.renew_lease(again, 30)
    assert again.expires_at == clock() + 30, "an expired lease not taken over must renew"
    clock.advance(30)
    taken = await store.acquire_lease("r1", "beta", 30)  # at exactly expires_at: expired
    assert taken.token > again.token
    await _raises(
        LeaseLostError,
        store.renew_lease(again, 30),
        "a lease taken over at its expiry must not renew",
    )
    await store.aclose()


async def check_a_lease_of_a_run_that_does_not_exist_writes_nothing(
    factory: RunStoreFactory,
) -> None:
    clock = ManualClock()
    store = await factory(clock)
    ghost = Lease("ghost", "alpha", 1, clock() + 30)
    writes: dict[str, Callable[[], Awaitable[object]]] = {
        "record_stage": lambda: store.record_stage(ghost, _stage("ghost", "a")),
        "record_usage": lambda: store.record_usage(ghost, [_usage("ghost", "a", clock())]),
        "record_usage([])": lambda: store.record_usage(ghost, []),
        "save_state": lambda: store.save_state(ghost, "a", '"x"'),
        "set_status": lambda: store.set_status(ghost, RunStatus.COMPLETED),
        "renew_lease": lambda: store.renew_lease(ghost, 30),
    }
    for name, write in writes.items():
        await _raises(
            LeaseLostError,
            write(),
            f"{name} with the lease of a run that does not exist must raise LeaseLostError",
        )
    await store.release_lease(ghost)  # nothing to release: no error
    await _raises(UnknownRunError, store.get_run("ghost"), "a refused write must create nothing")
    await store.aclose()


async def check_a_stale_token_can_write_nothing(factory: RunStoreFactory) -> None:
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


async def check_a_take_over_takes_an_unexpired_lease(factory: RunStoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    await store.create_run(_run(created_at=clock()))
    old = await store.acquire_lease("r1", "alpha", 30)
    await store.record_stage(old, _stage("r1", "a"))
    clock.advance(1)  # alpha's lease has 29 s to go: only a take-over gets the run now
    try:
        new = await store.acquire_lease("r1", "beta", 30, take_over=True)
    except RunLeasedError as error:
        raise AssertionError(
            "acquire_lease(take_over=True) must take a lease that has not expired, "
            "not raise RunLeasedError"
        ) from error
    assert (new.owner, new.expires_at) == ("beta", clock() + 30)
    assert new.token > old.token, "a take-over must get a greater fencing token"
    writes: dict[str, Callable[[], Awaitable[object]]] = {
        "record_stage": lambda: store.record_stage(old, _stage("r1", "b")),
        "record_usage": lambda: store.record_usage(old, [_usage("r1", "b", clock())]),
        "save_state": lambda: store.save_state(old, "b", '"half"'),
        "set_status": lambda: store.set_status(old, RunStatus.FAILED, "late"),
        "renew_lease": lambda: store.renew_lease(old, 30),
    }
    for name, write in writes.items():
        lost = await _raises(
            LeaseLostError, write(), f"{name} of the owner taken over must raise LeaseLostError"
        )
        assert lost.token == old.token
    await store.release_lease(old)  # a no-op: the lease is beta's now
    await _raises(
        RunLeasedError,
        store.acquire_lease("r1", "alpha", 30),
        "after a take-over the run is the new owner's: others get RunLeasedError",
    )
    assert set(await store.stage_records("r1")) == {"a"}, "a write taken over must not land"
    assert await store.load_usage("r1") == []
    assert await store.load_state("r1", "b") is None
    assert (await store.get_run("r1")).status == RunStatus.RUNNING
    await store.record_stage(new, _stage("r1", "b"))
    assert set(await store.stage_records("r1")) == {"a", "b"}
    again = await store.acquire_lease("r1", "beta", 30, take_over=True)  # its own: fine too
    assert again.token > new.token
    await store.release_lease(again)
    free = await store.acquire_lease("r1", "gamma", 30, take_over=True)  # a free run: fine too
    assert free.token > again.token
    unknown = await _raises(
        UnknownRunError,
        store.acquire_lease("nope", "beta", 30, take_over=True),
        "taking over an unknown run must raise UnknownRunError",
    )
    assert unknown.run_id == "nope"
    await store.aclose()


async def check_renewal_keeps_the_lease(factory: RunStoreFactory) -> None:
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


async def check_a_released_lease_is_free_at_once(factory: RunStoreFactory) -> None:
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


async def check_stage_records_are_kept_verbatim_per_stage(factory: RunStoreFactory) -> None:
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
    await store.aclose()


async def check_a_record_of_another_run_is_refused(factory: RunStoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    for run_id in ("r1", "r2"):
        await store.create_run(_run(run_id, created_at=clock()))
    mine = await store.acquire_lease("r1", "alpha", 30)
    await store.acquire_lease("r2", "alpha", 30)  # a lease of r2, perhaps of mine's token
    for lease, when in ((mine, ""), (replace(mine, token=mine.token - 1), " (a stale lease)")):
        await _raises(
            ConfigurationError,
            store.record_stage(lease, _stage("r2", "a")),
            f"a stage record of another run than the lease's must be refused with "
            f"ConfigurationError{when}",
        )
        await _raises(
            ConfigurationError,
            store.record_usage(lease, [_usage("r1", "a", clock()), _usage("r2", "a", clock())]),
            f"a usage record of another run than the lease's must be refused with "
            f"ConfigurationError{when}",
        )
    for run_id in ("r1", "r2"):
        assert await store.stage_records(run_id) == {}, "a refused record must write nothing"
        assert await store.load_usage(run_id) == [], "a refused batch must write nothing"
    await store.aclose()


async def check_state_round_trip(factory: RunStoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    for run_id in ("r1", "r2"):
        await store.create_run(_run(run_id, created_at=clock()))
    lease = await store.acquire_lease("r1", "alpha", 30)
    other = await store.acquire_lease("r2", "alpha", 30)
    assert await store.load_state("r1", "a") is None, "a stage that saved no state has None"
    text = '{"step":1,"é":"ünïcode 🦉","n":[1,2.5,null],"s":"' + "x" * 10_000 + '"}'
    await store.save_state(lease, "a", text)
    assert await store.load_state("r1", "a") == text, (
        "load_state must return what save_state kept, verbatim"
    )
    await store.save_state(lease, "a", '"step 2"')
    assert await store.load_state("r1", "a") == '"step 2"', "a later state replaces the earlier"
    await store.save_state(lease, "b", '""')
    await store.save_state(other, "a", '"of r2"')
    states = [await store.load_state(run_id, stage) for run_id, stage in
              (("r1", "a"), ("r1", "b"), ("r1", "c"), ("r2", "a"), ("r2", "b"))]  # fmt: skip
    assert states == ['"step 2"', '""', None, '"of r2"', None], (
        f"each stage of each run must keep its own state: {states!r}"
    )
    await store.record_stage(lease, _stage("r1", "a"))
    assert await store.load_state("r1", "a") == '"step 2"', "recording a stage keeps its state"
    await store.release_lease(lease)
    successor = await store.acquire_lease("r1", "beta", 30)
    assert await store.load_state("r1", "a") == '"step 2"', (
        "a state must outlive its driver's lease: a resume reads it"
    )
    await store.save_state(successor, "a", '"step 3"')
    assert await store.load_state("r1", "a") == '"step 3"'
    await store.aclose()


# --------------------------------------------------------------------------- RunCatalog


async def check_the_catalog_reads_runs_as_they_were_written(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    record = _run(created_at=clock())
    await store.create_run(record)
    lease = await store.acquire_lease("r1", "alpha", 30)
    await store.record_stage(lease, _stage("r1", "a"))
    spent = [_usage("r1", "a", clock())]
    await store.record_usage(lease, spent)
    catalog: RunCatalog = store
    assert await catalog.get_run("r1") == record
    assert await catalog.stage_records("r1") == {"a": _stage("r1", "a")}
    assert await catalog.load_usage("r1") == spent
    for name, read in (
        ("get_run", lambda: catalog.get_run("nope")),
        ("stage_records", lambda: catalog.stage_records("nope")),
        ("load_usage", lambda: catalog.load_usage("nope")),
        ("delete_run", lambda: catalog.delete_run("nope")),
    ):
        unknown = await _raises(
            UnknownRunError, read(), f"{name} of an unknown run must raise UnknownRunError"
        )
        assert unknown.run_id == "nope"
    await store.aclose()


async def check_list_runs_filters_newest_first(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    for k, pipeline in enumerate(["a", "b", "a"]):
        await store.create_run(_run(f"r{k}", pipeline, created_at=clock() + k))
    await store.create_run(_run("r1x", "b", created_at=clock() + 1))  # created with r1
    newest = ["r2", "r1x", "r1", "r0"]
    listed = [r.run_id for r in await store.list_runs()]
    assert listed == newest, f"list_runs must be newest first, then by run id: {listed!r}"
    assert [r.run_id for r in await store.list_runs(pipeline="a")] == ["r2", "r0"]
    for limit in (0, 1, 2, 10):
        got = [r.run_id for r in await store.list_runs(limit=limit)]
        assert got == newest[:limit], f"list_runs(limit={limit}) must be {newest[:limit]!r}"
    lease = await store.acquire_lease("r1", "me", 30)
    await store.set_status(lease, RunStatus.FAILED, "boom")
    failed = await store.list_runs(status=RunStatus.FAILED)
    assert [(r.run_id, r.error) for r in failed] == [("r1", "boom")]
    both = await store.list_runs(status=RunStatus.RUNNING, pipeline="b")
    assert [r.run_id for r in both] == ["r1x"], "filters must combine"
    for bad in (-1, True, 1.5, "3"):
        await _raises(
            ConfigurationError,
            store.list_runs(limit=bad),  # type: ignore[arg-type]
            f"list_runs(limit={bad!r}) must be refused with ConfigurationError",
        )
    await store.aclose()


async def check_listed_runs_keep_their_labels(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    await store.create_run(replace(_run("labelled", created_at=clock()), labels=dict(_LABELS)))
    await store.create_run(_run("plain", created_at=clock() + 1))
    listed = {r.run_id: dict(r.labels) for r in await store.list_runs()}
    assert listed == {"labelled": _LABELS, "plain": {}}, (
        f"list_runs must return the labels exactly: {listed!r}"
    )
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
    assert await store.prune(finished_before=clock() - 200) == 0, (
        "prune must delete only runs updated strictly before finished_before"
    )
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


async def check_a_leased_run_is_neither_deleted_nor_pruned(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    await store.create_run(_run("done", created_at=clock()))
    lease = await store.acquire_lease("done", "me", 30)
    await store.set_status(lease, RunStatus.COMPLETED)  # finished, not released yet
    clock.advance(10)
    assert await store.prune(finished_before=clock()) == 0, "prune must pass a leased run by"
    await _raises(
        RunLeasedError, store.delete_run("done"), "a run under a lease must not be deleted"
    )
    clock.advance(30)  # the lease expired, unreleased: it protects the run no more
    assert await store.prune(finished_before=clock()) == 1, "an expired lease must not stop prune"
    await store.aclose()


async def check_a_deleted_run_goes_with_everything(factory: StoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    await store.create_run(_run(created_at=clock()))
    stalled = await store.acquire_lease("r1", "alpha", 30)
    await store.record_stage(stalled, _stage("r1", "a"))
    await store.save_state(stalled, "b", '"half"')
    await store.record_usage(stalled, [_usage("r1", "a", clock())])
    clock.advance(30)
    await store.delete_run("r1")  # its driver stalled past its lease
    for name, read in (
        ("get_run", lambda: store.get_run("r1")),
        ("stage_records", lambda: store.stage_records("r1")),
        ("load_usage", lambda: store.load_usage("r1")),
    ):
        await _raises(
            UnknownRunError, read(), f"{name} of a deleted run must raise UnknownRunError"
        )
    await _raises(
        LeaseLostError,
        store.record_stage(stalled, _stage("r1", "c")),
        "a fenced write to a deleted run must raise LeaseLostError",
    )
    await store.release_lease(stalled)  # nothing to release: no error
    await store.create_run(_run(created_at=clock()))  # the id again: a new run, with nothing
    assert await store.stage_records("r1") == {}, "stage records must go with their run"
    assert await store.load_state("r1", "b") is None, "states must go with their run"
    assert await store.load_usage("r1") == [], "usage must go with its run"
    await store.aclose()


async def check_concurrent_acquirers_get_one_lease(factory: RunStoreFactory) -> None:
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


async def check_a_stale_write_in_a_crowd_fails_alone(factory: RunStoreFactory) -> None:
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


async def check_usage_is_fenced(factory: RunStoreFactory) -> None:
    clock = ManualClock()
    store = await factory(clock)
    for run_id in ("r1", "r2"):
        await store.create_run(_run(run_id, created_at=clock()))
    old = await store.acquire_lease("r1", "alpha", 30)
    first = _usage("r1", "a", clock())
    await store.record_usage(old, [first])
    await _raises(
        ConfigurationError,
        store.record_usage(old, [_usage("r1", "a", clock()), _usage("r2", "a", clock())]),
        "a usage record of another run than the lease's must be refused with ConfigurationError",
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


async def check_usage_is_kept_exactly_in_recorded_order(factory: RunStoreFactory) -> None:
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


RUN_STORE_CHECKS: tuple[Callable[[RunStoreFactory], Awaitable[None]], ...] = (
    check_runs_round_trip,
    check_labels_round_trip,
    check_config_round_trip,
    check_set_status_sets_status_error_and_updated_at,
    check_reads_of_an_unknown_run_raise,
    check_a_lease_excludes_other_owners_until_it_expires,
    check_a_lease_is_taken_by_its_owner_or_at_its_expiry,
    check_a_stale_token_can_write_nothing,
    check_a_lease_of_a_run_that_does_not_exist_writes_nothing,
    check_a_take_over_takes_an_unexpired_lease,
    check_renewal_keeps_the_lease,
    check_a_released_lease_is_free_at_once,
    check_stage_records_are_kept_verbatim_per_stage,
    check_a_record_of_another_run_is_refused,
    check_state_round_trip,
    check_concurrent_acquirers_get_one_lease,
    check_a_stale_write_in_a_crowd_fails_alone,
    check_usage_is_fenced,
    check_usage_is_kept_exactly_in_recorded_order,
)
"""The RunStore contract: each check takes a factory of fresh stores; parametrize over them."""

RUN_CATALOG_CHECKS: tuple[Callable[[StoreFactory], Awaitable[None]], ...] = (
    check_the_catalog_reads_runs_as_they_were_written,
    check_list_runs_filters_newest_first,
    check_listed_runs_keep_their_labels,
    check_delete_and_prune,
    check_a_leased_run_is_neither_deleted_nor_pruned,
    check_a_deleted_run_goes_with_everything,
    check_usage_sums_by_stage_model_and_pipeline,
    check_usage_filters_combine,
    check_delete_and_prune_forget_usage,
)
"""The RunCatalog contract: each check takes a factory of fresh stores that are both ports."""

CHECKPOINT_STORE_CHECKS: tuple[Callable[[StoreFactory], Awaitable[None]], ...] = (
    RUN_STORE_CHECKS + RUN_CATALOG_CHECKS
)
"""Both suites: what a CheckpointStore (a store that is both ports) must pass."""


async def check_run_store(factory: RunStoreFactory) -> None:
    """Run every check of the RunStore contract against stores from ``factory``.

    Example:
        >>> import asyncio
        >>> from stageflow.adapters.memory import MemoryStore
        >>> async def memory(clock):
        ...     return MemoryStore(clock=clock)
        >>> asyncio.run(check_run_store(memory))
    """
    for check in RUN_STORE_CHECKS:
        await check(factory)


async def check_run_catalog(factory: StoreFactory) -> None:
    """Run every check of the RunCatalog contract against stores from ``factory``.

    The stores must be RunStores too: the checks write, through them, the runs they list.

    Example:
        >>> import asyncio
        >>> from stageflow.adapters.memory import MemoryStore
        >>> async def memory(clock):
        ...     return MemoryStore(clock=clock)
        >>> asyncio.run(check_run_catalog(memory))
    """
    for check in RUN_CATALOG_CHECKS:
        await check(factory)


async def check_checkpoint_store(factory: StoreFactory) -> None:
    """Run both suites (:func:`check_run_store`, :func:`check_run_catalog`) on ``factory``.

    Example:
        >>> import asyncio
        >>> from stageflow.adapters.memory import MemoryStore
        >>> async def memory(clock):
        ...     return MemoryStore(clock=clock)
        >>> asyncio.run(check_checkpoint_store(memory))
    """
    await check_run_store(factory)
    await check_run_catalog(factory)
