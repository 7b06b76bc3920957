"""Budgets, what to do when one runs out, estimates and model chains: plain frozen values."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Final

from ._check import integer, number, refuse
from .errors import ConfigurationError

__all__ = ["Budget", "CostPolicy", "Estimate", "ModelChain"]


class CostPolicy(enum.StrEnum):
    """What happens to a stage that a budget cannot cover.

    - ``BLOCK``: the stage fails with :class:`~stageflow.errors.BudgetExceededError`
      before it runs (its dependents are skipped); a report that goes over the
      budget fails the stage that made it.
    - ``DOWNGRADE``: the stage runs, but ``ctx.model(name)`` answers with a cheaper
      model of ``name``'s :class:`ModelChain`, one step further down for each stage
      the budget could not cover; past the end of the chain, the stage is blocked.
    - ``NOTIFY``: a ``budget.exceeded`` event, and the stage runs.
    - ``CONTINUE``: the stage runs; only ``warn_at`` warnings are emitted.
    """

    BLOCK = "block"
    DOWNGRADE = "downgrade"
    NOTIFY = "notify"
    CONTINUE = "continue"


_TOKENS: Final = "a whole number of tokens >= 0 or None"
_AMOUNT: Final = "an amount >= 0 or None"
_POLICIES: Final = tuple(p.value for p in CostPolicy)


def _policy(value: object) -> CostPolicy:
    if isinstance(value, CostPolicy):
        return value
    if not (isinstance(value, str) and value in _POLICIES):
        refuse("policy", f"a CostPolicy ({', '.join(map(repr, _POLICIES))})", value)
    return CostPolicy(value)


class _Frozen:
    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; cannot delete {name!r}")

    def _fields(self) -> tuple[object, ...]:
        slots: tuple[str, ...] = type(self).__slots__
        return tuple(object.__getattribute__(self, n) for n in slots)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled (a runner ships model chains with a detached context): its fields
        # as they are, set again past the immutability.
        return _rebuilt, (type(self), self._fields())

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())


def _rebuilt(cls: type[_Frozen], fields: tuple[object, ...]) -> _Frozen:
    made = object.__new__(cls)
    slots: tuple[str, ...] = cls.__slots__
    for name, value in zip(slots, fields, strict=True):
        object.__setattr__(made, name, value)
    return made


class Budget(_Frozen):
    """A limit on tokens and/or cost, for a run (``Engine(budget=)``) or a stage
    (``with_stage(..., budget=)``).

    Args:
        max_tokens: tokens (input and output) that may be spent, or None.
        max_cost: cost that may be spent (in the price table's currency), or None.
        warn_at: a fraction in (0, 1): a ``budget.warning`` event, once per run, when
            what is spent first reaches it of a limit.
        policy: what happens to a stage the budget cannot cover (default ``BLOCK``);
            a :class:`CostPolicy` or its value (``"downgrade"``).

    Raises:
        ConfigurationError: a negative or non-numeric limit, no limit at all, a
            ``warn_at`` outside (0, 1) or an unknown policy; the error names the field.

    Example:
        >>> Budget(max_tokens=20_000, warn_at=0.8)
        Budget(max_tokens=20000, warn_at=0.8, policy='block')
    """

    __slots__ = ("max_cost", "max_tokens", "policy", "warn_at")

    max_tokens: int | None
    max_cost: float | None
    warn_at: float | None
    policy: CostPolicy

    def __init__(
        self,
        *,
        max_tokens: int | None = None,
        max_cost: float | None = None,
        warn_at: float | None = None,
        policy: CostPolicy | str = CostPolicy.BLOCK,
    ) -> None:
        if max_tokens is None and max_cost is None:
            raise ConfigurationError(
                "a Budget needs max_tokens, max_cost or both", field="max_tokens", value=None
            )
        if max_tokens is not None:
            max_tokens = integer(max_tokens, "max_tokens", _TOKENS, ge=0)
        if max_cost is not None:
            max_cost = number(max_cost, "max_cost", _AMOUNT, ge=0)
        if warn_at is not None:
            what = "a fraction between 0 and 1 (0.8 warns at 80%)"
            warn_at = number(warn_at, "warn_at", what, gt=0, lt=1)
        set_ = object.__setattr__
        set_(self, "max_tokens", max_tokens)
        set_(self, "max_cost", max_cost)
        set_(self, "warn_at", warn_at)
        set_(self, "policy", _policy(policy))

    def __repr__(self) -> str:
        parts = [
            f"{n}={getattr(self, n)!r}" for n in ("max_tokens", "max_cost", "warn_at")
            if getattr(self, n) is not None
        ]  # fmt: skip
        return f"Budget({', '.join(parts)}, policy={self.policy.value!r})"


class Estimate(_Frozen):
    """What a stage expects to spend: checked against budgets before it starts.

    The estimate is reserved while the stage runs, so that stages running at once
    can never together overshoot a budget; what the stage then reports replaces
    it. ``with_stage(..., estimate=600)`` is short for ``Estimate(tokens=600)``.

    Args:
        tokens: tokens (input and output) it expects to spend.
        cost: cost it expects to spend.
    """

    __slots__ = ("cost", "tokens")

    tokens: int
    cost: float

    def __init__(self, tokens: int = 0, cost: float = 0.0) -> None:
        object.__setattr__(self, "tokens", integer(tokens, "tokens", _TOKENS, ge=0))
        object.__setattr__(self, "cost", number(cost, "cost", _AMOUNT, ge=0))

    def __repr__(self) -> str:
        return f"Estimate(tokens={self.tokens}, cost={self.cost:g})"


class ModelChain(_Frozen):
    """Models from most to least capable (and costly): where a downgrade steps to.

    Example:
        >>> chain = ModelChain("gpt-4o", "gpt-4o-mini", "local-llama")
        >>> chain.after("gpt-4o", 1), chain.after("gpt-4o", 3)
        ('gpt-4o-mini', None)
    """

    __slots__ = ("models",)

    models: tuple[str, ...]

    def __init__(self, *models: str) -> None:
        if not models:
            raise ConfigurationError(
                "a ModelChain needs at least one model", field="models", value=models
            )
        for model in models:
            if not isinstance(model, str) or not model:
                raise ConfigurationError(
                    f"ModelChain models must be non-empty strings, not {model!r}",
                    field="models",
                    value=model,
                )
        if len(set(models)) != len(models):
            twice = sorted({m for m in models if models.count(m) > 1})
            raise ConfigurationError(
                f"ModelChain names {twice[0]!r} more than once", field="models", value=models
            )
        object.__setattr__(self, "models", tuple(models))

    def after(self, model: str, steps: int) -> str | None:
        """The model ``steps`` places below ``model``, or None past the end of the chain."""
        index = self.models.index(model) + steps
        return self.models[index] if index < len(self.models) else None

    def __iter__(self) -> Iterator[str]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def __repr__(self) -> str:
        return f"ModelChain({', '.join(repr(m) for m in self.models)})"
