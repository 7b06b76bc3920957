"""RetryInterceptor: calls a stage again when an attempt raises, with backoff."""

from __future__ import annotations

import logging
import random
from typing import Any

from .._context import StageCall, StageContext
from .._dynamic import InputSpec, LoopSpec
from .._events import EventType
from .._policies import RetryPolicy
from .._spec import StageSpec
from ..errors import ConfigurationError
from ._base import Priority


class RetryInterceptor:
    """Retries a stage by its ``retry`` policy (or ``default``).

    The first attempt is a plain call: nothing is allocated or awaited for the
    retry loop until an attempt raises. Each retry gets a fresh context
    (``ctx.attempt`` counts from 1), waits its backoff on the engine's clock, and
    is announced by a ``stage.retrying`` event carrying the attempt, the delay and
    the error, and by a ``stageflow.stage.retry`` event on the current span (the
    stage's span when tracing is on); an ``attempt.started`` event marks the start
    of the retried attempt, after the backoff. An error the policy does not retry passes
    straight through; when attempts or the deadline run out, the last error is the
    stage's.

    Args:
        default: the policy of stages without a ``retry`` option (None: no retry).
        priority: where it sits in the chain (default 500).
        rng: the source of jitter (default: the ``random`` module); seed one in tests.
    """

    name = "retry"
    transparent = True  # passes outputs through untouched: see Interceptor

    def __init__(
        self,
        default: RetryPolicy | None = None,
        *,
        priority: int = Priority.RETRY,
        rng: random.Random | None = None,
    ) -> None:
        if default is not None and not isinstance(default, RetryPolicy):
            raise ConfigurationError(
                f"the default retry must be a RetryPolicy, not {default!r}",
                field="retry",
                value=default,
            )
        self.default = default
        self.priority = priority
        self.rng = rng

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        """Retry the stage's calls, when it has a policy of more than one attempt.

        The default is for stages that do work: a loop or subgraph stage is retried only
        by its own ``retry`` (its inner stages get the default, which is enough), an input
        stage never (it runs no code).
        """
        policy = spec.retry
        if policy is None and not isinstance(spec.dynamic, LoopSpec | InputSpec):
            policy = self.default
        if policy is None or policy.attempts == 1:
            return call

        async def retried(ctx: StageContext) -> Any:
            try:
                return await call(ctx)
            except Exception as error:
                if not policy.retries(error):
                    raise
                return await self._again(policy, call, ctx, error)

        return retried

    async def _again(
        self, policy: RetryPolicy, call: StageCall, ctx: StageContext, error: Exception
    ) -> Any:
        clock = ctx.clock
        failed = ctx  # the context of the attempt that just failed
        for attempt in range(2, policy.attempts + 1):
            delay = policy.delay(attempt - 1, self.rng)
            if (
                policy.deadline is not None
                and clock.monotonic() + delay - ctx.started >= policy.deadline
            ):
                raise error  # the next attempt could not begin before the deadline
            failed.event(
                EventType.STAGE_RETRYING,
                attempt=attempt,
                delay=delay,
                error=type(error).__qualname__,
                message=str(error),
            )
            _retry_span_event(attempt, delay, error)
            await clock.sleep(delay)
            failed = ctx.with_attempt(attempt)
            failed.event(EventType.ATTEMPT_STARTED, attempts=policy.attempts)
            try:
                return await call(failed)
            except Exception as again:
                if attempt == policy.attempts or not policy.retries(again):
                    raise
                error = again
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover

    def __repr__(self) -> str:
        return f"<RetryInterceptor default={self.default} priority={self.priority}>"


def _retry_span_event(attempt: int, delay: float, error: Exception) -> None:
    """Mark the retry on the current span (the stage's, when tracing is on)."""
    from opentelemetry import trace

    try:
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                "stageflow.stage.retry",
                {
                    "stageflow.attempt": attempt,
                    "stageflow.retry.delay": delay,
                    "exception.type": _qualified(type(error)),
                    "exception.message": str(error),
                },
            )
    except Exception:  # telemetry never breaks a run
        logging.getLogger("stageflow").debug(
            "could not add a retry event to the span", exc_info=True
        )


def _qualified(cls: type) -> str:
    """A class's fully qualified name, as OTel's ``exception.type`` wants it."""
    module = cls.__module__
    return cls.__qualname__ if module in (None, "builtins") else f"{module}.{cls.__qualname__}"
