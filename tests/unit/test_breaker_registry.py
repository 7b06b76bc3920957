"""CircuitBreakerRegistry: one policy per key."""

from __future__ import annotations

import pytest

from stageflow import (
    CircuitBreakerPolicy,
    CircuitBreakerRegistry,
    ConfigurationError,
    Engine,
    Pipeline,
)


async def call_api(ctx):
    return {}


class TestCircuitBreakerRegistry:
    def test_stages_sharing_a_key_with_different_policies_are_refused(self):
        graph = (
            Pipeline()
            .with_stage("a", call_api, circuit_breaker=CircuitBreakerPolicy(key="api"))
            .with_stage(
                "b",
                call_api,
                circuit_breaker=CircuitBreakerPolicy(key="api", failure_threshold=2),
            )
            .build()
        )

        with pytest.raises(ConfigurationError) as info:
            Engine().calls(graph)

        assert "'api'" in str(info.value)
        assert info.value.field == "circuit_breaker"
        assert info.value.value == CircuitBreakerPolicy(key="api", failure_threshold=2)

    def test_stages_sharing_a_key_and_its_policy_share_one_breaker(self):
        policy = CircuitBreakerPolicy(key="api")
        registry = CircuitBreakerRegistry()
        graph = (
            Pipeline()
            .with_stage("a", call_api, circuit_breaker=policy)
            .with_stage("b", call_api, circuit_breaker=CircuitBreakerPolicy(key="api"))
            .build()
        )

        Engine(circuit_breakers=registry).calls(graph)

        assert len(registry) == 1
        assert registry["api"].policy == policy
