"""SQLAlchemyStore: a RunStore, RunCatalog, InputStore and EventLog on SQLite (a file, the
default) or PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import math
import re
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from ..._check import check_queue, integer, number
from ..._events import Event
from ..._status import FINISHED, RunStatus, StageStatus
from ..._usage import Usage, UsageSummary
from ...errors import (
    ConfigurationError,
    InputAlreadyGivenError,
    InputTimeoutError,
    LeaseLostError,
    RunExistsError,
    RunLeasedError,
    SchemaError,
    StoreError,
    UnknownInputError,
    UnknownRunError,
)
from ...ports import (
    CheckpointStore,
    EventLog,
    InputRecord,
    InputStore,
    Lease,
    RunQueue,
    RunRecord,
    StageRecord,
    UsageRecord,
    WorkerRecord,
)
from .._retention import Retention
from .._shared import (
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
from . import _schema as sql

Rows = list[tuple[Any, ...]]
_T = TypeVar("_T")


class SQLAlchemyStore(CheckpointStore, InputStore, EventLog, RunQueue):
    """A RunStore and RunCatalog (a CheckpointStore), an InputStore and an EventLog, in SQLite
    or PostgreSQL, through SQLAlchemy 2.

    Args:
        url: ``sqlite:///runs.db`` (also ``sqlite+aiosqlite://...``; a file, in WAL
            mode with ``synchronous=NORMAL``) or ``postgresql+asyncpg://user@host/db``
            (``postgresql://`` means asyncpg too).
        lease_ttl: the default lease lifetime of engines using this store (seconds).
        clock: the store's clock, seconds since the epoch (default ``time.time``;
            drivers sharing a database should keep their clocks in sync).
        retention: seconds after which finished runs are pruned, checked as new runs
            are created (None: runs are kept until ``prune`` or ``delete_run``).

    The schema is created on first use and versioned; a database of an older schema
    is upgraded when opened (version 1, before usage was kept, gains the table
    ``stageflow_usage``; version 2, before run labels, the column
    ``stageflow_runs.labels``; version 3, before stored run configurations, the column
    ``stageflow_runs.config``; version 4, before inputs, the table ``stageflow_inputs``;
    version 5, before the event log, the table ``stageflow_events``), one of a newer
    schema is refused with :class:`~stageflow.errors.SchemaError`. Backend errors become
    :class:`~stageflow.errors.StoreError`.

    On SQLite every write is one statement (``record_usage``, ``append_events``,
    ``delete_run`` and ``prune``: one transaction) on one connection, committed on the
    event loop's thread: in WAL mode with ``synchronous=NORMAL`` a commit does not wait
    for the disk, so that is tens of microseconds. When another process holds the write
    lock, the write moves to a worker thread that waits for it, so the loop never blocks
    on a lock; so does a batch of more than 1000 events. WAL checkpoints run in a worker
    thread too.

    Usage reports are rows of ``stageflow_usage``, deleted with their run (by
    ``delete_run``, ``prune`` and retention); ``usage()`` sums them in the database.
    Inputs are rows of ``stageflow_inputs``, deleted with their run too; ``give_input``
    stores a value with one conditional write, so that of senders racing, in any
    number of processes, exactly one succeeds.

    Events are rows of ``stageflow_events``, keyed by ``(run_id, seq)``, deleted with their
    run too: ``append_events`` writes a batch in one transaction with one statement
    (``ON CONFLICT DO NOTHING``: the first write of an event wins) and is not fenced by a
    lease; ``read_events`` reads a run's events by its primary key, in ``seq`` order.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        lease_ttl: float = 30.0,
        clock: Callable[[], float] = time.time,
        retention: float | None = None,
    ) -> None:
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError, TypeError) as error:
            raise ConfigurationError(
                f"not a database URL: {url!r}", field="url", value=url
            ) from error
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            if parsed.host and parsed.database in (None, ""):  # sqlite://runs.db
                raise ConfigurationError(
                    f"{url!r} names a host {parsed.host!r}, not a file: a SQLite URL has "
                    f"three slashes before a relative path (sqlite:///{parsed.host}) and "
                    "four before an absolute one (sqlite:////var/lib/runs.db)",
                    field="url",
                    value=url,
                )
            if parsed.database in (None, "", ":memory:"):
                raise ConfigurationError(
                    f"a SQLite store needs a file, not {url!r}; use MemoryStore for memory",
                    field="url",
                    value=url,
                )
            path = Path(parsed.database or "")
            _check_sqlite_file(path)  # a file that is no SQLite database: refused now
            self._db: _SQLite | _Postgres = _SQLite(path)
        elif backend == "postgresql":
            self._db = _Postgres(parsed.set(drivername="postgresql+asyncpg"))
        else:
            raise ConfigurationError(
                f"SQLAlchemyStore supports sqlite:// and postgresql:// URLs, not {url!r}",
                field="url",
                value=url,
            )
        number(lease_ttl, "lease_ttl", "a positive number of seconds", gt=0, finite=False)
        self.url = parsed.render_as_string(hide_password=True)
        self.lease_ttl = float(lease_ttl)
        self._clock = clock
        self._retention = Retention(retention)
        self._ready: asyncio.Lock | None = None
        self._opened = False

    async def _run(self, statement: str, params: Mapping[str, Any], *, group: bool = False) -> Rows:
        # _call, inlined: one coroutine and no closure less per write.
        if not self._opened:
            await self._open()
        try:
            return await self._db.run(statement, params, group=group)
        except (SQLAlchemyError, sqlite3.Error, OSError) as error:
            raise StoreError(f"{self.url}: {_said(error)}") from error

    async def _call(self, call: Callable[[], Awaitable[Rows]]) -> Rows:
        if not self._opened:
            await self._open()
        try:
            return await call()
        except (SQLAlchemyError, sqlite3.Error, OSError) as error:
            raise StoreError(f"{self.url}: {_said(error)}") from error

    async def open(self) -> None:
        """Open the database now: connect, create or upgrade the schema, check it.

        Call it where the program starts (``await store.open()``) so that a database
        that cannot be used fails there, in one line, and not at the first write of
        a run. A store not opened opens itself at its first use; opening twice does
        nothing. A SQLite file that is no SQLite database (e.g. another kind of file)
        is refused already when the store is made.

        Raises:
            SchemaError: the database holds a newer stageflow schema.
            StoreError: the database cannot be reached or used (a corrupt or truncated
                SQLite file, a server that refuses the connection, ...): the message
                names the file or URL and what is wrong.
        """
        await self._open()

    async def _open(self) -> None:
        if self._ready is None:
            self._ready = asyncio.Lock()
        async with self._ready:
            if self._opened:
                return
            try:
                await self._db.open()
                await self._db.run(sql.SET_VERSION, {"version": str(sql.SCHEMA_VERSION)})
                (version,) = (await self._db.run(sql.GET_VERSION, {}))[0]
                if int(version) > sql.SCHEMA_VERSION:
                    raise SchemaError(
                        f"{self.url} has stageflow schema version {version}, newer than this "
                        f"stageflow's ({sql.SCHEMA_VERSION}); upgrade stageflow to use it"
                    )
                await self._upgrade(int(version))
            except (SQLAlchemyError, sqlite3.Error, OSError) as error:
                db = self._db
                label = db.path if isinstance(db, _SQLite) else self.url  # the file, or URL
                raise StoreError(f"{label} cannot be used as a store: {_said(error)}") from error
            self._opened = True

    async def _upgrade(self, version: int) -> None:
        """Bring an older schema to this one, a version at a time (create_all has run)."""
        for old in range(version, sql.SCHEMA_VERSION):
            for statement in sql.UPGRADES[old]:
                await self._db.upgrade(statement)
            await self._db.run(sql.UPGRADE_VERSION, {"old": str(old), "new": str(old + 1)})

    # ------------------------------------------------------------------ runs

    async def create_run(self, run: RunRecord) -> None:
        """Create a run (``RunExistsError`` if its id is taken)."""
        if not await self._run(sql.INSERT_RUN, _run_params(run)):
            raise RunExistsError.of(run.run_id)
        await self._retention.maybe_prune(self._clock(), self._prune_before)

    async def _prune_before(self, before: float) -> int:
        return await self.prune(finished_before=before)

    async def get_run(self, run_id: str) -> RunRecord:
        """The run (``UnknownRunError`` if none)."""
        rows = await self._run(sql.GET_RUN, {"run_id": run_id})
        if not rows:
            raise UnknownRunError.of(run_id)
        return _run_record(rows[0])

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        pipeline: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Runs matching the filters, newest first (ties: by run id, descending)."""
        limit = checked_limit(limit)
        where: list[str] = []
        params: dict[str, Any] = {}
        if status is not None:
            where.append("status = :status")
            params["status"] = RunStatus(status).value
        if pipeline is not None:
            where.append("pipeline = :pipeline")
            params["pipeline"] = pipeline
        statement = f"SELECT {sql.RUN_COLUMNS} FROM stageflow_runs"
        if where:
            statement += " WHERE " + " AND ".join(where)
        statement += " ORDER BY created_at DESC, run_id DESC"
        if limit is not None:
            statement += " LIMIT :limit"
            params["limit"] = limit
        return [_run_record(row) for row in await self._run(statement, params)]

    async def delete_run(self, run_id: str) -> None:
        """Forget a run and its events (``UnknownRunError``; ``RunLeasedError`` while it is
        driven)."""
        params = {"run_id": run_id, "now": self._clock()}
        statement = sql.DELETE_RUN_FOR[self._db.dialect]
        if not await self._call(lambda: self._db.delete_runs(statement, params)):
            await self._refusal(run_id)

    async def _refusal(self, run_id: str) -> None:
        """Why a run could not be taken: it does not exist, or someone holds it."""
        rows = await self._run(sql.LEASE_OF, {"run_id": run_id})
        if not rows:
            raise UnknownRunError.of(run_id)
        owner, expires = rows[0]
        raise RunLeasedError.of(run_id, owner or "?", expires or 0.0)

    # ------------------------------------------------------------------ leases

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float, *, take_over: bool = False
    ) -> Lease:
        """Take the run's lease for ``ttl`` seconds, with a new, greater token.

        ``take_over=True`` takes it although another owner's lease has not expired.
        """
        now = self._clock()
        if take_over:
            params = {"run_id": run_id, "owner": owner, "expires": now + ttl}
            rows = await self._run(sql.TAKE_OVER, params)
        else:
            params = {"run_id": run_id, "owner": owner, "now": now, "expires": now + ttl}
            rows = await self._run(sql.ACQUIRE, params)
        if not rows:
            await self._refusal(run_id)
        return Lease(run_id, owner, int(rows[0][0]), now + ttl)

    async def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """Extend a lease still held (``LeaseLostError`` if it was taken over)."""
        expires = self._clock() + ttl
        params = {"run_id": lease.run_id, "token": lease.token, "expires": expires}
        if not await self._run(sql.RENEW, params):
            raise LeaseLostError.of(lease.run_id, lease.token)
        return Lease(lease.run_id, lease.owner, lease.token, expires)

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up at once (nothing happens if it was taken over)."""
        await self._run(sql.RELEASE, {"run_id": lease.run_id, "token": lease.token})

    # ------------------------------------------------------------------ fenced writes

    async def record_stage(self, lease: Lease, record: StageRecord) -> None:
        """Store one stage's outcome (fenced, one statement; another run's: ConfigurationError)."""
        stage_of_run(lease, record)
        db = self._db
        if not isinstance(db, _SQLite):
            params = {
                "run_id": record.run_id, "token": lease.token, "stage": record.stage,
                "status": record.status.value, "output": record.output,
                "attempts": record.attempts, "started": record.started, "ended": record.ended,
                "reason": record.reason,
            }  # fmt: skip
            if not await self._run(sql.RECORD_STAGE_FOR[db.dialect], params):
                raise LeaseLostError.of(lease.run_id, lease.token)
            return
        # A map's items wait for their group's commit in thousands, and the garbage collector
        # goes through all that each holds meanwhile: a row (sql.STAGE_COLUMNS' values), not
        # the record, and no coroutine of _run's.
        row = (
            record.run_id, record.stage, record.status.value, record.output, record.attempts,
            record.started, record.ended, record.reason,
        )  # fmt: skip
        del record
        if not self._opened:
            await self._open()
        try:
            written = await db.record_stage(row, lease.token)
        except (*_ROW_ERRORS, OSError) as error:
            raise StoreError(f"{self.url}: {_said(error)}") from error
        if not written:
            raise LeaseLostError.of(lease.run_id, lease.token)

    async def stage_records(self, run_id: str) -> dict[str, StageRecord]:
        """Every stored stage outcome of a run, by stage name (``UnknownRunError``).

        One statement: the run's row, joined to its stages' rows if it has any.
        """
        rows = await self._run(sql.STAGE_RECORDS, {"run_id": run_id})
        if not rows:
            raise UnknownRunError.of(run_id)
        return {
            row[1]: StageRecord(
                row[0], row[1], StageStatus(row[2]), row[3], row[4], row[5], row[6], row[7]
            )
            for row in rows
            if row[1] is not None  # the run without a stage
        }

    async def record_usage(self, lease: Lease, records: Sequence[UsageRecord]) -> None:
        """Append usage reports of the lease's run, all or none (fenced, one transaction).

        Every record must be of the lease's run (``ConfigurationError`` otherwise, and
        nothing is written). An empty sequence writes nothing, but a stale lease still
        raises ``LeaseLostError``.
        """
        batch = usage_of_run(lease, records)
        if batch:
            held = await self._call(lambda: self._db.record_usage(lease, batch))
        else:
            held = await self._run(sql.FENCE, {"run_id": lease.run_id, "token": lease.token})
        if not held:
            raise LeaseLostError.of(lease.run_id, lease.token)

    async def load_usage(self, run_id: str) -> list[UsageRecord]:
        """Every usage report of a run, in the order they were recorded.

        Like ``stage_records``: an empty list for a run without usage,
        ``UnknownRunError`` for a run that does not exist (one statement).
        """
        rows = await self._run(sql.LOAD_USAGE, {"run_id": run_id})
        if not rows:
            raise UnknownRunError.of(run_id)
        return [UsageRecord(*row) for row in rows if row[0] is not None]

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
        under ``""`` in ``by_model``). The database sums, per pipeline, stage and model.
        """
        given: dict[str, str | float | None] = {
            "pipeline": pipeline, "stage": stage, "model": model, "since": since, "until": until,
        }  # fmt: skip
        params = {name: value for name, value in given.items() if value is not None}
        statement = sql.USAGE_SUMS
        if params:
            statement += " WHERE " + " AND ".join(sql.USAGE_FILTERS[name] for name in params)
        rows = await self._run(statement + sql.USAGE_GROUPS, params)
        return UsageSummary.of(
            (pipe, name, used_model, Usage(int(inputs), int(outputs), cost))
            for pipe, name, used_model, inputs, outputs, cost in rows
        )

    async def set_status(self, lease: Lease, status: RunStatus, error: str | None = None) -> None:
        """Change the run's status (fenced)."""
        params = {
            "run_id": lease.run_id, "token": lease.token, "status": RunStatus(status).value,
            "error": error, "now": self._clock(),
        }  # fmt: skip
        if not await self._run(sql.SET_STATUS, params):
            raise LeaseLostError.of(lease.run_id, lease.token)

    async def save_state(self, lease: Lease, stage: str, state: str) -> None:
        """Keep a stage's intra-stage state (fenced)."""
        params = {"run_id": lease.run_id, "token": lease.token, "stage": stage, "state": state}
        if not await self._run(sql.SAVE_STATE_FOR[self._db.dialect], params):
            raise LeaseLostError.of(lease.run_id, lease.token)

    async def load_state(self, run_id: str, stage: str) -> str | None:
        """A stage's last saved state, or None (``UnknownRunError``; one statement)."""
        rows = await self._run(sql.LOAD_STATE, {"run_id": run_id, "stage": stage})
        if not rows:
            raise UnknownRunError.of(run_id)
        state: str | None = rows[0][0]
        return state

    async def prune(self, *, finished_before: float) -> int:
        """Delete finished runs last updated before ``finished_before``, unless leased
        (and their stages, states, usage, inputs and events, in the same transaction)."""
        params = {"before": finished_before, "now": self._clock()}
        statement = sql.PRUNE_FOR[self._db.dialect]
        return len(await self._call(lambda: self._db.delete_runs(statement, params)))

    # ------------------------------------------------------------------ inputs

    async def declare_inputs(self, lease: Lease, records: Sequence[InputRecord]) -> None:
        """Add the run's inputs that have no row yet, leaving those that have (fenced, one
        transaction)."""
        batch = [input_of_run(lease, record) for record in records]
        if not await self._call(lambda: self._db.declare_inputs(lease, batch)):
            raise LeaseLostError.of(lease.run_id, lease.token)

    async def wait_input(self, lease: Lease, record: InputRecord) -> InputRecord:
        """Mark an input waiting; its row as it is now (fenced).

        One statement inserts the row, or merges one that never waited (its schema,
        prompt, deadline and waiting_since become ``record``'s); a row that waited is
        read as it is. The value is never changed here.
        """
        input_of_run(lease, record)
        params = {
            "run_id": lease.run_id, "token": lease.token, "name": record.name,
            "schema": record.schema, "prompt": record.prompt, "deadline": record.deadline,
            "waiting_since": record.waiting_since,
        }  # fmt: skip
        rows = await self._run(sql.WAIT_INPUT_FOR[self._db.dialect], params, group=True)
        if not rows:  # the lease is lost, or the row waited already: which?
            rows = await self._run(sql.WAITED_INPUT, params)
            if not rows:
                raise LeaseLostError.of(lease.run_id, lease.token)
        return InputRecord(*rows[0])

    async def give_input(self, run_id: str, name: str, value: str, at: float) -> InputRecord:
        """Store input ``name``'s value, once; the row with it.

        One conditional write gives it (an item ``stage[key]`` without a row: one
        insert); only when it writes nothing does the store read why: UnknownRunError,
        UnknownInputError (no such input, or the run has ended), InputAlreadyGivenError
        or InputTimeoutError (its deadline is at or before ``at``).
        """
        params = {"run_id": run_id, "name": name, "value": value, "at": at}
        stage = item_stage(name)
        for _ in range(3):
            rows = await self._run(sql.GIVE_INPUT, params)
            if not rows and stage is not None:
                rows = await self._run(sql.GIVE_ITEM, params | {"stage": stage})
            if rows:
                return InputRecord(*rows[0])
            _refuse_input(run_id, name, at, await self._run(sql.LOAD_INPUTS, {"run_id": run_id}))
            # Nothing refuses it now: its row changed meanwhile (a stage waiting for the
            # item made it after our write missed it). Again, on the row as it is.
        raise StoreError(f"{self.url}: input {name!r} of run {run_id!r} kept changing; not given")

    async def load_inputs(self, run_id: str) -> dict[str, InputRecord]:
        """Every input row of the run, by name (``UnknownRunError``; one statement)."""
        rows = await self._run(sql.LOAD_INPUTS, {"run_id": run_id})
        if not rows:
            raise UnknownRunError.of(run_id)
        return {row[2]: InputRecord(*row[1:]) for row in rows if row[2] is not None}

    # ------------------------------------------------------------------ queue

    async def enqueue(
        self,
        run: RunRecord,
        *,
        queue: str,
        priority: int = 0,
        inputs: Sequence[InputRecord] = (),
    ) -> None:
        """Record a queued run and its inputs, in one transaction (``RunExistsError`` if its
        id is taken: then nothing is written)."""
        check_queue(queue)
        integer(priority, "priority", "an int", ge=-(2**31), le=2**31 - 1)
        params = _run_params(run) | {"queue": queue, "priority": priority}
        rows = [_input_params(r) for r in inputs if r.run_id == run.run_id]
        if len(rows) != len(inputs):
            raise ConfigurationError(
                f"an input of another run than {run.run_id!r}", field="inputs", value=inputs
            )
        if not await self._call(lambda: self._db.enqueue(params, rows)):
            raise RunExistsError.of(run.run_id)
        await self._retention.maybe_prune(self._clock(), self._prune_before)

    async def claim(
        self, queue: str, owner: str, ttl: float, *, limit: int | None = None
    ) -> tuple[RunRecord, Lease] | None:
        """Lease the best claimable run of ``queue`` (one statement; on PostgreSQL with a
        ``limit``, one transaction under the queue's lock); None if there is none."""
        now = self._clock()
        params: dict[str, Any] = {"queue": queue, "owner": owner, "now": now, "expires": now + ttl}
        if limit is not None:
            params["limit"] = limit
        statement = sql.CLAIM_FOR[self._db.dialect, limit is not None]
        rows = await self._call(lambda: self._db.claim(statement, params, limit is not None))
        if not rows:
            return None
        token, expires, *run = rows[0]
        record = _run_record(tuple(run))
        return record, Lease(record.run_id, owner, token, expires)

    async def beat_worker(self, worker: WorkerRecord) -> None:
        """Record the worker, or refresh its ``seen_at``, queues and concurrency."""
        params = {
            "owner": worker.owner, "host": worker.host, "pid": worker.pid,
            "queues": json.dumps(list(worker.queues)), "concurrency": worker.concurrency,
            "started_at": worker.started_at, "seen_at": worker.seen_at,
        }  # fmt: skip
        await self._run(sql.BEAT_WORKER, params)

    async def list_workers(self, *, seen_after: float | None = None) -> list[WorkerRecord]:
        """The workers seen at or after ``seen_after`` (all: None), oldest first, each with
        the runs it holds an unexpired lease on (one statement)."""
        after = -math.inf if seen_after is None else seen_after
        rows = await self._run(sql.LIST_WORKERS, {"after": after, "now": self._clock()})
        found: dict[str, tuple[tuple[Any, ...], list[str]]] = {}
        for *worker, run_id in rows:
            _, held = found.setdefault(worker[0], (tuple(worker), []))
            if run_id is not None:
                held.append(run_id)
        return [
            WorkerRecord(owner, host, pid, tuple(json.loads(queues)), concurrency, started, seen,
                         tuple(held))
            for (owner, host, pid, queues, concurrency, started, seen), held in found.values()
        ]  # fmt: skip

    async def forget_worker(self, owner: str) -> None:
        """Remove the worker's record (nothing if there is none)."""
        await self._run(sql.FORGET_WORKER, {"owner": owner})

    # ------------------------------------------------------------------ events

    async def append_events(self, events: Sequence[Event]) -> None:
        """Store the events, of any runs, in one transaction (one statement for all).

        An event whose ``(run_id, seq)`` is stored already, or comes earlier in the batch,
        is ignored: the first write wins. Not fenced: events come from an
        :class:`~stageflow.EventLogSink`, which holds no lease. ``data`` is stored as JSON
        text (what JSON cannot hold, as its ``repr``).
        """
        batch = events_to_append(events)
        if batch:
            await self._call(lambda: self._db.append_events(batch))

    async def read_events(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[Event]:
        """The run's events with ``seq > after``, in ``seq`` order, at most ``limit`` (one
        statement on the primary key; an unknown run has none)."""
        params: dict[str, Any] = {"run_id": run_id, "after": checked_after(after)}
        limit = checked_limit(limit)
        statement = sql.READ_EVENTS
        if limit is not None:
            statement, params["limit"] = sql.READ_EVENTS_LIMIT, limit
        return [stored_event(*row) for row in await self._run(statement, params)]

    async def last_event_seq(self, run_id: str) -> int:
        """The highest stored ``seq`` of the run; 0 when none is stored."""
        rows = await self._run(sql.LAST_EVENT_SEQ, {"run_id": run_id})
        return int(rows[0][0])

    async def aclose(self) -> None:
        """Close the connections."""
        await self._db.close()
        self._opened = False

    def __repr__(self) -> str:
        return f"<SQLAlchemyStore {self.url}>"


def _run_params(run: RunRecord) -> dict[str, Any]:
    return {
        "run_id": run.run_id, "pipeline": run.pipeline, "fingerprint": run.fingerprint,
        "data": run.data, "status": run.status.value, "created_at": run.created_at,
        "updated_at": run.updated_at, "error": run.error, "structure": run.structure,
        "labels": _labels_text(run.labels), "config": run.config,
    }  # fmt: skip


def _run_record(row: tuple[Any, ...]) -> RunRecord:
    run_id, pipeline, fingerprint, data, status, created, updated, error, structure = row[:9]
    labels, config = row[9:]
    return RunRecord(
        run_id, pipeline, fingerprint, data, RunStatus(status), created, updated, error, structure,
        {} if labels == "{}" else json.loads(labels), config,
    )  # fmt: skip


def _refuse_input(run_id: str, name: str, at: float, rows: Rows) -> None:
    """Raise why input ``name`` could not be given, read from LOAD_INPUTS's rows (if
    nothing refuses it, return: the caller tries again)."""
    if not rows:
        raise UnknownRunError.of(run_id)
    status = RunStatus(rows[0][0])
    if status in FINISHED:
        raise UnknownInputError.of(run_id, name, (), why=f"has ended ({status})")
    inputs = {row[2]: InputRecord(*row[1:]) for row in rows if row[2] is not None}
    row = inputs.get(name)
    if row is None:
        stage = item_stage(name)
        if stage is None or stage not in inputs:
            known = [n for n, r in inputs.items() if r.value is None]
            raise UnknownInputError.of(run_id, name, known)
    elif row.value is not None:
        raise InputAlreadyGivenError.of(run_id, name)
    elif row.deadline is not None and row.deadline <= at:
        raise InputTimeoutError.of(name, row.deadline)


def _labels_text(labels: Mapping[str, str]) -> str:
    """Labels as a JSON object (ASCII: lone surrogates and NULs stay escapes, text exact)."""
    return json.dumps(dict(labels), separators=(",", ":")) if labels else "{}"


def _is_duplicate_column(error: BaseException) -> bool:
    """The error of an ``ADD COLUMN`` whose column the table already has."""
    cause = error.__cause__ if isinstance(error, StoreError) else error
    asyncpg = sys.modules.get("asyncpg")  # imported only by a PostgreSQL store
    duplicate = asyncpg is not None and isinstance(cause, asyncpg.DuplicateColumnError)
    return duplicate or (
        isinstance(cause, sqlite3.OperationalError) and "duplicate column name" in str(cause)
    )


# --------------------------------------------------------------------------- backends


class _Batch:
    """Writes waiting for one commit, in parallel lists: of each, its statement (None: a
    stage's record), its parameters (a record's: its row, ``sql.STAGE_COLUMNS``' values),
    its lease token (a record's; 0 for others) and its future.

    A map's items wait for their group's commit in thousands, and the garbage collector goes
    through all they hold meanwhile: no object per write beyond its row and its future.
    """

    __slots__ = ("futures", "others", "params", "statements", "tokens")

    def __init__(self) -> None:
        self.statements: list[str | None] = []
        self.params: list[Any] = []
        self.tokens: list[int] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.others = False  # a write that is no stage's record is among them


# What a write's own values may make sqlite3 raise: its errors, a str it cannot encode (a lone
# surrogate: UnicodeEncodeError), an int beyond 64 bits (OverflowError).
_ROW_ERRORS = (sqlite3.Error, ValueError, OverflowError)


def _execute_all(conn: sqlite3.Connection, batch: _Batch) -> list[object]:
    """Run a group of writes inside a write transaction (BEGIN IMMEDIATE taken); of each,
    its outcome: a record's, true (written) or false (its lease does not hold); another
    statement's, its rows; an error of its own.

    A group of stage records only: their runs are fenced once each (no other process can
    move a lease while this transaction holds the write lock, so one check per run stands
    for each row's), then the records of the runs whose lease holds are written in one
    ``executemany``; should that fail, each is written on its own, so that a record's error
    is its own. A group with another statement (an input's wait): each on its own.
    """
    if batch.others:
        return _execute_each(conn, batch)
    rows, tokens = batch.params, batch.tokens
    runs = {row[0] for row in rows}
    leases = set(tokens)
    if len(runs) == 1 and len(leases) == 1:  # one run's records, as a map's items are
        (run_id,), (token,) = runs, leases
        if not conn.execute(sql.FENCE, {"run_id": run_id, "token": token}).fetchall():
            return [False] * len(rows)
        outcomes: list[object] = [True] * len(rows)
        written = rows
    else:
        held: dict[tuple[str, int], bool] = {}
        for row, token in zip(rows, tokens, strict=True):
            if (row[0], token) not in held:
                fenced = conn.execute(sql.FENCE, {"run_id": row[0], "token": token}).fetchall()
                held[row[0], token] = bool(fenced)
        outcomes = [held[row[0], token] for row, token in zip(rows, tokens, strict=True)]
        written = [row for row, ok in zip(rows, outcomes, strict=True) if ok]
    try:
        conn.execute("SAVEPOINT records")
        conn.executemany(sql.UPSERT_STAGE, written)
        conn.execute("RELEASE records")
    except _ROW_ERRORS:
        conn.execute("ROLLBACK TO records")
        conn.execute("RELEASE records")
        return _execute_each(conn, batch)
    return outcomes


def _execute_each(conn: sqlite3.Connection, batch: _Batch) -> list[object]:
    """Run each write of a group, fenced on its own; a write's error is its own, not the
    group's."""
    outcomes: list[object] = []
    for statement, params, token in zip(batch.statements, batch.params, batch.tokens, strict=True):
        try:
            if statement is None:  # a stage's record
                rows = conn.execute(sql.RECORD_STAGE_ROW, (*params, token)).fetchall()
                outcomes.append(bool(rows))
            else:
                outcomes.append(conn.execute(statement, params).fetchall())
        except _ROW_ERRORS as error:
            outcomes.append(error)
    return outcomes


def _write_fenced(
    conn: sqlite3.Connection, lease: Lease, statement: str, rows: list[dict[str, Any]]
) -> Rows:
    """FENCE, then ``statement`` for each row, in one write transaction: all of them or none."""
    conn.execute("BEGIN IMMEDIATE")  # the write lock first: nobody moves the lease meanwhile
    try:
        held = conn.execute(sql.FENCE, {"run_id": lease.run_id, "token": lease.token}).fetchall()
        if held:
            conn.executemany(statement, rows)
            conn.execute("COMMIT")
        return held
    finally:
        if conn.in_transaction:  # the lease was lost, or a statement failed
            conn.execute("ROLLBACK")


def _insert_events(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """INSERT_EVENT for each row, in one write transaction: all of them or none."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(sql.INSERT_EVENT, rows)
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:  # a row failed
            conn.execute("ROLLBACK")


def _delete_runs(conn: sqlite3.Connection, statement: str, params: Mapping[str, Any]) -> Rows:
    """``statement`` (RETURNING run_id), then the events of the runs it deleted, in one write
    transaction; its rows."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        gone = conn.execute(statement, params).fetchall()
        conn.executemany(sql.DELETE_EVENTS, [{"run_id": run_id} for (run_id,) in gone])
        conn.execute("COMMIT")
        return gone
    finally:
        if conn.in_transaction:  # a statement failed
            conn.execute("ROLLBACK")


def _enqueue(conn: sqlite3.Connection, params: Mapping[str, Any], inputs: list[Any]) -> Rows:
    """ENQUEUE_RUN, then DECLARE_INPUT for each input, in one write transaction; the run's
    row (none: its id is taken, and nothing was written)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        made = conn.execute(sql.ENQUEUE_RUN, params).fetchall()
        if made:
            conn.executemany(sql.DECLARE_INPUT, inputs)
        conn.execute("COMMIT")
        return made
    finally:
        if conn.in_transaction:  # a statement failed
            conn.execute("ROLLBACK")


def _usage_params(record: UsageRecord) -> dict[str, Any]:
    return {
        "run_id": record.run_id, "stage": record.stage, "attempt": record.attempt,
        "model": record.model, "input_tokens": record.input_tokens,
        "output_tokens": record.output_tokens, "cost": record.cost, "at": record.at,
    }  # fmt: skip


def _input_params(record: InputRecord) -> dict[str, Any]:
    return {
        "run_id": record.run_id, "name": record.name, "schema": record.schema,
        "prompt": record.prompt, "deadline": record.deadline,
        "waiting_since": record.waiting_since, "value": record.value, "given_at": record.given_at,
    }  # fmt: skip


def _settle(batch: _Batch, outcomes: list[object]) -> None:
    for done, outcome in zip(batch.futures, outcomes, strict=True):
        if done.done():
            continue  # its stage was cancelled meanwhile; the write stands (at least once)
        if isinstance(outcome, BaseException):
            done.set_exception(outcome)
        else:
            done.set_result(outcome)


def _fail_all(batch: _Batch, error: BaseException) -> None:
    for done in batch.futures:
        if not done.done():
            done.set_exception(error)


def _check_sqlite_file(path: Path) -> None:
    """Refuse a path that exists but is no SQLite database (a directory, another file).

    The file is read through sqlite3 itself, never with ``open()``: closing any other
    descriptor of a database file drops the POSIX locks this process's connections
    hold on it, which lets another process corrupt it. sqlite3 shares its locks
    between the connections of a process and closes safely.
    """
    if path.is_dir():
        raise StoreError(f"{path} cannot be used as a store: it is a directory")
    try:
        if not path.exists() or path.stat().st_size == 0:
            return  # made on open (an empty file is a new database to SQLite)
        uri = path.resolve().as_uri() + "?mode=ro"
        connection = sqlite3.connect(uri, uri=True, timeout=0)
        try:
            connection.execute("PRAGMA schema_version").fetchone()
        finally:
            connection.close()
    except sqlite3.OperationalError as error:
        if "locked" in str(error) or "busy" in str(error):
            return  # in use by another connection: a database all the same
        raise StoreError(f"{path} cannot be used as a store: {_said(error)}") from None
    except sqlite3.DatabaseError as error:
        if str(error) == "file is not a database":
            raise StoreError(
                f"{path} cannot be used as a store: it is no SQLite database (it does not "
                "begin with SQLite's header): another kind of file, or a damaged one"
            ) from None
        raise StoreError(f"{path} cannot be used as a store: {_said(error)}") from None
    except OSError as error:
        raise StoreError(f"{path} cannot be used as a store: {_said(error)}") from None


def _said(error: BaseException) -> str:
    """What went wrong, in one line: the driver's own message, without SQLAlchemy's
    statement, parameters and background link."""
    orig = getattr(error, "orig", None)  # a DBAPIError wraps the driver's exception
    text = str(orig if orig is not None else error)
    line = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    line = re.sub(r"\s*\(Background on this error at: [^)]*\)", "", line)
    if line in ("file is not a database", "database disk image is malformed"):
        return f"the SQLite file is corrupt or truncated ({line})"
    return line


class _SQLite:
    """Statements on the loop's thread through one sqlite3 connection; a thread if locked."""

    CHECKPOINT_EVERY = 1000  # writes between two WAL checkpoints (in a worker thread)
    dialect = "sqlite"  # which text of a statement differing by backend (sql.*_FOR)

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conn: sqlite3.Connection | None = None
        self.writes = 0
        self.checkpointing: asyncio.Future[None] | None = None
        self.burst = False  # a grouped write was committed in this loop iteration
        self.batch: _Batch | None = None  # writes waiting for one commit
        self.waiting: set[asyncio.Task[None]] = set()  # groups waiting for the lock

    def _connect(self, busy_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    async def open(self) -> None:
        await asyncio.to_thread(self._create)
        self.conn = await asyncio.to_thread(self._connect_loop)

    def _connect_loop(self) -> sqlite3.Connection:
        """The loop's connection (in a thread: its set-up may meet another process's lock,
        e.g. of one closing the file's last connection, which removes the WAL)."""
        conn = self._connect(busy_ms=30_000)
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints: off the loop
        conn.execute("PRAGMA busy_timeout = 0")  # the loop never waits on a lock
        return conn

    def _create(self) -> None:
        """Create the file and schema (in a thread: it may wait for other processes)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        engine = sqlalchemy.create_engine(f"sqlite:///{self.path}", connect_args={"timeout": 30.0})
        try:
            for attempt in range(50):  # other processes may be creating it right now
                try:
                    with engine.begin() as conn:
                        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
                        if str(mode).lower() != "wal":
                            conn.exec_driver_sql("PRAGMA journal_mode = WAL")
                        sql.metadata.create_all(conn)
                    return
                except sqlalchemy.exc.OperationalError as error:
                    # "locked": another process holds the file; "already exists": it created
                    # a table between our check and our CREATE. Both settle on a retry.
                    racing = "locked" in str(error) or "already exists" in str(error)
                    if not racing or attempt == 49:
                        raise
                    time.sleep(0.02 * (attempt + 1))
        finally:
            engine.dispose()

    def run(
        self, statement: str, params: Mapping[str, Any], *, group: bool = False
    ) -> Awaitable[Rows]:
        """Run ``statement``; what to await for its rows.

        A write of a group (an input's wait) is a future that the group's commit resolves.
        """
        assert self.conn is not None
        if group:  # may share a commit with others arriving together
            batch = self._batch()
            if batch is not None:
                done: asyncio.Future[Rows] = asyncio.get_running_loop().create_future()
                batch.others = True
                batch.statements.append(statement)
                batch.params.append(params)
                batch.tokens.append(0)
                batch.futures.append(done)
                return done
        return self._run_now(statement, params)

    def record_stage(self, row: tuple[Any, ...], token: int) -> Awaitable[object]:
        """Write a stage's record (``row``: ``sql.STAGE_COLUMNS``' values) if the lease of
        ``token`` holds; what to await for whether it did (true: written; false: the lease
        does not hold).

        A completion may share a commit with others arriving together: then it waits on a
        future that the group's commit resolves, its row in the batch. Records waiting in
        great numbers (a map's items) each hold a future and a row, nothing more.
        """
        assert self.conn is not None
        batch = self._batch()
        if batch is None:
            return self._run_now(sql.RECORD_STAGE_ROW, (*row, token))
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        batch.statements.append(None)
        batch.params.append(row)
        batch.tokens.append(token)
        batch.futures.append(done)
        return done

    def _batch(self) -> _Batch | None:
        """The group a write joins, or None: the first write of this loop iteration, which
        is committed at once."""
        batch = self.batch
        if batch is None:
            loop = asyncio.get_running_loop()
            if not self.burst:
                self.burst = True
                loop.call_soon(self._end_burst)
                return None
            batch = self.batch = _Batch()  # a second write in this iteration: gather the rest
            loop.call_soon(self._flush)
        return batch

    async def _run_now(self, statement: str, params: Mapping[str, Any] | Sequence[Any]) -> Rows:
        assert self.conn is not None
        try:
            rows = self.conn.execute(statement, params).fetchall()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            rows = await asyncio.to_thread(self._run_waiting, statement, params)
        self._wrote(1)
        return rows

    async def upgrade(self, statement: str) -> None:
        """Run an upgrade statement (see ``UPGRADES``: adding a column twice is no error)."""
        try:
            await self.run(statement, {})
        except sqlite3.OperationalError as error:
            if not _is_duplicate_column(error):
                raise

    async def record_usage(self, lease: Lease, records: list[UsageRecord]) -> Rows:
        """Append the records if the lease holds (one transaction); the FENCE's rows."""
        return await self._fenced_many(lease, sql.INSERT_USAGE, [_usage_params(r) for r in records])

    async def declare_inputs(self, lease: Lease, records: list[InputRecord]) -> Rows:
        """Add the inputs without a row if the lease holds (one transaction); the FENCE's rows."""
        rows = [_input_params(r) for r in records]
        return await self._fenced_many(lease, sql.DECLARE_INPUT, rows)

    async def _fenced_many(self, lease: Lease, statement: str, rows: list[dict[str, Any]]) -> Rows:
        """``statement`` for each of ``rows`` if the lease holds, all or none; the FENCE's rows."""
        assert self.conn is not None
        try:
            held = _write_fenced(self.conn, lease, statement, rows)
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            held = await asyncio.to_thread(self._fenced_waiting, lease, statement, rows)
        self._wrote(len(rows))
        return held

    def _fenced_waiting(self, lease: Lease, statement: str, rows: list[dict[str, Any]]) -> Rows:
        conn = self._connect(busy_ms=30_000)
        try:
            return _write_fenced(conn, lease, statement, rows)
        finally:
            conn.close()

    # An event batch is a transaction of its own, never part of the group commit: it is a
    # batch already (an EventLogSink's, up to 1000 events), it needs no fence, and the
    # stages waiting for a group's commit must not wait behind thousands of rows (nor fail
    # with them). A batch of up to APPEND_ON_LOOP events is written on the loop's connection
    # (about 2 us an event, so a few ms at most): the run's own writes then never meet its
    # lock. A larger one (a bulk copy) goes to a worker thread, so that the loop is not held
    # for tens of ms; the loop's writes meanwhile meet the lock and wait in threads, as they
    # do for another process's writes.
    APPEND_ON_LOOP = 1000

    async def append_events(self, events: list[Event]) -> Rows:
        """Insert the events, those of a stored ``(run_id, seq)`` ignored (one transaction)."""
        assert self.conn is not None
        rows = [
            (e.run_id, e.seq, str(e.type), e.pipeline, e.stage, e.ts, e.attempt,
             event_data_text(e))
            for e in events
        ]  # fmt: skip
        if len(rows) <= self.APPEND_ON_LOOP:
            try:
                _insert_events(self.conn, rows)
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error):
                    raise
                await asyncio.to_thread(self._waiting, _insert_events, rows)
        else:
            await asyncio.to_thread(self._waiting, _insert_events, rows)
        self._wrote(len(rows))
        return []

    def delete_runs(self, statement: str, params: Mapping[str, Any]) -> Awaitable[Rows]:
        """DELETE_RUN or PRUNE, and DELETE_EVENTS for each run deleted, in one transaction;
        the ids of the runs deleted."""
        return self._transaction(_delete_runs, statement, params)

    def enqueue(self, params: Mapping[str, Any], inputs: list[Any]) -> Awaitable[Rows]:
        """The run and its inputs, in one transaction; the run's row (none: id taken)."""
        return self._transaction(_enqueue, params, inputs)

    def claim(self, statement: str, params: Mapping[str, Any], limited: bool) -> Awaitable[Rows]:
        """CLAIM_FOR's statement: one write, on the newest data (writes run one at a time)."""
        return self._run_now(statement, params)

    async def _transaction(self, write: Callable[..., Rows], *args: Any) -> Rows:
        """``write(conn, *args)`` (a transaction of its own) on the loop's connection, or, if
        another process holds the lock, on a connection that waits for it in a thread."""
        assert self.conn is not None
        try:
            rows = write(self.conn, *args)
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                raise
            rows = await asyncio.to_thread(self._waiting, write, *args)
        self._wrote(1)
        return rows

    def _waiting(self, write: Callable[..., _T], *args: Any) -> _T:
        """``write(conn, *args)`` on a connection of its own that waits for the lock (in a
        worker thread)."""
        conn = self._connect(busy_ms=30_000)
        try:
            return write(conn, *args)
        finally:
            conn.close()

    def _wrote(self, writes: int) -> None:
        """Count writes, and checkpoint the WAL in a worker thread every so many."""
        before, self.writes = self.writes, self.writes + writes
        if self.writes // self.CHECKPOINT_EVERY > before // self.CHECKPOINT_EVERY and (
            self.checkpointing is None or self.checkpointing.done()
        ):
            self.checkpointing = asyncio.get_running_loop().run_in_executor(None, self._checkpoint)

    # Group commit. A write that comes alone (a chain) is committed at once. When writes
    # come together (a fan-out completing), the first is committed at once and the others
    # of that loop iteration wait for one transaction that commits them all, at the next
    # iteration: one WAL commit for many completions.

    def _end_burst(self) -> None:
        self.burst = False

    def _flush(self) -> None:
        batch, self.batch = self.batch or _Batch(), None
        assert self.conn is not None
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) and "busy" not in str(error):
                _fail_all(batch, error)
                return
            task = asyncio.get_running_loop().create_task(self._flush_waiting(batch))
            self.waiting.add(task)  # keep it alive until it is done
            task.add_done_callback(self.waiting.discard)
            return
        try:
            outcomes = _execute_all(self.conn, batch)
            self.conn.execute("COMMIT")
        except Exception as error:  # noqa: BLE001 - every write of the group gets it
            # The transaction ends here whatever failed, and no write waits for ever.
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            _fail_all(batch, error)
            return
        self.writes += len(batch.futures)
        _settle(batch, outcomes)

    async def _flush_waiting(self, batch: _Batch) -> None:
        def in_thread() -> list[object]:
            conn = self._connect(busy_ms=30_000)
            try:
                conn.execute("BEGIN IMMEDIATE")
                outcomes = _execute_all(conn, batch)
                conn.execute("COMMIT")
                return outcomes
            finally:
                conn.close()

        try:
            outcomes = await asyncio.to_thread(in_thread)
        except Exception as error:  # noqa: BLE001 - every write of the group gets it
            _fail_all(batch, error)
        else:
            _settle(batch, outcomes)

    def _run_waiting(self, statement: str, params: Mapping[str, Any] | Sequence[Any]) -> Rows:
        conn = self._connect(busy_ms=30_000)
        try:
            return conn.execute(statement, params).fetchall()
        finally:
            conn.close()

    def _checkpoint(self) -> None:
        conn = self._connect(busy_ms=1_000)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    async def close(self) -> None:
        if self.checkpointing is not None:  # let a WAL checkpoint in a thread finish
            await asyncio.gather(self.checkpointing, return_exceptions=True)
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _Postgres:
    """SQLAlchemy creates the schema; statements go to an asyncpg pool directly.

    A statement is prepared and cached by asyncpg and runs in autocommit: one round
    trip, without the compile, result and greenlet layers of a SQLAlchemy execute,
    which cost more than the round trip itself here.
    """

    dialect = "postgresql"  # which text of a statement differing by backend (sql.*_FOR)

    def __init__(self, url: URL) -> None:
        # asyncpg (the `postgres` extra) is imported only here: a SQLite store needs only
        # the `sqlite` extra.
        import asyncpg  # type: ignore[import-untyped]

        self.asyncpg = asyncpg
        self.failures: tuple[type[BaseException], ...] = (
            asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
        )  # fmt: skip
        self.url = url
        self.pool: asyncpg.Pool | None = None
        # A connection of our own, used whenever it is free: a pool checkout costs about
        # half a round trip. Concurrent statements spill over to the pool.
        self.own: asyncpg.Connection | None = None
        self.own_busy = False
        self.statements: dict[str, tuple[str, tuple[str, ...]]] = {}

    async def open(self) -> None:
        engine = create_async_engine(self.url)
        try:
            async with engine.begin() as conn:
                # Processes opening the database at once create (or upgrade) the schema one
                # after the other: concurrent CREATE TABLE IF NOT EXISTS collide in the
                # catalog, and an error aborts the transaction, so a retry could not help.
                await conn.exec_driver_sql(sql.LOCK_SCHEMA)
                await conn.run_sync(sql.metadata.create_all)
        finally:
            await engine.dispose()
        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        # Our statements change no session state, so the default reset on release
        # (a round trip of RESET ALL & co, ~170 us) is pure cost.
        self.pool = await self.asyncpg.create_pool(dsn, min_size=1, max_size=20, reset=_keep)
        self.own = await self.pool.acquire()

    async def run(self, statement: str, params: Mapping[str, Any], *, group: bool = False) -> Rows:
        assert self.pool is not None
        text, names = self._prepared(statement)
        args = [params[name] for name in names]
        try:
            if self.own_busy or self.own is None:
                async with self.pool.acquire() as conn:
                    rows = await conn.fetch(text, *args)
            else:
                self.own_busy = True
                try:
                    rows = await self.own.fetch(text, *args)
                finally:
                    self.own_busy = False
        except self.failures as error:
            raise StoreError(f"{self.url.render_as_string(hide_password=True)}: {error}") from error
        return [tuple(row) for row in rows]

    async def upgrade(self, statement: str) -> None:
        """Run an upgrade statement (see ``UPGRADES``: adding a column twice is no error)."""
        try:
            await self.run(statement, {})
        except StoreError as error:
            if not _is_duplicate_column(error):
                raise

    async def record_usage(self, lease: Lease, records: list[UsageRecord]) -> Rows:
        """Append the records if the lease holds (one statement); the ids inserted."""
        rows = [
            _usage_params(r) | {"cost": _json_float(r.cost), "at": _json_float(r.at)}
            for r in records
        ]
        params = {"run_id": lease.run_id, "token": lease.token, "records": json.dumps(rows)}
        return await self.run(sql.RECORD_USAGE, params)

    async def declare_inputs(self, lease: Lease, records: list[InputRecord]) -> Rows:
        """Add the inputs without a row if the lease holds (one statement); the lease's row."""
        rows = [
            _input_params(r)
            | {"deadline": _json_float(r.deadline), "waiting_since": _json_float(r.waiting_since),
               "given_at": _json_float(r.given_at)}
            for r in records
        ]  # fmt: skip
        params = {"run_id": lease.run_id, "token": lease.token, "records": json.dumps(rows)}
        return await self.run(sql.DECLARE_INPUTS, params)

    async def append_events(self, events: list[Event]) -> Rows:
        """Insert the events, those of a stored ``(run_id, seq)`` ignored (one statement)."""
        rows = [
            {"run_id": e.run_id, "seq": e.seq, "type": str(e.type), "pipeline": e.pipeline,
             "stage": e.stage, "ts": _json_float(e.ts), "attempt": e.attempt,
             "data": event_data_text(e)}
            for e in events
        ]  # fmt: skip
        return await self.run(sql.APPEND_EVENTS, {"events": json.dumps(rows)})

    async def delete_runs(self, statement: str, params: Mapping[str, Any]) -> Rows:
        """DELETE_RUN_FOR or PRUNE_FOR: the runs and their events, in one statement; the
        ids of the runs deleted."""
        return await self.run(statement, params)

    async def enqueue(self, params: Mapping[str, Any], inputs: list[dict[str, Any]]) -> Rows:
        """The run and its inputs, in one statement; the run's row (none: id taken)."""
        if not inputs:
            return await self.run(sql.ENQUEUE_RUN, params)
        records = [
            r | {"deadline": _json_float(r["deadline"]),
                 "waiting_since": _json_float(r["waiting_since"]),
                 "given_at": _json_float(r["given_at"])}
            for r in inputs
        ]  # fmt: skip
        return await self.run(sql.ENQUEUE_WITH_INPUTS, {**params, "records": json.dumps(records)})

    async def claim(self, statement: str, params: Mapping[str, Any], limited: bool) -> Rows:
        """CLAIM_FOR's statement; with a limit, after CLAIM_LOCK in the same transaction (the
        count then sees every claim committed under the lock before)."""
        if not limited:
            return await self.run(statement, params)
        assert self.pool is not None
        lock, _ = self._prepared(sql.CLAIM_LOCK)
        text, names = self._prepared(statement)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(lock, params["queue"])
                rows = await conn.fetch(text, *[params[name] for name in names])
        except self.failures as error:
            raise StoreError(f"{self.url.render_as_string(hide_password=True)}: {error}") from error
        return [tuple(row) for row in rows]

    def _prepared(self, statement: str) -> tuple[str, tuple[str, ...]]:
        prepared = self.statements.get(statement)
        if prepared is None:
            prepared = self.statements[statement] = _numbered(statement)
        return prepared

    async def close(self) -> None:
        if self.pool is not None:
            if self.own is not None:
                await self.pool.release(self.own)
                self.own = None
            await self.pool.close()
            self.pool = None


def _json_float(value: float | None) -> float | str | None:
    """A float for JSON: NaN and infinities (not JSON numbers) as PostgreSQL's text for them."""
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


async def _keep(connection: object) -> None:
    """A pool connection released needs no reset (see _Postgres.open)."""


_PARAMETER = re.compile(r"(?<!:):([a-z_]+)")


def _numbered(statement: str) -> tuple[str, tuple[str, ...]]:
    """``:name`` parameters as asyncpg's ``$1``, and the names in their order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAMETER.sub(number, statement), tuple(names)


__all__ = ["SQLAlchemyStore"]
