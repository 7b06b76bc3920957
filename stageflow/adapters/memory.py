"""In-memory implementations of the ports: for tests, and runs that need not survive."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from .._events import Event
from .._status import FINISHED, RunStatus
from .._usage import Usage, UsageSummary
from ..errors import (
    ConfigurationError,
    InputAlreadyGivenError,
    InputTimeoutError,
    LeaseLostError,
    RunExistsError,
    RunLeasedError,
    UnknownInputError,
    UnknownRunError,
)
from ..ports import (
    CheckpointStore,
    EventLog,
    InputRecord,
    InputStore,
    Lease,
    RunRecord,
    StageRecord,
    UsageRecord,
)
from ._retention import Retention
from ._shared import (
    checked_after,
    checked_limit,
    event_data_text,
    events_to_append,
    input_of_run,
    item_stage,
    stage_of_run,
    stored_event,
    usage_of_run,
)

__all__ = ["MemoryStore"]


_EventRow = tuple[str, int, str, str, str | None, float, int, str]  # stored_event's arguments


class _Run:
    __slots__ = ("inputs", "lease", "record", "stages", "states", "token", "usage")

    def __init__(self, record: RunRecord) -> None:
        self.record = record
        self.stages: dict[str, StageRecord] = {}
        self.states: dict[str, str] = {}
        self.usage: list[UsageRecord] = []
        self.inputs: dict[str, InputRecord] = {}
        self.lease: Lease | None = None
        self.token = 0  # the last token handed out


class MemoryStore(CheckpointStore, InputStore, EventLog):
    """A RunStore, RunCatalog, InputStore and EventLog in a dict: fast, exact, and gone
    with the process.

    Every method runs without awaiting anything, so concurrent runs on one event
    loop see each operation as atomic.

    Args:
        clock: the store's clock, seconds since the epoch (default ``time.time``);
            pass a fake one to test lease expiry.
        retention: seconds after which finished runs are pruned (None: kept).
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.time, retention: float | None = None
    ) -> None:
        if not callable(clock):
            raise ConfigurationError(
                f"clock must be callable, not {clock!r}", field="clock", value=clock
            )
        self._clock = clock
        self._retention = Retention(retention)
        self._runs: dict[str, _Run] = {}
        self._events: dict[str, dict[int, _EventRow]] = {}  # by run, by seq

    def _get(self, run_id: str) -> _Run:
        try:
            return self._runs[run_id]
        except KeyError:
            raise UnknownRunError.of(run_id) from None

    def _fenced(self, lease: Lease) -> _Run:
        run = self._runs.get(lease.run_id)  # a run that is gone: its lease is lost too
        if run is None or run.lease is None or run.lease.token != lease.token:
            raise LeaseLostError.of(lease.run_id, lease.token)
        return run

    async def create_run(self, run: RunRecord) -> None:
        """Create a run (``RunExistsError`` if its id is taken)."""
        if run.run_id in self._runs:
            raise RunExistsError.of(run.run_id)
        self._runs[run.run_id] = _Run(replace(run, labels=dict(run.labels)))  # a copy
        await self._retention.maybe_prune(self._clock(), self._prune_before)

    async def _prune_before(self, before: float) -> int:
        return await self.prune(finished_before=before)

    async def get_run(self, run_id: str) -> RunRecord:
        """The run (``UnknownRunError`` if none)."""
        return _copied(self._get(run_id).record)

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        pipeline: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Runs matching the filters, newest first (ties: by run id, descending)."""
        limit = checked_limit(limit)
        records = [
            r.record
            for r in self._runs.values()
            if (status is None or r.record.status == status)
            and (pipeline is None or r.record.pipeline == pipeline)
        ]
        records.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return [_copied(r) for r in (records if limit is None else records[:limit])]

    async def delete_run(self, run_id: str) -> None:
        """Forget a run (``UnknownRunError``; ``RunLeasedError`` while it is driven)."""
        run = self._get(run_id)
        self._check_free(run, None)
        del self._runs[run_id]
        self._events.pop(run_id, None)

    def _check_free(self, run: _Run, owner: str | None) -> None:
        """Refuse unless the run has no unexpired lease, or ``owner`` holds it."""
        lease = run.lease
        if lease is not None and lease.owner != owner and lease.expires_at > self._clock():
            raise RunLeasedError.of(lease.run_id, lease.owner, lease.expires_at)

    def _leased(self, run: _Run) -> bool:
        return run.lease is not None and run.lease.expires_at > self._clock()

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float, *, take_over: bool = False
    ) -> Lease:
        """Take the run's lease for ``ttl`` seconds, with a new, greater token.

        ``take_over=True`` takes it although another owner's lease has not expired.
        """
        run = self._get(run_id)
        if not take_over:
            self._check_free(run, owner)
        run.token += 1
        run.lease = Lease(run_id, owner, run.token, self._clock() + ttl)
        return run.lease

    async def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """Extend a lease still held (``LeaseLostError`` if it was taken over)."""
        run = self._fenced(lease)
        run.lease = replace(lease, expires_at=self._clock() + ttl)
        return run.lease

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up at once (nothing happens if it was taken over)."""
        run = self._runs.get(lease.run_id)
        if run is not None and run.lease is not None and run.lease.token == lease.token:
            run.lease = None

    async def record_stage(self, lease: Lease, record: StageRecord) -> None:
        """Store one stage's outcome (fenced; a record of another run: ConfigurationError)."""
        stage_of_run(lease, record)
        self._fenced(lease).stages[record.stage] = record

    async def stage_records(self, run_id: str) -> dict[str, StageRecord]:
        """Every stored stage outcome of a run, by stage name (``UnknownRunError``)."""
        return dict(self._get(run_id).stages)

    async def record_usage(self, lease: Lease, records: Sequence[UsageRecord]) -> None:
        """Append usage reports of the lease's run, all or none (fenced).

        Every record must be of the lease's run (``ConfigurationError`` otherwise, and
        nothing is written). An empty sequence writes nothing, but a stale lease still
        raises ``LeaseLostError``.
        """
        batch = usage_of_run(lease, records)
        self._fenced(lease).usage.extend(batch)

    async def load_usage(self, run_id: str) -> list[UsageRecord]:
        """Every usage report of a run, in the order they were recorded.

        Like ``stage_records``: an empty list for a run without usage,
        ``UnknownRunError`` for a run that does not exist.
        """
        return list(self._get(run_id).usage)

    async def usage(
        self,
        *,
        pipeline: str | None = None,
        stage: str | None = None,
        model: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> UsageSummary:
        """Usage of all runs summed, filtered by pipeline, stage, model and report time.

        Filters combine with AND. ``since`` is inclusive and ``until`` exclusive, on the
        reports' ``at``. ``model=""`` selects the reports without a model (they count
        under ``""`` in ``by_model``).
        """
        return UsageSummary.of(
            (run.record.pipeline, r.stage, r.model, Usage(r.input_tokens, r.output_tokens, r.cost))
            for run in self._runs.values()
            if pipeline is None or run.record.pipeline == pipeline
            for r in run.usage
            if (stage is None or r.stage == stage)
            and (model is None or (r.model or "") == model)
            and (since is None or r.at >= since)
            and (until is None or r.at < until)
        )

    async def set_status(self, lease: Lease, status: RunStatus, error: str | None = None) -> None:
        """Change the run's status (fenced)."""
        run = self._fenced(lease)
        run.record = replace(run.record, status=status, error=error, updated_at=self._clock())

    async def save_state(self, lease: Lease, stage: str, state: str) -> None:
        """Keep a stage's intra-stage state (fenced)."""
        self._fenced(lease).states[stage] = state

    async def load_state(self, run_id: str, stage: str) -> str | None:
        """A stage's last saved state, or None (``UnknownRunError`` for an unknown run)."""
        return self._get(run_id).states.get(stage)

    async def prune(self, *, finished_before: float) -> int:
        """Delete finished runs last updated before ``finished_before``, unless leased."""
        old = [
            run_id
            for run_id, run in self._runs.items()
            if run.record.status in FINISHED
            and run.record.updated_at < finished_before
            and not self._leased(run)
        ]
        for run_id in old:
            del self._runs[run_id]
            self._events.pop(run_id, None)
        return len(old)

    # ------------------------------------------------------------------ events

    async def append_events(self, events: Sequence[Event]) -> None:
        """Keep the events (data as JSON keeps it); a stored ``(run_id, seq)`` is left as is."""
        for event in events_to_append(events):
            kept = self._events.setdefault(event.run_id, {})
            if event.seq not in kept:  # as a row: each read makes events of its own
                kept[event.seq] = (
                    event.run_id, event.seq, str(event.type), event.pipeline, event.stage,
                    event.ts, event.attempt, event_data_text(event),
                )  # fmt: skip

    async def read_events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        """The run's events with ``seq > after``, in ``seq`` order, at most ``limit``."""
        after = checked_after(after)
        limit = checked_limit(limit)
        kept = self._events.get(run_id, {})
        seqs = sorted(seq for seq in kept if seq > after)
        return [stored_event(*kept[seq]) for seq in (seqs if limit is None else seqs[:limit])]

    async def last_event_seq(self, run_id: str) -> int:
        """The highest kept ``seq`` of the run; 0 when none."""
        return max(self._events.get(run_id, {0: None}))

    # ------------------------------------------------------------------ inputs

    async def declare_inputs(self, lease: Lease, records: Sequence[InputRecord]) -> None:
        """Add the run's inputs that have no row yet, leaving those that have (fenced)."""
        batch = [input_of_run(lease, record) for record in records]
        inputs = self._fenced(lease).inputs
        for record in batch:
            inputs.setdefault(record.name, record)

    async def wait_input(self, lease: Lease, record: InputRecord) -> InputRecord:
        """Mark an input waiting; its row as it is now (fenced).

        A row that never waited takes ``record``'s schema, prompt, deadline and
        waiting_since; one that waited keeps its own. The value is never changed here.
        """
        input_of_run(lease, record)
        inputs = self._fenced(lease).inputs
        row = inputs.get(record.name)
        if row is None:
            row = replace(record, value=None, given_at=None)
        elif row.waiting_since is None:
            row = replace(
                row,
                schema=record.schema,
                prompt=record.prompt,
                deadline=record.deadline,
                waiting_since=record.waiting_since,
            )
        inputs[record.name] = row
        return row

    async def give_input(self, run_id: str, name: str, value: str, at: float) -> InputRecord:
        """Store input ``name``'s value, once; the row with it.

        Raises UnknownRunError, UnknownInputError (no such input, or the run has ended),
        InputAlreadyGivenError or InputTimeoutError (its deadline is at or before ``at``).
        """
        run = self._get(run_id)
        status = run.record.status
        if status in FINISHED:
            raise UnknownInputError.of(run_id, name, (), why=f"has ended ({status})")
        row = run.inputs.get(name)
        if row is None:
            stage = item_stage(name)
            declared = None if stage is None else run.inputs.get(stage)
            if declared is None:
                known = [n for n, r in run.inputs.items() if r.value is None]
                raise UnknownInputError.of(run_id, name, known)
            row = InputRecord(run_id, name, declared.schema)  # an item: its stage's schema
        if row.value is not None:
            raise InputAlreadyGivenError.of(run_id, name)
        if row.deadline is not None and row.deadline <= at:
            raise InputTimeoutError.of(name, row.deadline)
        row = run.inputs[name] = replace(row, value=value, given_at=at)
        return row

    async def load_inputs(self, run_id: str) -> dict[str, InputRecord]:
        """Every input row of the run, by name (``UnknownRunError`` for an unknown run)."""
        return dict(self._get(run_id).inputs)

    async def aclose(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"<MemoryStore runs={len(self._runs)}>"


def _copied(record: RunRecord) -> RunRecord:
    """The record, with a copy of its labels: a caller changing them changes no run."""
    return replace(record, labels=dict(record.labels)) if record.labels else record
