from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .._result import RunStatus
from .._stage import StageStatus


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
    - ``record_stage``, ``save_state`` and ``set_status`` are *fenced*: they take
      the caller's :class:`Lease` and raise :class:`~stageflow.errors.LeaseLostError`
      unless its token is the run's current one. A write that returned is durable.
    - ``acquire_lease`` succeeds when the run has no lease, or its lease expired
      (a takeover), or it was released; each success gets a token greater than
      every earlier one of that run. While another owner's lease is unexpired it
      raises :class:`~stageflow.errors.RunLeasedError` naming the owner and expiry.
    - Times are the store's clock, seconds since the epoch.
    - Backend exceptions are translated into :class:`~stageflow.errors.StoreError`.
    - Values are stageflow's JSON text: a store keeps them verbatim.
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
