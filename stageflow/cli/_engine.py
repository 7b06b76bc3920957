"""The engine a ``stageflow run`` or ``resume`` drives: the target's own, then the flags.

A target's module may define ``engine`` beside its pipeline: an :class:`~stageflow.Engine`
or a function of no arguments returning one. Its settings (budget, prices, model chains,
interceptors, sink, retry, timeouts...) are the run's; the command's flags override
them one by one; the command's store and event log are always added.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

from .._budget import Budget, CostPolicy
from .._engine import Engine
from .._policies import RetryPolicy
from ._errors import CliError
from ._load import call_factory, load_object

ENGINE_ATTR: Final = "engine"


@dataclass(frozen=True)
class EngineFlags:
    """The command's flags that configure the engine (None: not given)."""

    budget_tokens: int | None = None
    budget_cost: float | None = None
    budget_policy: CostPolicy | None = None
    prices: str | None = None
    stage_timeout: float | None = None
    retry: int | None = None
    interceptors: tuple[str, ...] = ()
    max_parallel: int | None = None
    fail_fast: bool | None = None
    lease_ttl: float | None = None

    @property
    def money(self) -> bool:
        """Whether a flag sets a money setting (a resume takes it as an override)."""
        given = (self.budget_tokens, self.budget_cost, self.budget_policy, self.prices)
        return any(value is not None for value in given)


def target_engine(module: ModuleType, target: str) -> Engine | None:
    """The engine the target's module brings (its ``engine``), or None."""
    value = getattr(module, ENGINE_ATTR, None)
    if value is None:
        return None
    where = f"{target.rpartition(':')[0]}:{ENGINE_ATTR}"
    if not isinstance(value, Engine) and callable(value) and not inspect.isclass(value):
        value = call_factory(value, where)
    if not isinstance(value, Engine):
        raise CliError(
            f"{where} is {_a(value)}, not an Engine: define `engine = Engine(...)` or a "
            "function of no arguments returning one"
        )
    return value


def configured(base: Engine | None, flags: EngineFlags) -> Engine:
    """``base`` (default: ``Engine()``) with what the flags set instead."""
    engine = base if base is not None else Engine()
    settings = engine.settings
    changes: dict[str, Any] = {}
    budget = _budget(engine, flags)
    if budget is not None:
        changes["budget"] = budget
    if flags.prices is not None:
        from .._prices import PriceTable

        changes["prices"] = PriceTable.from_file(flags.prices)
    if flags.stage_timeout is not None:
        changes["stage_timeout"] = flags.stage_timeout
    if flags.retry is not None:
        policy = settings["retry"]
        attempts = flags.retry + 1
        changes["retry"] = (
            RetryPolicy(attempts=attempts)
            if policy is None
            else dataclasses.replace(policy, attempts=attempts)
        )
    if flags.interceptors:
        extra = tuple(_interceptor(spec) for spec in flags.interceptors)
        changes["interceptors"] = (*settings["interceptors"], *extra)
    for name in ("max_parallel", "fail_fast", "lease_ttl"):
        value = getattr(flags, name)
        if value is not None:
            changes[name] = value
    return engine.replace(**changes) if changes else engine


def _budget(engine: Engine, flags: EngineFlags) -> Budget | None:
    """The run budget the flags make: each flag replaces its field of the engine's."""
    if flags.budget_tokens is None and flags.budget_cost is None and flags.budget_policy is None:
        return None
    old = engine.governance.budget if engine.governance is not None else None
    if old is None and flags.budget_tokens is None and flags.budget_cost is None:
        raise CliError(
            "--budget-policy needs a budget: give --budget-tokens or --budget-cost too "
            "(or an engine with a budget)"
        )
    return Budget(
        max_tokens=flags.budget_tokens if flags.budget_tokens is not None
        else None if old is None else old.max_tokens,
        max_cost=flags.budget_cost if flags.budget_cost is not None
        else None if old is None else old.max_cost,
        warn_at=None if old is None else old.warn_at,
        policy=flags.budget_policy or (CostPolicy.BLOCK if old is None else old.policy),
    )  # fmt: skip


def _interceptor(spec: str) -> Any:
    """What ``--interceptor mod:obj`` names: an interceptor, or a class or function of no
    arguments making one."""
    value = load_object(spec, "--interceptor")
    if inspect.isclass(value) or (callable(value) and not _is_interceptor(value)):
        value = call_factory(value, spec)
    if not _is_interceptor(value):
        raise CliError(
            f"--interceptor {spec} is {_a(value)}, not an interceptor (an object with "
            "wrap(spec, call) or wrap_run(run, call)), nor a class or function of no "
            "arguments making one"
        )
    return value


def _is_interceptor(value: object) -> bool:
    return not inspect.isclass(value) and (
        callable(getattr(value, "wrap", None)) or callable(getattr(value, "wrap_run", None))
    )


def _a(value: object) -> str:
    return f"the class {value.__name__}" if inspect.isclass(value) else f"a {type(value).__name__}"
