"""One run's account of usage: reports, reservations, budgets and model downgrades.

The ledger is made on a run's first need of it (a budgeted stage's admission, the
first ``ctx.usage`` or ``ctx.model``, a resume that restores usage): a run that
reports nothing pays nothing. Reports may come from a sync stage's worker
thread, so every change happens under one lock (taken only by stages that
report or are under a budget, never by the scheduler).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from ._budget import Budget, CostPolicy, Estimate, ModelChain
from ._check import integer, number, refuse
from ._events import EventType
from ._sdkusage import usage_of_response
from ._usage import Usage, UsageSummary
from .errors import BudgetExceededError, ConfigurationError, UnknownModelError
from .ports import UsageRecord

if TYPE_CHECKING:
    from ._context import StageContext
    from ._prices import PriceTable

__all__ = [
    "NO_DOWNGRADE",
    "Governance",
    "ModelPlan",
    "StageUsage",
    "UsageLedger",
    "choose_model",
    "no_model_left",
]

_NO_ESTIMATE = Estimate()


class Governance:
    """What an engine governs usage with: the run budget, prices and model chains."""

    __slots__ = ("budget", "chains", "prices")

    def __init__(
        self,
        budget: Budget | None = None,
        prices: PriceTable | None = None,
        chains: Iterable[ModelChain] = (),
    ) -> None:
        self.budget = budget
        self.prices = prices
        self.chains: dict[str, ModelChain] = {}
        for chain in chains:
            for model in chain:
                other = self.chains.get(model)
                if other is not None:
                    raise ConfigurationError(
                        f"model {model!r} is in two model chains, {other!r} and {chain!r}: a "
                        "model may be in one chain only (where would it downgrade to?)",
                        field="model_chains",
                        value=chain,
                    )
                self.chains[model] = chain


_NONE = Governance()


class _Scope:
    """A budget's account: spent (reported) and reserved (by running stages)."""

    __slots__ = ("budget", "exceeded", "reserved_cost", "reserved_tokens", "spent", "warned")

    def __init__(self, budget: Budget | None) -> None:
        self.budget = budget
        self.spent = Usage()
        self.reserved_tokens = 0
        self.reserved_cost = 0.0
        self.warned = False
        self.exceeded = False

    def overflow(self, tokens: int, cost: float) -> tuple[str, float, float, float] | None:
        """The first limit that ``tokens`` and ``cost`` more would cross: (limit, max,
        spent and reserved, requested), else None. With nothing requested, the budget
        must have something left."""
        budget = self.budget
        assert budget is not None
        if budget.max_tokens is not None:
            used = self.spent.tokens + self.reserved_tokens
            if used + tokens > budget.max_tokens or (tokens == 0 and used >= budget.max_tokens):
                return "tokens", budget.max_tokens, used, tokens
        if budget.max_cost is not None:
            used_cost = (self.spent.cost or 0.0) + self.reserved_cost
            if used_cost + cost > budget.max_cost * (1 + 1e-12) or (
                cost == 0 and used_cost >= budget.max_cost
            ):
                return "cost", budget.max_cost, used_cost, cost
        return None

    def over(self) -> tuple[str, float, float] | None:
        """The first limit that what was spent exceeds: (limit, max, spent), else None."""
        budget = self.budget
        assert budget is not None
        if budget.max_tokens is not None and self.spent.tokens > budget.max_tokens:
            return "tokens", budget.max_tokens, self.spent.tokens
        cost = self.spent.cost or 0.0
        if budget.max_cost is not None and cost > budget.max_cost * (1 + 1e-12):
            return "cost", budget.max_cost, cost
        return None

    def crossed_warning(self) -> tuple[str, float, float] | None:
        """The first limit whose ``warn_at`` fraction is reached, the first time only."""
        budget = self.budget
        assert budget is not None
        if self.warned or budget.warn_at is None:
            return None
        if (
            budget.max_tokens is not None
            and self.spent.tokens >= budget.warn_at * budget.max_tokens
        ):
            self.warned = True
            return "tokens", budget.max_tokens, self.spent.tokens
        cost = self.spent.cost or 0.0
        if budget.max_cost is not None and cost >= budget.warn_at * budget.max_cost:
            self.warned = True
            return "cost", budget.max_cost, cost
        return None


class UsageLedger:
    """The usage of one run, against its budgets: what ``ctx.ledger`` is.

    Interceptors use it to govern stages the way :class:`~stageflow.BudgetInterceptor`
    does: :meth:`reserve` before an attempt (check the budgets can cover an estimate,
    and hold it), :meth:`release` after (free what is left of it), :meth:`report`
    (what ``ctx.usage.report`` calls), :meth:`spent`, :meth:`reported` (a stage's
    reports in this driver of the run, what the telemetry interceptors read when the
    stage ends) and :meth:`unstored` (the reports a durable run has yet to store).
    Safe from a sync stage's thread.
    """

    __slots__ = (
        "by_stage",
        "depth",
        "durable",
        "emit",
        "governance",
        "held",
        "level",
        "lock",
        "pending",
        "records",
        "run",
        "run_id",
        "stages",
        "wall",
    )

    def __init__(
        self,
        governance: Governance | None,
        run_id: str,
        wall: Callable[[], float],
        emit: Callable[[StageContext, str, dict[str, Any]], None],
        *,
        durable: bool = False,
    ) -> None:
        self.governance = governance or _NONE
        self.durable = durable  # keep reports for the store (see unstored)
        self.run_id = run_id
        self.wall = wall
        self.emit = emit
        self.run = _Scope(self.governance.budget)
        self.stages: dict[str, _Scope] = {}  # stage name -> its own budget's account
        self.records: list[UsageRecord] = []  # every report of the run, restored ones first
        self.by_stage: dict[str, list[UsageRecord]] = {}  # this driver's reports, by stage
        self.pending: dict[str, list[UsageRecord]] = {}  # reports the store has not seen
        self.held: dict[tuple[str, int], list[Any]] = {}  # (stage, attempt) -> [tokens, cost]
        self.level = 0  # how many steps the run's stages are downgraded (DOWNGRADE)
        self.depth: dict[str, int] = {}  # further steps for a stage over its own budget
        self.lock = threading.Lock()

    # ---------------------------------------------------------------- restore, summarize

    def restore(self, records: Sequence[UsageRecord], stage_budgets: dict[str, Budget]) -> None:
        """Count what earlier drivers of this run spent (a resume): nothing twice."""
        for record in records:
            usage = Usage(record.input_tokens, record.output_tokens, record.cost)
            self.records.append(record)
            self.run.spent = self.run.spent + usage
            budget = stage_budgets.get(record.stage)
            if budget is not None:
                scope = self._stage_scope(record.stage, budget)
                scope.spent = scope.spent + usage
        # A warning or excess the first driver told (or would have) is not told again.
        for scope in (self.run, *self.stages.values()):
            if scope.budget is not None:
                scope.crossed_warning()
                scope.exceeded = scope.over() is not None

    def summary(self, pipeline: str) -> UsageSummary:
        """What the run spent, by stage and model."""
        return UsageSummary.of_counts(
            (pipeline, r.stage, r.model, r.input_tokens, r.output_tokens, r.cost)
            for r in self.records
        )

    def unstored(self, stage: str | None = None) -> list[UsageRecord]:
        """Take the stage's (or every stage's) reports that no store has yet: the caller
        stores them (``ctx.durable.save_usage``). Only a durable run's ledger keeps them."""
        if not self.pending:
            return []
        with self.lock:
            if stage is not None:
                return self.pending.pop(stage, [])
            records = [r for pending in self.pending.values() for r in pending]
            self.pending.clear()
            return records

    def _stage_scope(self, stage: str, budget: Budget) -> _Scope:
        scope = self.stages.get(stage)
        if scope is None:
            scope = self.stages[stage] = _Scope(budget)
        return scope

    def _scopes(self, stage: str, budget: Budget | None) -> list[tuple[str, _Scope]]:
        scopes = []
        if budget is not None:
            scopes.append(("stage", self._stage_scope(stage, budget)))
        if self.run.budget is not None:
            scopes.append(("run", self.run))
        return scopes

    # ---------------------------------------------------------------- admission

    def reserve(self, ctx: StageContext, budget: Budget | None, estimate: Estimate | None) -> None:
        """Before an attempt: check the budgets can cover ``estimate``; reserve it.

        Raises:
            BudgetExceededError: a ``block`` budget cannot cover it.
        """
        estimate = estimate or _NO_ESTIMATE
        stage = ctx.stage
        with self.lock:
            scopes = self._scopes(stage, budget)
            for name, scope in scopes:
                overflow = scope.overflow(estimate.tokens, estimate.cost)
                if overflow is None:
                    continue
                limit, maximum, used, requested = overflow
                assert scope.budget is not None
                policy = scope.budget.policy
                if policy is not CostPolicy.CONTINUE:
                    self._exceeded(ctx, name, limit, maximum, used, policy, requested=requested)
                if policy is CostPolicy.BLOCK:
                    raise BudgetExceededError.of(stage, name, limit, maximum, used, requested)
                if policy is CostPolicy.DOWNGRADE:
                    if name == "run":
                        self.level += 1
                    else:
                        self.depth[stage] = self.depth.get(stage, 0) + 1
            if estimate.tokens or estimate.cost:
                for _, scope in scopes:
                    scope.reserved_tokens += estimate.tokens
                    scope.reserved_cost += estimate.cost
                self.held[stage, ctx.attempt] = [estimate.tokens, estimate.cost]

    def release(self, ctx: StageContext, budget: Budget | None) -> None:
        """After an attempt: what is left of its reservation is freed."""
        if not self.held:
            return
        with self.lock:
            left = self.held.pop((ctx.stage, ctx.attempt), None)
            if left is not None:
                self._unreserve(ctx.stage, budget, left[0], left[1])

    def _unreserve(self, stage: str, budget: Budget | None, tokens: int, cost: float) -> None:
        for _, scope in self._scopes(stage, budget):
            scope.reserved_tokens -= tokens
            scope.reserved_cost -= cost

    def _exceeded(
        self,
        ctx: StageContext,
        scope: str,
        limit: str,
        maximum: float | None,
        spent: float,
        policy: CostPolicy,
        *,
        requested: float | None = None,
        model: str | None = None,
    ) -> None:
        """Tell a ``budget.exceeded``: the scope's limit, its maximum, what was spent,
        the policy, and what was requested (at admission) or the model that has no
        cheaper one left (at a downgrade)."""
        payload: dict[str, Any] = {
            "scope": scope,
            "limit": limit,
            "maximum": maximum,
            "spent": spent,
        }
        if requested is not None:
            payload["requested"] = requested
        payload["policy"] = policy.value
        if model is not None:
            payload["model"] = model
        self.emit(ctx, EventType.BUDGET_EXCEEDED, payload)

    # ---------------------------------------------------------------- reports

    def report(
        self,
        ctx: StageContext,
        budget: Budget | None,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
        cost: float | None,
        label: str | None = None,
    ) -> Usage:
        """Record what an attempt spent; warn, notify or block as the budgets say.
        ``label``: the stage name to record it under instead of ``ctx``'s (the run's
        budget applies to it, a stage budget as ``budget`` says)."""
        stage = ctx.stage if label is None else label
        if (
            type(input_tokens) is not int
            or type(output_tokens) is not int
            or input_tokens < 0
            or output_tokens < 0
            or (cost is not None and (type(cost) is not float or not 0 <= cost < math.inf))
            or (model is not None and (type(model) is not str or not model))
        ):
            cost = _checked(stage, input_tokens, output_tokens, cost, model)
        prices = self.governance.prices
        unpriced: UnknownModelError | None = None
        if cost is None and prices is not None and model is not None:
            try:
                cost = prices.cost(model, input_tokens, output_tokens)
            except UnknownModelError as error:
                unpriced = error  # raised once the tokens are counted: they were spent
        record = UsageRecord(
            self.run_id, stage, ctx.attempt, model, input_tokens, output_tokens, cost, self.wall()
        )
        usage = Usage(input_tokens, output_tokens, cost)
        if self.run.budget is None and budget is None:  # nothing to check: just count it
            with self.lock:
                self.records.append(record)
                self.by_stage.setdefault(stage, []).append(record)
                if self.durable:
                    self.pending.setdefault(stage, []).append(record)
            if unpriced is not None:
                raise unpriced
            return usage
        blocked: BudgetExceededError | None = None
        with self.lock:
            self.records.append(record)
            self.by_stage.setdefault(stage, []).append(record)
            if self.durable:
                self.pending.setdefault(stage, []).append(record)
            left = self.held.get((stage, ctx.attempt))
            if left is not None:  # what is reported replaces as much of the reservation
                tokens = min(left[0], usage.tokens)
                cost = min(left[1], usage.cost or 0.0)
                left[0] -= tokens
                left[1] -= cost
                self._unreserve(stage, budget, tokens, cost)
            for name, scope in self._scopes(stage, budget):
                scope.spent = scope.spent + usage
                assert scope.budget is not None
                warning = scope.crossed_warning()
                if warning is not None:
                    limit, maximum, spent = warning
                    self.emit(ctx, EventType.BUDGET_WARNING, {
                        "scope": name, "limit": limit, "maximum": maximum, "spent": spent,
                        "warn_at": scope.budget.warn_at,
                    })  # fmt: skip
                over = scope.over()
                if over is None:
                    continue
                limit, maximum, spent = over
                policy = scope.budget.policy
                if policy is CostPolicy.BLOCK and blocked is None:
                    self._exceeded(ctx, name, limit, maximum, spent, policy)
                    requested = usage.tokens if limit == "tokens" else usage.cost or 0.0
                    blocked = BudgetExceededError.of(
                        stage, name, limit, maximum, spent - requested, requested,
                        " (reported; it was spent and is counted)",
                    )  # fmt: skip
                elif policy is not CostPolicy.CONTINUE and not scope.exceeded:
                    scope.exceeded = True  # told once per run (a downgrade steps at admission)
                    self._exceeded(ctx, name, limit, maximum, spent, policy)
        if unpriced is not None:
            raise unpriced
        if blocked is not None:
            raise blocked
        return usage

    def spent(self, stage: str) -> Usage:
        """What a stage has reported in this run (all attempts, all drivers)."""
        total = Usage()
        with self.lock:
            for record in self.records:
                if record.stage == stage:
                    total = total + Usage(record.input_tokens, record.output_tokens, record.cost)
        return total

    def reported(self, stage: str) -> tuple[UsageRecord, ...]:
        """What a stage reported in this driver of the run, report by report, all its
        attempts (not what earlier drivers of a resumed run reported: see :meth:`spent`).
        Empty for a stage that reported nothing: one dict lookup.

        Raises:
            ConfigurationError: ``stage`` is not a stage name (a str).
        """
        if type(stage) is not str:
            refuse("stage", "a stage name (str)", stage, label="UsageLedger.reported() stage")
        reports = self.by_stage.get(stage)
        if reports is None:
            return ()
        with self.lock:
            return tuple(reports)

    # ---------------------------------------------------------------- models

    def model(self, ctx: StageContext, preferred: str) -> str:
        """The model a stage should use for ``preferred`` now (maybe a cheaper one)."""
        plan = self.model_plan(ctx.stage)
        target = choose_model(plan, ctx.stage, preferred)
        self.chose(ctx, plan, preferred, target)
        assert target is not None  # chose() raised otherwise
        return target

    def model_plan(self, stage: str) -> ModelPlan:
        """What ``ctx.model()`` of ``stage`` decides with, now (see :func:`choose_model`)."""
        with self.lock:
            steps = self.level + self.depth.get(stage, 0)
        if steps == 0:
            return NO_DOWNGRADE
        scope = self.run if self.level else self.stages[stage]
        assert scope.budget is not None
        limit = "tokens" if scope.budget.max_tokens is not None else "cost"
        maximum = scope.budget.max_tokens if limit == "tokens" else scope.budget.max_cost
        spent = scope.spent.tokens if limit == "tokens" else scope.spent.cost or 0.0
        return ModelPlan(steps, self.governance.chains, "run" if self.level else "stage",
                         limit, maximum, spent)  # fmt: skip

    def chose(self, ctx: StageContext, plan: ModelPlan, preferred: str, target: str | None) -> None:
        """Tell what ``ctx.model(preferred)`` chose (a downgrade, or none left: then
        raise BudgetExceededError)."""
        if target is None:
            self._exceeded(ctx, plan.scope, plan.limit, plan.maximum, plan.spent,
                           CostPolicy.DOWNGRADE, model=preferred)  # fmt: skip
            raise no_model_left(plan, ctx.stage, preferred)
        if target != preferred:
            self.emit(ctx, EventType.BUDGET_DOWNGRADED,
                      {"model": preferred, "to": target, "steps": plan.steps})  # fmt: skip


class ModelPlan(NamedTuple):
    """What ``ctx.model()`` decides with: the downgrade steps the budgets call for, the
    model chains, and the budget that calls for them (scope, limit, maximum, spent).
    Plain values: a runner ships it with a detached context."""

    steps: int
    chains: Mapping[str, ModelChain]
    scope: str
    limit: str
    maximum: float | None
    spent: float


NO_DOWNGRADE: Final = ModelPlan(0, {}, "run", "tokens", None, 0.0)


def choose_model(plan: ModelPlan, stage: str, preferred: object) -> str | None:
    """The model ``stage`` should use for ``preferred`` under ``plan``: itself, a cheaper
    one of its chain, or None: no model that many steps below it."""
    if not isinstance(preferred, str) or not preferred:
        raise ConfigurationError(
            f"stage {stage!r}: ctx.model() takes a model name, not {preferred!r}",
            field="model",
            value=preferred,
        )
    if plan.steps == 0:
        return preferred
    chain = plan.chains.get(preferred)
    return None if chain is None else chain.after(preferred, plan.steps)


def no_model_left(plan: ModelPlan, stage: str, preferred: str) -> BudgetExceededError:
    """The error of ``ctx.model(preferred)`` when no model is cheap enough."""
    chain = plan.chains.get(preferred)
    why = (
        f": {preferred!r} is in no model chain"
        if chain is None
        else f": no model {plan.steps} step(s) below {preferred!r} in {chain!r}"
    )
    return BudgetExceededError.of(stage, plan.scope, plan.limit, plan.maximum or 0.0, plan.spent,
                                  0, why)  # fmt: skip


def _checked(
    stage: str, input_tokens: object, output_tokens: object, cost: object, model: object
) -> float | None:
    """Refuse a bad report, naming the field; else return its cost as a float."""
    usage = f"stage {stage!r}: usage"
    for field, value in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
        integer(value, field, "a whole number >= 0", ge=0, label=f"{usage} {field}")
    amount = None
    if cost is not None:
        amount = number(cost, "cost", "an amount >= 0 or None", ge=0, label=f"{usage} cost")
    if model is not None and (not isinstance(model, str) or not model):
        refuse("model", "a model name or None", model, label=f"{usage} model")
    return amount


class StageUsage:
    """``ctx.usage``: what a stage reports it spent, and what it has spent so far.

    Example:
        >>> async def summarize(ctx):
        ...     model = ctx.model("gpt-4o")
        ...     ctx.usage.report(model=model, input_tokens=1200, output_tokens=300)
        ...     return {"model": model}
    """

    __slots__ = ("_ctx", "_ledger")

    def __init__(self, ctx: StageContext, ledger: UsageLedger) -> None:
        self._ctx = ctx
        self._ledger = ledger

    def report(
        self,
        *,
        model: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost: float | None = None,
    ) -> Usage:
        """Record what this attempt just spent; call it after each model call.

        The cost is ``cost`` if given, else the price table's for ``model`` (none
        without a price table or a model). Report even when the call's result is
        then thrown away: what was spent counts. Safe from a sync stage's thread.

        Returns:
            The usage recorded, cost included.

        Raises:
            ConfigurationError: a negative or non-integer token count, a bad cost.
            UnknownModelError: the price table has no price for ``model``.
            BudgetExceededError: this report took a ``block`` budget over (the
                usage is recorded all the same: it was spent).
        """
        ctx = self._ctx
        return self._ledger.report(ctx, ctx.spec.budget, model, input_tokens, output_tokens, cost)

    def report_response(
        self, response: Any, *, model: str | None = None, cost: float | None = None
    ) -> Usage:
        """:meth:`report` what an LLM SDK's ``response`` says it used: an OpenAI (or
        OpenAI-compatible) chat completion, Responses API response or embedding, an
        Anthropic message, or their JSON as a dict. ``model``: the model to price it as
        (default: the response's own, which may be a dated name such as
        ``gpt-4o-2024-08-06``: a price table must know it).

        Raises:
            ConfigurationError: ``response`` has no usage of a known shape; and what
                :meth:`report` raises.
        """
        used = usage_of_response(response)
        return self.report(model=model or used.model, input_tokens=used.input_tokens,
                           output_tokens=used.output_tokens, cost=cost)  # fmt: skip

    @property
    def spent(self) -> Usage:
        """What this stage has reported in this run: all attempts, earlier drivers too."""
        return self._ledger.spent(self._ctx.stage)

    def __repr__(self) -> str:
        return f"<StageUsage {self._ctx.stage!r} spent={self.spent!r}>"
