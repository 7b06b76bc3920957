"""A budget and a checkpoint interceptor written as a user would: public names only.

They do what the built-in BudgetInterceptor and CheckpointInterceptor do, through
the run services every interceptor has (``ctx.ledger``, ``ctx.durable``,
``ctx.event``). tests/unit/test_user_interceptors.py runs the built-ins'
behavioural tests against them.
"""

from __future__ import annotations

from typing import Any

from stageflow import (
    Budget,
    EventType,
    Priority,
    StageCall,
    StageContext,
    StageOutput,
    StageSpec,
    StageStatus,
)


class UserBudget:
    """Reserve a stage's estimate before each attempt; release it after."""

    name = "user-budget"
    priority: int = Priority.BUDGET
    transparent = True

    def __init__(self, run_budget: Budget | None = None) -> None:
        self.run_budget = run_budget

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        budget, estimate = spec.budget, spec.estimate
        if budget is None and self.run_budget is None:
            return call  # no budget applies: no layer

        async def budgeted(ctx: StageContext) -> Any:
            ledger = ctx.ledger
            ledger.reserve(ctx, budget, estimate)
            try:
                return await call(ctx)
            finally:
                ledger.release(ctx, budget)

        return budgeted


class UserCheckpoint:
    """Restore a stage an earlier driver stored; store a fresh outcome before it returns."""

    name = "user-checkpoint"
    priority: int = Priority.CHECKPOINT

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        name = spec.name

        async def checkpointed(ctx: StageContext) -> Any:
            durable = ctx.durable
            if durable is None:
                return await call(ctx)
            stored = durable.restore(name)
            if stored is not None:
                record = durable.restored[name]
                ctx.report_restored(record.attempts, record.started, record.ended)
                ctx.event(EventType.STAGE_RESTORED, attempts=record.attempts)
                return stored
            try:
                output: StageOutput = await call(ctx)
            except Exception:
                await durable.save_usage(ctx.ledger.unstored(name))
                raise
            await durable.save_usage(ctx.ledger.unstored(name))
            if output.status in (StageStatus.COMPLETED, StageStatus.SKIPPED):
                await durable.save(ctx, output)
                ctx.event(EventType.CHECKPOINT_SAVED, attempt=ctx.attempts)
            return output

        return checkpointed
