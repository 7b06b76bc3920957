"""BudgetInterceptor: token and cost budgets checked (and reserved) before each attempt."""

from __future__ import annotations

from typing import Any

from .._budget import Budget
from .._context import StageCall, StageContext
from .._spec import StageSpec
from ..errors import ConfigurationError
from ._base import Priority


class BudgetInterceptor:
    """Holds stages to the run's budget and their own (``with_stage(..., budget=)``).

    Before each attempt the stage's ``estimate`` (none: zero) is checked against
    every budget that applies, counting what was reported and what the stages
    running now have reserved; what does not fit meets the budget's policy
    (block, downgrade, notify, continue). The estimate is reserved until the
    attempt ends, so that stages running at once can never together overshoot a
    budget with their estimates; what the attempt reports (``ctx.usage.report``)
    counts at once and takes the place of as much of its reservation.

    A stage is wrapped only when a budget applies to it: with no run budget, a
    stage without a ``budget`` option costs nothing. It uses only the run's public
    ledger (``ctx.ledger``: ``reserve`` and ``release``).

    Args:
        budget: the run budget (the engine passes ``Engine(budget=)``).
        priority: where it sits in the chain (default 700: inside retry, so that
            each attempt is checked; outside timeout).
    """

    name = "budget"
    transparent = True  # passes outputs through untouched: see TransparentInterceptor

    def __init__(self, budget: Budget | None = None, *, priority: int = Priority.BUDGET) -> None:
        if budget is not None and not isinstance(budget, Budget):
            raise ConfigurationError(
                f"budget must be a Budget, not {budget!r}", field="budget", value=budget
            )
        self.budget = budget
        self.priority = priority

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        """Check and reserve before each attempt, release after, when a budget applies."""
        budget, estimate = spec.budget, spec.estimate
        if budget is None and self.budget is None:
            return call
        name = spec.name

        async def budgeted(ctx: StageContext) -> Any:
            ledger = ctx.ledger
            ledger.reserve(ctx, budget, estimate)  # BudgetExceededError: not called
            try:
                return await call(ctx)
            finally:
                ledger.release(ctx, budget)

        budgeted.__qualname__ = f"budgeted({name})"
        return budgeted

    def __repr__(self) -> str:
        return f"<BudgetInterceptor budget={self.budget!r} priority={self.priority}>"
