from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from .._status import RunStatus, StageStatus
from .._usage import UsageSummary


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as a store keeps it.

    Attributes:
        run_id: the run's id.
        pipeline: the pipeline's name.
        fingerprint: the graph's fingerprint; a resume must present the same one.
        data: the run's initial data, as stageflow's JSON text.
        status: running, completed, failed or cancelled.
        created_at: when the run was created (seconds since the epoch).
        updated_at: when it last changed.
        error: why it failed or was cancelled, in words.
        structure: the graph's stages and dependencies as JSON, to say what changed
            when a resume presents another graph.
        labels: the labels the run was started with (``Engine.run(labels=)``): str to
            str, kept exactly and never changed by the store (e.g. by ``set_status``).
            Not part of the record's hash.
    """

    run_id: str
    pipeline: str
    fingerprint: str
    data: str
    status: RunStatus
    created_at: float
    updated_at: float
    error: str | None = None
    structure: str = ""
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class StageRecord:
    """One stage's outcome in a run, as a store keeps it (one row per stage, not a snapshot).

    Attributes:
        run_id: the run.
        stage: the stage's name.
        status: how it ended.
        output: its output data, as stageflow's JSON text.
        attempts: attempts made.
        started: seconds since the run started.
        ended: seconds since the run started.
        reason: why it was skipped or failed, in words.
    """

    run_id: str
    stage: str
    status: StageStatus
    output: str
    attempts: int
    started: float | None
    ended: float | None
    reason: str | None = None


class UsageRecord(NamedTuple):
    """One usage report of a stage, as a store keeps it (one row per report).

    A NamedTuple: a run may report once per stage, and building one costs a tuple.

    Attributes:
        run_id: the run.
        stage: the stage that reported it.
        attempt: the attempt that reported it.
        model: the model it was spent on, or None.
        input_tokens: tokens in.
        output_tokens: tokens out.
        cost: what it cost, or None when unknown.
        at: when it was reported (seconds since the epoch).
    """

    run_id: str
    stage: str
    attempt: int
    model: str | None
    input_tokens: int
    output_tokens: int
    cost: float | None
    at: float


@dataclass(frozen=True, slots=True)
class Lease:
    """The right to drive one run, proved by a fencing token.

    Attributes:
        run_id: the run.
        owner: who holds it (e.g. ``host:pid:uuid``).
        token: grows with every acquisition; a write with an older token is refused.
        expires_at: seconds since the epoch; renew before.
    """

    run_id: str
    owner: str
    token: int
    expires_at: float


@runtime_checkable
class CheckpointStore(Protocol):
    """Keeps runs, their stages' outcomes and intra-stage state, and leases runs.

    The contract (``stageflow.testing.check_checkpoint_store`` checks it):

    - Every method is a coroutine and safe to call concurrently, from many runs
      of one process and from many processes sharing the database.
    - ``record_stage``, ``record_usage``, ``save_state`` and ``set_status`` are *fenced*: they take
      the caller's :class:`Lease` and raise :class:`~stageflow.errors.LeaseLostError`
      unless its token is the run's current one. A write that returned is durable.
    - ``acquire_lease`` succeeds when the run has no lease, or its lease expired
      (a takeover), or it was released; each success gets a token greater than
      every earlier one of that run. While another owner's lease is unexpired it
      raises :class:`~stageflow.errors.RunLeasedError` naming the owner and expiry.
    - Times are the store's clock, seconds since the epoch.
    - Backend exceptions are translated into :class:`~stageflow.errors.StoreError`.
    - Values are stageflow's JSON text: a store keeps them verbatim.
    - A run's ``labels`` are kept exactly as ``create_run`` got them (a copy), and no
      other method changes them.
    """

    async def create_run(self, run: RunRecord) -> None:
        """Create a run (``RunExistsError`` if its id is taken)."""
        ...

    async def get_run(self, run_id: str) -> RunRecord:
        """The run (``UnknownRunError`` if none)."""
        ...

    async def list_runs(
        self,
        *,
        status: RunStatus | None = None,
        pipeline: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Runs matching the filters, newest first."""
        ...

    async def delete_run(self, run_id: str) -> None:
        """Forget a run and everything about it (``UnknownRunError``, ``RunLeasedError``)."""
        ...

    async def acquire_lease(self, run_id: str, owner: str, ttl: float) -> Lease:
        """Take the run's lease for ``ttl`` seconds, with a new, greater token."""
        ...

    async def renew_lease(self, lease: Lease, ttl: float) -> Lease:
        """Extend a lease still held (``LeaseLostError`` if it was taken over)."""
        ...

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up at once (nothing happens if it was taken over)."""
        ...

    async def record_stage(self, lease: Lease, record: StageRecord) -> None:
        """Store one stage's outcome, replacing an earlier one of that stage (fenced)."""
        ...

    async def stage_records(self, run_id: str) -> dict[str, StageRecord]:
        """Every stored stage outcome of a run, by stage name."""
        ...

    async def record_usage(self, lease: Lease, records: Sequence[UsageRecord]) -> None:
        """Append usage reports of the lease's run, all or none (fenced).

        An empty sequence writes nothing but is still fenced; a record of another run
        is refused with a ``ValueError`` and nothing is written.
        """
        ...

    async def load_usage(self, run_id: str) -> list[UsageRecord]:
        """Every usage report of a run, in the order they were recorded.

        For a run the store does not know, a store answers as its ``stage_records``
        does (an empty list, or ``UnknownRunError``).
        """
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

        ``since`` (inclusive) and ``until`` (exclusive) are seconds since the epoch and
        select reports by their ``at``; ``model=""`` selects reports without a model.
        """
        ...

    async def set_status(self, lease: Lease, status: RunStatus, error: str | None = None) -> None:
        """Change the run's status (fenced)."""
        ...

    async def save_state(self, lease: Lease, stage: str, state: str) -> None:
        """Keep a stage's intra-stage state, replacing the last one (fenced)."""
        ...

    async def load_state(self, run_id: str, stage: str) -> str | None:
        """A stage's last saved state, or None."""
        ...

    async def prune(self, *, finished_before: float) -> int:
        """Delete finished runs last updated before this time; return how many."""
        ...

    async def aclose(self) -> None:
        """Release the store's resources."""
        ...
