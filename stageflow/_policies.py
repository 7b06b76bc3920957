"""Resilience policies: frozen values describing how a stage retries and trips a breaker.

They are checked when constructed (errors name the field and the value) and are
pure: a policy computes delays and decisions; the interceptors in
``stageflow.interceptors`` carry them out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from ._check import integer, number, refuse
from .errors import (
    BudgetExceededError,
    CircuitOpenError,
    ConfigurationError,
    InvalidOutputError,
    MissingInputError,
)

__all__ = ["Backoff", "CircuitBreakerPolicy", "RetryPolicy"]

Backoff = Literal["fixed", "linear", "exponential"]
"""How the delay grows between attempts: ``base``, ``base * n``, ``base * multiplier**(n-1)``."""

_BACKOFFS: Final = ("fixed", "linear", "exponential")
# Retrying cannot fix these: a programming error, a breaker that says "not now", a budget
# that is spent.
_NEVER_RETRY: Final = (
    BudgetExceededError,
    CircuitOpenError,
    InvalidOutputError,
    MissingInputError,
)


def _exception_types(cls: str, name: str, value: object) -> tuple[type[BaseException], ...]:
    types_ = (value,) if isinstance(value, type) else value
    if not isinstance(types_, tuple) or not all(
        isinstance(t, type) and issubclass(t, BaseException) for t in types_
    ):
        refuse(name, "an exception type or a tuple of them", value, owner=cls)
    return types_


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a stage is retried when an attempt raises.

    Args:
        attempts: calls at most, the first included (``1``: no retry).
        backoff: ``"fixed"``, ``"linear"`` or ``"exponential"``.
        base: the first delay, in seconds.
        multiplier: the growth factor of exponential backoff.
        max_delay: no delay is longer than this (seconds).
        jitter: "full jitter": each delay is drawn uniformly from ``[0, delay]``,
            so that many clients retrying together do not stampede.
        deadline: seconds from the first attempt's start after which no new attempt
            begins (None: no deadline).
        retry_on: the exception types that are retried.
        give_up_on: exception types never retried, even if listed in ``retry_on``
            (default: an open circuit, a spent budget, an invalid output, a missing input).

    Example:
        >>> policy = RetryPolicy(attempts=4, backoff="exponential", base=0.5, max_delay=1.5)
        >>> list(policy.delays())
        [0.5, 1.0, 1.5]
    """

    attempts: int = 3
    backoff: Backoff = "exponential"
    base: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: bool = False
    deadline: float | None = None
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    give_up_on: tuple[type[BaseException], ...] = field(default=_NEVER_RETRY)

    def __post_init__(self) -> None:
        name = "RetryPolicy"
        integer(self.attempts, "attempts", "an int >= 1", ge=1, owner=name)
        if self.backoff not in _BACKOFFS:
            choices = f"one of {', '.join(map(repr, _BACKOFFS))}"
            refuse("backoff", choices, self.backoff, owner=name)
        number(self.base, "base", "a finite number >= 0", ge=0, owner=name)
        number(self.multiplier, "multiplier", "a finite number >= 1", ge=1, owner=name)
        number(self.max_delay, "max_delay", "a finite number >= 0", ge=0, owner=name)
        if not isinstance(self.jitter, bool):
            refuse("jitter", "True or False", self.jitter, owner=name)
        if self.deadline is not None:
            number(self.deadline, "deadline", "a finite number > 0", gt=0, owner=name)
        object.__setattr__(self, "retry_on", _exception_types(name, "retry_on", self.retry_on))
        object.__setattr__(
            self, "give_up_on", _exception_types(name, "give_up_on", self.give_up_on)
        )

    def retries(self, error: BaseException) -> bool:
        """Whether ``error`` may be retried (attempts and deadline aside)."""
        return isinstance(error, self.retry_on) and not isinstance(error, self.give_up_on)

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """The wait before retry number ``retry`` (1 for the second attempt).

        With ``jitter``, a draw from ``[0, delay]`` using ``rng`` (default: the
        ``random`` module).
        """
        if self.backoff == "fixed":
            delay = self.base
        elif self.backoff == "linear":
            delay = self.base * retry
        else:
            try:
                delay = self.base * float(self.multiplier) ** (retry - 1)
            except OverflowError:  # far past max_delay anyway
                delay = math.inf
        delay = min(delay, self.max_delay)
        if self.jitter:
            delay = (rng or random).uniform(0.0, delay)
        return delay

    def delays(self) -> Iterator[float]:
        """The waits between attempts without jitter (``attempts - 1`` of them)."""
        unjittered = replace(self, jitter=False) if self.jitter else self
        return (unjittered.delay(n) for n in range(1, self.attempts))

    def with_options(self, **changes: Any) -> RetryPolicy:
        """A copy with some fields changed (checked like a new policy)."""
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class CircuitBreakerPolicy:
    """When calls to a dependency stop for a while because it keeps failing.

    The breaker is closed (calls go through) until it trips: after
    ``failure_threshold`` consecutive failures, or, when ``failure_rate`` is set,
    when at least ``minimum_calls`` calls within the last ``window`` seconds failed
    at that rate or more. It then opens: calls fail at once with
    :class:`~stageflow.errors.CircuitOpenError`, without calling the stage. After
    ``recovery_timeout`` seconds it is half-open: up to ``half_open_max_calls``
    probe calls go through; if they all succeed it closes, if one fails it opens
    again.

    Args:
        failure_threshold: consecutive failures that open the breaker.
        failure_rate: instead, the failure ratio (0 < rate <= 1) over ``window``.
        window: seconds of history for ``failure_rate``.
        minimum_calls: calls needed within the window before the rate counts.
        recovery_timeout: seconds the breaker stays open before probing.
        half_open_max_calls: probes admitted while half-open.
        key: the breaker's name; stages with the same key share it (default: one
            breaker per stage callable).
        failure_on: the exception types that count as failures (others pass
            through without counting).

    Example:
        >>> CircuitBreakerPolicy(failure_threshold=3, recovery_timeout=10, key="payments").key
        'payments'
    """

    failure_threshold: int = 5
    failure_rate: float | None = None
    window: float = 60.0
    minimum_calls: int = 10
    recovery_timeout: float = 30.0
    half_open_max_calls: int = 1
    key: Hashable | None = None
    failure_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        name = "CircuitBreakerPolicy"
        integer(self.failure_threshold, "failure_threshold", "an int >= 1", ge=1, owner=name)
        if self.failure_rate is not None:
            rate = self.failure_rate
            if number(rate, "failure_rate", "a finite number > 0", gt=0, owner=name) > 1:
                refuse("failure_rate", "in (0, 1]", rate, owner=name)
        number(self.window, "window", "a finite number > 0", gt=0, owner=name)
        integer(self.minimum_calls, "minimum_calls", "an int >= 1", ge=1, owner=name)
        number(self.recovery_timeout, "recovery_timeout", "a finite number >= 0", ge=0, owner=name)
        integer(self.half_open_max_calls, "half_open_max_calls", "an int >= 1", ge=1, owner=name)
        try:
            hash(self.key)
        except TypeError:
            raise ConfigurationError(
                f"CircuitBreakerPolicy.key must be hashable, not {self.key!r}",
                field="key",
                value=self.key,
            ) from None
        object.__setattr__(
            self, "failure_on", _exception_types(name, "failure_on", self.failure_on)
        )
