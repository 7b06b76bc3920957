"""Laws of the circuit breaker, for any interleaving of calls, outcomes and time gaps.

A Hypothesis state machine drives one :class:`~stageflow.CircuitBreaker` the way the
interceptor does (a call while closed takes the generation as its token, any other call
must be admitted), with many calls in flight at once ending in any order. After every
step it checks the safety laws against what the breaker announced:

- only the four legal transitions happen (closed→open, open→half_open,
  half_open→closed, half_open→open), each announced by its event;
- no call is admitted while open before ``recovery_timeout`` has passed;
- at most ``half_open_max_calls`` probes are ever in flight;

and that its state is that of a naive model of the documented policy. A second law runs
overlapping runs through one Engine and checks the same safety laws from inside the stage.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter, deque

from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from stageflow import (
    CircuitBreaker,
    CircuitBreakerPolicy,
    CircuitOpenError,
    CircuitState,
    Engine,
    Pipeline,
    RunResult,
    StageContext,
)
from stageflow.testing import RecordingSink, run_virtual

from ._resilience import FakeClock, FakeContext

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN
LEGAL = frozenset({(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (HALF_OPEN, OPEN)})
STATE_OF_EVENT = {"circuit.opened": OPEN, "circuit.half_open": HALF_OPEN, "circuit.closed": CLOSED}
GAPS = st.integers(1, 24).map(lambda k: k / 4)


@st.composite
def breaker_policies(draw: st.DrawFn) -> CircuitBreakerPolicy:
    return CircuitBreakerPolicy(
        failure_threshold=draw(st.integers(1, 4), label="failure_threshold"),
        failure_rate=draw(st.none() | st.sampled_from([0.25, 0.5, 0.75, 1.0]), label="rate"),
        window=draw(st.integers(1, 16).map(lambda k: k / 2), label="window"),
        minimum_calls=draw(st.integers(1, 4), label="minimum_calls"),
        recovery_timeout=draw(st.integers(0, 12).map(lambda k: k / 2), label="recovery"),
        half_open_max_calls=draw(st.integers(1, 3), label="half_open_max_calls"),
        key="svc",
        failure_on=(ConnectionError,),
    )


class BreakerModel:
    """The policy's documentation, played naively. Calls carry the period they began in;
    a call ending in another period (the breaker moved on meanwhile) does not count."""

    def __init__(self, policy: CircuitBreakerPolicy) -> None:
        self.policy = policy
        self.state = CLOSED
        self.period = 0
        self.consecutive = 0
        self.recent: deque[tuple[float, bool]] = deque()
        self.opened_at = 0.0
        self.probes = 0
        self.successes = 0

    def move(self, state: CircuitState, now: float) -> None:
        self.state = state
        self.period += 1
        self.consecutive = 0
        self.recent.clear()
        self.probes = self.successes = 0
        if state is OPEN:
            self.opened_at = now

    def admit(self, now: float) -> int | None:
        """The period of an admitted call, or None if refused."""
        if self.state is CLOSED:
            return self.period
        if self.state is OPEN:
            if now < self.opened_at + self.policy.recovery_timeout:
                return None
            self.move(HALF_OPEN, now)
        if self.probes + self.successes >= self.policy.half_open_max_calls:
            return None
        self.probes += 1
        return self.period

    def end(self, period: int, outcome: str, now: float) -> None:
        if period != self.period:
            return
        if self.state is HALF_OPEN:
            self.probes -= 1
            if outcome == "success":
                self.successes += 1
                if self.successes == self.policy.half_open_max_calls:
                    self.move(CLOSED, now)
            elif outcome == "failure":
                self.move(OPEN, now)
            return
        if outcome not in ("success", "failure"):
            return  # ignored failures and cancellations do not count while closed
        failed = outcome == "failure"
        if self.policy.failure_rate is None:
            self.consecutive = self.consecutive + 1 if failed else 0
            if self.consecutive >= self.policy.failure_threshold:
                self.move(OPEN, now)
            return
        self.recent.append((now, failed))
        while self.recent[0][0] < now - self.policy.window:
            self.recent.popleft()
        if len(self.recent) >= self.policy.minimum_calls:
            rate = sum(f for _, f in self.recent) / len(self.recent)
            if rate >= self.policy.failure_rate:
                self.move(OPEN, now)


@dataclasses.dataclass
class Call:
    token: int
    period: int
    probe: bool  # admitted while not closed


class BreakerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.ctx = FakeContext(self.clock)
        self.in_flight: list[Call] = []
        self.seen_events = 0
        self.observed_state = CLOSED
        self.last_opened_at: float | None = None
        self.peak_probes = 0

    @initialize(policy=breaker_policies())
    def create(self, policy: CircuitBreakerPolicy) -> None:
        self.policy = policy
        self.breaker = CircuitBreaker("svc", policy)
        self.model = BreakerModel(policy)

    @rule(gap=GAPS)
    def time_passes(self, gap: float) -> None:
        self.clock.now += gap

    @precondition(lambda self: self.breaker.state is OPEN)
    @rule()
    def the_recovery_timeout_elapses_to_the_dot(self) -> None:
        assert self.last_opened_at is not None
        self.clock.now = max(self.clock.now, self.last_opened_at + self.policy.recovery_timeout)

    @rule(n=st.integers(1, 4))
    def calls_begin(self, n: int) -> None:
        for _ in range(n):
            self.begin()

    def begin(self) -> None:
        now = self.clock.now
        was_open_since = self.last_opened_at if self.breaker.state is OPEN else None
        probe = self.breaker.state is not CLOSED
        refusal: CircuitOpenError | None = None
        try:
            token = self.breaker.generation if not probe else self.breaker.admit(self.ctx)
        except CircuitOpenError as refused:
            token, refusal = None, refused
        if refusal is not None:
            assert refusal.key == "svc"
            if was_open_since is None:  # half-open, all probe slots taken
                assert refusal.retry_after == 0
            else:
                expected = was_open_since + self.policy.recovery_timeout - now
                assert refusal.retry_after == expected
        period = self.model.admit(now)
        assert (token is None) == (period is None), "admitted unlike the model"
        if token is not None:
            assert period is not None
            if was_open_since is not None:  # admitted while open: recovery must be over
                assert now >= was_open_since + self.policy.recovery_timeout
            self.in_flight.append(Call(token, period, probe))

    @precondition(lambda self: self.in_flight)
    @rule(
        data=st.data(),
        outcome=st.sampled_from(["success", "failure", "failure", "ignored failure", "cancelled"]),
    )
    def a_call_ends(self, data: st.DataObject, outcome: str) -> None:
        call = self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))
        if outcome == "success":
            self.breaker.succeeded(self.ctx, call.token)
        elif outcome == "failure":
            self.breaker.failed(self.ctx, ConnectionError("down"), call.token)
        elif outcome == "ignored failure":
            self.breaker.failed(self.ctx, ValueError("not counted"), call.token)
        else:
            self.breaker.released(call.token)
        self.model.end(call.period, outcome, self.clock.now)

    @invariant()
    def only_legal_transitions_happen_and_each_is_announced(self) -> None:
        if not hasattr(self, "breaker"):
            return
        new = self.ctx.events[self.seen_events :]
        self.seen_events = len(self.ctx.events)
        state = self.observed_state
        for type_, data in new:
            assert data["key"] == repr("svc")
            target = STATE_OF_EVENT[type_]
            assert (state, target) in LEGAL, f"illegal transition {state} -> {target}"
            if target is OPEN:
                self.last_opened_at = self.clock.now
            state = target
        assert state is self.breaker.state
        self.observed_state = state
        assert set(self.breaker.transitions) <= LEGAL
        assert sum(self.breaker.transitions.values()) == self.breaker.generation

    @invariant()
    def the_state_is_the_models(self) -> None:
        if hasattr(self, "breaker"):
            assert self.breaker.state is self.model.state

    @invariant()
    def at_most_half_open_max_calls_probes_are_in_flight(self) -> None:
        if not hasattr(self, "breaker") or self.breaker.state is not HALF_OPEN:
            return
        probes = [c for c in self.in_flight if c.probe and c.token == self.breaker.generation]
        self.peak_probes = max(self.peak_probes, len(probes))
        assert len(probes) <= self.policy.half_open_max_calls


TestBreakerStateMachine = BreakerMachine.TestCase


@dataclasses.dataclass(frozen=True)
class Batch:
    """Runs started together, each with its outcome and duration, then a pause."""

    runs: tuple[tuple[str, float], ...]
    pause: float


BATCHES = st.lists(
    st.builds(
        Batch,
        st.lists(
            st.tuples(
                st.sampled_from(["ok", "fail", "ignored"]), st.integers(0, 8).map(lambda k: k / 4)
            ),
            min_size=1,
            max_size=4,
        ).map(tuple),
        st.integers(0, 24).map(lambda k: k / 4),
    ),
    min_size=1,
    max_size=12,
)


class TestBreakerThroughTheEngine:
    """The same laws, seen from stages of overlapping runs sharing one Engine's breaker."""

    @given(policy=breaker_policies(), batches=BATCHES)
    def test_no_stage_runs_while_open_and_probes_never_exceed_the_limit(
        self, policy: CircuitBreakerPolicy, batches: list[Batch]
    ) -> None:
        sink = RecordingSink()
        engine = Engine(sink=sink)
        entered: list[CircuitState] = []
        live_probes: Counter[int] = Counter()
        peak: list[int] = [0]

        async def service(ctx: StageContext) -> None:
            breaker = engine.circuit_breakers["svc"]
            state, generation = breaker.state, breaker.generation
            entered.append(state)
            probe = state is HALF_OPEN
            if probe:
                live_probes[generation] += 1
                peak[0] = max(peak[0], live_probes[generation])
            try:
                await asyncio.sleep(ctx.data["duration"])
            finally:
                if probe:
                    live_probes[generation] -= 1
            if ctx.data["outcome"] == "fail":
                raise ConnectionError("down")
            if ctx.data["outcome"] == "ignored":
                raise ValueError("not counted")

        graph = Pipeline().with_stage("s", service, circuit_breaker=policy).build()

        async def main() -> list[RunResult]:
            tasks = []
            for batch in batches:
                for outcome, duration in batch.runs:
                    data = {"outcome": outcome, "duration": duration}
                    tasks.append(asyncio.create_task(engine.run(graph, data=data)))
                await asyncio.sleep(batch.pause)
            return list(await asyncio.gather(*tasks))

        results = run_virtual(main)

        assert OPEN not in entered
        assert peak[0] <= policy.half_open_max_calls
        refused = [r for r in results if isinstance(r["s"].error, CircuitOpenError)]
        assert len(entered) == len(results) - len(refused)
        state = CLOSED
        for event in sink.events:
            if event.type.startswith("circuit."):
                target = STATE_OF_EVENT[event.type]
                assert (state, target) in LEGAL
                state = target
        assert state is engine.circuit_breakers["svc"].state
