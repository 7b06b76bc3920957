"""Worker: claims the queued runs of its queues from a shared store and drives them.

``Engine.submit`` records a run as *queued*; any number of workers, in any number of
processes and machines sharing the store, claim such runs (one run, one worker: the claim
takes the run's lease atomically), drive them under that lease with heartbeats, take over
the runs of workers that died (their leases expired: fencing makes a late write of the old
owner fail), go on with waiting runs once an input is given, and stop gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ._catalog import Catalog
from ._check import check_queue, integer, number, refuse
from ._durable import check_graph_of
from ._engine import Engine
from ._run import RunCall, RunContext
from ._status import RunStatus
from .errors import (
    ConfigurationError,
    GraphMismatchError,
    LeaseLostError,
    StoreError,
    UnknownRunError,
)
from .ports import RunQueue, WorkerRecord

if TYPE_CHECKING:
    from ._context import StageCall
    from ._durable import DurableRun
    from ._graph import StageGraph
    from ._result import RunResult
    from ._spec import StageSpec
    from .ports import Lease, RunRecord

__all__ = ["Worker"]

logger = logging.getLogger("stageflow.worker")

FORGET_AFTER: Final = 24 * 3600.0
"""Seconds after its last heartbeat that a worker's record is removed by a worker starting
(a worker killed leaves its record behind; ``stageflow workers`` shows it as gone)."""


class _Durables:
    """An interceptor of the worker's engine that keeps each drive's DurableRun (so that a
    worker stopping can send its runs back to their queue)."""

    name = "stageflow.worker"
    priority = 0

    def __init__(self) -> None:
        self.durable: dict[str, DurableRun] = {}

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        return call

    def wrap_run(self, graph: StageGraph, call: RunCall) -> RunCall:
        durable = self.durable

        async def kept(run: RunContext) -> RunResult:
            if run.durable is not None:
                durable[run.run_id] = run.durable
            try:
                return await call(run)
            finally:
                durable.pop(run.run_id, None)

        return kept


class Worker:
    """Claims queued runs of its queues and drives them, ``concurrency`` at a time.

    Run it in a process of its own (``stageflow worker``) or in yours::

        worker = Worker(Engine(store=SQLAlchemyStore(url)), catalog, queues=["default"])
        await worker.run()  # until worker.stop() (the CLI: SIGTERM, Ctrl-C)

    Every worker of a queue should have the same catalog (a run of a pipeline the
    catalog lacks, or whose graph changed since it was submitted, is recorded as failed,
    saying why) and the same ``limits``.

    Args:
        engine: drives the runs; its ``store`` must be a
            :class:`~stageflow.ports.RunQueue` (``SQLAlchemyStore``). Its ``owner`` names
            this worker, its ``lease_ttl`` is how long a dead worker's runs wait before
            another takes them over.
        catalog: the pipelines it runs, by name (a :class:`~stageflow.Catalog`, or a
            mapping of names to pipelines or graphs).
        queues: the queues it claims runs of, in turn.
        concurrency: runs driven at once, at most (each is a task of this process).
        limits: queue name to the most runs of that queue driven at once by all its
            workers together (a queue without one: no limit but each worker's
            ``concurrency``).
        poll: seconds between two rounds of claims when there was nothing to claim.
        grace: seconds :meth:`run` waits, once stopped, for the runs it drives to end;
            those still going then go back to their queue (status ``queued``) for
            another worker, which goes on with them (completed stages restored).
        heartbeat: seconds between two records of this worker in the store (what
            ``stageflow workers`` lists; default: a third of ``lease_ttl``).

    Raises:
        ConfigurationError: an argument is invalid (``field`` names it).
    """

    def __init__(
        self,
        engine: Engine,
        catalog: Catalog | Mapping[str, Any],
        *,
        queues: Iterable[str] = ("default",),
        concurrency: int = 4,
        limits: Mapping[str, int] | None = None,
        poll: float = 0.5,
        grace: float = 30.0,
        heartbeat: float | None = None,
    ) -> None:
        if not isinstance(engine, Engine):
            refuse("engine", "an Engine, e.g. Engine(store=SQLAlchemyStore(url))", engine)
        store: object = engine.store
        if not isinstance(store, RunQueue):
            refuse(
                "store",
                "an engine's store that keeps queued runs (a RunQueue: SQLAlchemyStore)",
                store,
            )
        if isinstance(queues, str):
            refuse("queues", "queue names (a list), not one str", queues)
        names = tuple(check_queue(queue, "queues") for queue in queues)
        if not names:
            refuse("queues", "at least one queue", queues)
        integer(concurrency, "concurrency", "an int >= 1", ge=1)
        self._limits = _check_limits(limits)
        number(poll, "poll", "a positive number of seconds", gt=0)
        number(grace, "grace", "a number of seconds >= 0", ge=0)
        if heartbeat is None:
            heartbeat = engine.lease_ttl / 3
        number(heartbeat, "heartbeat", "a positive number of seconds", gt=0)
        self._hook = _Durables()
        self._engine = engine.replace(interceptors=(*engine.settings["interceptors"], self._hook))
        self._catalog = Catalog.of(catalog)
        self._store: RunQueue = store
        self._queues = tuple(dict.fromkeys(names))
        self._concurrency = concurrency
        self._poll = float(poll)
        self._grace = float(grace)
        self._heartbeat = float(heartbeat)
        self._drives: dict[str, asyncio.Task[None]] = {}
        self._stopping: asyncio.Event | None = None
        self._changed: asyncio.Event | None = None  # set when a drive ends
        self._turn = 0  # the queue the next round of claims begins with
        self._started_at = 0.0

    @property
    def owner(self) -> str:
        """This worker's name: the owner of the leases it takes (``host:pid:hex``)."""
        return self._engine.owner

    @property
    def queues(self) -> tuple[str, ...]:
        """The queues it claims runs of."""
        return self._queues

    @property
    def driving(self) -> frozenset[str]:
        """The ids of the runs it drives now."""
        return frozenset(self._drives)

    def stop(self) -> None:
        """Stop claiming; :meth:`run` returns once its runs ended or went back to their
        queue (after ``grace``). Safe to call more than once, and before :meth:`run`."""
        if self._stopping is None:
            self._stopping = asyncio.Event()
        self._stopping.set()

    async def run(self) -> None:
        """Claim and drive runs until :meth:`stop` is called, then stop gracefully.

        Raises:
            StoreError: the store cannot be reached when the worker starts (once it runs, a
                store that fails is logged and tried again after ``poll``).
        """
        if self._stopping is None:
            self._stopping = asyncio.Event()
        self._changed = asyncio.Event()
        clock = self._engine.clock
        self._started_at = clock.wall()
        await self._beat()
        await self._forget_gone()
        _log("worker.started", "worker %s started on queues %s", self.owner, ", ".join(
            self._queues), owner=self.owner, queues=list(self._queues))  # fmt: skip
        beating = asyncio.ensure_future(self._beating())
        try:
            while not self._stopping.is_set():
                claimed = await self._claim_round()
                if not self._stopping.is_set():
                    await self._rest(busy=claimed)
        finally:
            try:
                await self._wind_down()
            finally:
                beating.cancel()
                await asyncio.gather(beating, return_exceptions=True)
                try:
                    await self._store.forget_worker(self.owner)
                except StoreError as error:
                    logger.warning("worker %s could not remove its record: %s", self.owner, error)
                _log("worker.stopped", "worker %s stopped", self.owner, owner=self.owner)

    # ------------------------------------------------------------------ inside

    async def _claim_round(self) -> bool:
        """Claim runs of the queues in turn while there is room; whether any was claimed."""
        claimed = False
        queues = self._queues
        empty = 0
        while len(self._drives) < self._concurrency and empty < len(queues):
            queue = queues[self._turn % len(queues)]
            self._turn += 1
            try:
                got = await self._store.claim(
                    queue, self.owner, self._engine.lease_ttl, limit=self._limits.get(queue)
                )
            except StoreError as error:
                logger.error("worker %s could not claim from %r: %s", self.owner, queue, error)
                return claimed
            if got is None:
                empty += 1
                continue
            empty = 0
            claimed = True
            record, lease = got
            _log("worker.claimed", "worker %s claimed run %s of %r (token %d)", self.owner,
                 record.run_id, queue, lease.token, owner=self.owner, run_id=record.run_id,
                 queue=queue, token=lease.token, status=record.status.value)  # fmt: skip
            task = asyncio.ensure_future(self._drive(record, lease, queue))
            self._drives[record.run_id] = task
        return claimed

    async def _rest(self, *, busy: bool) -> None:
        """Wait before the next round: until a drive ends when full, else ``poll`` (not at
        all after a round that claimed and has room left: there may be more)."""
        assert self._stopping is not None
        assert self._changed is not None
        full = len(self._drives) >= self._concurrency
        if busy and not full:
            return
        self._changed.clear()
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if full:
            waits.append(asyncio.ensure_future(self._changed.wait()))
        try:
            await asyncio.wait(waits, timeout=None if full else self._poll,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            for waiting in waits:
                waiting.cancel()

    async def _drive(self, record: RunRecord, lease: Lease, queue: str) -> None:
        run_id = record.run_id
        status = "failed"
        try:
            if record.pipeline not in self._catalog:
                status = await self._refuse(lease, f"this worker's catalog has no pipeline "
                                            f"{record.pipeline!r} (it has: "
                                            f"{', '.join(self._catalog.names)})")  # fmt: skip
                return
            try:
                graph = self._catalog[record.pipeline].graph
                check_graph_of(record, graph)
                self._engine._resuming(record, graph, None, False)  # money settings differ?
            except (GraphMismatchError, ConfigurationError) as error:
                status = await self._refuse(lease, str(error))
                return
            result = await self._engine._resumed(self._store, record, graph, None, lease=lease)  # type: ignore[arg-type]
            status = result.status.value
        except asyncio.CancelledError:
            status = RunStatus.QUEUED.value
            raise
        except (LeaseLostError, UnknownRunError) as error:  # taken over, or deleted
            status = "lost"
            logger.warning("worker %s lost run %s: %s", self.owner, run_id, error)
        except Exception:  # a store that failed: the lease expires, another worker goes on
            logger.exception("worker %s: the drive of run %s failed", self.owner, run_id)
        finally:
            del self._drives[run_id]
            assert self._changed is not None
            self._changed.set()
            _log("worker.released", "worker %s released run %s (%s)", self.owner, run_id,
                 status, owner=self.owner, run_id=run_id, queue=queue, token=lease.token,
                 status=status)  # fmt: skip

    async def _refuse(self, lease: Lease, why: str) -> str:
        """Record a run this worker cannot drive as failed, saying why."""
        logger.error("worker %s cannot drive run %s: %s", self.owner, lease.run_id, why)
        try:
            await self._store.set_status(lease, RunStatus.FAILED, why)  # type: ignore[attr-defined]
        finally:
            await self._store.release_lease(lease)  # type: ignore[attr-defined]
        return RunStatus.FAILED.value

    async def _wind_down(self) -> None:
        """Wait ``grace`` for the runs driven here; send those still going back to their
        queue (a drive cancelled so records the run ``queued``, not cancelled)."""
        drives = list(self._drives.values())
        if drives and self._grace:
            await asyncio.wait(drives, timeout=self._grace)
        for run_id, task in list(self._drives.items()):
            durable = self._hook.durable.get(run_id)
            if durable is not None:
                durable.requeue = True
            task.cancel()
        if self._drives:
            await asyncio.wait(list(self._drives.values()))

    async def _beat(self) -> None:
        host = socket.gethostname()
        record = WorkerRecord(
            self.owner, host, os.getpid(), self._queues, self._concurrency,
            self._started_at, self._engine.clock.wall(),
        )  # fmt: skip
        await self._store.beat_worker(record)

    async def _beating(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            try:
                await self._beat()
            except StoreError as error:
                logger.warning("worker %s: heartbeat failed: %s", self.owner, error)

    async def _forget_gone(self) -> None:
        """Remove the records of workers not seen for FORGET_AFTER (killed ones)."""
        before = self._engine.clock.wall() - FORGET_AFTER
        for worker in await self._store.list_workers():
            if worker.seen_at < before:
                await self._store.forget_worker(worker.owner)

    def __repr__(self) -> str:
        return (
            f"<Worker {self.owner} queues={list(self._queues)} "
            f"driving={len(self._drives)}/{self._concurrency}>"
        )


def _check_limits(limits: object) -> dict[str, int]:
    if limits is None:
        return {}
    if not isinstance(limits, Mapping):
        refuse("limits", "a mapping of queue names to ints >= 1", limits)
    checked: dict[str, int] = {}
    for queue, limit in limits.items():
        check_queue(queue, "limits")
        checked[queue] = integer(limit, f"limits[{queue!r}]", "an int >= 1", ge=1)
    return checked


def _log(event: str, message: str, *args: object, **fields: Any) -> None:
    """An INFO record of the worker's journal: ``event`` and its fields as record fields
    (``JsonFormatter`` writes them), and when (``at``, seconds since the epoch)."""
    if logger.isEnabledFor(logging.INFO):
        logger.info(message, *args, extra={"event": event, "at": time.time(), **fields})
