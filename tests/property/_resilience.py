"""What the resilience laws share: random retry cases and their model; a fake breaker context.

A :class:`RetryCase` is a policy plus what each attempt of one stage does (complete, raise
a retryable error, raise a fatal one, or hang until its timeout) and how long it takes.
:func:`expected_retry` is a second, naive reading of the policy's documentation: it
predicts the attempts, the moments they start and how the stage ends, without looking at
:class:`~stageflow.RetryPolicy`'s own arithmetic. :func:`run_retry_case` runs the case
through a real Engine on virtual time and reports what the stage saw.

All generated times are multiples of 1/4 (and the backoff factors powers of 3/2), so
that sums are exact in binary and deadlines hit on the dot are hit on the dot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any, Literal

from hypothesis import strategies as st

from stageflow import (
    Engine,
    Pipeline,
    RetryInterceptor,
    RetryPolicy,
    RunResult,
    StageContext,
    StageTimeoutError,
)
from stageflow.testing import RecordingSink, run_virtual

Outcome = Literal["ok", "retryable", "fatal", "timeout"]
OUTCOMES: tuple[Outcome, ...] = ("ok", "retryable", "fatal", "timeout")
MAX_ATTEMPTS = 6
HANG_GUARD = 1e6  # far beyond any case: a hang fails the test instead of the suite


class Retryable(Exception):
    """An error the generated policies retry."""


class Fatal(Exception):
    """An error the generated policies do not retry."""


QUARTERS = st.integers(0, 16).map(lambda k: k / 4)


@st.composite
def retry_policies(draw: st.DrawFn) -> RetryPolicy:
    """Policies retrying Retryable and timeouts, over the whole range of their options."""
    return RetryPolicy(
        attempts=draw(st.integers(1, MAX_ATTEMPTS), label="attempts"),
        backoff=draw(st.sampled_from(["fixed", "linear", "exponential"]), label="backoff"),
        base=draw(QUARTERS, label="base"),
        multiplier=draw(st.sampled_from([1, 1.5, 2, 3]), label="multiplier"),
        max_delay=draw(QUARTERS, label="max_delay"),
        jitter=draw(st.booleans(), label="jitter"),
        deadline=draw(st.none() | st.integers(1, 80).map(lambda k: k / 4), label="deadline"),
        retry_on=(Retryable, TimeoutError),
    )


@dataclasses.dataclass(frozen=True)
class RetryCase:
    """One stage: its policy, its timeout, and per attempt what it does and for how long."""

    policy: RetryPolicy
    limit: float
    outcomes: tuple[Outcome, ...]
    durations: tuple[float, ...]
    seed: int

    def duration(self, attempt: int) -> float:
        """How long attempt number ``attempt`` (from 1) lasts."""
        if self.outcomes[attempt - 1] == "timeout":
            return self.limit
        return self.durations[attempt - 1]


@st.composite
def retry_cases(draw: st.DrawFn) -> RetryCase:
    policy = draw(retry_policies())
    limit = draw(st.sampled_from([0.5, 1.0, 2.0]), label="timeout")
    below_limit = st.integers(0, int(limit * 4) - 1).map(lambda k: k / 4)
    return RetryCase(
        policy,
        limit,
        tuple(draw(st.lists(st.sampled_from(OUTCOMES), min_size=MAX_ATTEMPTS,
                            max_size=MAX_ATTEMPTS), label="outcomes")),
        tuple(draw(st.lists(below_limit, min_size=MAX_ATTEMPTS, max_size=MAX_ATTEMPTS),
                   label="durations")),
        draw(st.integers(0, 2**32 - 1), label="seed"),
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Expected:
    """What the model predicts: attempt starts, unjittered and actual delays, the end."""

    starts: tuple[float, ...]
    unjittered: tuple[float, ...]
    delays: tuple[float, ...]
    error: type[BaseException] | None
    duration: float


def backoff(policy: RetryPolicy, retry: int) -> float:
    """The documented wait before retry number ``retry``, before jitter."""
    if policy.backoff == "fixed":
        delay = policy.base
    elif policy.backoff == "linear":
        delay = policy.base * retry
    else:
        delay = policy.base * policy.multiplier ** (retry - 1)
    return min(delay, policy.max_delay)


ERROR_OF: dict[Outcome, type[BaseException]] = {
    "retryable": Retryable,
    "fatal": Fatal,
    "timeout": StageTimeoutError,
}


def expected_retry(case: RetryCase) -> Expected:
    """Play the policy by hand.

    Each attempt starts, lasts its duration (its timeout if it hangs), then completes or
    fails. A failure is the stage's if it is not retryable or no attempt is left; else
    the backoff is drawn (jitter: uniform in ``[0, delay]`` from the seeded rng) and, if
    the next attempt would start at or after the deadline (counted from the first start),
    the failure is the stage's too.
    """
    policy = case.policy
    rng = random.Random(case.seed)
    starts: list[float] = []
    unjittered: list[float] = []
    delays: list[float] = []
    t = 0.0
    for attempt in range(1, policy.attempts + 1):
        starts.append(t)
        t += case.duration(attempt)
        outcome = case.outcomes[attempt - 1]
        if outcome == "ok":
            return Expected(tuple(starts), tuple(unjittered), tuple(delays), None, t)
        error = ERROR_OF[outcome]
        if outcome == "fatal" or attempt == policy.attempts:
            break
        wait = backoff(policy, attempt)
        drawn = rng.uniform(0.0, wait) if policy.jitter else wait
        if policy.deadline is not None and t + drawn - starts[0] >= policy.deadline:
            break
        unjittered.append(wait)
        delays.append(drawn)
        t += drawn
    return Expected(tuple(starts), tuple(unjittered), tuple(delays), error, t)


@dataclasses.dataclass
class Observed:
    """What a run of a case showed: the result, the events, the stage's own records."""

    result: RunResult
    sink: RecordingSink
    attempts_seen: list[int]
    starts: list[float]


def run_retry_case(case: RetryCase) -> Observed:
    """Run ``case`` as a one-stage graph (timeout + retry), with a rng seeded from the case."""
    attempts_seen: list[int] = []
    starts: list[float] = []

    async def stage(ctx: StageContext) -> dict[str, int]:
        attempts_seen.append(ctx.attempt)
        starts.append(asyncio.get_running_loop().time())
        outcome = case.outcomes[ctx.attempt - 1]
        if outcome == "timeout":
            await asyncio.Event().wait()
        await asyncio.sleep(case.durations[ctx.attempt - 1])
        if outcome == "ok":
            return {"attempt": ctx.attempt}
        raise ERROR_OF[outcome](f"attempt {ctx.attempt}")

    graph = Pipeline("retry").with_stage("s", stage, timeout=case.limit, retry=case.policy).build()
    sink = RecordingSink()
    engine = Engine(sink=sink, interceptors=[RetryInterceptor(rng=random.Random(case.seed))])

    async def main() -> RunResult:
        async with asyncio.timeout(HANG_GUARD):
            return await engine.run(graph)

    return Observed(run_virtual(main), sink, attempts_seen, starts)


# --------------------------------------------------------------------------- breakers


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class FakeContext:
    """What a CircuitBreaker needs of a StageContext: a clock, a stage name, event()."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.stage = "s"
        self.events: list[tuple[str, dict[str, Any]]] = []

    def event(self, type: Any, **data: Any) -> None:  # noqa: A002 - mirrors StageContext
        self.events.append((str(type), data))
