"""Engine settings: frozen once the engine exists, replaced as a whole, defaults replaceable."""

from __future__ import annotations

from typing import Any

import pytest

from stageflow import (
    CheckpointInterceptor,
    ConfigurationError,
    Engine,
    Pipeline,
    RetryInterceptor,
    RetryPolicy,
    RunContext,
    StageCall,
    StageContext,
    StageSpec,
    TimeoutInterceptor,
)
from stageflow.adapters.memory import MemoryStore
from stageflow.interceptors import SelectiveInterceptor

from ._helpers import noop, run


class TestFrozenSettings:
    @pytest.mark.parametrize(
        ("name", "value"),
        [("store", MemoryStore()), ("sink", None), ("max_parallel", 2), ("fail_fast", False),
         ("clock", None), ("interceptors", ()), ("lease_ttl", 5.0)],
    )  # fmt: skip
    def test_assigning_a_setting_raises_and_names_replace(self, name: str, value: object):
        engine = Engine()

        with pytest.raises(AttributeError, match=rf"cannot set {name!r}; engine.replace"):
            setattr(engine, name, value)

    def test_assigning_anything_else_raises_too(self):
        with pytest.raises(AttributeError, match="Engine has no setting 'stor'"):
            Engine().stor = MemoryStore()  # type: ignore[attr-defined]

    def test_deleting_a_setting_raises(self):
        with pytest.raises(AttributeError, match="frozen"):
            del Engine().store

    def test_a_store_assigned_after_the_fact_can_no_longer_lose_stage_records(self):
        # The bug this guards against: the chain was made without the checkpoint
        # interceptor, so a run was recorded as completed with no stage records.
        engine = Engine()
        with pytest.raises(AttributeError):
            engine.store = MemoryStore()  # type: ignore[misc]
        store = MemoryStore()
        durable = engine.replace(store=store)
        graph = Pipeline().with_stage("a", noop).build()

        result = run(graph, durable, run_id="r1")

        assert result.ok
        assert engine.store is None
        assert any(isinstance(ic, CheckpointInterceptor) for ic in durable.interceptors)


class TestReplace:
    def test_replace_changes_what_it_is_given_and_keeps_the_rest(self):
        retry = RetryPolicy(attempts=3)
        engine = Engine(max_parallel=4, retry=retry)

        other = engine.replace(fail_fast=False)

        assert (other.max_parallel, other.fail_fast) == (4, False)
        assert (engine.max_parallel, engine.fail_fast) == (4, True)
        retries = [ic for ic in other.interceptors if isinstance(ic, RetryInterceptor)]
        assert [ic.default for ic in retries] == [retry]

    def test_replace_shares_the_circuit_breaker_registry(self):
        engine = Engine()

        assert engine.replace(max_parallel=1).circuit_breakers is engine.circuit_breakers

    def test_replace_keeps_the_interceptors_given_but_not_the_defaults_objects(self):
        mine = TimeoutInterceptor(5)
        engine = Engine(interceptors=[mine])

        other = engine.replace(max_parallel=2)

        assert mine in other.interceptors
        assert len(other.interceptors) == len(engine.interceptors)

    def test_settings_shows_what_the_engine_was_made_with_read_only(self):
        mine = TimeoutInterceptor(5)
        engine = Engine(interceptors=[mine], max_parallel=3)

        assert engine.settings["max_parallel"] == 3
        assert engine.settings["interceptors"] == (mine,)  # the defaults are not settings
        with pytest.raises(TypeError):
            engine.settings["max_parallel"] = 4  # type: ignore[index]

    def test_an_unknown_setting_is_refused_naming_it(self):
        with pytest.raises(ConfigurationError, match="Engine has no setting 'max_paralel'") as e:
            Engine().replace(max_paralel=2)
        assert e.value.field == "max_paralel"

    def test_a_bad_value_is_refused_as_by_the_constructor(self):
        with pytest.raises(ConfigurationError, match="max_parallel must be a positive int"):
            Engine().replace(max_parallel=0)


class TestDefaults:
    def test_a_subclass_of_a_default_takes_its_place(self):
        class MyRetry(RetryInterceptor):
            pass

        calls: list[int] = []

        async def flaky(ctx: StageContext) -> None:
            calls.append(ctx.attempt)
            raise OSError("always")

        graph = Pipeline().with_stage("s", flaky, retry=3).build()
        engine = Engine(interceptors=[MyRetry()])

        result = run(graph, engine)

        assert calls == [1, 2, 3]  # not 9: one retrying interceptor, not two
        assert result["s"].attempts == 3
        assert [type(ic) for ic in engine.interceptors if isinstance(ic, RetryInterceptor)] == [
            MyRetry
        ]

    def test_a_subclass_and_the_setting_it_replaces_conflict(self):
        class MyRetry(RetryInterceptor):
            pass

        with pytest.raises(ConfigurationError, match=r"retry=.* conflicts with the MyRetry"):
            Engine(interceptors=[MyRetry()], retry=RetryPolicy(attempts=2))

    def test_without_leaves_a_default_out(self):
        engine = Engine(store=MemoryStore(), without={"checkpoint", "retry"})

        names = [ic.name for ic in engine.interceptors]

        assert "checkpoint" not in names
        assert "retry" not in names
        assert "timeout" in names

    @pytest.mark.parametrize("bad", ["retry", 3, ["retries"]])
    def test_without_is_checked(self, bad: Any):
        with pytest.raises(ConfigurationError, match="without") as e:
            Engine(without=bad)
        assert e.value.field == "without"

    def test_without_the_breaker_its_registry_stays_empty(self):
        engine = Engine(without={"circuit_breaker"})

        assert list(engine.circuit_breakers) == []


class _Selective:
    """Wraps the stages of runs whose data says so."""

    name = "selective"
    priority = 900

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.wrapped: list[str] = []
        self.called: list[str] = []

    def applies(self, run: RunContext) -> bool:
        self.asked.append(run.run_id)
        return bool(run.data.get("wrap"))

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        self.wrapped.append(spec.name)

        async def wrapped(ctx: StageContext) -> Any:
            self.called.append(ctx.run_id)
            return await call(ctx)

        return wrapped


class TestSelectiveInterceptors:
    def test_applies_is_asked_once_per_run_and_decides_whether_it_wraps(self):
        selective = _Selective()
        assert isinstance(selective, SelectiveInterceptor)
        graph = Pipeline().with_stage("a", noop).with_stage("b", noop, dependencies=("a",)).build()
        engine = Engine(interceptors=[selective])

        run(graph, engine, data={"wrap": False}, run_id="off")
        run(graph, engine, data={"wrap": True}, run_id="on")
        run(graph, engine, data={"wrap": True}, run_id="on-again")

        assert selective.asked == ["off", "on", "on-again"]
        assert selective.called == ["on", "on", "on-again", "on-again"]
        assert selective.wrapped == ["a", "b"]  # composed once, when first needed

    def test_engine_calls_shows_the_chain_with_every_interceptor(self):
        selective = _Selective()
        graph = Pipeline().with_stage("a", noop).build()

        assert Engine(interceptors=[selective]).calls(graph)[0] is not graph["a"].call
