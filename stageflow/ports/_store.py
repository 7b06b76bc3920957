"""The store ports: RunStore (what drives a run) and RunCatalog (what lists and manages runs).

One store usually implements both (:class:`CheckpointStore`): the engine holds it as
a :class:`RunStore`, the ``stageflow`` command and your admin scripts as a
:class:`RunCatalog`. ``stageflow.testing.check_run_store`` and
``check_run_catalog`` check the contracts written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .._status import RunStatus
from .._usage import UsageSummary
from ._records import InputRecord, Lease, RunRecord, StageRecord, UsageRecord


class _RunReads(Protocol):
    """What both ports read: a run, its stage outcomes and usage; and closing the store."""

    async def get_run(self, run_id: str) -> RunRecord:
        """The run (``UnknownRunError`` if none)."""
        ...

    async def stage_records(self, run_id: str) -> dict[str, StageRecord]:
        """Every stored stage outcome of the run, by stage name (``{}`` if none yet).

        ``UnknownRunError`` if the run does not exist.
        """
        ...

    async def load_usage(self, run_id: str) -> list[UsageRecord]:
        """Every usage report of the run, in the order they were recorded (``[]`` if none).

        ``UnknownRunError`` if the run does not exist.
        """
        ...

    async def aclose(self) -> None:
        """Release the store's resources (a store that is both ports has one ``aclose``)."""
        ...


@runtime_checkable
class RunStore(_RunReads, Protocol):
    """What a driver (the engine) needs: create and lease a run, write its progress, read it.

    The contract (``stageflow.testing.check_run_store`` checks it):

    - Every method is a coroutine and safe to call concurrently, from many runs of
      one process and from many processes sharing the database.
    - **Reads.** ``get_run``, ``stage_records``, ``load_usage`` and ``load_state`` of
      a run that does not exist raise :class:`~stageflow.errors.UnknownRunError`; of a
      run that has nothing of the kind they return ``{}``, ``[]`` or None.
    - **Leases.** ``acquire_lease`` succeeds when the run has no lease, its lease was
      released, it expired (``expires_at <= now``: a takeover), or the caller's
      ``owner`` holds it (a re-acquisition); each success gets a token greater than
      every earlier one of that run, and every earlier token is stale from then on.
      While another owner's lease is unexpired it raises
      :class:`~stageflow.errors.RunLeasedError` naming the owner and expiry; for an
      unknown run, ``UnknownRunError``. Expiry alone takes nothing away: a lease
      past its ``expires_at`` still writes and renews until another owner acquires
      the run.
    - **Taking over.** ``acquire_lease(..., take_over=True)`` is for a driver known to
      be dead whose lease has not expired yet: for a known run it always succeeds,
      whoever holds the lease and whenever it expires, with a token greater than
      every earlier one, exactly as a takeover at expiry; the previous holder's
      fenced writes and renewals then raise ``LeaseLostError`` and its
      ``release_lease`` does nothing. For an unknown run, ``UnknownRunError``. A
      store must fence it as it fences ``acquire_lease``: a write of the previous
      holder lands before the take-over or not at all.
    - **Fencing.** ``record_stage``, ``record_usage``, ``save_state``,
      ``set_status`` and ``renew_lease`` take the caller's :class:`Lease` and raise
      :class:`~stageflow.errors.LeaseLostError` unless its token is the run's
      current one, also when the run no longer exists (deleted or pruned): a
      fenced call never raises ``UnknownRunError``. A write that returned is
      durable. ``release_lease`` of a stale lease, or of a run that is gone, does
      nothing.
    - **One run per lease.** A ``StageRecord`` or ``UsageRecord`` of another run
      than the lease's is refused with :class:`~stageflow.errors.ConfigurationError`
      (a ``ValueError``) before the lease is checked, and nothing is written.
    - Times are the store's clock, seconds since the epoch: ``create_run`` keeps
      the record's ``created_at`` and ``updated_at`` as given, ``set_status`` sets
      ``updated_at`` to the store's now.
    - Values (run data, outputs, state) are stageflow's JSON text: a store keeps them
      verbatim. A run's ``labels`` are kept exactly as ``create_run`` got them (a
      copy), and no other method changes them.
    - Backend exceptions are translated into :class:`~stageflow.errors.StoreError`.

    A store may also have a ``lease_ttl`` attribute (seconds, a positive float): the
    lease lifetime an engine uses when it is given none (``Engine(lease_ttl=None)``;
    without the attribute, 30 s). It is not part of the Protocol, so a store without
    it is a RunStore all the same.
    """

    async def create_run(self, run: RunRecord) -> None:
        """Create a run (``RunExistsError`` if its id is taken)."""
        ...

    async def acquire_lease(
        self, run_id: str, owner: str, ttl: float, *, take_over: bool = False
    ) -> Lease:
        """Take the run's lease for ``ttl`` seconds, with a new, greater token.

        ``take_over=True``: take it although another owner's lease has not expired (that
        owner must be known dead; its writes raise ``LeaseLostError`` from now on).
        """
        ...

    async def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """Extend a lease still held to ``ttl`` seconds from now, same token (fenced)."""
        ...

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up at once (nothing happens if it is stale or the run gone)."""
        ...

    async def record_stage(self, lease: Lease, record: StageRecord) -> None:
        """Store one stage's outcome, replacing an earlier one of that stage (fenced)."""
        ...

    async def record_usage(self, lease: Lease, records: Sequence[UsageRecord]) -> None:
        """Append usage reports of the lease's run, all or none (fenced).

        An empty sequence writes nothing but is still fenced.
        """
        ...

    async def set_status(self, lease: Lease, status: RunStatus, error: str | None = None) -> None:
        """Change the run's status and error (None clears it), and ``updated_at`` (fenced)."""
        ...

    async def save_state(self, lease: Lease, stage: str, state: str) -> None:
        """Keep a stage's intra-stage state, replacing its last one (fenced)."""
        ...

    async def load_state(self, run_id: str, stage: str) -> str | None:
        """The stage's last saved state, or None if it saved none (``UnknownRunError``)."""
        ...


@runtime_checkable
class RunCatalog(_RunReads, Protocol):
    """What lists, shows and manages runs: the ``stageflow`` command, dashboards, admin.

    The contract (``stageflow.testing.check_run_catalog`` checks it), beside
    ``get_run``, ``stage_records`` and ``load_usage``, which read as a
    :class:`RunStore`'s do (``UnknownRunError`` for an unknown run):

    - Every method is a coroutine and safe to call while runs are being driven.
    - ``list_runs`` is newest first: by ``created_at``, then by ``run_id``, both
      descending. ``limit`` is None or an int >= 0 (``0``: no runs); anything else
      is refused with :class:`~stageflow.errors.ConfigurationError`.
    - A run under an unexpired lease is never deleted: ``delete_run`` raises
      :class:`~stageflow.errors.RunLeasedError` and ``prune`` passes it by. A
      released or expired lease does not protect it. Deleting a run deletes its
      stage outcomes, states and usage with it; a fenced write of its last driver
      then raises ``LeaseLostError``.
    - ``prune`` deletes only finished runs (completed, failed or cancelled) whose
      ``updated_at`` is strictly before ``finished_before``.
    - ``usage`` sums reports in the store: deleted and pruned runs count no more.
    - Backend exceptions are translated into :class:`~stageflow.errors.StoreError`.
    """

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        pipeline: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Runs matching every filter given, newest first, at most ``limit`` of them."""
        ...

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

        Filters combine with AND. ``since`` (inclusive) and ``until`` (exclusive) are
        seconds since the epoch and select reports by their ``at``; ``model=""``
        selects the reports without a model, which count under ``""`` in
        ``by_model``. A sum with no known cost has a cost of None.
        """
        ...

    async def delete_run(self, run_id: str) -> None:
        """Forget a run and everything about it (``UnknownRunError``, ``RunLeasedError``)."""
        ...

    async def prune(self, *, finished_before: float) -> int:
        """Delete finished runs last updated before this time, unless leased; how many."""
        ...


@runtime_checkable
class CheckpointStore(RunStore, RunCatalog, Protocol):
    """A store that is both a :class:`RunStore` and a :class:`RunCatalog`.

    What stageflow's adapters (``MemoryStore``, ``SQLAlchemyStore``) are, and what to
    write when one object serves the engine and the catalog alike;
    ``stageflow.testing.check_checkpoint_store`` runs both suites.
    """


@runtime_checkable
class InputStore(Protocol):
    """Where the inputs of runs that wait for a person (``with_input``) are kept.

    An engine needs it (beside :class:`RunStore`) to drive a graph with input stages
    durably; ``MemoryStore`` and ``SQLAlchemyStore`` are both. The contract
    (``stageflow.testing.check_input_store`` checks it):

    - An input is one row per run and name, written atomically. ``declare_inputs``
      and ``wait_input`` are fenced by the caller's lease, as :class:`RunStore`'s
      writes are (``LeaseLostError``); ``give_input`` is not: a sender holds no lease.
    - ``give_input`` stores a value at most once: of senders racing for one input,
      exactly one succeeds and the others get
      :class:`~stageflow.errors.InputAlreadyGivenError`. It is refused with
      :class:`~stageflow.errors.UnknownInputError` when the run has no such input
      (neither the name nor, for ``stage[key]``, the declared ``stage``), or when the
      run has ended (completed, failed or cancelled), and with
      :class:`~stageflow.errors.InputTimeoutError` once the input's deadline has
      passed (``deadline <= at``). ``UnknownRunError`` for an unknown run. A value
      given before the run's stage waits for it is kept, for the stage to find.
    - The value is stageflow's JSON text, kept verbatim; the caller validated it.
    - Deleting or pruning a run deletes its inputs.
    - Backend exceptions are translated into :class:`~stageflow.errors.StoreError`.
    """

    async def declare_inputs(self, lease: Lease, records: Sequence[InputRecord]) -> None:
        """Add the run's inputs that have no row yet; rows that exist (a value given
        early, a stage that waited) are left as they are (fenced)."""
        ...

    async def wait_input(self, lease: Lease, record: InputRecord) -> InputRecord:
        """Mark an input waiting and return its row as it is now (fenced).

        Without a row (an item ``stage[key]`` not seen yet), ``record`` is inserted. A
        row that never waited (``waiting_since`` None) takes ``record``'s schema,
        prompt, deadline and waiting_since; a row that waited keeps its own (a
        deadline is fixed once). ``value`` and ``given_at`` are never changed here:
        the row returned has the value if one was given, by a sender racing this call
        included.
        """
        ...

    async def give_input(self, run_id: str, name: str, value: str, at: float) -> InputRecord:
        """Store ``value`` (stageflow's JSON text) as input ``name`` of the run, given at
        ``at`` (seconds since the epoch); return the row with it.

        An item ``stage[key]`` without a row of its own is added when the run declares
        ``stage``, with ``stage``'s schema.

        Raises:
            UnknownRunError: no such run.
            UnknownInputError: the run has no such input, or it has ended.
            InputAlreadyGivenError: the input has a value already.
            InputTimeoutError: the input's deadline has passed.
        """
        ...

    async def load_inputs(self, run_id: str) -> dict[str, InputRecord]:
        """Every input row of the run, by name (``{}`` if none; ``UnknownRunError``)."""
        ...
