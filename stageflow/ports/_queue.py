"""The queue port: runs submitted for workers to claim, and the workers claiming them.

``Engine.submit`` records a *queued* run in a :class:`RunQueue`; a :class:`~stageflow.Worker`
(``stageflow worker``) claims runs of its queues, one at a time, and drives them under the
lease the claim took. ``stageflow.adapters.sqlalchemy.SQLAlchemyStore`` is one (SQLite for
several workers on one machine, PostgreSQL for many machines).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._records import InputRecord, Lease, RunRecord


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A worker as a queue keeps it: who it is, what it serves, when it was last seen.

    Attributes:
        owner: the worker's lease owner (``host:pid:hex``), unique per process.
        host: the machine it runs on.
        pid: its process id there.
        queues: the queues it claims runs of.
        concurrency: how many runs it drives at once, at most.
        started_at: when it started (seconds since the epoch).
        seen_at: its last heartbeat.
        runs: the runs it holds an unexpired lease on (filled in by ``list_workers``;
            ignored by ``beat_worker``).
    """

    owner: str
    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    started_at: float
    seen_at: float
    runs: tuple[str, ...] = ()


@runtime_checkable
class RunQueue(Protocol):
    """Where queued runs wait for a worker, and what workers claim them from.

    The contract (the tests of ``SQLAlchemyStore`` check it on SQLite and PostgreSQL):

    - ``enqueue`` creates the run (status ``queued``) and declares its inputs in one
      write: ``RunExistsError`` if the id is taken, and then nothing is written. The
      run is a :class:`~stageflow.ports.RunStore`'s run like any other: it is read,
      listed, deleted and resumed as one.
    - ``claim`` takes the lease of one claimable run of ``queue`` for ``owner`` (a
      token greater than every earlier one, as ``acquire_lease``), atomically: of
      workers claiming at once, each run goes to one. Claimable: a queued run; a
      running run whose lease expired or was released (its driver died: a take-over);
      a waiting run given an input since it was last claimed, or whose earliest
      input deadline has passed. Higher ``priority`` first, then the longest ready.
      With ``limit``, no run is claimed while ``limit`` runs of the queue are under
      unexpired leases (a limit shared by every worker of the queue). None: nothing
      to claim.
    - A run stopped to wait (``set_status(lease, WAITING)``) is claimable again once an
      input is given or a deadline passes; one set back to ``queued`` (a worker that
      stopped before finishing it) at once.
    - ``beat_worker`` records (or refreshes) a worker; ``list_workers`` returns those
      seen at or after ``seen_after`` (all: None), oldest first, each with the runs it
      holds; ``forget_worker`` removes one (nothing happens for an unknown one).
    - Backend exceptions are translated into :class:`~stageflow.errors.StoreError`.
    """

    async def enqueue(
        self,
        run: RunRecord,
        *,
        queue: str,
        priority: int = 0,
        inputs: Sequence[InputRecord] = (),
    ) -> None:
        """Record a queued run (and its inputs) for a worker of ``queue`` to claim."""
        ...

    async def claim(
        self, queue: str, owner: str, ttl: float, *, limit: int | None = None
    ) -> tuple[RunRecord, Lease] | None:
        """Lease one claimable run of ``queue`` to ``owner`` for ``ttl`` seconds."""
        ...

    async def beat_worker(self, worker: WorkerRecord) -> None:
        """Record the worker, or refresh it (its ``seen_at``, queues and concurrency)."""
        ...

    async def list_workers(self, *, seen_after: float | None = None) -> list[WorkerRecord]:
        """The workers seen at or after ``seen_after``, oldest first, with their runs."""
        ...

    async def forget_worker(self, owner: str) -> None:
        """Remove a worker's record (a worker that stops does; nothing if unknown)."""
        ...


__all__ = ["RunQueue", "WorkerRecord"]
