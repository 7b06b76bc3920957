"""Resilience policies as values: checked when built, frozen, hashable, and pure arithmetic.

Also the places where a policy or a limit is given: ``with_stage(timeout=, retry=,
circuit_breaker=)`` and ``Engine(stage_timeout=, retry=, circuit_breakers=)``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import pytest

from stageflow import (
    CircuitBreakerPolicy,
    CircuitBreakerRegistry,
    CircuitOpenError,
    ConfigurationError,
    Engine,
    InvalidOptionError,
    InvalidOutputError,
    MissingInputError,
    Pipeline,
    RetryInterceptor,
    RetryPolicy,
)

from ._helpers import noop, run


class TestRetryPolicyValidation:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("attempts", 0),
            ("attempts", -1),
            ("attempts", True),
            ("attempts", 2.0),
            ("attempts", "3"),
            ("backoff", "quadratic"),
            ("backoff", None),
            ("base", -0.1),
            ("base", math.nan),
            ("base", math.inf),
            ("base", True),
            ("multiplier", 0.5),
            ("multiplier", 0),
            ("max_delay", -1),
            ("max_delay", "30"),
            ("jitter", "yes"),
            ("jitter", 1),
            ("deadline", 0),
            ("deadline", -5),
            ("deadline", math.nan),
            ("retry_on", "ValueError"),
            ("retry_on", (int,)),
            ("retry_on", ValueError("not a type")),
            ("retry_on", [ValueError]),
            ("give_up_on", (ValueError, "x")),
        ],
    )
    def test_a_bad_value_is_refused_at_construction_naming_the_field_and_value(
        self, field: str, value: Any
    ) -> None:
        with pytest.raises(ConfigurationError) as info:
            RetryPolicy(**{field: value})

        assert info.value.field == field
        assert info.value.value is value
        assert f"RetryPolicy.{field}" in str(info.value)
        assert repr(value) in str(info.value)

    def test_the_defaults_are_valid_and_documented_values(self) -> None:
        policy = RetryPolicy()

        assert policy.attempts == 3
        assert policy.backoff == "exponential"
        assert policy.jitter is False
        assert policy.deadline is None
        assert policy.retry_on == (Exception,)

    def test_a_single_exception_type_is_accepted_as_a_one_element_tuple(self) -> None:
        assert RetryPolicy(retry_on=ValueError).retry_on == (ValueError,)
        assert RetryPolicy(retry_on=ValueError) == RetryPolicy(retry_on=(ValueError,))

    def test_the_smallest_legal_values_are_accepted(self) -> None:
        policy = RetryPolicy(attempts=1, base=0, multiplier=1, max_delay=0, deadline=1e-9)

        assert policy.attempts == 1
        assert list(policy.delays()) == []


class TestRetryPolicyDecisions:
    def test_retries_what_retry_on_lists_and_nothing_else(self) -> None:
        policy = RetryPolicy(retry_on=(ConnectionError, TimeoutError))

        assert policy.retries(ConnectionResetError())
        assert policy.retries(TimeoutError())
        assert not policy.retries(ValueError())

    def test_give_up_on_wins_over_retry_on(self) -> None:
        policy = RetryPolicy(retry_on=(OSError,), give_up_on=(PermissionError,))

        assert policy.retries(OSError())
        assert not policy.retries(PermissionError())

    def test_by_default_an_open_circuit_a_bad_output_and_a_missing_input_are_not_retried(
        self,
    ) -> None:
        policy = RetryPolicy()

        assert policy.retries(RuntimeError("transient"))
        assert not policy.retries(CircuitOpenError.of("s", "k", 1.0))
        assert not policy.retries(InvalidOutputError.of("s", 42))
        assert not policy.retries(
            MissingInputError("no input", stage="s", dependency="dep", key=None)
        )


class TestRetryPolicyDelays:
    def test_fixed_backoff_waits_base_every_time(self) -> None:
        assert list(RetryPolicy(attempts=4, backoff="fixed", base=0.5).delays()) == [0.5] * 3

    def test_linear_backoff_grows_by_base(self) -> None:
        policy = RetryPolicy(attempts=5, backoff="linear", base=0.5)

        assert list(policy.delays()) == [0.5, 1.0, 1.5, 2.0]

    def test_exponential_backoff_multiplies(self) -> None:
        policy = RetryPolicy(attempts=5, backoff="exponential", base=0.25, multiplier=3)

        assert list(policy.delays()) == [0.25, 0.75, 2.25, 6.75]

    def test_max_delay_caps_every_backoff(self) -> None:
        exponential = RetryPolicy(attempts=6, base=1, multiplier=2, max_delay=5)
        linear = RetryPolicy(attempts=5, backoff="linear", base=2, max_delay=5)
        fixed = RetryPolicy(attempts=3, backoff="fixed", base=9, max_delay=5)

        assert list(exponential.delays()) == [1, 2, 4, 5, 5]
        assert list(linear.delays()) == [2, 4, 5, 5]
        assert list(fixed.delays()) == [5, 5]

    def test_a_multiplier_of_one_keeps_exponential_backoff_flat(self) -> None:
        assert list(RetryPolicy(attempts=4, base=0.5, multiplier=1).delays()) == [0.5] * 3

    def test_there_is_one_delay_fewer_than_attempts(self) -> None:
        for attempts in range(1, 8):
            assert len(list(RetryPolicy(attempts=attempts).delays())) == attempts - 1

    def test_delays_ignore_jitter(self) -> None:
        policy = RetryPolicy(attempts=4, base=1, jitter=True)

        assert list(policy.delays()) == [1, 2, 4]

    def test_a_jittered_delay_is_drawn_from_zero_to_the_unjittered_delay(self) -> None:
        policy = RetryPolicy(attempts=50, base=1, multiplier=1.5, max_delay=20, jitter=True)
        rng = random.Random(42)
        unjittered = list(policy.delays())

        drawn = [policy.delay(n, rng) for n in range(1, policy.attempts)]

        assert all(0 <= d <= u for d, u in zip(drawn, unjittered, strict=True))
        assert drawn != unjittered  # it did jitter
        assert len(set(drawn)) == len(drawn)

    def test_jitter_from_a_seeded_rng_is_reproducible(self) -> None:
        policy = RetryPolicy(attempts=6, base=1, jitter=True)

        first = [policy.delay(n, random.Random(3)) for n in range(1, 6)]
        again = [policy.delay(n, random.Random(3)) for n in range(1, 6)]

        assert first == again

    def test_a_long_exponential_policy_caps_late_delays_instead_of_overflowing(self) -> None:
        # attempts=1000, x3, capped at a minute: "keep trying for about 16 hours".
        policy = RetryPolicy(attempts=1000, base=0.1, multiplier=3, max_delay=60)

        assert policy.delay(999) == 60
        assert list(policy.delays())[-1] == 60


class TestRetryPolicyAsValue:
    def test_a_policy_is_frozen(self) -> None:
        policy = RetryPolicy()

        with pytest.raises(dataclasses.FrozenInstanceError):
            policy.attempts = 5  # type: ignore[misc]

    def test_policies_are_equal_and_hash_alike_by_value(self) -> None:
        a = RetryPolicy(attempts=4, backoff="linear", base=0.2, retry_on=(OSError,))
        b = RetryPolicy(attempts=4, backoff="linear", base=0.2, retry_on=(OSError,))

        assert a == b
        assert hash(a) == hash(b)
        assert len({a, b, RetryPolicy()}) == 2
        assert a != a.with_options(attempts=5)

    def test_with_options_returns_a_changed_copy_and_leaves_the_original_alone(self) -> None:
        policy = RetryPolicy(attempts=3, base=0.5)

        changed = policy.with_options(attempts=6, backoff="fixed")

        assert (changed.attempts, changed.backoff, changed.base) == (6, "fixed", 0.5)
        assert (policy.attempts, policy.backoff) == (3, "exponential")

    @pytest.mark.parametrize(
        ("field", "value"), [("attempts", 0), ("backoff", "cubic"), ("base", -1)]
    )
    def test_with_options_checks_the_copy_like_a_new_policy(self, field: str, value: Any) -> None:
        with pytest.raises(ConfigurationError) as info:
            RetryPolicy().with_options(**{field: value})

        assert info.value.field == field
        assert info.value.value == value


class TestCircuitBreakerPolicyValidation:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("failure_threshold", 0),
            ("failure_threshold", -3),
            ("failure_threshold", True),
            ("failure_threshold", 2.5),
            ("failure_rate", 0),
            ("failure_rate", -0.5),
            ("failure_rate", 1.01),
            ("failure_rate", math.nan),
            ("failure_rate", "half"),
            ("window", 0),
            ("window", -1),
            ("window", math.inf),
            ("minimum_calls", 0),
            ("recovery_timeout", -1),
            ("recovery_timeout", math.nan),
            ("half_open_max_calls", 0),
            ("half_open_max_calls", False),
            ("key", []),
            ("key", {"name": "payments"}),
            ("failure_on", "ConnectionError"),
            ("failure_on", (ConnectionError, 3)),
        ],
    )
    def test_a_bad_value_is_refused_at_construction_naming_the_field_and_value(
        self, field: str, value: Any
    ) -> None:
        with pytest.raises(ConfigurationError) as info:
            CircuitBreakerPolicy(**{field: value})

        assert info.value.field == field
        assert info.value.value is value
        assert f"CircuitBreakerPolicy.{field}" in str(info.value)
        assert repr(value) in str(info.value)

    def test_boundary_values_are_accepted(self) -> None:
        policy = CircuitBreakerPolicy(
            failure_threshold=1,
            failure_rate=1,
            window=1e-3,
            minimum_calls=1,
            recovery_timeout=0,
            half_open_max_calls=1,
            key=("payments", 1),
        )

        assert policy.failure_rate == 1
        assert policy.recovery_timeout == 0

    def test_a_policy_is_frozen_and_hashable_by_value(self) -> None:
        a = CircuitBreakerPolicy(failure_threshold=3, key="payments")
        b = CircuitBreakerPolicy(failure_threshold=3, key="payments")

        with pytest.raises(dataclasses.FrozenInstanceError):
            a.key = "other"  # type: ignore[misc]
        assert a == b
        assert hash(a) == hash(b)
        assert a != CircuitBreakerPolicy(failure_threshold=4, key="payments")

    def test_a_single_exception_type_is_accepted_for_failure_on(self) -> None:
        assert CircuitBreakerPolicy(failure_on=OSError).failure_on == (OSError,)


class TestStageOptionValidation:
    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("timeout", -1),
            ("timeout", 0),
            ("timeout", math.nan),
            ("timeout", math.inf),
            ("timeout", True),
            ("timeout", "5"),
            ("retry", 0),
            ("retry", -2),
            ("retry", "x"),
            ("retry", True),
            ("retry", 2.0),
            ("circuit_breaker", 5),
            ("circuit_breaker", "payments"),
            ("circuit_breaker", RetryPolicy()),
        ],
    )
    def test_a_bad_option_names_the_stage_the_option_and_the_value(
        self, option: str, value: Any
    ) -> None:
        with pytest.raises(InvalidOptionError) as info:
            Pipeline().with_stage("call_api", noop, **{option: value})

        error = info.value
        assert (error.stage, error.option) == ("call_api", option)
        assert error.value is value
        assert "'call_api'" in str(error)
        assert option in str(error)
        assert repr(value) in str(error)

    def test_retry_given_as_a_number_is_shorthand_for_that_many_attempts(self) -> None:
        graph = Pipeline().with_stage("s", noop, retry=3).build()

        assert graph["s"].retry == RetryPolicy(attempts=3)

    def test_the_options_are_kept_on_the_spec(self) -> None:
        retry = RetryPolicy(attempts=5)
        breaker = CircuitBreakerPolicy(key="k")
        graph = (
            Pipeline()
            .with_stage("s", noop, timeout=2, retry=retry, circuit_breaker=breaker)
            .build()
        )

        spec = graph["s"]
        assert (spec.timeout, spec.retry, spec.circuit_breaker) == (2.0, retry, breaker)
        assert isinstance(spec.timeout, float)


class TestEngineResilienceOptions:
    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("stage_timeout", -1),
            ("stage_timeout", 0),
            ("stage_timeout", math.nan),
            ("stage_timeout", True),
            ("stage_timeout", "5"),
            ("retry", 5),
            ("retry", "exponential"),
            ("circuit_breakers", object()),
            ("circuit_breakers", {}),
        ],
    )
    def test_a_bad_engine_option_is_refused_naming_the_field(self, field: str, value: Any) -> None:
        with pytest.raises(ConfigurationError) as info:
            Engine(**{field: value})

        assert info.value.field == field
        assert info.value.value is value
        assert repr(value) in str(info.value)

    def test_an_infinite_stage_timeout_is_refused_like_the_stage_option(self) -> None:
        # with_stage(timeout=math.inf) is refused; the engine-wide default must agree.
        with pytest.raises(InvalidOptionError):
            Pipeline().with_stage("s", noop, timeout=math.inf)
        with pytest.raises(ConfigurationError) as info:
            Engine(stage_timeout=math.inf)

        assert info.value.field == "stage_timeout"

    def test_an_engine_shares_the_registry_it_is_given(self) -> None:
        registry = CircuitBreakerRegistry()

        assert Engine(circuit_breakers=registry).circuit_breakers is registry
        assert Engine().circuit_breakers is not Engine().circuit_breakers

    def test_the_engine_retry_is_not_silently_dropped_by_a_given_retry_interceptor(
        self,
    ) -> None:
        # Engine(retry=...) together with a RetryInterceptor of one's own (say, for a seeded
        # rng): either the engine's policy is honoured or the conflict is refused.
        calls = 0

        async def flaky(ctx: Any) -> None:
            nonlocal calls
            calls += 1
            raise ConnectionError("down")

        policy = RetryPolicy(attempts=3, base=0)
        try:
            engine = Engine(retry=policy, interceptors=[RetryInterceptor(rng=random.Random(1))])
        except ConfigurationError as refused:
            refused_field = refused.field
        else:
            refused_field = None
        if refused_field is not None:
            assert refused_field == "retry"
            return
        result = run(Pipeline().with_stage("s", flaky).build(), engine)

        assert result["s"].attempts == 3
        assert calls == 3
