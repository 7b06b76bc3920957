"""Interceptors: priority order, composition once, BaseInterceptor hooks."""

from __future__ import annotations

from typing import Any

import pytest

from stageflow import (
    Engine,
    Interceptor,
    Pipeline,
    Priority,
    StageContext,
    StageOutput,
    StageStatus,
)
from stageflow.interceptors import BaseInterceptor

from ._helpers import noop, run


class _Recorder(BaseInterceptor):
    """Records entering and leaving around the stage call."""

    def __init__(self, log: list[str], name: str, priority: int) -> None:
        super().__init__(name=name, priority=priority)
        self.log = log

    def wrap(self, spec, call):
        async def recorded(ctx):
            self.log.append(f"enter {self.name}")
            try:
                return await call(ctx)
            finally:
                self.log.append(f"exit {self.name}")

        return recorded


class _PassThrough:
    name = "pass"
    priority = 10

    def wrap(self, spec, call):
        return call


class TestInterceptorOrder:
    def test_lower_priority_wraps_outer_and_ties_keep_the_given_order(self):
        log: list[str] = []

        async def stage(ctx):
            log.append("stage")

        engine = Engine(
            interceptors=[
                _Recorder(log, "a500", 500),
                _Recorder(log, "b100", 100),
                _Recorder(log, "c500", 500),
                _Recorder(log, "d100", 100),
                _Recorder(log, "e900", 900),
            ]
        )

        run(Pipeline().with_stage("s", stage).build(), engine)

        mine = {"a500", "b100", "c500", "d100", "e900"}
        assert [ic.name for ic in engine.interceptors if ic.name in mine] == [
            "b100",
            "d100",
            "a500",
            "c500",
            "e900",
        ]
        assert log == [
            "enter b100",
            "enter d100",
            "enter a500",
            "enter c500",
            "enter e900",
            "stage",
            "exit e900",
            "exit c500",
            "exit a500",
            "exit d100",
            "exit b100",
        ]

    def test_negative_priorities_are_outermost(self):
        log: list[str] = []
        engine = Engine(interceptors=[_Recorder(log, "zero", 0), _Recorder(log, "neg", -5)])

        run(Pipeline().with_stage("s", noop).build(), engine)

        assert log[:2] == ["enter neg", "enter zero"]

    def test_builtin_priorities_are_public_and_ordered(self):
        assert [p.name for p in sorted(Priority)] == [
            "TRACING",
            "METRICS",
            "LOGGING",
            "CHECKPOINT",
            "ASSISTANCE",
            "RETRY",
            "CIRCUIT_BREAKER",
            "BUDGET",
            "TIMEOUT",
            "USER",
        ]
        assert Priority.USER == 1000
        assert BaseInterceptor().priority == Priority.USER

    def test_interceptors_are_checked_against_the_protocol(self):
        assert isinstance(_PassThrough(), Interceptor)
        assert isinstance(BaseInterceptor(), Interceptor)


class TestInterceptorComposition:
    def test_with_no_interceptors_the_engine_calls_the_stage_itself(self):
        graph = Pipeline().with_stage("a", noop).with_stage("b", noop).build()

        calls = Engine().calls(graph)

        assert calls[0] is graph.stages[0].call
        assert calls[1] is graph.stages[1].call

    def test_an_interceptor_returning_call_unchanged_adds_nothing(self):
        graph = Pipeline().with_stage("a", noop).build()

        calls = Engine(interceptors=[_PassThrough(), _PassThrough()]).calls(graph)

        assert calls[0] is graph["a"].call

    def test_an_interceptor_applies_only_where_it_wraps(self):
        class OnlyTagged(BaseInterceptor):
            def applies_to(self, spec):
                return "llm" in spec.tags

            async def before(self, ctx):
                return None

        graph = (
            Pipeline().with_stage("plain", noop).with_stage("model", noop, tags=("llm",)).build()
        )

        calls = Engine(interceptors=[OnlyTagged()]).calls(graph)

        assert calls[0] is graph["plain"].call
        assert calls[1] is not graph["model"].call

    def test_a_base_interceptor_overriding_no_hook_adds_nothing(self):
        graph = Pipeline().with_stage("a", noop).build()

        assert Engine(interceptors=[BaseInterceptor()]).calls(graph)[0] is graph["a"].call

    def test_wrap_receives_each_stages_spec_once(self):
        seen: list[str] = []

        class Spy(BaseInterceptor):
            def wrap(self, spec, call):
                seen.append(spec.name)
                return call

        graph = Pipeline().with_stage("a", noop).with_stage("b", noop).build()
        engine = Engine(interceptors=[Spy()])
        run(graph, engine)
        run(graph, engine)

        assert seen == ["a", "b"]

    def test_interceptors_see_a_stage_output_whatever_the_stage_returned(self):
        seen: dict[str, Any] = {}

        class Spy(BaseInterceptor):
            async def after(self, ctx, output):
                seen[ctx.stage] = output

        async def returns_dict(ctx):
            return {"x": 1}

        async def returns_none(ctx):
            return None

        async def returns_output(ctx):
            return StageOutput.skip("later")

        graph = (
            Pipeline()
            .with_stage("d", returns_dict)
            .with_stage("n", returns_none)
            .with_stage("o", returns_output)
            .build()
        )
        result = run(graph, Engine(interceptors=[Spy()]))

        assert all(isinstance(output, StageOutput) for output in seen.values())
        assert seen["d"] == StageOutput.ok(x=1)
        assert seen["n"] == StageOutput.ok()
        assert seen["o"] == StageOutput.skip("later")
        assert result["d"].data == {"x": 1}
        assert result["o"].status is StageStatus.SKIPPED

    def test_a_plain_interceptor_sees_a_stage_output_from_a_sync_stage(self):
        seen: list[object] = []

        class Raw:
            name = "raw"
            priority = 1

            def wrap(self, spec, call):
                async def inner(ctx):
                    output = await call(ctx)
                    seen.append(output)
                    return output

                return inner

        def sync_stage(ctx):
            return {"sync": True}

        run(Pipeline().with_stage("a", sync_stage).build(), Engine(interceptors=[Raw()]))

        assert seen == [StageOutput.ok(sync=True)]


class TestBaseInterceptorHooks:
    def test_before_returning_an_output_short_circuits_the_stage(self):
        calls: list[str] = []

        async def stage(ctx):
            calls.append(ctx.stage)
            return {"fresh": True}

        class Cache(BaseInterceptor):
            async def before(self, ctx):
                return StageOutput.ok(cached=True)

        result = run(Pipeline().with_stage("a", stage).build(), Engine(interceptors=[Cache()]))

        assert calls == []
        assert result["a"].data == {"cached": True}

    def test_before_returning_none_lets_the_stage_run(self):
        class Noop(BaseInterceptor):
            async def before(self, ctx):
                return None

        async def stage(ctx):
            return {"fresh": True}

        result = run(Pipeline().with_stage("a", stage).build(), Engine(interceptors=[Noop()]))

        assert result["a"].data == {"fresh": True}

    def test_after_replaces_the_output(self):
        class Redact(BaseInterceptor):
            async def after(self, ctx, output):
                return StageOutput.ok(**dict.fromkeys(output.data, "***"))

        async def stage(ctx):
            return {"token": "secret"}

        result = run(Pipeline().with_stage("a", stage).build(), Engine(interceptors=[Redact()]))

        assert result["a"].data == {"token": "***"}

    def test_after_returning_none_keeps_the_output(self):
        class Watch(BaseInterceptor):
            async def after(self, ctx, output):
                return None

        async def stage(ctx):
            return {"token": "secret"}

        result = run(Pipeline().with_stage("a", stage).build(), Engine(interceptors=[Watch()]))

        assert result["a"].data == {"token": "secret"}

    def test_after_may_turn_a_success_into_a_failure(self):
        class Guard(BaseInterceptor):
            async def after(self, ctx, output):
                return StageOutput.fail("too long") if len(output.data["text"]) > 3 else None

        async def stage(ctx):
            return {"text": "too long"}

        result = run(Pipeline().with_stage("a", stage).build(), Engine(interceptors=[Guard()]))

        assert result["a"].status is StageStatus.FAILED
        assert result["a"].reason == "too long"

    def test_on_error_may_recover_with_an_output(self):
        seen: list[BaseException] = []

        class Fallback(BaseInterceptor):
            async def on_error(self, ctx, error):
                seen.append(error)
                return StageOutput.ok(fallback=True)

        async def stage(ctx):
            raise ConnectionError("down")

        result = run(Pipeline().with_stage("a", stage).build(), Engine(interceptors=[Fallback()]))

        assert result["a"].data == {"fallback": True}
        assert [type(e) for e in seen] == [ConnectionError]

    def test_on_error_returning_none_reraises_the_original_error(self):
        error = ConnectionError("down")

        class Observe(BaseInterceptor):
            async def on_error(self, ctx, error):
                return None

        async def stage(ctx):
            raise error

        result = run(Pipeline().with_stage("a", stage).build(), Engine(interceptors=[Observe()]))

        assert result["a"].error is error

    def test_after_is_not_called_when_the_stage_raised(self):
        calls: list[str] = []

        class Both(BaseInterceptor):
            async def after(self, ctx, output):
                calls.append("after")

            async def on_error(self, ctx, error):
                calls.append("on_error")

        async def stage(ctx):
            raise ValueError

        run(Pipeline().with_stage("a", stage).build(), Engine(interceptors=[Both()]))

        assert calls == ["on_error"]

    def test_applies_to_false_leaves_the_call_untouched(self):
        calls: list[str] = []

        class Never(BaseInterceptor):
            def applies_to(self, spec):
                return False

            async def before(self, ctx):
                calls.append("before")

        graph = Pipeline().with_stage("a", noop).build()
        engine = Engine(interceptors=[Never()])

        assert engine.calls(graph)[0] is graph["a"].call
        run(graph, engine)
        assert calls == []

    def test_hooks_not_overridden_are_never_called(self, monkeypatch):
        called: list[str] = []

        async def spy_before(self, ctx):
            called.append("before")

        async def spy_on_error(self, ctx, error):
            called.append("on_error")

        monkeypatch.setattr(BaseInterceptor, "before", spy_before)
        monkeypatch.setattr(BaseInterceptor, "on_error", spy_on_error)

        class OnlyAfter(BaseInterceptor):
            async def after(self, ctx, output):
                called.append("after")

        async def stage(ctx):
            return {"x": 1}

        run(Pipeline().with_stage("a", stage).build(), Engine(interceptors=[OnlyAfter()]))

        assert called == ["after"]

    def test_hooks_receive_the_stage_context(self):
        seen: list[tuple[str, str]] = []

        class Spy(BaseInterceptor):
            async def before(self, ctx: StageContext):
                seen.append(("before", ctx.stage))

            async def after(self, ctx: StageContext, output):
                seen.append(("after", ctx.stage))

        run(Pipeline().with_stage("a", noop).build(), Engine(interceptors=[Spy()]))

        assert seen == [("before", "a"), ("after", "a")]

    def test_name_defaults_to_the_class_name_and_may_be_given(self):
        class Audit(BaseInterceptor):
            pass

        assert Audit().name == "Audit"
        assert Audit(name="audit-2", priority=5).name == "audit-2"
        assert Audit(priority=5).priority == 5
        assert repr(Audit(priority=5)) == "<Audit 'Audit' priority=5>"

    def test_a_class_level_name_and_priority_are_kept(self):
        class Audit(BaseInterceptor):
            name = "audit"
            priority = 42

        assert (Audit().name, Audit().priority) == ("audit", 42)

    def test_the_wrapped_call_is_named_after_interceptor_and_stage(self):
        class Audit(BaseInterceptor):
            async def before(self, ctx):
                return None

        graph = Pipeline().with_stage("fetch", noop).build()

        call = Engine(interceptors=[Audit()]).calls(graph)[0]

        assert call.__qualname__ == "Audit(fetch)"


@pytest.mark.parametrize("priority", [Priority.TRACING, 0, -1, 10**9])
def test_any_int_priority_is_accepted(priority):
    mine = BaseInterceptor(priority=priority)
    assert mine in Engine(interceptors=[mine]).interceptors
