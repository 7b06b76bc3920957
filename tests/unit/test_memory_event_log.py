"""MemoryStore passes the EventLog contract; the suite catches event logs that break it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from stageflow import Event, UnknownRunError
from stageflow.adapters._shared import stored_event
from stageflow.adapters.memory import MemoryStore
from stageflow.ports import EventLog
from stageflow.testing import EVENT_LOG_CHECKS, ManualClock, check_event_log
from stageflow.testing._event_contract import (
    check_a_large_batch_is_stored_in_one_call,
    check_a_seq_twice_in_one_batch_keeps_the_first,
    check_a_stored_seq_keeps_its_first_event,
    check_after_and_limit_page_through_the_events,
    check_an_unknown_run_has_no_events,
    check_bad_arguments_are_refused_naming_the_field,
    check_deleting_or_pruning_a_run_deletes_its_events,
    check_event_data_reads_back_as_json_keeps_it,
    check_events_of_runs_in_one_batch_are_kept_apart,
    check_events_read_back_as_appended,
    check_events_read_back_in_seq_order,
    check_last_event_seq_is_the_highest_stored,
)


async def memory(clock: ManualClock) -> MemoryStore:
    return MemoryStore(clock=clock)


class TestMemoryEventLogContract:
    @pytest.mark.parametrize("check", EVENT_LOG_CHECKS, ids=lambda c: c.__name__)
    def test_it_keeps_the_event_log_contract(self, check):
        asyncio.run(check(memory))

    def test_the_suite_runs_in_one_call(self):
        asyncio.run(check_event_log(memory))

    def test_it_is_an_event_log(self):
        assert isinstance(MemoryStore(), EventLog)

    def test_a_reader_changing_an_events_data_changes_no_later_read(self):
        async def main() -> dict[str, object]:
            store = MemoryStore()
            await store.append_events([Event("custom.x", "r1", "p", None, 1, 0.0, 0, {"n": 1})])
            (read,) = await store.read_events("r1")
            read.data["n"] = 2  # type: ignore[index]
            (again,) = await store.read_events("r1")
            return dict(again.data)

        assert asyncio.run(main()) == {"n": 1}


# Event logs broken on purpose, each in one way the contract forbids.


class _LosesTime(MemoryStore):
    """Keeps ts to the microsecond, as a timestamp column might."""

    async def append_events(self, events: Sequence[Event]) -> None:
        await super().append_events([replace(e, ts=round(e.ts, 6)) for e in events])


class _KeepsDataAsGiven(MemoryStore):
    """Keeps each event as given: tuples stay tuples, objects objects, the caller's dict shared."""

    async def append_events(self, events: Sequence[Event]) -> None:
        for event in events:
            self._as_given.setdefault(event.run_id, {}).setdefault(event.seq, event)

    async def read_events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        kept = self._as_given.get(run_id, {})
        got = [kept[seq] for seq in sorted(kept) if seq > after]
        return got if limit is None else got[:limit]

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._as_given: dict[str, dict[int, Event]] = {}


class _ReadsInAppendOrder(MemoryStore):
    """Reads the events in the order they were appended."""

    async def read_events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        got = [
            stored_event(*row) for seq, row in self._events.get(run_id, {}).items() if seq > after
        ]
        return got if limit is None else got[:limit]


class _LastWriteWins(MemoryStore):
    """A batch replaces the stored events of its seqs."""

    async def append_events(self, events: Sequence[Event]) -> None:
        for event in events:
            self._events.get(event.run_id, {}).pop(event.seq, None)
        await super().append_events(events)


class _LastInBatchWins(MemoryStore):
    """Ignores the seqs stored before the batch, but of a seq given twice in it keeps the last."""

    async def append_events(self, events: Sequence[Event]) -> None:
        await super().append_events(list(reversed(events)))


class _KeyedBySeq(MemoryStore):
    """Takes a seq stored for any run as stored: the runs of a batch collide."""

    async def append_events(self, events: Sequence[Event]) -> None:
        taken = {seq for kept in self._events.values() for seq in kept}
        fresh = []
        for event in events:
            if event.seq not in taken:
                taken.add(event.seq)
                fresh.append(event)
        await super().append_events(fresh)


class _IgnoresLimit(MemoryStore):
    """Returns every event after ``after``, whatever the limit."""

    async def read_events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        return await super().read_events(run_id, after=after)


class _AfterIsAnOffset(MemoryStore):
    """Skips ``after`` events rather than the events up to seq ``after``."""

    async def read_events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        got = (await super().read_events(run_id))[after:]
        return got if limit is None else got[:limit]


class _UnknownRunRaises(MemoryStore):
    """Refuses to read a run it keeps no events of."""

    async def read_events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        if not self._events.get(run_id):
            raise UnknownRunError.of(run_id)
        return await super().read_events(run_id, after=after, limit=limit)


class _CountsEvents(MemoryStore):
    """Takes the number of stored events for the last seq."""

    async def last_event_seq(self, run_id: str) -> int:
        return len(self._events.get(run_id, {}))


class _KeepsEventsOfDeletedRuns(MemoryStore):
    """delete_run leaves the run's events behind."""

    async def delete_run(self, run_id: str) -> None:
        kept = self._events.get(run_id)
        await super().delete_run(run_id)
        if kept is not None:
            self._events[run_id] = kept


class _KeepsEventsOfPrunedRuns(MemoryStore):
    """prune leaves the pruned runs' events behind."""

    async def prune(self, *, finished_before: float) -> int:
        kept = dict(self._events)
        pruned = await super().prune(finished_before=finished_before)
        self._events.update(kept)
        return pruned


class _TakesAThousandAtMost(MemoryStore):
    """Stores the first 1 000 events of a call and drops the rest."""

    async def append_events(self, events: Sequence[Event]) -> None:
        await super().append_events(events[:1000])


class _ChecksNoArguments(MemoryStore):
    """Takes a lone Event as a batch, drops what is no Event, reads any after and limit."""

    async def append_events(self, events: Sequence[Event]) -> None:
        batch = [events] if isinstance(events, Event) else events
        await super().append_events([e for e in batch if isinstance(e, Event)])

    async def read_events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        after = max(after, 0) if isinstance(after, int) else 0
        limit = None if limit is not None and limit < 0 else limit
        return await super().read_events(run_id, after=after, limit=limit)


class _WritesUntilTheBadOne(MemoryStore):
    """Stores a batch event by event: what comes before a bad one is written."""

    async def append_events(self, events: Sequence[Event]) -> None:
        if isinstance(events, Event):
            await super().append_events(events)  # refused, rightly
        for event in events:
            await super().append_events([event])


BROKEN = [
    (_LosesTime, check_events_read_back_as_appended, "seq 1: ts 1733155200.123457 instead"),
    (_KeepsDataAsGiven, check_event_data_reads_back_as_json_keeps_it, "as JSON keeps it"),
    (_ReadsInAppendOrder, check_events_read_back_in_seq_order, "in seq order"),
    (_LastWriteWins, check_a_stored_seq_keeps_its_first_event, "first write wins"),
    (_LastInBatchWins, check_a_seq_twice_in_one_batch_keeps_the_first, "the first must be kept"),
    (_KeyedBySeq, check_events_of_runs_in_one_batch_are_kept_apart, "no duplicate"),
    (_IgnoresLimit, check_after_and_limit_page_through_the_events, "at most 0"),
    (_AfterIsAnOffset, check_after_and_limit_page_through_the_events, "seq > 4"),
    (_UnknownRunRaises, check_an_unknown_run_has_no_events, r"\[\]"),
    (_CountsEvents, check_last_event_seq_is_the_highest_stored, "highest stored seq, 7"),
    (_KeepsEventsOfDeletedRuns, check_deleting_or_pruning_a_run_deletes_its_events, "deleted"),
    (_KeepsEventsOfPrunedRuns, check_deleting_or_pruning_a_run_deletes_its_events, "pruned"),
    (_TakesAThousandAtMost, check_a_large_batch_is_stored_in_one_call, "stored whole"),
    (_ChecksNoArguments, check_bad_arguments_are_refused_naming_the_field, "ConfigurationError"),
    (_WritesUntilTheBadOne, check_bad_arguments_are_refused_naming_the_field, "write nothing"),
]


class TestTheSuiteCatchesBrokenEventLogs:
    @pytest.mark.parametrize(
        ("broken", "check", "complaint"),
        BROKEN,
        ids=lambda v: v.__name__ if isinstance(v, type) else "",
    )
    def test_an_event_log_that_breaks_the_contract_is_caught(self, broken, check, complaint):
        async def factory(clock: ManualClock) -> MemoryStore:
            return broken(clock=clock)

        with pytest.raises(AssertionError, match=complaint):
            asyncio.run(check(factory))
        with pytest.raises(AssertionError):  # perhaps by an earlier check
            asyncio.run(check_event_log(factory))

    def test_every_check_is_shown_to_catch_a_broken_event_log(self):
        caught = {check for _, check, _ in BROKEN}

        missing = [check.__name__ for check in EVENT_LOG_CHECKS if check not in caught]

        assert missing == [], f"no broken event log shows these checks can fail: {missing}"
