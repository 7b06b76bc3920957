"""CheckpointInterceptor: a stage's completion is stored before its dependents start."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _codec
from .._events import EventType
from .._spec import StageSpec
from .._stage import StageCall, StageContext, StageOutput, StageStatus
from ..errors import LeaseLostError
from ..ports import StageRecord
from ._base import Priority

if TYPE_CHECKING:
    from .._durable import Checkpointing
    from .._ledger import UsageLedger

_KEPT = (StageStatus.COMPLETED, StageStatus.SKIPPED)


class CheckpointInterceptor:
    """Stores each stage's outcome in the run's CheckpointStore; restores it on resume.

    A stage already completed in this run (or that skipped itself) returns its
    stored output and nothing inside runs: no retry, no breaker, no call, a
    ``stage.restored`` event. A fresh completion is written, fenced by the run's
    lease, before the call returns, so before any dependent starts; then a
    ``checkpoint.saved`` event. A failed stage is not stored: a resume runs it
    again. The usage a stage reported (``ctx.usage.report``) is stored when it
    ends, failed or not, before its outcome: a resume counts it once. An output
    that cannot be stored faithfully fails its stage, in every durable run,
    naming the stage and the type.

    The engine adds it when it has a store; it applies to every stage.
    """

    name = "checkpoint"

    def __init__(self, *, priority: int = Priority.CHECKPOINT) -> None:
        self.priority = priority

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        """Restore or store the stage's outcome around its call."""
        name = spec.name
        where = f"the output of stage {name!r}"

        async def checkpointed(ctx: StageContext) -> Any:
            durable = ctx.checkpointing
            if durable is None:  # a run without a store
                return await call(ctx)
            done = durable.restored.get(name)
            if done is not None:
                ctx.event(EventType.STAGE_RESTORED, attempts=done.attempts)
                if done.status is StageStatus.SKIPPED:
                    return StageOutput.skip(done.reason or "skipped")
                return StageOutput(StageStatus.COMPLETED, _codec.loads(done.output))
            try:
                output: StageOutput = await call(ctx)
            except Exception:
                if ctx._run.ledger is not None:  # what a failed stage spent counts too
                    await _store_usage(ctx._run.ledger, durable, name)
                raise
            if ctx._run.ledger is not None:  # a run that reports nothing has no ledger
                await _store_usage(ctx._run.ledger, durable, name)
            if output.status not in _KEPT:
                return output
            record = StageRecord(
                ctx.run_id,
                name,
                output.status,
                _codec.dumps(dict(output.data), where),
                ctx.attempts,
                ctx.started - ctx.run_started,
                ctx.clock.monotonic() - ctx.run_started,
                output.reason,
            )
            try:
                await durable.store.record_stage(durable.lease, record)
            except LeaseLostError:
                durable.lost("the run's lease was taken over by another driver")
                raise
            ctx.event(EventType.CHECKPOINT_SAVED)
            return output

        return checkpointed

    def __repr__(self) -> str:
        return f"<CheckpointInterceptor priority={self.priority}>"


async def _store_usage(ledger: UsageLedger, durable: Checkpointing, name: str) -> None:
    """Store the stage's usage reports, before its outcome: a resume counts them once."""
    records = ledger.take_pending(name)
    if records:
        try:
            await durable.store.record_usage(durable.lease, records)
        except LeaseLostError:
            durable.lost("the run's lease was taken over by another driver")
            raise
