"""The contract of :class:`~stageflow.ports.EventLog`, as a reusable suite of checks.

:data:`EVENT_LOG_CHECKS` check a store that keeps the events of runs. The runs whose
events they write are created, leased, ended, deleted and pruned through the store's
RunStore and RunCatalog sides, so the factory makes a store that is a
:class:`~stageflow.ports.CheckpointStore` and an EventLog both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any, Protocol, TypeAlias, TypeVar

from .._events import Event, EventType
from .._status import RunStatus
from ..errors import ConfigurationError
from ..ports import CheckpointStore, EventLog
from ._clock import ManualClock
from ._store_contract import _raises, _run

T = TypeVar("T")


class _EventCheckpointStore(CheckpointStore, EventLog, Protocol):
    """A store that is a CheckpointStore and an EventLog (what the checks need)."""


EventLogFactory: TypeAlias = Callable[[ManualClock], Awaitable[_EventCheckpointStore]]
"""Makes a fresh, empty store that is an EventLog and a CheckpointStore, on the given clock.

The checks create the runs whose events they write through its RunStore side, and delete
and prune them through its RunCatalog side.
"""

_PIPELINE = "ünï 🦉 pipeline"
_T0 = 1733155200.1234567  # a wall-clock time that only a double keeps to the last digit


class _Opaque:
    """A value JSON cannot hold: it must come back as its repr."""

    def __repr__(self) -> str:
        return "<opaque 🦉>"


async def _log(
    factory: EventLogFactory, *run_ids: str
) -> tuple[_EventCheckpointStore, ManualClock]:
    """A fresh store with the runs (an event log may keep events of runs it has no record
    of, but it need not: every check writes events of runs the store knows)."""
    clock = ManualClock()
    store = await factory(clock)
    for run_id in run_ids:
        await store.create_run(_run(run_id, created_at=clock()))
    return store, clock


def _event(
    run_id: str = "r1",
    seq: int = 1,
    type_: str = EventType.STAGE_COMPLETED,
    stage: str | None = "fetch",
    *,
    attempt: int = 1,
    data: Mapping[str, Any] | None = None,
) -> Event:
    data = {"run": run_id, "seq": seq} if data is None else data
    return Event(type_, run_id, _PIPELINE, stage, seq, _T0 + seq / 8, attempt, data)


async def _returns(awaitable: Awaitable[T], message: str) -> T:
    """What ``awaitable`` returns; should it raise, an AssertionError saying ``message``."""
    try:
        return await awaitable
    except Exception as error:
        raise AssertionError(f"{message}, not raise {type(error).__name__}: {error}") from error


def _differences(got: Sequence[Event], want: Sequence[Event]) -> str:
    """What differs between the events read and those expected, field by field."""
    if [e.seq for e in got] != [e.seq for e in want]:
        return f"seqs {[e.seq for e in got]} instead of {[e.seq for e in want]}"
    return "; ".join(
        f"seq {w.seq}: {f.name} {getattr(g, f.name)!r} instead of {getattr(w, f.name)!r}"
        for g, w in zip(got, want, strict=True)
        for f in fields(Event)
        if getattr(g, f.name) != getattr(w, f.name)
    )


async def check_events_read_back_as_appended(factory: EventLogFactory) -> None:
    store, _ = await _log(factory, "r1")
    events = [
        Event(EventType.RUN_STARTED, "r1", _PIPELINE, None, 1, _T0),  # no data at all
        Event("stage.started", "r1", _PIPELINE, "fetch ✓", 2, _T0 + 1e-7, 1, {}),
        Event("custom.progress 🦉", "r1", _PIPELINE, "fetch ✓", 3, 0.1 + 0.2, 3, {"done": 0.25}),
        Event("custom.x", "r1", _PIPELINE, "ünï", 4, 1e-6, 2**31 - 1, {"note": "ünï 🦉"}),
        Event(EventType.RUN_COMPLETED, "r1", "p", None, 5, _T0 + 5, 0, {"status": "completed"}),
    ]
    await store.append_events(events)
    got = await store.read_events("r1")
    assert got == events, (
        f"read_events must return each event exactly as appended: {_differences(got, events)}"
    )
    await store.append_events([])  # an empty batch: nothing to store, nothing to refuse
    assert await store.read_events("r1") == events, "an empty batch must change nothing"
    await store.aclose()


async def check_event_data_reads_back_as_json_keeps_it(factory: EventLogFactory) -> None:
    store, _ = await _log(factory, "r1")
    given: dict[Any, Any] = {
        "nested": {"list": [1, 2.5, "three", None, True, {"deep": [[]]}], "empty": {}},
        "tuple": (1, (2, "x")),
        "text": 'ünï 🦉, "quoted", back\\slash, new\nline, tab\t, nul \x00',
        "int": 7,
        "float": 1.0,
        "bool": False,
        "none": None,
        "big": 2**53 + 1,
        "opaque": _Opaque(),
        "opaques": [_Opaque(), {"in": _Opaque()}],
        1: "an int key",
    }
    await store.append_events([_event(data=given)])
    given["nested"]["list"].append("later")  # the caller's data, changed after the append
    given["added later"] = True
    expected = {
        "nested": {"list": [1, 2.5, "three", None, True, {"deep": [[]]}], "empty": {}},
        "tuple": [1, [2, "x"]],
        "text": 'ünï 🦉, "quoted", back\\slash, new\nline, tab\t, nul \x00',
        "int": 7,
        "float": 1.0,
        "bool": False,
        "none": None,
        "big": 2**53 + 1,
        "opaque": "<opaque 🦉>",
        "opaques": ["<opaque 🦉>", {"in": "<opaque 🦉>"}],
        "1": "an int key",
    }
    (got,) = await store.read_events("r1")
    data = dict(got.data)
    assert data == expected, (
        f"data must read back as JSON keeps it (tuples as lists, other values as their "
        f"repr), as it was when appended: {data!r}"
    )
    kinds = {key: type(data[key]).__name__ for key in ("int", "float", "bool", "big")}
    assert kinds == {"int": "int", "float": "float", "bool": "bool", "big": "int"}, (
        f"numbers must keep their JSON kind: {kinds!r}"
    )
    await store.aclose()


async def check_events_read_back_in_seq_order(factory: EventLogFactory) -> None:
    store, _ = await _log(factory, "r1")
    events = [_event(seq=seq) for seq in range(1, 6)]
    await store.append_events((events[2], events[0], events[1]))  # a tuple, out of order
    await store.append_events([events[4], events[3]])
    got = await store.read_events("r1")
    assert got == events, (
        f"read_events must return the events in seq order, however appended: "
        f"{_differences(got, events)}"
    )
    first = await store.read_events("r1", limit=2)
    assert first == events[:2], (
        f"limit must take the lowest seqs, not the first appended: {[e.seq for e in first]}"
    )
    middle = await store.read_events("r1", after=2, limit=2)
    assert middle == events[2:4], f"after=2, limit=2 must be seqs 3 and 4: {middle!r}"
    await store.aclose()


async def check_a_stored_seq_keeps_its_first_event(factory: EventLogFactory) -> None:
    store, _ = await _log(factory, "r1")
    first = [_event(seq=1), _event(seq=2)]
    await store.append_events(first)
    rewritten = Event("custom.other", "r1", "other", "other", 1, 0.5, 9, {"second": True})
    await store.append_events([rewritten, _event(seq=3)])  # a stale driver's batch, say
    expected = [*first, _event(seq=3)]
    got = await store.read_events("r1")
    assert got == expected, (
        f"an event of a stored (run_id, seq) must be ignored, the first write wins, and "
        f"the rest of its batch stored: {_differences(got, expected)}"
    )
    await store.append_events(expected)  # a retried write of everything
    got = await store.read_events("r1")
    assert got == expected, (
        f"a batch written twice must change nothing: {_differences(got, expected)}"
    )
    assert await store.last_event_seq("r1") == 3
    await store.aclose()


async def check_a_seq_twice_in_one_batch_keeps_the_first(factory: EventLogFactory) -> None:
    store, _ = await _log(factory, "r1")
    once = _event(seq=1, data={"copy": "first"})
    batch = [
        once,
        _event(seq=1, type_="custom.copy", data={"copy": "second"}),
        _event(seq=2),
        _event(seq=1, stage=None, attempt=0, data={"copy": "third"}),
    ]
    await store.append_events(batch)
    got = await store.read_events("r1")
    expected = [once, _event(seq=2)]
    assert got == expected, (
        f"of one (run_id, seq) given twice in one batch, the first must be kept: "
        f"{_differences(got, expected)}"
    )
    await store.aclose()


async def check_events_of_runs_in_one_batch_are_kept_apart(factory: EventLogFactory) -> None:
    counts = {"a": 3, "b": 2, "run ü": 4}
    store, _ = await _log(factory, *counts)
    events = {
        run_id: [_event(run_id, seq, stage=run_id) for seq in range(1, n + 1)]
        for run_id, n in counts.items()
    }
    batch = sorted((e for run_events in events.values() for e in run_events), key=lambda e: e.seq)
    await store.append_events(batch)  # interleaved: a1 b1 ü1 a2 b2 ü2 a3 ü3 ü4
    await store.append_events([_event("a", 4, stage="a"), _event("b", 1, type_="custom.late")])
    events["a"].append(_event("a", 4, stage="a"))
    for run_id, expected in events.items():
        got = await store.read_events(run_id)
        assert got == expected, (
            f"read_events({run_id!r}) must return that run's events, each stored once per "
            f"run (a seq of another run is no duplicate): {_differences(got, expected)}"
        )
        last = await store.last_event_seq(run_id)
        assert last == expected[-1].seq, f"last_event_seq({run_id!r}) must be its own: {last}"
    await store.aclose()


async def check_after_and_limit_page_through_the_events(factory: EventLogFactory) -> None:
    store, _ = await _log(factory, "r1")
    seqs = [1, 2, 3, 5, 8, 13, 21, 100_000]  # a seq may be missing (a lost batch)
    events = [_event(seq=seq) for seq in seqs]
    await store.append_events(events)
    reads: list[tuple[int, int | None, list[Event]]] = [
        (0, None, events),
        (3, None, events[3:]),
        (4, None, events[3:]),  # after a seq that is not stored
        (21, None, events[-1:]),
        (100_000, None, []),  # after the last
        (10**9, None, []),  # after beyond the last
        (0, 0, []),
        (0, 3, events[:3]),
        (4, 2, events[3:5]),
        (13, 100, events[6:]),  # a limit above what there is
        (100_000, 5, []),
    ]
    for after, limit, expected in reads:
        got = await store.read_events("r1", after=after, limit=limit)
        assert got == expected, (
            f"read_events(after={after}, limit={limit}) must return the events with "
            f"seq > {after}, at most {limit}: seqs {[e.seq for e in got]}"
        )
    paged: list[Event] = []
    seen = 0
    for _ in range(len(events)):  # bounded: a store that ignores `after` must not hang us
        page = await store.read_events("r1", after=seen, limit=3)
        if not page:
            break
        paged += page
        seen = page[-1].seq
    assert paged == events, (
        f"paging by after=<the last seq read>, limit=3 must read each event once, in "
        f"order: seqs {[e.seq for e in paged]}"
    )
    await store.aclose()


async def check_an_unknown_run_has_no_events(factory: EventLogFactory) -> None:
    store, _ = await _log(factory, "r1", "quiet")
    await store.append_events([_event("r1", 1), _event("r1", 2)])
    for run_id in ("nope", "quiet", "r"):  # never known; known without events; a prefix
        for after, limit in ((0, None), (1, 5)):
            got = await _returns(
                store.read_events(run_id, after=after, limit=limit),
                f"read_events({run_id!r}) of a run without events must return []",
            )
            assert got == [], f"a run without events must have none ([]): {run_id!r}: {got!r}"
        last = await _returns(
            store.last_event_seq(run_id),
            f"last_event_seq({run_id!r}) of a run without events must return 0",
        )
        assert last == 0, f"last_event_seq of a run without events must be 0: {run_id!r}: {last}"
    assert len(await store.read_events("r1")) == 2
    await store.aclose()


async def check_last_event_seq_is_the_highest_stored(factory: EventLogFactory) -> None:
    store, _ = await _log(factory, "r1")
    assert await store.last_event_seq("r1") == 0, "a run without events must have 0"
    steps: list[tuple[list[int], int]] = [
        ([1, 2, 3], 3),
        ([7, 5], 7),  # the highest, not the last appended nor the number of events
        ([2, 6], 7),  # a duplicate and a lower one
    ]
    for seqs, highest in steps:
        await store.append_events([_event(seq=seq) for seq in seqs])
        last = await store.last_event_seq("r1")
        assert last == highest, (
            f"last_event_seq must be the highest stored seq, {highest}, after appending "
            f"{seqs}: {last}"
        )
    await store.aclose()


async def check_deleting_or_pruning_a_run_deletes_its_events(factory: EventLogFactory) -> None:
    store, clock = await _log(factory, "deleted", "pruned", "kept")
    for run_id in ("deleted", "pruned", "kept"):
        await store.append_events([_event(run_id, seq) for seq in (1, 2, 3)])
    lease = await store.acquire_lease("pruned", "alpha", 30)
    await store.set_status(lease, RunStatus.COMPLETED)
    await store.release_lease(lease)
    clock.advance(100)
    await store.delete_run("deleted")
    assert await store.prune(finished_before=clock()) == 1  # "kept" is still running
    for run_id in ("deleted", "pruned"):
        got = await store.read_events(run_id)
        assert got == [], f"the events of a {run_id} run must go with it: {got!r}"
        last = await store.last_event_seq(run_id)
        assert last == 0, f"a {run_id} run's last_event_seq must be 0: {last}"
        await store.create_run(_run(run_id, created_at=clock()))  # the same id, anew
        anew = _event(run_id, 1, type_="custom.anew", data={"anew": True})
        await store.append_events([anew])
        got = await store.read_events(run_id)
        assert got == [anew], (
            f"a new run with the id of a {run_id} one must store its own events: {got!r}"
        )
    kept = [_event("kept", seq) for seq in (1, 2, 3)]
    assert await store.read_events("kept") == kept, "another run's events must stay"
    await store.aclose()


_LARGE = 5_000


async def check_a_large_batch_is_stored_in_one_call(factory: EventLogFactory) -> None:
    store, _ = await _log(factory, "big")
    events = [
        Event("custom.tick", "big", "p", "s", seq, _T0 + seq, 1, {"i": seq})
        for seq in range(1, _LARGE + 1)
    ]
    await store.append_events(events)
    got = await store.read_events("big")
    assert len(got) == _LARGE, f"a batch of {_LARGE} events must be stored whole: {len(got)}"
    assert got == events, "a large batch must read back as appended, in seq order"
    assert await store.last_event_seq("big") == _LARGE
    tail = await store.read_events("big", after=_LARGE - 10, limit=100)
    assert tail == events[-10:], f"after and limit must hold in a large run: {len(tail)}"
    await store.aclose()


async def check_bad_arguments_are_refused_naming_the_field(factory: EventLogFactory) -> None:
    store, _ = await _log(factory, "r1")
    good = _event()
    one: Any = good  # Any: what a type checker would refuse, given all the same
    mixed: Any = [good, "stage.completed"]
    letter: Any = "x"
    calls: dict[str, tuple[str, Callable[[], Awaitable[object]]]] = {
        "append_events(an Event)": ("events", lambda: store.append_events(one)),
        "append_events([an Event, a str])": ("events", lambda: store.append_events(mixed)),
        "read_events(after=-1)": ("after", lambda: store.read_events("r1", after=-1)),
        "read_events(after='x')": ("after", lambda: store.read_events("r1", after=letter)),
        "read_events(limit=-1)": ("limit", lambda: store.read_events("r1", limit=-1)),
    }
    for name, (field, call) in calls.items():
        error = await _raises(ConfigurationError, call(), f"{name} must raise ConfigurationError")
        assert error.field == field, f"{name}: the error must name the field {field!r}: {error!r}"
    got = await store.read_events("r1")
    assert got == [], f"a refused batch must write nothing, not even its good events: {got!r}"
    assert await store.last_event_seq("r1") == 0
    await store.aclose()


EVENT_LOG_CHECKS: tuple[Callable[[EventLogFactory], Awaitable[None]], ...] = (
    check_events_read_back_as_appended,
    check_event_data_reads_back_as_json_keeps_it,
    check_events_read_back_in_seq_order,
    check_a_stored_seq_keeps_its_first_event,
    check_a_seq_twice_in_one_batch_keeps_the_first,
    check_events_of_runs_in_one_batch_are_kept_apart,
    check_after_and_limit_page_through_the_events,
    check_an_unknown_run_has_no_events,
    check_last_event_seq_is_the_highest_stored,
    check_deleting_or_pruning_a_run_deletes_its_events,
    check_a_large_batch_is_stored_in_one_call,
    check_bad_arguments_are_refused_naming_the_field,
)
"""The EventLog contract: each check takes a factory of fresh stores; parametrize over them."""


async def check_event_log(factory: EventLogFactory) -> None:
    """Run every check of the EventLog contract against stores from ``factory``.

    The stores must be CheckpointStores too: the checks create, end, delete and prune,
    through them, the runs whose events they write.

    Example:
        >>> import asyncio
        >>> from stageflow.adapters.memory import MemoryStore
        >>> async def memory(clock):
        ...     return MemoryStore(clock=clock)
        >>> asyncio.run(check_event_log(memory))
    """
    for check in EVENT_LOG_CHECKS:
        await check(factory)
