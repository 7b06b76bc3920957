"""TimeoutInterceptor: limits each attempt of a stage."""

from __future__ import annotations

import asyncio
from asyncio import current_task
from typing import Any

from .._check import number
from .._context import StageCall, StageContext
from .._dynamic import InputSpec, LoopSpec
from .._spec import StageSpec
from ..errors import StageTimeoutError
from ._base import Priority


class TimeoutInterceptor:
    """Cancels an attempt that outlives the stage's ``timeout`` (or ``default``).

    The attempt's task is cancelled at the limit and the attempt fails with
    :class:`~stageflow.errors.StageTimeoutError`; under a retry policy the next
    attempt starts after its backoff. A sync stage's thread cannot be stopped: the
    attempt is reported as timed out at the limit all the same, the thread's result
    is discarded when it comes, and the next attempt does not wait for it (the
    thread keeps one worker of the loop's executor busy until it returns). The
    limit runs on the engine's clock (``ctx.clock.call_later``), so virtual time and
    a clock of your own apply.

    Args:
        default: seconds for stages without a ``timeout`` option (None: no limit).
        priority: where it sits in the chain (default 800: innermost, per attempt).
    """

    name = "timeout"
    transparent = True  # passes outputs through untouched: see Interceptor

    def __init__(self, default: float | None = None, *, priority: int = Priority.TIMEOUT):
        if default is not None:
            what = "a positive number of seconds"
            number(default, "stage_timeout", what, gt=0, label="the default stage timeout")
        self.default = default
        self.priority = priority

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        """Limit each call of the stage, when it has a timeout.

        The default is for stages that do work: a loop or subgraph stage is limited only
        by its own ``timeout`` (its inner stages get the default), an input stage never
        (its wait ends at its own deadline).
        """
        limit = spec.timeout
        if limit is None and not isinstance(spec.dynamic, LoopSpec | InputSpec):
            limit = self.default
        if limit is None:
            return call

        # What asyncio.timeout does, without its per-call object and frames (it costs
        # ~4 us a call, more than the rest of the engine): a timer that cancels the task,
        # and a count of cancellation requests to tell ours from anybody else's.
        async def timed(ctx: StageContext) -> Any:
            task = current_task()
            assert task is not None
            cancelling = task.cancelling()
            expiry = _Expiry(task)
            timer = ctx.clock.call_later(limit, expiry)
            try:
                output = await call(ctx)
            except asyncio.CancelledError:
                if expiry.fired and task.uncancel() <= cancelling:
                    ctx.abandon()  # a thread still running this attempt can tell
                    raise StageTimeoutError.of(ctx.stage, limit, ctx.attempt) from None
                raise
            except BaseException:
                if expiry.fired:  # the stage turned our cancellation into another error
                    task.uncancel()
                raise
            finally:
                timer.cancel()
            if expiry.fired:  # the stage swallowed our cancellation and returned
                task.uncancel()
            return output

        return timed

    def __repr__(self) -> str:
        return f"<TimeoutInterceptor default={self.default} priority={self.priority}>"


class _Expiry:
    """The timer's callback: cancel the attempt's task, and remember having done so."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()
