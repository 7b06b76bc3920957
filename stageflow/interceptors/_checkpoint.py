"""CheckpointInterceptor: a stage's completion is stored before its dependents start."""

from __future__ import annotations

from typing import Any

from .._context import StageCall, StageContext
from .._events import EventType
from .._spec import StageSpec
from .._stage import StageOutput
from .._status import StageStatus
from ._base import Priority

_KEPT = (StageStatus.COMPLETED, StageStatus.SKIPPED)


class CheckpointInterceptor:
    """Stores each stage's outcome in the run's store; restores it on resume.

    A stage already completed in this run (or that skipped itself) returns its
    stored output and nothing inside runs: no retry, no breaker, no call, a
    ``stage.restored`` event. A fresh completion is written, fenced by the run's
    lease, before the call returns, so before any dependent starts; then a
    ``checkpoint.saved`` event. A failed stage is not stored: a resume runs it
    again. The usage a stage reported (``ctx.usage.report``) is stored when it
    ends, failed or not, before its outcome: a resume counts it once. An output
    that cannot be stored faithfully fails its stage, in every durable run,
    naming the stage and the type.

    The engine adds it when it has a store; it applies to every stage. It uses only
    the run's public services (``ctx.durable``, ``ctx.ledger``, ``ctx.event``).
    """

    name = "checkpoint"

    def __init__(self, *, priority: int = Priority.CHECKPOINT) -> None:
        self.priority = priority

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        """Restore or store the stage's outcome around its call."""
        name = spec.name

        async def checkpointed(ctx: StageContext) -> Any:
            durable = ctx.durable
            if durable is None:  # a run without a store
                return await call(ctx)
            stored = durable.restore(name)
            if stored is not None:
                ctx.event(EventType.STAGE_RESTORED, attempts=durable.restored[name].attempts)
                return stored
            try:
                output: StageOutput = await call(ctx)
            except Exception:
                await durable.save_usage(ctx.ledger.unstored(name))  # a failure's spend counts
                raise
            await durable.save_usage(ctx.ledger.unstored(name))
            if output.status in _KEPT:
                await durable.save(ctx, output)
                ctx.event(EventType.CHECKPOINT_SAVED)
            return output

        return checkpointed

    def __repr__(self) -> str:
        return f"<CheckpointInterceptor priority={self.priority}>"
