"""CircuitBreakerInterceptor and CircuitBreaker: trip, fail fast, probe, recover.

Every run happens on virtual time, one engine per test: its registry is what the runs
share. A "call" below is one run of a one-stage graph.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from stageflow import (
    CircuitBreakerPolicy,
    CircuitBreakerRegistry,
    CircuitOpenError,
    CircuitState,
    Engine,
    Pipeline,
    RunResult,
    StageContext,
    StageGraph,
    StageStatus,
)
from stageflow.interceptors import CircuitBreakerInterceptor
from stageflow.testing import RecordingSink, run_virtual

from ._helpers import noop

CLOSED, OPEN, HALF_OPEN = CircuitState.CLOSED, CircuitState.OPEN, CircuitState.HALF_OPEN


class Dependency:
    """A stage calling a flaky service: fails while ``down``, records every call."""

    def __init__(self, *, down: bool = False, duration: float = 0.0) -> None:
        self.down = down
        self.duration = duration
        self.calls = 0
        self.error: type[BaseException] = ConnectionError

    async def __call__(self, ctx: StageContext) -> dict[str, int]:
        self.calls += 1
        await asyncio.sleep(self.duration)
        if self.down:
            raise self.error("service down")
        return {"call": self.calls}


def graph_of(stage: Any, policy: CircuitBreakerPolicy, name: str = "s") -> StageGraph:
    return Pipeline().with_stage(name, stage, circuit_breaker=policy).build()


async def calls(engine: Engine, graph: StageGraph, n: int = 1) -> list[RunResult]:
    """``n`` runs one after the other."""
    return [await engine.run(graph) for _ in range(n)]


async def concurrently(engine: Engine, graph: StageGraph, n: int) -> list[RunResult]:
    return list(await asyncio.gather(*(engine.run(graph) for _ in range(n))))


def errors(results: Iterable[RunResult], stage: str = "s") -> list[type[BaseException] | None]:
    return [None if r[stage].error is None else type(r[stage].error) for r in results]


def now() -> float:
    return asyncio.get_running_loop().time()


def drive(main: Callable[[], Any]) -> Any:
    return run_virtual(main)


class TestTripping:
    def test_the_breaker_opens_after_threshold_consecutive_failures(self) -> None:
        dep = Dependency(down=True)
        policy = CircuitBreakerPolicy(failure_threshold=3, recovery_timeout=30)
        engine = Engine()
        graph = graph_of(dep, policy)

        async def main() -> list[CircuitState]:
            states = []
            for _ in range(3):
                await engine.run(graph)
                states.append(engine.circuit_breakers[dep].state)
            return states

        assert drive(main) == [CLOSED, CLOSED, OPEN]
        assert dep.calls == 3

    def test_a_success_resets_the_count_of_consecutive_failures(self) -> None:
        dep = Dependency()
        policy = CircuitBreakerPolicy(failure_threshold=3)
        engine = Engine()
        graph = graph_of(dep, policy)

        async def main() -> list[CircuitState]:
            states = []
            for down in [True, True, False, True, True, True]:
                dep.down = down
                await engine.run(graph)
                states.append(engine.circuit_breakers[dep].state)
            return states

        assert drive(main) == [CLOSED] * 5 + [OPEN]

    def test_failures_outside_failure_on_do_not_count(self) -> None:
        dep = Dependency(down=True)
        dep.error = ValueError
        policy = CircuitBreakerPolicy(failure_threshold=2, failure_on=(ConnectionError,))
        engine = Engine()
        graph = graph_of(dep, policy)

        async def main() -> tuple[CircuitState, CircuitState]:
            await calls(engine, graph, 5)
            ignored = engine.circuit_breakers[dep].state
            dep.error = ConnectionError
            await calls(engine, graph, 2)
            return ignored, engine.circuit_breakers[dep].state

        assert drive(main) == (CLOSED, OPEN)
        assert dep.calls == 7

    def test_a_stage_timeout_counts_as_a_failure(self) -> None:
        dep = Dependency(duration=10)
        policy = CircuitBreakerPolicy(failure_threshold=2)
        graph = Pipeline().with_stage("s", dep, timeout=1, circuit_breaker=policy).build()
        engine = Engine()

        drive(lambda: calls(engine, graph, 2))

        assert engine.circuit_breakers[dep].state is OPEN


class TestOpenCircuit:
    def test_an_open_circuit_fails_the_stage_at_once_without_calling_it(self) -> None:
        dep = Dependency(down=True, duration=1)
        policy = CircuitBreakerPolicy(failure_threshold=2, recovery_timeout=30)
        engine = Engine()
        graph = graph_of(dep, policy)

        async def main() -> tuple[list[RunResult], float]:
            await calls(engine, graph, 2)
            start = now()
            results = await calls(engine, graph, 3)
            return results, now() - start

        results, elapsed = drive(main)

        assert dep.calls == 2
        assert errors(results) == [CircuitOpenError] * 3
        assert all(r["s"].status is StageStatus.FAILED for r in results)
        assert elapsed == 0

    def test_the_open_circuit_error_names_the_stage_the_key_and_when_to_retry(self) -> None:
        dep = Dependency(down=True, duration=1)
        policy = CircuitBreakerPolicy(failure_threshold=1, recovery_timeout=10, key="payments")
        engine = Engine()
        graph = graph_of(dep, policy, name="charge")

        async def main() -> list[RunResult]:
            await calls(engine, graph)  # opens at t=1
            first = await calls(engine, graph)
            await asyncio.sleep(3)
            second = await calls(engine, graph)
            return first + second

        first, second = drive(main)

        error = first["charge"].error
        assert isinstance(error, CircuitOpenError)
        assert (error.stage, error.key, error.retry_after) == ("charge", "payments", 10)
        assert "'charge'" in str(error)
        assert "'payments'" in str(error)
        assert second["charge"].error.retry_after == 7  # type: ignore[union-attr]

    def test_a_refused_call_has_not_run_but_counts_as_an_attempt(self) -> None:
        dep = Dependency(down=True)
        engine = Engine()
        graph = graph_of(dep, CircuitBreakerPolicy(failure_threshold=1))

        (_, refused) = drive(lambda: calls(engine, graph, 2))

        assert refused["s"].attempts == 1
        assert refused["s"].duration == 0


class TestRecovery:
    def test_after_recovery_timeout_one_probe_goes_through_and_its_success_closes(
        self,
    ) -> None:
        dep = Dependency(down=True)
        policy = CircuitBreakerPolicy(failure_threshold=2, recovery_timeout=30)
        engine = Engine()
        graph = graph_of(dep, policy)

        async def main() -> list[Any]:
            await calls(engine, graph, 2)  # opens at t=0
            await asyncio.sleep(29.5)
            early = await calls(engine, graph)
            await asyncio.sleep(0.5)
            dep.down = False
            probe = await calls(engine, graph)
            after = await calls(engine, graph)
            return [*early, *probe, *after]

        early, probe, after = drive(main)
        breaker = engine.circuit_breakers[dep]

        assert errors([early, probe, after]) == [CircuitOpenError, None, None]
        assert dep.calls == 4
        assert breaker.state is CLOSED
        assert breaker.transitions == {
            (CLOSED, OPEN): 1,
            (OPEN, HALF_OPEN): 1,
            (HALF_OPEN, CLOSED): 1,
        }

    def test_a_failed_probe_opens_the_circuit_again_for_another_recovery_timeout(
        self,
    ) -> None:
        dep = Dependency(down=True, duration=1)
        policy = CircuitBreakerPolicy(failure_threshold=1, recovery_timeout=10)
        engine = Engine()
        graph = graph_of(dep, policy)

        async def main() -> RunResult:
            await calls(engine, graph)  # opens at t=1
            await asyncio.sleep(10)
            await calls(engine, graph)  # the probe fails at t=12
            await asyncio.sleep(9)
            (refused,) = await calls(engine, graph)
            return refused

        refused = drive(main)
        breaker = engine.circuit_breakers[dep]

        assert dep.calls == 2
        assert breaker.state is OPEN
        assert breaker.transitions[(HALF_OPEN, OPEN)] == 1
        assert refused["s"].error.retry_after == 1  # type: ignore[union-attr]

    def test_half_open_admits_at_most_half_open_max_calls_probes_and_needs_them_all(
        self,
    ) -> None:
        fast, slow = Dependency(duration=1), Dependency(duration=2)
        policy = CircuitBreakerPolicy(
            failure_threshold=1, recovery_timeout=10, half_open_max_calls=2, key="svc"
        )
        graph = (
            Pipeline()
            .with_stage("fast", fast, circuit_breaker=policy)
            .with_stage("slow", slow, circuit_breaker=policy)
            .with_stage("third", Dependency(), circuit_breaker=policy)
            .build()
        )
        trip = graph_of(Dependency(down=True), policy)
        engine = Engine(fail_fast=False)

        async def main() -> tuple[RunResult, list[CircuitState]]:
            await engine.run(trip)  # opens at t=0
            await asyncio.sleep(10)
            breaker = engine.circuit_breakers["svc"]
            states: list[CircuitState] = []

            async def watch() -> None:
                for _ in range(3):
                    await asyncio.sleep(0.9)
                    states.append(breaker.state)
                    await asyncio.sleep(0.1)

            result, _ = await asyncio.gather(engine.run(graph), watch())
            return result, states

        result, states = drive(main)

        assert result["fast"].ok
        assert result["slow"].ok
        assert isinstance(result["third"].error, CircuitOpenError)
        assert (fast.calls, slow.calls) == (1, 1)
        assert states == [HALF_OPEN, HALF_OPEN, CLOSED]  # closed only after both succeeded

    def test_a_cancelled_probe_frees_its_slot(self) -> None:
        dep = Dependency(down=True)
        policy = CircuitBreakerPolicy(failure_threshold=1, recovery_timeout=5)
        engine = Engine()
        graph = graph_of(dep, policy)

        async def main() -> RunResult:
            await calls(engine, graph)
            await asyncio.sleep(5)
            dep.down, dep.duration = False, 100
            await engine.run(graph, timeout=1)  # the probe is cancelled
            dep.duration = 0
            return await engine.run(graph)

        result = drive(main)

        assert result["s"].ok
        assert dep.calls == 3
        assert engine.circuit_breakers[dep].state is CLOSED


class TestRateMode:
    def policy(self, **changes: Any) -> CircuitBreakerPolicy:
        options: dict[str, Any] = {
            "failure_rate": 0.5,
            "window": 10,
            "minimum_calls": 4,
            "recovery_timeout": 60,
        }
        return CircuitBreakerPolicy(**{**options, **changes})

    def run_sequence(self, outcomes: str, policy: CircuitBreakerPolicy, gap: float = 0) -> Any:
        """Run one call per letter (F: fails, S: succeeds, ' ': wait 20 s)."""
        dep = Dependency()
        engine = Engine()
        graph = graph_of(dep, policy)

        async def main() -> list[CircuitState]:
            states = []
            for outcome in outcomes:
                if outcome == " ":
                    await asyncio.sleep(20)
                    continue
                dep.down = outcome == "F"
                await engine.run(graph)
                states.append(engine.circuit_breakers[dep].state)
                await asyncio.sleep(gap)
            return states

        return drive(main)

    def test_it_opens_when_the_failure_rate_is_reached_with_enough_calls(self) -> None:
        assert self.run_sequence("SFSF", self.policy()) == [CLOSED] * 3 + [OPEN]

    def test_fewer_calls_than_minimum_calls_never_open_it(self) -> None:
        assert self.run_sequence("FFF", self.policy()) == [CLOSED] * 3

    def test_a_rate_below_the_threshold_keeps_it_closed(self) -> None:
        assert self.run_sequence("SSSFSSF", self.policy()) == [CLOSED] * 7

    def test_calls_older_than_the_window_are_forgotten(self) -> None:
        # Counting everything, the fourth call of "SSSF" would make 4 failures in 7 calls.
        assert self.run_sequence("FFF SSSF", self.policy()) == [CLOSED] * 7

    def test_the_failure_threshold_is_not_used_in_rate_mode(self) -> None:
        policy = self.policy(failure_threshold=1, minimum_calls=3, failure_rate=1.0)

        assert self.run_sequence("FSF", policy) == [CLOSED] * 3


class TestBreakerKeys:
    def test_by_default_stages_using_the_same_function_share_one_breaker(self) -> None:
        dep = Dependency(down=True)
        policy = CircuitBreakerPolicy(failure_threshold=2)
        graph = (
            Pipeline()
            .with_stage("a", dep, circuit_breaker=policy)
            .with_stage("b", dep, circuit_breaker=policy, dependencies=["a"], optional=["a"])
            .with_stage("c", dep, circuit_breaker=policy, dependencies=["b"], optional=["b"])
            .build()
        )
        engine = Engine(fail_fast=False)

        result = drive(lambda: engine.run(graph))

        assert errors([result], "c") == [CircuitOpenError]
        assert dep.calls == 2
        assert len(engine.circuit_breakers) == 1
        assert engine.circuit_breakers[dep].state is OPEN

    def test_by_default_different_functions_have_different_breakers(self) -> None:
        bad, good = Dependency(down=True), Dependency()
        policy = CircuitBreakerPolicy(failure_threshold=1)
        graph = (
            Pipeline()
            .with_stage("bad", bad, circuit_breaker=policy)
            .with_stage("good", good, circuit_breaker=policy, dependencies=["bad"],
                        optional=["bad"])
            .build()
        )  # fmt: skip
        engine = Engine(fail_fast=False)

        result = drive(lambda: engine.run(graph))

        assert result["good"].ok
        assert engine.circuit_breakers[bad].state is OPEN
        assert engine.circuit_breakers[good].state is CLOSED

    def test_a_key_shares_one_breaker_between_different_stages(self) -> None:
        first, second = Dependency(down=True), Dependency()
        policy = CircuitBreakerPolicy(failure_threshold=1, key="payments-api")
        graph = (
            Pipeline()
            .with_stage("charge", first, circuit_breaker=policy)
            .with_stage("refund", second, circuit_breaker=policy, dependencies=["charge"],
                        optional=["charge"])
            .build()
        )  # fmt: skip
        engine = Engine(fail_fast=False)

        result = drive(lambda: engine.run(graph))

        assert isinstance(result["refund"].error, CircuitOpenError)
        assert second.calls == 0
        assert list(engine.circuit_breakers) == [engine.circuit_breakers["payments-api"]]
        assert "payments-api" in engine.circuit_breakers

    def test_a_class_instance_stage_is_keyed_by_the_instance(self) -> None:
        class Api:
            async def execute(self, ctx: StageContext) -> None:
                raise ConnectionError("down")

        api = Api()
        engine = Engine()

        drive(lambda: engine.run(graph_of(api, CircuitBreakerPolicy(failure_threshold=1))))

        assert engine.circuit_breakers[api].state is OPEN

    def test_a_stage_without_a_policy_has_no_breaker_and_a_plain_call(self) -> None:
        graph = Pipeline().with_stage("s", noop).build()
        engine = Engine()

        assert engine.calls(graph)[0] is graph["s"].call
        assert len(engine.circuit_breakers) == 0


class TestSharing:
    def test_concurrent_runs_of_one_engine_share_the_breaker(self) -> None:
        dep = Dependency(down=True, duration=1)
        policy = CircuitBreakerPolicy(failure_threshold=3, recovery_timeout=10)
        engine = Engine()
        graph = graph_of(dep, policy)

        async def main() -> dict[str, Any]:
            tripping = await concurrently(engine, graph, 3)  # all fail at t=1: open
            calls_after_trip = dep.calls
            start = now()
            fast = await concurrently(engine, graph, 5)
            fast_elapsed = now() - start
            await asyncio.sleep(10)
            dep.down = False
            probing = await concurrently(engine, graph, 5)
            calls_after_probe = dep.calls
            closed = await concurrently(engine, graph, 4)
            return {
                "tripping": errors(tripping),
                "calls_after_trip": calls_after_trip,
                "fast": errors(fast),
                "fast_elapsed": fast_elapsed,
                "probing": errors(probing),
                "calls_after_probe": calls_after_probe,
                "closed": errors(closed),
            }

        seen = drive(main)

        assert seen["tripping"] == [ConnectionError] * 3
        assert seen["calls_after_trip"] == 3
        assert seen["fast"] == [CircuitOpenError] * 5
        assert seen["fast_elapsed"] == 0
        assert Counter(seen["probing"]) == {None: 1, CircuitOpenError: 4}
        assert seen["calls_after_probe"] == 4  # exactly one probe went through
        assert seen["closed"] == [None] * 4
        assert dep.calls == 8

    def test_calls_in_flight_when_it_opens_do_not_count_afterwards(self) -> None:
        # Ten calls admitted while closed; the first three failures open the breaker at t=1;
        # the seven failing at t=2 belong to the closed period: they neither re-open it nor
        # restart its recovery timeout.
        async def fails_after(ctx: StageContext) -> dict[str, bool]:
            await asyncio.sleep(ctx.data["delay"])
            if ctx.data["fail"]:
                raise ConnectionError("down")
            return {"ok": True}

        policy = CircuitBreakerPolicy(failure_threshold=3, recovery_timeout=5)
        engine = Engine()
        graph = graph_of(fails_after, policy)

        async def main() -> RunResult:
            delays = [1.0] * 3 + [2.0] * 7
            await asyncio.gather(
                *(engine.run(graph, data={"delay": d, "fail": True}) for d in delays)
            )
            await asyncio.sleep(6 - now())
            return await engine.run(graph, data={"delay": 0, "fail": False})

        probe = drive(main)

        assert probe["s"].ok  # admitted at t=6: recovery counted from t=1, not t=2
        assert engine.circuit_breakers[fails_after].transitions == {
            (CLOSED, OPEN): 1,
            (OPEN, HALF_OPEN): 1,
            (HALF_OPEN, CLOSED): 1,
        }

    def test_two_engines_do_not_share_breakers(self) -> None:
        dep = Dependency(down=True)
        policy = CircuitBreakerPolicy(failure_threshold=1, key="svc")
        graph = graph_of(dep, policy)
        first, second = Engine(), Engine()

        async def main() -> list[RunResult]:
            await first.run(graph)
            dep.down = False
            return [await second.run(graph), await first.run(graph)]

        on_second, on_first = drive(main)

        assert on_second["s"].ok
        assert isinstance(on_first["s"].error, CircuitOpenError)

    def test_engines_given_the_same_registry_share_breakers(self) -> None:
        dep = Dependency(down=True)
        registry = CircuitBreakerRegistry()
        graph = graph_of(dep, CircuitBreakerPolicy(failure_threshold=1, key="svc"))
        first, second = Engine(circuit_breakers=registry), Engine(circuit_breakers=registry)

        async def main() -> RunResult:
            await first.run(graph)
            dep.down = False
            return await second.run(graph)

        result = drive(main)

        assert isinstance(result["s"].error, CircuitOpenError)
        assert registry["svc"].state is OPEN
        assert dep.calls == 1

    def test_an_explicit_interceptor_with_a_default_policy_guards_every_stage(self) -> None:
        dep = Dependency(down=True)
        registry = CircuitBreakerRegistry()
        interceptor = CircuitBreakerInterceptor(
            CircuitBreakerPolicy(failure_threshold=1), registry=registry
        )
        engine = Engine(interceptors=[interceptor])
        graph = Pipeline().with_stage("s", dep).build()

        _, second = drive(lambda: calls(engine, graph, 2))

        assert isinstance(second["s"].error, CircuitOpenError)
        assert engine.circuit_breakers is registry


class TestBreakerEvents:
    def test_each_transition_is_announced_with_the_key(self) -> None:
        sink = RecordingSink()
        dep = Dependency(down=True)
        policy = CircuitBreakerPolicy(failure_threshold=1, recovery_timeout=5, key="svc")
        engine = Engine(sink=sink)
        graph = graph_of(dep, policy)

        async def main() -> None:
            await calls(engine, graph)  # opens
            await asyncio.sleep(5)
            await calls(engine, graph)  # probe fails: opens again
            await asyncio.sleep(5)
            dep.down = False
            await calls(engine, graph)  # probe succeeds: closes

        drive(main)

        circuit = [(e.type, dict(e.data)) for e in sink.events if e.type.startswith("circuit.")]
        opened = {"key": repr("svc"), "recovery_timeout": 5}
        assert circuit == [
            ("circuit.opened", opened),
            ("circuit.half_open", {"key": repr("svc")}),
            ("circuit.opened", opened),
            ("circuit.half_open", {"key": repr("svc")}),
            ("circuit.closed", {"key": repr("svc")}),
        ]
        assert all(e.stage == "s" for e in sink.events if e.type.startswith("circuit."))

    def test_the_breaker_reports_its_state_and_transition_counts(self) -> None:
        dep = Dependency(down=True)
        engine = Engine()
        graph = graph_of(dep, CircuitBreakerPolicy(failure_threshold=2, recovery_timeout=1))

        async def main() -> None:
            await calls(engine, graph, 2)
            for _ in range(3):  # three failed probes
                await asyncio.sleep(1)
                await calls(engine, graph)

        drive(main)
        breaker = engine.circuit_breakers[dep]

        assert breaker.state is OPEN
        assert breaker.transitions == {
            (CLOSED, OPEN): 1,
            (OPEN, HALF_OPEN): 3,
            (HALF_OPEN, OPEN): 3,
        }
        assert breaker.generation == 7
        assert repr(dep) in repr(breaker)
