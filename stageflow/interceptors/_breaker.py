"""CircuitBreakerInterceptor: stops calling a dependency that keeps failing."""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Hashable, Iterator
from typing import Any

from .._context import StageCall, StageContext
from .._dynamic import InputSpec
from .._events import EventType
from .._policies import CircuitBreakerPolicy
from .._spec import StageSpec
from ..errors import CircuitOpenError, ConfigurationError
from ._base import Priority


class CircuitState(enum.StrEnum):
    """The state of a circuit breaker."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_CLOSED = CircuitState.CLOSED
_OPEN = CircuitState.OPEN
_HALF_OPEN = CircuitState.HALF_OPEN


class CircuitBreaker:
    """One breaker: the state machine of a key, shared by every stage and run using it.

    Transitions happen on the event loop without awaiting, so concurrent stages see
    them atomically. ``transitions`` counts each kind, for tests and metrics.

    Attributes:
        key: the breaker's key.
        policy: its policy (the first one registered under the key).
        state: closed, open or half-open.
        generation: how many transitions it has made.
    """

    __slots__ = (
        "_calls",
        "_failures",
        "_opened_at",
        "_probe_successes",
        "_probes",
        "generation",
        "key",
        "policy",
        "state",
        "transitions",
    )

    def __init__(self, key: Hashable, policy: CircuitBreakerPolicy) -> None:
        self.key = key
        self.policy = policy
        self.state = _CLOSED
        self.generation = 0  # grows with every transition
        self.transitions: dict[tuple[CircuitState, CircuitState], int] = {}
        self._failures = 0  # consecutive, while closed
        self._calls: deque[tuple[float, bool]] = deque()  # (time, failed), rate mode only
        self._opened_at = 0.0
        self._probes = 0  # probes in flight, while half-open
        self._probe_successes = 0

    # ---------------------------------------------------------------- the state machine
    #
    # Every call carries a token: the breaker's generation when it was admitted. A call
    # that ends after the breaker moved on (a call admitted while closed that ends after
    # the breaker opened, a probe of an earlier half-open period) no longer counts.

    def admit(self, ctx: StageContext) -> int:
        """Before a call while not closed: let it through as a probe, or refuse it."""
        if self.state is _OPEN:
            retry_after = self._opened_at + self.policy.recovery_timeout - ctx.clock.monotonic()
            if retry_after > 0:
                raise CircuitOpenError.of(ctx.stage, self.key, retry_after)
            self._move(_HALF_OPEN, ctx)
        if self._probes + self._probe_successes >= self.policy.half_open_max_calls:
            raise CircuitOpenError.of(ctx.stage, self.key, 0.0)  # enough probes are out
        self._probes += 1
        return self.generation

    def succeeded(self, ctx: StageContext, token: int) -> None:
        """After a call that returned."""
        if token != self.generation:
            return
        if self.state is _HALF_OPEN:
            self._probes -= 1
            self._probe_successes += 1
            if self._probe_successes >= self.policy.half_open_max_calls:
                self._move(_CLOSED, ctx)
        elif self.policy.failure_rate is not None:
            self._record(ctx, failed=False)
        else:
            self._failures = 0

    def failed(self, ctx: StageContext, error: BaseException, token: int) -> None:
        """After a call that raised ``error``."""
        if token != self.generation:
            return
        counts = isinstance(error, self.policy.failure_on)
        if self.state is _HALF_OPEN:
            self._probes -= 1
            if counts:
                self._open(ctx)
        elif counts:
            if self.policy.failure_rate is not None:
                self._record(ctx, failed=True)
            else:
                self._failures += 1
                if self._failures >= self.policy.failure_threshold:
                    self._open(ctx)

    def released(self, token: int) -> None:
        """After a call that was cancelled: it neither succeeded nor failed."""
        if token == self.generation and self.state is _HALF_OPEN:
            self._probes -= 1

    def _record(self, ctx: StageContext, *, failed: bool) -> None:
        now = ctx.clock.monotonic()
        calls = self._calls
        calls.append((now, failed))
        horizon = now - self.policy.window
        while calls[0][0] < horizon:
            calls.popleft()
        if len(calls) >= self.policy.minimum_calls:
            failures = sum(1 for _, f in calls if f)
            if failures / len(calls) >= self.policy.failure_rate:  # type: ignore[operator]
                self._open(ctx)

    def _open(self, ctx: StageContext) -> None:
        self._opened_at = ctx.clock.monotonic()
        self._move(_OPEN, ctx)

    def _move(self, state: CircuitState, ctx: StageContext) -> None:
        edge = (self.state, state)
        self.transitions[edge] = self.transitions.get(edge, 0) + 1
        self.state = state
        self.generation += 1
        self._failures = 0
        self._calls.clear()
        self._probes = 0
        self._probe_successes = 0
        if state is _OPEN:
            ctx.event(
                EventType.CIRCUIT_OPENED,
                key=repr(self.key),
                recovery_timeout=self.policy.recovery_timeout,
            )
        elif state is _HALF_OPEN:
            ctx.event(EventType.CIRCUIT_HALF_OPEN, key=repr(self.key))
        else:
            ctx.event(EventType.CIRCUIT_CLOSED, key=repr(self.key))

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.key!r} {self.state.value}>"


class CircuitBreakerRegistry:
    """The breakers of one engine, by key: shared by all its runs."""

    def __init__(self) -> None:
        self._breakers: dict[Hashable, CircuitBreaker] = {}

    def breaker(self, key: Hashable, policy: CircuitBreakerPolicy) -> CircuitBreaker:
        """The breaker of ``key``, created with ``policy`` on first use.

        Raises:
            ConfigurationError: the key already has a breaker with another policy.
        """
        found = self._breakers.get(key)
        if found is None:
            found = self._breakers[key] = CircuitBreaker(key, policy)
        elif found.policy != policy:
            raise ConfigurationError(
                f"circuit breaker {key!r} already exists with {found.policy!r}; stages that "
                f"share a breaker must share its policy, not {policy!r}",
                field="circuit_breaker",
                value=policy,
            )
        return found

    def __getitem__(self, key: Hashable) -> CircuitBreaker:
        return self._breakers[key]

    def __contains__(self, key: object) -> bool:
        return key in self._breakers

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(self._breakers.values())

    def __len__(self) -> int:
        return len(self._breakers)


def _default_key(stage: object) -> Hashable:
    try:
        hash(stage)
    except TypeError:
        return ("stage object", id(stage))
    return stage


class CircuitBreakerInterceptor:
    """Guards stages that have a ``circuit_breaker`` policy (or ``default``).

    While a stage's breaker is closed, a call costs one attribute check and, on
    success, resetting a counter. An open breaker fails the stage at once with
    :class:`~stageflow.errors.CircuitOpenError` (not retried by default).

    Args:
        default: the policy of stages without one (None: only stages with the option).
        registry: where breakers live; the engine passes its own, so that all its runs
            share them.
        priority: where it sits in the chain (default 600: inside retry, so that each
            attempt counts).
    """

    name = "circuit_breaker"
    transparent = True  # passes outputs through untouched: see Interceptor

    def __init__(
        self,
        default: CircuitBreakerPolicy | None = None,
        *,
        registry: CircuitBreakerRegistry | None = None,
        priority: int = Priority.CIRCUIT_BREAKER,
    ) -> None:
        if default is not None and not isinstance(default, CircuitBreakerPolicy):
            raise ConfigurationError(
                f"the default circuit breaker must be a CircuitBreakerPolicy, not {default!r}",
                field="circuit_breaker",
                value=default,
            )
        self.default = default
        self.registry = registry if registry is not None else CircuitBreakerRegistry()
        self.priority = priority

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        """Guard the stage's calls with its breaker, when it has a policy."""
        policy = spec.circuit_breaker if spec.circuit_breaker is not None else self.default
        if policy is None or isinstance(spec.dynamic, InputSpec):  # it calls no service
            return call
        key = policy.key if policy.key is not None else _default_key(spec.stage)
        breaker = self.registry.breaker(key, policy)

        async def guarded(ctx: StageContext) -> Any:
            token = breaker.generation if breaker.state is _CLOSED else breaker.admit(ctx)
            try:
                output = await call(ctx)
            except asyncio.CancelledError:
                breaker.released(token)
                raise
            except BaseException as error:
                breaker.failed(ctx, error, token)
                raise
            breaker.succeeded(ctx, token)
            return output

        return guarded

    def __repr__(self) -> str:
        return f"<CircuitBreakerInterceptor breakers={len(self.registry)}>"
