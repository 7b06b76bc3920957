"""RunService: start, watch, answer and manage the runs of a catalog, for a server.

What ``stageflow serve`` (the HTTP API) and an MCP server put in front of clients, and
what holds the runs they start: each run is driven in a task of the service's own,
never in a request, so a client that goes away cancels nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ._catalog import Catalog, CatalogEntry
from ._check import integer, number, refuse
from ._durable import DurableRun, fingerprint, structure
from ._dynamic import InputSpec
from ._engine import Engine
from ._events import Event, EventType
from ._ids import RUN_ID, new_run_id
from ._run import RunCall, RunContext, check_labels
from ._status import FINISHED, RunStatus, StageStatus
from .errors import (
    RunCancelledError,
    RunExistsError,
    RunLeasedError,
    RunNotRetryableError,
    UnknownRunError,
)
from .ports import InputRecord, InputStore, RunCatalog, RunRecord, StageRecord, UsageRecord

if TYPE_CHECKING:
    from ._context import StageCall
    from ._graph import StageGraph
    from ._result import RunResult
    from ._spec import StageSpec

__all__ = ["EventStream", "RunService"]

logger = logging.getLogger("stageflow")

MAX_PAGE: Final = 1000
"""``list(limit=)`` at most."""

_RUN_ENDS: Final = frozenset(
    {EventType.RUN_COMPLETED, EventType.RUN_FAILED, EventType.RUN_CANCELLED}
)
_BATCH: Final = 500  # events read from the log at a time

RETRY_OF: Final = "stageflow.retry_of"
"""The label a run made by :meth:`RunService.retry` has: the id of the run it retries."""
_RETRYABLE: Final = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})


class EventStream(AsyncIterator["Event"]):
    """The events :meth:`RunService.events` follows: an async iterator of
    :class:`~stageflow.Event`.

    Attributes:
        ended: True when the run has ended and has no event after the one asked to go
            on after: the stream yields nothing.
    """

    __slots__ = ("_events", "ended")

    def __init__(self, events: AsyncIterator[Event], *, ended: bool) -> None:
        self._events = events
        self.ended = ended

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        """Stop following (what ``async for`` does when left early)."""
        closing = getattr(self._events, "aclose", None)
        if closing is not None:
            await closing()


async def _nothing() -> AsyncIterator[Event]:
    return
    yield  # an async generator that yields nothing


class _Drives:
    """The service's run interceptor: its ``wrap_run`` tells whoever waits for a run's
    drive that it began, i.e. that the run is recorded in the store (a new run) or
    leased (a resumed one), which :meth:`Engine.run` and :meth:`Engine.resume` do
    before they call the ``wrap_run`` chain."""

    name = "stageflow.service"
    priority = 0  # outermost: the signal comes before any other hook's work

    def __init__(self) -> None:
        self.began: dict[str, asyncio.Future[None]] = {}
        self.durable: dict[str, DurableRun] = {}  # the drives going on, by run

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        return call

    def wrap_run(self, graph: StageGraph, call: RunCall) -> RunCall:
        began = self.began

        durable = self.durable

        async def signalled(run: RunContext) -> RunResult:
            future = began.pop(run.run_id, None)
            if future is not None and not future.done():
                future.set_result(None)
            live = run.durable  # (the service's engine has a store: never None)
            durable[run.run_id] = live  # type: ignore[assignment]
            try:
                return await call(run)
            finally:
                if durable.get(run.run_id) is live:
                    del durable[run.run_id]

        return signalled


class RunService:
    """Starts and drives the runs of a catalog's pipelines, and reads and manages them.

    The runs it starts (and resumes) are driven in background tasks it keeps, not by
    its callers: a caller that is cancelled (an HTTP client that disconnects) leaves
    its run going. A run that stops to wait for input holds no task and no lease; an
    input given with :meth:`send` makes the service resume it. :meth:`aclose` cancels
    the runs still driven (each is recorded as cancelled: :meth:`resume` goes on with
    it later) and waits for them.

    Every method returns JSON-ready values (dicts of str, numbers, lists), as an HTTP
    API or an MCP server hands them out.

    Example:
        >>> import asyncio
        >>> from stageflow import Catalog, Pipeline
        >>> from stageflow.adapters.memory import MemoryStore
        >>> async def hello(ctx):
        ...     return {"greeting": f"hello {ctx.data.get('name', 'you')}"}
        >>> catalog = Catalog({"hello": Pipeline("hello").with_stage("hello", hello)})
        >>> async def main():
        ...     store = MemoryStore()
        ...     service = RunService(Engine(store=store, event_log=store), catalog)
        ...     run_id = await service.start("hello", {"name": "owls"})
        ...     async for event in await service.events(run_id):
        ...         pass  # until the run's end
        ...     outputs = await service.outputs(run_id)
        ...     await service.aclose()
        ...     return outputs["outputs"]["hello"]
        >>> asyncio.run(main())
        {'greeting': 'hello owls'}

    Args:
        engine: drives the runs; it needs a ``store`` that is a
            :class:`~stageflow.ports.RunCatalog` (e.g. ``SQLAlchemyStore``) and an
            ``event_log``: ``Engine(store=s, event_log=s)``.
        catalog: the pipelines clients may run, by name (a
            :class:`~stageflow.Catalog`, or a mapping of names to pipelines or graphs).
        poll: seconds between two reads of the event log while :meth:`events` follows
            a run another process drives (one driven here is followed as its events
            are written).

    Raises:
        ConfigurationError: ``engine`` is no Engine, has no store or one that is no
            RunCatalog (``field="store"``), or no event log (``field="event_log"``);
            ``catalog`` is no catalog.
    """

    def __init__(self, engine: Engine, catalog: Catalog | Mapping[str, Any], *, poll: float = 0.5):
        if not isinstance(engine, Engine):
            refuse("engine", "an Engine, e.g. Engine(store=s, event_log=s)", engine)
        store = engine.store
        if store is None or not isinstance(store, RunCatalog):
            refuse(
                "store",
                "an engine's store that is a RunCatalog too (MemoryStore, SQLAlchemyStore): "
                "Engine(store=s, event_log=s)",
                store,
            )
        log = engine.event_log
        if log is None:
            refuse("event_log", "an engine's event log: Engine(store=s, event_log=s)", None)
        number(poll, "poll", "a positive number of seconds", gt=0)
        self._drives_hook = _Drives()
        self._engine = engine.replace(
            interceptors=(*engine.settings["interceptors"], self._drives_hook)
        )
        self._catalog = Catalog.of(catalog)
        self._store: RunCatalog = store
        self._log = log
        self._poll = poll
        self._drives: dict[str, asyncio.Task[RunResult]] = {}
        self._again: set[str] = set()  # runs given an input while driven: resume if they wait
        self._held: set[str] = set()  # runs being cancelled here without a drive
        self._closed = False
        self._ends: asyncio.Event | None = None  # set (then replaced) when a drive ends

    @property
    def catalog(self) -> Catalog:
        """The pipelines this service runs."""
        return self._catalog

    @property
    def engine(self) -> Engine:
        """The engine that drives its runs (the one given, with the service's hook)."""
        return self._engine

    @property
    def driven(self) -> frozenset[str]:
        """The ids of the runs driven by this service now."""
        return frozenset(self._drives)

    # ------------------------------------------------------------------ pipelines

    def pipelines(self) -> list[dict[str, Any]]:
        """The catalog's pipelines, in catalog order: name, description, category, tags,
        and the number of stages."""
        return [_pipeline_summary(entry) for entry in self._catalog]

    def pipeline(self, name: str) -> dict[str, Any]:
        """One pipeline: its summary, its stages (kind, dependencies, input schema), a
        Mermaid drawing, its fingerprint and the JSON Schema of its run data.

        Raises:
            UnknownPipelineError: the catalog has no such pipeline.
        """
        entry = self._catalog[name]
        graph = entry.graph
        return {
            **_pipeline_summary(entry),
            "stages": [_stage_json(spec) for spec in graph.stages],
            "mermaid": graph.to_mermaid(),
            "fingerprint": fingerprint(structure(graph)),
            "data_schema": entry.data_schema(),
        }

    # ------------------------------------------------------------------ runs

    async def start(
        self,
        pipeline: str,
        data: Mapping[str, Any] | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        run_id: str | None = None,
    ) -> str:
        """Start a run of ``pipeline`` and return its id once it is recorded in the store.

        The run goes on in the background (this call does not wait for it, and
        cancelling the caller does not cancel it): follow it with :meth:`events`, read
        it with :meth:`get`.

        Args:
            pipeline: the name of a catalog pipeline.
            data: the run's data, validated against the pipeline's ``data`` model.
            labels: str to str, kept with the run (see ``Engine.run(labels=)``).
            run_id: the run's id (default: a new ULID).

        Raises:
            UnknownPipelineError: no such pipeline in the catalog.
            ConfigurationError: ``data`` does not match the pipeline's model (``field``
                names the field: ``data.n``), or ``labels`` or ``run_id`` are invalid.
            RunExistsError: a run with ``run_id`` exists already.
            RuntimeError: the service is closed.
        """
        self._check_open()
        entry = self._catalog[pipeline]
        valid = entry.validate_data(data)
        checked = check_labels(labels)
        if run_id is None:
            run_id = new_run_id()
        elif not isinstance(run_id, str) or RUN_ID.fullmatch(run_id) is None:
            refuse("run_id", "1 to 128 letters, digits, '_', '.', ':' or '-'", run_id)
        if self._busy(run_id):
            raise RunExistsError.of(run_id)
        await self._launched(
            run_id, self._engine.run(entry.graph, valid, run_id=run_id, labels=checked)
        )
        return run_id

    async def resume(self, run_id: str) -> dict[str, Any]:
        """Go on with a run that stopped (cancelled, failed, waiting, or whose driver
        died), in the background; return once the run is leased to this service.

        The graph is the catalog's pipeline of the run's name; ``Engine.resume`` checks
        it is the graph the run started with.

        Returns:
            ``{"run_id": ..., "status": "running"}``.

        Raises:
            UnknownRunError: no such run.
            UnknownPipelineError: the catalog has no pipeline of the run's name.
            GraphMismatchError: the catalog's pipeline is not the graph the run started
                with (the error says what changed).
            RunLeasedError: the run is being driven: by another process, or by this
                service already (the error names this service's engine as the owner).
        """
        self._check_open()
        record = await self._record(run_id)
        if self._busy(run_id):
            raise self._leased_here(run_id)
        entry = self._catalog[record.pipeline]
        await self._launched(run_id, self._engine.resume(run_id, entry.graph))
        return {"run_id": run_id, "status": RunStatus.RUNNING.value}

    async def retry(self, run_id: str, *, new_run_id: str | None = None) -> dict[str, Any]:
        """Start a new run of a failed or cancelled run's pipeline and data that reuses
        the stages it completed; return once the new run is recorded and leased here.

        The new run has the old run's data, labels (plus ``stageflow.retry_of`` = the old
        run's id) and governing configuration. The outcomes the old run stored (its
        completed and self-skipped stages) are copied into the new run before it is
        driven, so those stages are restored, not run again; the saved ``ctx.state`` of
        the other stages is copied too, so that they go on from it. What the old run
        spent (its usage) is not copied: the new run's usage is what it spends. The old
        run is left as it is.

        Args:
            run_id: the run to retry.
            new_run_id: the new run's id (default: a new ULID).

        Returns:
            ``{"run_id": <new id>, "retry_of": <old id>, "status": "running",
            "reused": [<stages restored>]}``.

        Raises:
            UnknownRunError: no such run.
            RunNotRetryableError: the run is running, waiting or completed.
            UnknownPipelineError: the catalog has no pipeline of the run's name.
            GraphMismatchError: the catalog's pipeline is not the graph the run ran
                (the error says what changed).
            RunExistsError: a run with ``new_run_id`` exists already.
            ConfigurationError: ``new_run_id`` is no valid run id.
        """
        self._check_open()
        old = await self._record(run_id)
        if new_run_id is None:
            new_run_id = new_id = _new_run_id()
        else:
            _check_run_id(new_run_id)
            new_id = new_run_id
        if old.status not in _RETRYABLE or self._busy(run_id):
            status = RunStatus.RUNNING.value if self._busy(run_id) else old.status.value
            raise RunNotRetryableError.of(run_id, status)
        entry = self._catalog[old.pipeline]
        graph = entry.graph
        store = self._engine.store
        assert store is not None
        await DurableRun.checked_record(store, graph, run_id)  # GraphMismatchError
        if self._busy(new_id):
            raise RunExistsError.of(new_id)
        labels = check_labels({**old.labels, RETRY_OF: run_id})
        reused = await self._copied(old, new_id, labels, graph)
        await self._launched(new_id, self._engine.resume(new_id, graph))
        return {
            "run_id": new_id,
            "retry_of": run_id,
            "status": RunStatus.RUNNING.value,
            "reused": reused,
        }

    async def _copied(
        self, old: RunRecord, new_id: str, labels: Mapping[str, str], graph: StageGraph
    ) -> list[str]:
        """Record the retry ``new_id`` of ``old`` with the stages it reuses and the state
        of the others, under a lease of its own, released before the drive resumes it."""
        engine = self._engine
        store = engine.store
        assert store is not None
        now = engine.clock.wall()
        record = RunRecord(
            new_id, old.pipeline, old.fingerprint, old.data, RunStatus.RUNNING, now, now,
            structure=old.structure, labels=dict(labels), config=old.config,
        )  # fmt: skip
        done = {
            name: r
            for name, r in (await store.stage_records(old.run_id)).items()
            if r.status in (StageStatus.COMPLETED, StageStatus.SKIPPED)
        }
        states = {}
        for spec in graph.stages:
            if spec.name not in done:
                text = await store.load_state(old.run_id, spec.name)
                if text is not None:
                    states[spec.name] = text
        self._held.add(new_id)  # no other drive of the new id begins here meanwhile
        try:
            await store.create_run(record)
            lease = await store.acquire_lease(new_id, engine.owner, engine.lease_ttl)
            try:
                for r in done.values():
                    await store.record_stage(lease, _replace_run(r, new_id))
                for name, text in states.items():
                    await store.save_state(lease, name, text)
            finally:
                await store.release_lease(lease)
        finally:
            self._held.discard(new_id)
        return sorted(done)

    async def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel a run, and return once it is recorded as cancelled.

        A run this service drives is cancelled as ``Engine.run``'s task is: its running
        stages are cancelled, and it records its end. A run no one drives (it waits for
        input, or its driver died and its lease expired) is recorded as cancelled here,
        with a ``run.cancelled`` event, so that its followers see it end. A run that
        has ended is left as it ended.

        Returns:
            ``{"run_id": ..., "status": ...}``: ``cancelled``, or how the run had ended.

        Raises:
            UnknownRunError: no such run.
            RunLeasedError: another process drives the run (cancel it there).
        """
        record = await self._record(run_id)
        task = self._drives.get(run_id)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            record = await self._store.get_run(run_id)
        elif record.status not in FINISHED:
            record = await self._cancel_stopped(record)
        return {"run_id": run_id, "status": record.status.value}

    async def _cancel_stopped(self, record: RunRecord) -> RunRecord:
        """Record a run no one drives as cancelled, under a lease of its own."""
        run_id = record.run_id
        if self._busy(run_id):  # a drive began meanwhile (a resume): cancel that
            task = self._drives.get(run_id)
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
            return await self._store.get_run(run_id)
        engine = self._engine
        store = engine.store
        assert store is not None
        self._held.add(run_id)  # no drive of the run begins here meanwhile
        try:
            lease = await store.acquire_lease(run_id, engine.owner, engine.lease_ttl)
            try:
                record = await store.get_run(run_id)
                if record.status in FINISHED:
                    return record
                why = (
                    "cancelled while it waited for input"
                    if record.status == RunStatus.WAITING
                    else "cancelled after its driver stopped"
                )
                await store.set_status(lease, RunStatus.CANCELLED, why)
                seq = await self._log.last_event_seq(run_id) + 1
                await self._log.append_events([
                    Event(EventType.RUN_CANCELLED, run_id, record.pipeline, None, seq,
                          engine.clock.wall(), 0, {"status": "cancelled", "reason": why}),
                ])  # fmt: skip
            finally:
                await store.release_lease(lease)
            return await store.get_run(run_id)
        finally:
            self._held.discard(run_id)

    async def send(self, run_id: str, name: str, value: Any) -> dict[str, Any]:
        """Give input ``name`` of a run its value (validated against the input's schema,
        stored once), and let the run go on: a run that stopped to wait is resumed in
        the background (one driven here gets the value at once).

        Returns:
            ``{"run_id", "name", "value", "given_at", "resumed"}``: the value as stored,
            and whether this service goes on with the run (False when it has ended or
            another process drives it: that driver finds the value).

        Raises:
            UnknownRunError: no such run.
            UnknownPipelineError: the catalog has no pipeline of the run's name.
            InputValidationError: the value does not match the schema (``field`` names
                where); nothing was stored.
            UnknownInputError: the run has no such input, or it has ended.
            InputAlreadyGivenError: the input has its value already.
            InputTimeoutError: the input's deadline has passed.
        """
        self._check_open()
        if not isinstance(name, str):
            refuse("name", "the name of an input stage (a str)", name)
        record = await self._record(run_id)
        entry = self._catalog[record.pipeline]
        row = await self._engine.send(run_id, name, value, graph=entry.graph)
        resumed = await self._go_on(run_id)
        return {
            "run_id": run_id,
            "name": row.name,
            "value": None if row.value is None else json.loads(row.value),
            "given_at": row.given_at,
            "resumed": resumed,
        }

    async def delete(self, run_id: str) -> None:
        """Forget a run: its record, stage outcomes, usage, inputs and events.

        Raises:
            UnknownRunError: no such run.
            RunLeasedError: the run is being driven (here or elsewhere): cancel it first.
        """
        _check_run_id(run_id)
        await self._store.delete_run(run_id)

    # ------------------------------------------------------------------ reads

    async def get(self, run_id: str) -> dict[str, Any]:
        """A run as JSON data: its record (``run_id``, ``pipeline``, ``status``,
        ``created_at``, ``updated_at``, ``error``, ``labels``, ``data``,
        ``fingerprint``), whether this service drives it (``driven``), its ``stages``
        (in graph order: ``name``, ``status``, ``attempts``, ``started``,
        ``duration``, ``error``, ``reason``), its ``usage`` (tokens, cost, and per
        stage), and the inputs it waits for (``waiting_for``: ``name``, ``prompt``,
        ``schema``, ``deadline``).

        A stage's status is its stored outcome (completed, skipped); a stage without
        one is shown as its last event says (``running``, ``failed`` with its error,
        ``skipped``, ``cancelled``), else ``waiting`` (an input) or ``pending``.
        ``started`` (seconds since the run started) is known for stored outcomes.

        Raises:
            UnknownRunError: no such run.
        """
        record = await self._record(run_id)
        store = self._store
        stages = await store.stage_records(run_id)
        usage = await store.load_usage(run_id)
        inputs = await store.load_inputs(run_id) if isinstance(store, InputStore) else {}
        waiting = _waiting_for(inputs)
        order = list(json.loads(record.structure)) if record.structure else []
        unrecorded = [name for name in order if name not in stages]
        # A store keeps completed (and self-skipped) stages only; what the others did is
        # in the run's events: read them only when a stage has no record.
        seen = _last_stage_events(await self._log.read_events(run_id)) if unrecorded else {}
        return {
            **run_json(record),
            "data": json.loads(record.data) if record.data else {},
            "fingerprint": record.fingerprint,
            "driven": run_id in self._drives,
            "stages": _stages_json(record, order, stages, seen, waiting),
            "usage": usage_json(usage),
            "waiting_for": [_pending_json(r) for r in waiting],
        }

    async def outputs(self, run_id: str) -> dict[str, Any]:
        """The output data of the run's completed stages: ``{"run_id", "status",
        "outputs": {stage: data}}`` (map items and nested stages by their stored names).

        Raises:
            UnknownRunError: no such run.
        """
        record = await self._record(run_id)
        stages = await self._store.stage_records(run_id)
        return {
            "run_id": run_id,
            "status": record.status.value,
            "outputs": {
                name: json.loads(s.output) if s.output else {}
                for name, s in stages.items()
                if s.status == StageStatus.COMPLETED
            },
        }

    async def list(
        self,
        *,
        status: RunStatus | str | None = None,
        pipeline: str | None = None,
        label: Mapping[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """The store's runs matching every filter, newest first, a page at a time.

        Args:
            status: only runs with this status.
            pipeline: only runs of this pipeline.
            label: only runs with each of these labels (key and value).
            limit: at most this many runs (1 to 1000).
            cursor: the ``next`` of the page before (None: the first page).

        Returns:
            ``{"runs": [...], "next": cursor or None}``: each run's record (as in
            :meth:`get`, without stages); ``next`` is None on the last page. Runs
            started meanwhile come on the first page, never twice.

        Raises:
            ConfigurationError: a filter, ``limit`` or ``cursor`` is invalid.
        """
        if status is not None:
            try:
                status = RunStatus(status)
            except ValueError:
                refuse("status", f"one of {', '.join(s.value for s in RunStatus)}", status)
        if pipeline is not None and not isinstance(pipeline, str):
            refuse("pipeline", "a pipeline name (a str) or None", pipeline)
        wanted = check_labels(label)
        integer(limit, "limit", f"an int from 1 to {MAX_PAGE}", ge=1, le=MAX_PAGE)
        after = None if cursor is None else _decoded(cursor)
        # RunCatalog.list_runs has no label filter nor a starting point: the store is read
        # whole when they are needed, and one run more than the page otherwise.
        whole = bool(wanted) or after is not None
        records = await self._store.list_runs(
            status=status, pipeline=pipeline, limit=None if whole else limit + 1
        )
        if wanted:
            records = [r for r in records if all(r.labels.get(k) == v for k, v in wanted.items())]
        if after is not None:
            records = [r for r in records if (r.created_at, r.run_id) < after]
        page = records[:limit]
        more = len(records) > limit
        return {
            "runs": [run_json(r) for r in page],
            "next": _encoded(page[-1]) if more else None,
        }

    async def events(self, run_id: str, *, after: int = 0) -> EventStream:
        """The run's events with ``seq > after``, as they are stored, until the run ends.

        The run is checked first. The stream goes on through a drive that stops to wait
        for input, or that a resume follows (a run cancelled, then resumed, is followed
        to its new end): it ends after a ``run.completed``, ``run.failed`` or
        ``run.cancelled`` once the store has the run ended with nothing after it. It
        wakes up at each write of this engine's event log; a run driven by another
        process is read again every ``poll`` seconds. Pass the ``seq`` of the last
        event seen as ``after`` to go on exactly after it (no gap, no duplicate).

        A run that has ended with no event after ``after`` gives an empty stream whose
        ``ended`` is True (an HTTP stream answers it 204, so that a browser's
        EventSource stops reconnecting). Of a run driven here, an event that ends a
        drive (``run.completed``, ``run.failed``, ``run.cancelled``, ``run.waiting``)
        comes once the drive has recorded its end: a client that reads the run then
        finds it as it ended.

        Raises:
            UnknownRunError: no such run (raised here, before any event).
            ConfigurationError: ``after`` is no int >= 0.
        """
        integer(after, "after", "an int >= 0 (the seq of the last event seen)", ge=0)
        await self._record(run_id)
        if await self._over(run_id, after):
            return EventStream(_nothing(), ended=True)
        return EventStream(self._followed(run_id, after), ended=False)

    async def _followed(self, run_id: str, after: int) -> AsyncIterator[Event]:
        log = self._log
        ended = True  # whether the last event seen ends a drive (or none was seen)
        while True:
            events = await log.read_events(run_id, after=after, limit=_BATCH)
            for event in events:
                ended = event.stage is None and event.type in _RUN_ENDS
                if ended or event.type == EventType.RUN_WAITING:
                    await self._recorded(run_id, event.seq)
                after = event.seq
                yield event
            if len(events) == _BATCH:
                continue
            # A run's end event is its last one only if it is not resumed meanwhile: the
            # stream ends once the store has it ended with nothing after.
            if ended and await self._over(run_id, after):
                return
            await log.next_write(self._poll)

    async def _recorded(self, run_id: str, seq: int) -> None:
        """Return once the store has the end of the drive whose last event is ``seq``.

        The engine emits a drive's end event before it records that end (and its failed
        stages' outcomes): waiting for the record keeps a stream from running ahead of
        what :meth:`get` shows. The drive's end is recorded once the run is no longer
        running, or once a later drive (a resume) has written events after it.
        """
        log = self._log
        while await log.last_event_seq(run_id) <= seq:
            try:
                record = await self._store.get_run(run_id)
            except UnknownRunError:
                return
            if record.status != RunStatus.RUNNING:
                return
            # Until the next write of the log, or a drive of this service ends.
            writing = asyncio.ensure_future(log.next_write(self._poll))
            ending = asyncio.ensure_future(self._drive_ended().wait())
            try:
                await asyncio.wait([writing, ending], return_when=asyncio.FIRST_COMPLETED)
            finally:
                writing.cancel()
                ending.cancel()

    async def _over(self, run_id: str, after: int) -> bool:
        """Whether the run has ended with no event after ``after`` (a deleted one too)."""
        try:
            record = await self._store.get_run(run_id)
        except UnknownRunError:
            return True
        return record.status in FINISHED and after >= await self._log.last_event_seq(run_id)

    async def ready(self) -> None:
        """Return once the store answered a read (raises its StoreError otherwise)."""
        await self._store.list_runs(limit=1)

    # ------------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        """Stop: cancel every run driven here (each is recorded as cancelled) and wait for
        them. The store and the engine are left open; calling it again does nothing."""
        self._closed = True
        tasks = list(self._drives.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def __aenter__(self) -> RunService:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<RunService pipelines={list(self._catalog.names)} driven={len(self._drives)}>"

    # ------------------------------------------------------------------ inside

    def _busy(self, run_id: str) -> bool:
        """Whether this service drives the run (or is cancelling it) now."""
        return run_id in self._drives or run_id in self._held

    def _leased_here(self, run_id: str) -> RunLeasedError:
        engine = self._engine
        durable = self._drives_hook.durable.get(run_id)
        # A drive about to take its lease holds it, once it has, until lease_ttl from now.
        expires_at = (
            durable.lease.expires_at
            if durable is not None
            else engine.clock.wall() + engine.lease_ttl
        )
        return RunLeasedError.of(run_id, engine.owner, expires_at)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this RunService is closed (aclose() was called)")

    async def _record(self, run_id: str) -> RunRecord:
        _check_run_id(run_id)
        return await self._store.get_run(run_id)

    async def _launched(self, run_id: str, drive: Any) -> None:
        """Drive ``drive`` (a run or resume of ``run_id``) in a task of the service's, and
        return once it began (its run recorded, or leased); re-raise what ended it before."""
        began = asyncio.get_running_loop().create_future()
        self._drives_hook.began[run_id] = began
        task = self._launch(run_id, drive)
        try:
            await asyncio.wait([began, task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self._drives_hook.began.get(run_id) is began:
                del self._drives_hook.began[run_id]
        if began.done():
            return
        if task.cancelled():  # (by cancel() or aclose(), before it recorded the run)
            raise RunCancelledError(f"run {run_id!r} was cancelled before it began", run_id=run_id)
        task.result()  # raises what ended it; a drive never ends without beginning otherwise

    def _launch(self, run_id: str, drive: Any) -> asyncio.Task[RunResult]:
        task: asyncio.Task[RunResult] = asyncio.get_running_loop().create_task(
            drive, name=f"stageflow drive {run_id}"
        )
        self._drives[run_id] = task
        task.add_done_callback(lambda done: self._ended(run_id, done))
        return task

    def _drive_ended(self) -> asyncio.Event:
        if self._ends is None:
            self._ends = asyncio.Event()
        return self._ends

    def _ended(self, run_id: str, task: asyncio.Task[RunResult]) -> None:
        if self._drives.get(run_id) is task:
            del self._drives[run_id]
        ends, self._ends = self._ends, None
        if ends is not None:
            ends.set()
        given = run_id in self._again
        self._again.discard(run_id)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # what ends a drive without a result (a lease lost, ...)
            logger.error("the drive of run %r ended with an error", run_id, exc_info=error)
            return
        if task.result().status == RunStatus.WAITING and given and not self._closed:
            self._resume_later(run_id)  # an input came while it stopped to wait

    def _resume_later(self, run_id: str) -> None:
        async def resume() -> RunResult:
            record = await self._store.get_run(run_id)
            graph = self._catalog[record.pipeline].graph
            return await self._engine.resume(run_id, graph)

        self._launch(run_id, resume())

    async def _go_on(self, run_id: str) -> bool:
        """After an input was given: resume the run if it stopped to wait; one driven here
        is resumed if it stops to wait meanwhile. Whether this service goes on with it."""
        if not self._busy(run_id):
            record = await self._store.get_run(run_id)
            if not self._busy(run_id):  # (no drive began meanwhile)
                if record.status != RunStatus.WAITING or self._closed:
                    return False  # it has ended, or another process drives it
                self._resume_later(run_id)
                return True
        self._again.add(run_id)
        return True


# ---------------------------------------------------------------------- JSON shapes


def _new_run_id() -> str:
    return new_run_id()


def _replace_run(record: StageRecord, run_id: str) -> StageRecord:
    return dataclasses.replace(record, run_id=run_id)


def _check_run_id(run_id: object) -> None:
    if not isinstance(run_id, str) or RUN_ID.fullmatch(run_id) is None:
        refuse("run_id", "1 to 128 letters, digits, '_', '.', ':' or '-'", run_id)


def _pipeline_summary(entry: CatalogEntry) -> dict[str, Any]:
    return {
        "name": entry.name,
        "description": entry.description,
        "category": entry.category,
        "tags": list(entry.tags),
        "stages": len(entry.graph.stages),
    }


def _stage_json(spec: StageSpec) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "name": spec.name,
        "kind": spec.kind.value,
        "dependencies": list(spec.dependencies),
    }
    if isinstance(spec.dynamic, InputSpec):
        shown["input_schema"] = spec.dynamic.schema.json_schema
    return shown


def run_json(record: RunRecord) -> dict[str, Any]:
    """A run record as JSON (the service's and ``stageflow runs/show --json``'s shape)."""
    return {
        "run_id": record.run_id,
        "pipeline": record.pipeline,
        "status": record.status.value,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "error": record.error,
        "labels": dict(record.labels),
    }


def _schema(text: str) -> dict[str, Any]:
    """An input's JSON Schema, from the JSON text the store keeps."""
    return json.loads(text) if text else {}


def _waiting_for(rows: Mapping[str, InputRecord]) -> list[InputRecord]:
    """The inputs that waited and have no value, in the order they began to wait."""
    waiting = [r for r in rows.values() if r.waiting_since is not None and r.value is None]
    waiting.sort(key=lambda r: (r.waiting_since or 0.0, r.name))
    return waiting


def _pending_json(row: InputRecord) -> dict[str, Any]:
    return {
        "name": row.name,
        "prompt": row.prompt,
        "schema": _schema(row.schema),
        "deadline": row.deadline,
    }


_STAGE_EVENTS: Final = frozenset(
    {
        EventType.STAGE_STARTED,
        EventType.STAGE_RETRYING,
        EventType.STAGE_COMPLETED,
        EventType.STAGE_FAILED,
        EventType.STAGE_SKIPPED,
        EventType.STAGE_CANCELLED,
    }
)
_SHOWN_AS: Final = {
    EventType.STAGE_COMPLETED: "completed",
    EventType.STAGE_FAILED: "failed",
    EventType.STAGE_SKIPPED: "skipped",
    EventType.STAGE_CANCELLED: "cancelled",
}


def _last_stage_events(events: Iterable[Event]) -> dict[str, Event]:
    """Each stage's last start-or-end event, by stage name (later drives win)."""
    last: dict[str, Event] = {}
    for event in events:
        if event.stage is not None and event.type in _STAGE_EVENTS:
            last[event.stage] = event
    return last


def _stages_json(
    record: RunRecord,
    order: list[str],
    stages: Mapping[str, StageRecord],
    seen: Mapping[str, Event],
    waiting: list[InputRecord],
) -> list[dict[str, Any]]:
    order = order + [name for name in stages if name not in order]
    waits = {r.name.partition("[")[0] for r in waiting}
    shown = []
    for name in order:
        s = stages.get(name)
        if s is not None:
            duration = None if s.started is None or s.ended is None else s.ended - s.started
            shown.append({
                "name": name, "status": s.status.value, "attempts": s.attempts,
                "started": s.started, "duration": duration,
                "error": s.reason if s.status == StageStatus.FAILED else None,
                "reason": s.reason,
            })  # fmt: skip
            continue
        event = seen.get(name)
        status = "waiting" if name in waits else "pending"
        attempts, duration, reason = 0, None, None
        if event is not None:
            attempts = event.attempt
            duration = event.data.get("duration")
            reason = event.data.get("reason")
            if event.type in _SHOWN_AS:
                status = _SHOWN_AS[EventType(event.type)]
            elif record.status == RunStatus.RUNNING and name not in waits:
                status = "running"
        shown.append({
            "name": name, "status": status, "attempts": attempts, "started": None,
            "duration": duration, "error": reason if status == "failed" else None,
            "reason": reason,
        })  # fmt: skip
    return shown


def usage_json(records: list[UsageRecord]) -> dict[str, Any]:
    """A run's usage records as JSON: totals, and totals by stage (the service's and
    ``stageflow show --json``'s shape)."""

    def total(rows: list[UsageRecord]) -> dict[str, Any]:
        costs = [r.cost for r in rows if r.cost is not None]
        return {
            "tokens": sum(r.input_tokens + r.output_tokens for r in rows),
            "input_tokens": sum(r.input_tokens for r in rows),
            "output_tokens": sum(r.output_tokens for r in rows),
            "cost": sum(costs) if costs else None,
        }

    by_stage: dict[str, list[UsageRecord]] = {}
    for r in records:
        by_stage.setdefault(r.stage, []).append(r)
    return {**total(records), "by_stage": {name: total(rows) for name, rows in by_stage.items()}}


def _encoded(record: RunRecord) -> str:
    """A page's cursor: where the next page starts (the last run of this one)."""
    text = json.dumps([record.created_at, record.run_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decoded(cursor: object) -> tuple[float, str]:
    position = _position(cursor) if isinstance(cursor, str) and len(cursor) <= 400 else None
    if position is None:
        refuse("cursor", "the 'next' of an earlier page", cursor)
    return position


def _position(cursor: str) -> tuple[float, str] | None:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created_at, run_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, TypeError, binascii.Error):
        return None
    number_ = isinstance(created_at, int | float) and not isinstance(created_at, bool)
    return (float(created_at), run_id) if number_ and isinstance(run_id, str) else None
