"""Dynamic graphs: ``when=`` conditions, ROUTE stages and the join rule (virtual time).

The durable tests run each scenario on the in-memory store and on a real SQLite file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from stageflow import (
    Engine,
    GraphError,
    InvalidOptionError,
    Pipeline,
    RetryPolicy,
    RunStatus,
    StageContext,
    StageKind,
    StageOutput,
    StageStatus,
)
from stageflow._scheduler import CONDITION_FALSE
from stageflow.adapters.memory import MemoryStore
from stageflow.errors import RouteError
from stageflow.interceptors import BaseInterceptor
from stageflow.testing import RecordingSink, run_virtual

from ._helpers import durably, failing, noop, run, run_recorded, sleeper

NOT_REACHED = "not reached: no path into it was taken"


class Calls:
    """Stages and predicates that count their calls."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)

    def count(self, name: str) -> int:
        self.counts[name] = self[name] + 1
        return self.counts[name]

    def stage(self, name: str, seconds: float = 0.0, **data: Any) -> Any:
        async def stage(ctx: StageContext) -> dict[str, Any]:
            self.count(name)
            await asyncio.sleep(seconds)
            return {"name": name, **data}

        return stage

    def flaky(self, name: str, failures: int = 1) -> Any:
        """A stage that fails on its first ``failures`` calls, then completes."""

        async def stage(ctx: StageContext) -> dict[str, Any]:
            if self.count(name) <= failures:
                raise ConnectionError(f"{name} down")
            return {"name": name}

        return stage

    def predicate(self, name: str, *answers: bool) -> Callable[[StageContext], bool]:
        """A condition answering ``answers`` in turn (the last one from then on)."""

        def predicate(ctx: StageContext) -> bool:
            n = self.count(name)
            return answers[min(n, len(answers)) - 1]

        return predicate

    def router(self, name: str, *choices: tuple[str, ...], **data: Any) -> Any:
        """A ROUTE stage choosing ``choices`` in turn (the last one from then on)."""

        async def stage(ctx: StageContext) -> StageOutput:
            n = self.count(name)
            return StageOutput.route(*choices[min(n, len(choices)) - 1], **data)

        return stage


def statuses(result: Any) -> dict[str, str]:
    return {name: str(r.status) for name, r in result.stages.items()}


# --------------------------------------------------------------------------- conditions


class TestConditionFalse:
    def test_a_false_condition_skips_the_stage_with_reason_condition_false(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage("a", noop)
            .with_stage("b", calls.stage("b"), dependencies=("a",), when=lambda ctx: False)
            .build()
        )

        result = run(graph)

        assert result.ok
        assert result["b"].status is StageStatus.SKIPPED
        assert result["b"].reason == CONDITION_FALSE == "condition false"
        assert calls["b"] == 0

    def test_a_stage_skipped_by_its_condition_counts_no_attempt(self):
        graph = Pipeline().with_stage("b", noop, when=lambda ctx: False).build()

        result = run(graph)

        assert result["b"].attempts == 0
        assert result["b"].started is None
        assert result["b"].duration is None

    def test_a_false_condition_is_not_retried(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage(
                "b",
                calls.stage("b"),
                when=calls.predicate("when", False),
                retry=RetryPolicy(attempts=3, backoff="fixed", base=1),
            )
            .build()
        )

        result, sink = run_recorded(graph)

        assert result["b"].status is StageStatus.SKIPPED
        assert result["b"].attempts == 0
        assert (calls["when"], calls["b"]) == (1, 0)
        assert "stage.retrying" not in sink.types()

    def test_a_false_condition_emits_no_stage_started_only_stage_skipped(self):
        graph = Pipeline().with_stage("a", noop).with_stage("b", noop, when=lambda c: False)

        _, sink = run_recorded(graph.build())

        assert sink.types("b") == ["stage.skipped"]
        (skipped,) = sink.for_stage("b")
        assert skipped.data["reason"] == CONDITION_FALSE
        assert skipped.attempt == 0
        assert "duration" not in skipped.data

    def test_the_condition_is_asked_before_the_interceptor_chain(self):
        entered: list[str] = []

        class Spy(BaseInterceptor):
            async def before(self, ctx: StageContext) -> None:
                entered.append(ctx.stage)

        graph = (
            Pipeline()
            .with_stage("yes", noop, when=lambda ctx: True)
            .with_stage("no", noop, when=lambda ctx: False)
            .build()
        )

        result = run(graph, Engine(interceptors=[Spy()]))

        assert result["no"].reason == CONDITION_FALSE
        assert entered == ["yes"]

    def test_the_descendants_of_a_false_condition_are_skipped_as_not_reached(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage("b", calls.stage("b"), when=lambda ctx: False)
            .with_stage("c", calls.stage("c"), dependencies=("b",))
            .with_stage("d", calls.stage("d"), dependencies=("c",))
            .build()
        )

        result = run(graph)

        assert result.ok
        assert statuses(result) == {"b": "skipped", "c": "skipped", "d": "skipped"}
        assert result["c"].reason == result["d"].reason == NOT_REACHED
        assert calls.counts == {}

    def test_a_false_condition_on_a_root_stage_leaves_its_siblings_alone(self):
        graph = (
            Pipeline()
            .with_stage("off", noop, when=lambda ctx: ctx.data["enabled"])
            .with_stage("other", sleeper(1, done=True))
            .build()
        )

        result = run(graph, data={"enabled": False})

        assert result["off"].reason == CONDITION_FALSE
        assert result["other"].data == {"done": True}


class TestConditionTrue:
    def test_a_true_condition_runs_the_stage(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage("a", noop)
            .with_stage("b", calls.stage("b", x=1), dependencies=("a",), when=lambda c: True)
            .build()
        )

        result, sink = run_recorded(graph)

        assert result["b"].status is StageStatus.COMPLETED
        assert result["b"].data == {"name": "b", "x": 1}
        assert result["b"].attempts == 1
        assert sink.types("b") == ["stage.started", "stage.completed"]
        assert calls["b"] == 1

    def test_a_truthy_value_counts_as_true_and_a_falsy_one_as_false(self):
        graph = (
            Pipeline()
            .with_stage("yes", noop, when=lambda ctx: [1])  # type: ignore[arg-type,return-value]
            .with_stage("no", noop, when=lambda ctx: 0)  # type: ignore[arg-type,return-value]
            .build()
        )

        result = run(graph)

        assert result["yes"].status is StageStatus.COMPLETED
        assert result["no"].reason == CONDITION_FALSE

    @pytest.mark.parametrize(("score", "expected"), [(0.9, "completed"), (0.1, "skipped")])
    def test_the_condition_sees_the_stages_inputs(self, score, expected):
        seen: list[Any] = []

        def confident(ctx: StageContext) -> bool:
            seen.append(dict(ctx.inputs["classify"]))
            return ctx.inputs.get_from("classify", "score") > 0.5

        graph = (
            Pipeline()
            .with_stage("classify", sleeper(2, score=score))
            .with_stage("answer", noop, dependencies=("classify",), when=confident)
            .build()
        )

        result = run(graph)

        assert str(result["answer"].status) == expected
        assert seen == [{"score": score}]

    def test_the_condition_is_asked_once_when_the_last_dependency_ended(self):
        asked: list[float] = []

        def when(ctx: StageContext) -> bool:
            asked.append(asyncio.get_running_loop().time())
            return True

        graph = (
            Pipeline()
            .with_stage("fast", sleeper(1))
            .with_stage("slow", sleeper(4))
            .with_stage("join", sleeper(1), dependencies=("fast", "slow"), when=when)
            .build()
        )

        result = run(graph)

        assert asked == [pytest.approx(4)]
        assert result["join"].started == pytest.approx(4)


class TestConditionRaising:
    def test_a_condition_that_raises_fails_the_stage_with_its_error(self):
        calls = Calls()

        def broken(ctx: StageContext) -> bool:
            raise KeyError("flag")

        graph = Pipeline().with_stage("b", calls.stage("b"), when=broken).build()

        result = run(graph)

        assert result.status is RunStatus.FAILED
        assert result["b"].status is StageStatus.FAILED
        assert isinstance(result["b"].error, KeyError)
        assert result["b"].reason == "KeyError: 'flag'"
        assert calls["b"] == 0

    def test_the_dependents_of_a_raising_condition_are_skipped_as_after_a_failure(self):
        def broken(ctx: StageContext) -> bool:
            raise ValueError("bad flag")

        graph = (
            Pipeline()
            .with_stage("b", noop, when=broken)
            .with_stage("c", noop, dependencies=("b",))
            .with_stage("other", sleeper(1))
            .build()
        )

        result = run(graph, Engine(fail_fast=False))

        assert result.status is RunStatus.FAILED
        assert result["c"].status is StageStatus.SKIPPED
        assert result["c"].reason == "dependency 'b' failed"
        assert result["other"].ok


class TestDurableConditions:
    def test_a_false_decision_is_stored_as_a_skip_with_its_reason(self, open_store, tmp_path):
        graph = (
            Pipeline("p")
            .with_stage("a", sleeper(1))
            .with_stage("b", noop, dependencies=("a",), when=lambda ctx: False)
            .build()
        )

        async def scenario(store: Any) -> Any:
            result = await Engine(store=store).run(graph, run_id="r1")
            return result, await store.stage_records("r1")

        result, records = durably(open_store, scenario)

        assert result.ok
        record = records["b"]
        assert (record.status, record.reason, record.attempts) == (
            StageStatus.SKIPPED,
            CONDITION_FALSE,
            0,
        )

    def test_the_false_decision_is_stored_before_a_dependent_starts(self, open_store):
        seen: list[Any] = []
        graph = (
            Pipeline("p")
            .with_stage("b", noop, when=lambda ctx: False)
            .with_stage("c", noop)
            .with_stage("join", noop, dependencies=("b", "c"))
            .build()
        )

        async def scenario(store: Any) -> Any:
            class Look(BaseInterceptor):
                async def before(self, ctx: StageContext) -> None:
                    if ctx.stage == "join":
                        seen.append(sorted(await store.stage_records("r1")))

            return await Engine(store=store, interceptors=[Look()]).run(graph, run_id="r1")

        result = durably(open_store, scenario)

        assert result["join"].ok
        assert seen == [["b", "c"]]

    def test_on_resume_a_stored_false_condition_is_not_asked_again(self, open_store):
        calls = Calls()
        graph = (
            Pipeline("p")
            .with_stage("a", calls.stage("a", 1))
            # false the first time it is asked, true should it ever be asked again
            .with_stage(
                "b",
                calls.stage("b"),
                dependencies=("a",),
                when=calls.predicate("when", False, True),
            )
            .with_stage("c", calls.flaky("c"), dependencies=("a",))
            .build()
        )

        async def scenario(store: Any) -> Any:
            first = await Engine(store=store, fail_fast=False).run(graph, run_id="r1")
            second = await Engine(store=store).resume("r1", graph)
            return first, second

        first, second = durably(open_store, scenario)

        assert first.status is RunStatus.FAILED
        assert second.ok
        assert second["b"].status is StageStatus.SKIPPED
        assert second["b"].reason == CONDITION_FALSE
        assert calls.counts == {"a": 1, "when": 1, "c": 2}

    def test_on_resume_the_descendants_of_a_stored_false_condition_stay_not_reached(
        self, open_store
    ):
        calls = Calls()
        graph = (
            Pipeline("p")
            .with_stage("b", calls.stage("b"), when=calls.predicate("when", False, True))
            .with_stage("after", calls.stage("after"), dependencies=("b",))
            .with_stage("c", calls.flaky("c"))
            .build()
        )

        async def scenario(store: Any) -> Any:
            await Engine(store=store, fail_fast=False).run(graph, run_id="r1")
            return await Engine(store=store).resume("r1", graph)

        second = durably(open_store, scenario)

        assert second.ok
        assert second["after"].reason == NOT_REACHED
        assert calls.counts == {"when": 1, "c": 2}

    def test_on_resume_a_true_condition_of_a_stage_that_failed_is_asked_again(self, open_store):
        calls = Calls()
        graph = (
            Pipeline("p")
            .with_stage("b", calls.flaky("b"), when=calls.predicate("when", True))
            .build()
        )

        async def scenario(store: Any) -> Any:
            await Engine(store=store).run(graph, run_id="r1")
            return await Engine(store=store).resume("r1", graph)

        second = durably(open_store, scenario)

        assert second.ok
        assert calls.counts == {"when": 2, "b": 2}  # a true condition is not stored by itself

    def test_on_resume_a_completed_stage_with_a_condition_is_not_asked_again(self, open_store):
        calls = Calls()
        graph = (
            Pipeline("p")
            .with_stage("b", calls.stage("b"), when=calls.predicate("when", True, False))
            .with_stage("c", calls.flaky("c"), dependencies=("b",))
            .build()
        )

        async def scenario(store: Any) -> Any:
            await Engine(store=store).run(graph, run_id="r1")
            return await Engine(store=store).resume("r1", graph)

        second = durably(open_store, scenario)

        assert second.ok
        assert second["b"].status is StageStatus.COMPLETED
        assert calls.counts == {"when": 1, "b": 1, "c": 2}


# --------------------------------------------------------------------------- routes


def triage(calls: Calls, *choices: tuple[str, ...], fail_fast: bool = True) -> Any:
    """classify -> fast | careful (routes), classify -> audit (a plain successor)."""
    return (
        Pipeline("triage")
        .with_stage(
            "classify",
            calls.router("classify", *choices, score=0.2),
            StageKind.ROUTE,
            routes=("fast", "careful"),
        )
        .with_stage("fast", calls.stage("fast"), dependencies=("classify",))
        .with_stage("careful", calls.stage("careful"), dependencies=("classify",))
        .with_stage("audit", calls.stage("audit"), dependencies=("classify",))
        .build()
    )


class TestRouteChoices:
    def test_the_chosen_successor_runs_and_the_other_is_skipped_not_routed(self):
        calls = Calls()

        result = run(triage(calls, ("fast",)))

        assert result.ok
        assert result["fast"].status is StageStatus.COMPLETED
        assert result["careful"].status is StageStatus.SKIPPED
        assert result["careful"].reason == "not routed by 'classify'"
        assert result["careful"].attempts == 0
        assert (calls["fast"], calls["careful"]) == (1, 0)

    def test_a_route_not_chosen_is_skipped_even_when_another_dependency_completed(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage(
                "classify",
                lambda ctx: StageOutput.route("fast"),
                StageKind.ROUTE,
                routes=("fast", "careful"),
            )
            .with_stage("context", noop)
            .with_stage("fast", noop, dependencies=("classify",))
            .with_stage("careful", calls.stage("careful"), dependencies=("classify", "context"))
            .with_stage("after", calls.stage("after"), dependencies=("careful",))
            .build()
        )

        result = run(graph)

        assert result.ok
        assert result["careful"].reason == "not routed by 'classify'"
        assert result["after"].reason == "not reached: no path into it was taken"
        assert (calls["careful"], calls["after"]) == (0, 0)

    def test_the_route_stage_completes_with_its_data_and_says_where_it_routed(self):
        result = run(triage(Calls(), ("careful",)))

        assert result["classify"].status is StageStatus.COMPLETED
        assert result["classify"].data == {"score": 0.2}
        assert result["classify"].reason == "routed to careful"

    def test_the_chosen_successor_sees_the_route_stages_data(self):
        seen: list[Any] = []

        async def fast(ctx: StageContext) -> None:
            seen.append(ctx.inputs.get_from("classify", "score"))

        graph = (
            Pipeline()
            .with_stage(
                "classify",
                lambda ctx: StageOutput.route("fast", score=0.7),
                StageKind.ROUTE,
                routes=("fast", "careful"),
            )
            .with_stage("fast", fast, dependencies=("classify",))
            .with_stage("careful", noop, dependencies=("classify",))
            .build()
        )

        run(graph)

        assert seen == [0.7]

    def test_several_targets_may_be_chosen(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage(
                "fan",
                calls.router("fan", ("a", "c")),
                StageKind.ROUTE,
                routes=("a", "b", "c"),
            )
            .with_stage("a", calls.stage("a"), dependencies=("fan",))
            .with_stage("b", calls.stage("b"), dependencies=("fan",))
            .with_stage("c", calls.stage("c"), dependencies=("fan",))
            .build()
        )

        result = run(graph)

        assert result.with_status("completed") == ("fan", "a", "c")
        assert result["b"].reason == "not routed by 'fan'"
        assert result["fan"].reason == "routed to a, c"
        assert calls.counts == {"fan": 1, "a": 1, "c": 1}

    def test_choosing_every_route_runs_every_successor(self):
        result = run(triage(Calls(), ("fast", "careful")))

        assert result.with_status("skipped") == ()
        assert result.ok

    def test_a_plain_successor_not_in_routes_always_runs(self):
        for choice in ("fast", "careful"):
            calls = Calls()
            result = run(triage(calls, (choice,)))
            assert result["audit"].status is StageStatus.COMPLETED
            assert calls["audit"] == 1

    def test_the_skipped_route_event_carries_its_reason_and_no_start(self):
        _, sink = run_recorded(triage(Calls(), ("fast",)))

        assert sink.types("careful") == ["stage.skipped"]
        assert sink.for_stage("careful")[0].data["reason"] == "not routed by 'classify'"

    def test_the_descendants_of_an_unrouted_successor_are_skipped_as_not_reached(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage(
                "classify",
                calls.router("classify", ("fast",)),
                StageKind.ROUTE,
                routes=("fast", "careful"),
            )
            .with_stage("fast", calls.stage("fast"), dependencies=("classify",))
            .with_stage("careful", calls.stage("careful"), dependencies=("classify",))
            .with_stage("review", calls.stage("review"), dependencies=("careful",))
            .with_stage("publish", calls.stage("publish"), dependencies=("review",))
            .build()
        )

        result = run(graph)

        assert result.ok
        assert result["review"].reason == result["publish"].reason == NOT_REACHED
        assert calls.counts == {"classify": 1, "fast": 1}

    def test_a_route_chosen_under_retry_is_the_successful_attempts_choice(self):
        calls = Calls()

        async def classify(ctx: StageContext) -> StageOutput:
            if calls.count("classify") == 1:
                raise ConnectionError("model down")
            return StageOutput.route("careful")

        graph = (
            Pipeline()
            .with_stage(
                "classify",
                classify,
                StageKind.ROUTE,
                routes=("fast", "careful"),
                retry=RetryPolicy(attempts=2, backoff="fixed", base=1),
            )
            .with_stage("fast", noop, dependencies=("classify",))
            .with_stage("careful", noop, dependencies=("classify",))
            .build()
        )

        result = run(graph)

        assert result["classify"].attempts == 2
        assert result.with_status("completed") == ("classify", "careful")


class TestRouteErrors:
    @pytest.mark.parametrize(
        "returned",
        [StageOutput.route(), StageOutput(), {"score": 1}, None],
        ids=["route()", "StageOutput()", "a dict", "None"],
    )
    def test_choosing_no_route_fails_the_stage_with_a_route_error(self, returned):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage("classify", lambda ctx: returned, StageKind.ROUTE, routes=("a", "b"))
            .with_stage("a", calls.stage("a"), dependencies=("classify",))
            .with_stage("b", calls.stage("b"), dependencies=("classify",))
            .build()
        )

        result = run(graph, Engine(fail_fast=False))

        assert result.status is RunStatus.FAILED
        error = result["classify"].error
        assert isinstance(error, RouteError)
        assert (error.stage, error.chosen, error.routes) == ("classify", (), ("a", "b"))
        assert "'classify'" in str(error)
        assert "chose no route" in str(error)
        assert result["a"].reason == result["b"].reason == "dependency 'classify' failed"
        assert calls.counts == {}

    @pytest.mark.parametrize("durable", [False, True], ids=["no store", "memory store"])
    def test_a_stray_choice_is_an_attempts_failure_that_retry_calls_again(self, durable):
        answers = [StageOutput.route("elsewhere"), StageOutput.ok(), StageOutput.route("a")]
        sink = RecordingSink()
        graph = (
            Pipeline()
            .with_stage(
                "classify",
                lambda ctx: answers[ctx.attempt - 1],
                StageKind.ROUTE,
                routes=("a", "b"),
                retry=RetryPolicy(attempts=3, backoff="fixed", base=1),
            )
            .with_stage("a", noop, dependencies=("classify",))
            .with_stage("b", noop, dependencies=("classify",))
            .build()
        )
        engine = Engine(sink=sink, store=MemoryStore() if durable else None)

        result = run_virtual(engine.run(graph))

        assert result.ok
        assert result["classify"].attempts == 3
        assert result["classify"].reason == "routed to a"
        assert [e.data["error"] for e in sink.of_type("stage.retrying")] == [
            "RouteError",
            "RouteError",
        ]

    def test_choosing_a_stage_outside_its_routes_fails_naming_stage_and_target(self):
        result = run(triage(Calls(), ("elsewhere",)))

        error = result["classify"].error
        assert isinstance(error, RouteError)
        assert error.chosen == ("elsewhere",)
        assert "'classify'" in str(error)
        assert "'elsewhere'" in str(error)
        assert result["classify"].status is StageStatus.FAILED

    def test_choosing_a_successor_that_is_not_one_of_its_routes_is_a_stray_target(self):
        calls = Calls()

        result = run(triage(calls, ("fast", "audit")), Engine(fail_fast=False))

        error = result["classify"].error
        assert isinstance(error, RouteError)
        assert "'audit'" in str(error)
        assert calls["fast"] == calls["audit"] == 0

    def test_a_route_stage_that_raises_fails_the_run(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage(
                "classify", failing(1, "model down"), StageKind.ROUTE, routes=("fast", "careful")
            )
            .with_stage("fast", calls.stage("fast"), dependencies=("classify",))
            .with_stage("careful", calls.stage("careful"), dependencies=("classify",))
            .with_stage("audit", calls.stage("audit"), dependencies=("classify",))
            .build()
        )

        result = run(graph)

        assert result.status is RunStatus.FAILED
        assert result["classify"].status is StageStatus.FAILED
        assert isinstance(result["classify"].error, ValueError)
        assert result.with_status("completed") == ()
        assert calls.counts == {}

    def test_without_fail_fast_the_descendants_of_a_raising_route_stage_skip(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage(
                "classify", failing(1, "model down"), StageKind.ROUTE, routes=("fast", "careful")
            )
            .with_stage("fast", calls.stage("fast"), dependencies=("classify",))
            .with_stage("careful", calls.stage("careful"), dependencies=("classify",))
            .with_stage("audit", calls.stage("audit"), dependencies=("classify",))
            .with_stage("after", calls.stage("after"), dependencies=("fast",))
            .with_stage("other", calls.stage("other", 2))
            .build()
        )

        result = run(graph, Engine(fail_fast=False))

        assert result.status is RunStatus.FAILED
        assert result["classify"].status is StageStatus.FAILED
        for name in ("fast", "careful", "audit"):
            assert result[name].reason == "dependency 'classify' failed"
        assert result["after"].reason == "dependency 'fast' was skipped"
        assert result["other"].ok
        assert calls.counts == {"other": 1}

    def test_a_route_stage_that_skips_itself_skips_every_successor(self):
        graph = (
            Pipeline()
            .with_stage(
                "classify",
                lambda ctx: StageOutput.skip("no input"),
                StageKind.ROUTE,
                routes=("fast",),
            )
            .with_stage("fast", noop, dependencies=("classify",))
            .with_stage("audit", noop, dependencies=("classify",))
            .build()
        )

        result = run(graph)

        assert result["classify"].reason == "no input"
        assert (
            result["fast"].reason == result["audit"].reason == "dependency 'classify' was skipped"
        )


class TestDurableRoutes:
    def test_the_choice_is_stored_as_the_route_stages_reason(self, open_store):
        graph = triage(Calls(), ("careful",))

        async def scenario(store: Any) -> Any:
            await Engine(store=store).run(graph, run_id="r1")
            return await store.stage_records("r1")

        records = durably(open_store, scenario)

        assert records["classify"].status is StageStatus.COMPLETED
        assert records["classify"].reason == "routed to careful"

    def test_a_resume_after_the_route_completed_does_not_route_again(self, open_store):
        calls = Calls()
        graph = (
            Pipeline("triage")
            .with_stage(
                "classify",
                # fast the first time; careful, should it ever be asked again
                calls.router("classify", ("fast",), ("careful",), score=0.2),
                StageKind.ROUTE,
                routes=("fast", "careful"),
            )
            .with_stage("fast", calls.stage("fast"), dependencies=("classify",))
            .with_stage("careful", calls.stage("careful"), dependencies=("classify",))
            .with_stage("report", calls.flaky("report"), dependencies=("fast",))
            .build()
        )

        async def scenario(store: Any) -> Any:
            first = await Engine(store=store).run(graph, run_id="r1")
            sink = RecordingSink()
            second = await Engine(store=store, sink=sink).resume("r1", graph)
            return first, second, sink

        first, second, sink = durably(open_store, scenario)

        assert first.status is RunStatus.FAILED
        assert second.ok
        assert calls.counts == {"classify": 1, "fast": 1, "report": 2}
        assert second["classify"].reason == "routed to fast"
        assert second["classify"].data == {"score": 0.2}
        assert second["careful"].reason == "not routed by 'classify'"
        assert "stage.restored" in sink.types("classify")

    def test_a_route_stage_that_raised_runs_again_on_resume_and_routes(self, open_store):
        calls = Calls()

        async def classify(ctx: StageContext) -> StageOutput:
            if calls.count("classify") == 1:
                raise ConnectionError("model down")
            return StageOutput.route("careful")

        graph = (
            Pipeline("triage")
            .with_stage("classify", classify, StageKind.ROUTE, routes=("fast", "careful"))
            .with_stage("fast", calls.stage("fast"), dependencies=("classify",))
            .with_stage("careful", calls.stage("careful"), dependencies=("classify",))
            .build()
        )

        async def scenario(store: Any) -> Any:
            first = await Engine(store=store).run(graph, run_id="r1")
            between = await store.stage_records("r1")
            second = await Engine(store=store).resume("r1", graph)
            return first, between, second

        first, between, second = durably(open_store, scenario)

        assert first.status is RunStatus.FAILED
        assert "classify" not in between  # a failure is never stored as an outcome
        assert second.ok
        assert second["classify"].reason == "routed to careful"
        assert calls.counts == {"classify": 2, "careful": 1}

    def test_a_resumed_route_gives_the_result_of_an_uninterrupted_run(self, open_store):
        def graph_of(calls: Calls) -> Any:
            return (
                Pipeline("triage")
                .with_stage(
                    "classify",
                    calls.router("classify", ("careful",)),
                    StageKind.ROUTE,
                    routes=("fast", "careful"),
                )
                .with_stage("fast", calls.stage("fast"), dependencies=("classify",))
                .with_stage("careful", calls.flaky("careful"), dependencies=("classify",))
                .with_stage("join", calls.stage("join"), dependencies=("fast", "careful"))
                .build()
            )

        plain = run(graph_of(Calls()), Engine(retry=RetryPolicy(attempts=2, base=0)))
        calls = Calls()
        graph = graph_of(calls)

        async def scenario(store: Any) -> Any:
            await Engine(store=store).run(graph, run_id="r1")
            return await Engine(store=store).resume("r1", graph)

        resumed = durably(open_store, scenario)

        assert statuses(resumed) == statuses(plain)
        assert {n: dict(r.data) for n, r in resumed.stages.items()} == {
            n: dict(r.data) for n, r in plain.stages.items()
        }
        assert calls.counts == {"classify": 1, "careful": 2, "join": 1}


# --------------------------------------------------------------------------- joins


def diamond(calls: Calls, *choices: tuple[str, ...], **join_options: Any) -> Any:
    """classify -> fast | careful -> join."""
    return (
        Pipeline()
        .with_stage(
            "classify",
            calls.router("classify", *choices),
            StageKind.ROUTE,
            routes=("fast", "careful"),
        )
        .with_stage("fast", calls.stage("fast", 1), dependencies=("classify",))
        .with_stage("careful", calls.stage("careful", 3), dependencies=("classify",))
        .with_stage("join", calls.stage("join"), dependencies=("fast", "careful"), **join_options)
        .with_stage("after", calls.stage("after"), dependencies=("join",))
        .build()
    )


class TestJoins:
    @pytest.mark.parametrize("choice", ["fast", "careful"])
    def test_a_join_of_a_taken_and_an_untaken_branch_runs_once(self, choice):
        calls = Calls()

        result = run(diamond(calls, (choice,)))

        assert result.ok
        assert result["join"].status is StageStatus.COMPLETED
        assert result["after"].status is StageStatus.COMPLETED
        assert calls["join"] == 1

    def test_a_join_of_both_branches_taken_runs_once_after_both(self):
        calls = Calls()

        result = run(diamond(calls, ("fast", "careful")))

        assert calls["join"] == 1
        assert result["join"].started == pytest.approx(3)

    def test_a_join_sees_the_taken_branch_and_not_the_untaken_one(self):
        seen: list[Any] = []

        async def join(ctx: StageContext) -> None:
            seen.append((sorted(ctx.inputs), ctx.inputs.get_from("careful", "name", None)))

        graph = (
            Pipeline()
            .with_stage(
                "classify",
                lambda ctx: StageOutput.route("fast"),
                StageKind.ROUTE,
                routes=("fast", "careful"),
            )
            .with_stage("fast", sleeper(1, name="fast"), dependencies=("classify",))
            .with_stage("careful", sleeper(1, name="careful"), dependencies=("classify",))
            .with_stage("join", join, dependencies=("fast", "careful"))
            .build()
        )

        run(graph)

        assert seen == [(["fast"], None)]

    def test_a_join_of_two_untaken_branches_is_skipped_and_so_are_its_descendants(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage("fan", calls.router("fan", ("c",)), StageKind.ROUTE, routes=("a", "b", "c"))
            .with_stage("a", calls.stage("a"), dependencies=("fan",))
            .with_stage("b", calls.stage("b"), dependencies=("fan",))
            .with_stage("c", calls.stage("c"), dependencies=("fan",))
            .with_stage("join", calls.stage("join"), dependencies=("a", "b"))
            .with_stage("after", calls.stage("after"), dependencies=("join",))
            .build()
        )

        result = run(graph)

        assert result.ok
        assert result["join"].status is StageStatus.SKIPPED
        assert result["join"].reason == result["after"].reason == NOT_REACHED
        assert calls.counts == {"fan": 1, "c": 1}

    def test_a_join_waits_for_the_last_dependency_even_when_it_is_not_taken(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage("quick", calls.stage("quick", 1))
            .with_stage("slow", sleeper(5))
            .with_stage("maybe", noop, dependencies=("slow",), when=lambda ctx: False)
            .with_stage("join", calls.stage("join"), dependencies=("quick", "maybe"))
            .build()
        )

        result = run(graph)

        assert result["join"].status is StageStatus.COMPLETED
        assert result["join"].started == pytest.approx(5)

    def test_an_untaken_branch_several_stages_long_still_lets_the_join_run(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage(
                "classify",
                calls.router("classify", ("fast",)),
                StageKind.ROUTE,
                routes=("fast", "careful"),
            )
            .with_stage("fast", calls.stage("fast", 10), dependencies=("classify",))
            .with_stage("careful", calls.stage("careful"), dependencies=("classify",))
            .with_stage("review", calls.stage("review"), dependencies=("careful",))
            .with_stage("join", calls.stage("join"), dependencies=("fast", "review"))
            .build()
        )

        result = run(graph)

        assert result["review"].reason == NOT_REACHED
        assert result["join"].status is StageStatus.COMPLETED
        assert result["join"].started == pytest.approx(10)
        assert calls["join"] == 1

    def test_a_failed_dependency_still_skips_the_join(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage(
                "classify",
                calls.router("classify", ("fast",)),
                StageKind.ROUTE,
                routes=("fast", "careful"),
            )
            .with_stage("fast", failing(1), dependencies=("classify",))
            .with_stage("careful", calls.stage("careful"), dependencies=("classify",))
            .with_stage("join", calls.stage("join"), dependencies=("fast", "careful"))
            .with_stage("after", calls.stage("after"), dependencies=("join",))
            .build()
        )

        result = run(graph, Engine(fail_fast=False))

        assert result.status is RunStatus.FAILED
        assert result["join"].reason == "dependency 'fast' failed"
        assert result["after"].reason == "dependency 'join' was skipped"
        assert calls.counts == {"classify": 1}

    def test_a_failed_dependency_skips_the_join_even_beside_a_completed_one(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage("bad", failing(1))
            .with_stage("good", calls.stage("good"))
            .with_stage("maybe", noop, when=lambda ctx: False)
            .with_stage("join", calls.stage("join"), dependencies=("bad", "good", "maybe"))
            .build()
        )

        result = run(graph, Engine(fail_fast=False))

        assert result["join"].reason == "dependency 'bad' failed"
        assert calls["join"] == 0

    def test_an_optional_failed_dependency_does_not_skip_a_join_with_a_taken_path(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage("bad", failing(1))
            .with_stage("good", calls.stage("good"))
            .with_stage("maybe", noop, when=lambda ctx: False)
            .with_stage(
                "join",
                calls.stage("join"),
                dependencies=("bad", "good", "maybe"),
                optional=("bad",),
            )
            .build()
        )

        result = run(graph, Engine(fail_fast=False))

        assert result["join"].status is StageStatus.COMPLETED
        assert calls["join"] == 1

    def test_an_optional_failed_taken_path_beside_an_untaken_one_lets_the_join_run(self):
        seen: list[list[str]] = []

        async def join(ctx: StageContext) -> None:
            seen.append(sorted(ctx.inputs))

        graph = (
            Pipeline()
            .with_stage(
                "classify",
                lambda ctx: StageOutput.route("fast"),
                StageKind.ROUTE,
                routes=("fast", "careful"),
            )
            .with_stage("fast", failing(1), dependencies=("classify",))
            .with_stage("careful", noop, dependencies=("classify",))
            .with_stage("join", join, dependencies=("fast", "careful"), optional=("fast",))
            .build()
        )

        result = run(graph, Engine(fail_fast=False))

        assert result["join"].status is StageStatus.COMPLETED
        assert seen == [[]]  # neither the failed nor the untaken branch has an output

    def test_a_self_skipped_dependency_skips_the_join_as_today(self):
        graph = (
            Pipeline()
            .with_stage("skipper", lambda ctx: StageOutput.skip("nothing"))
            .with_stage("good", noop)
            .with_stage("join", noop, dependencies=("skipper", "good"))
            .build()
        )

        result = run(graph)

        assert result["join"].reason == "dependency 'skipper' was skipped"

    def test_a_condition_false_beside_a_completed_dependency_lets_the_join_run(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage("a", calls.stage("a"), when=lambda ctx: False)
            .with_stage("b", calls.stage("b", 2))
            .with_stage("join", calls.stage("join"), dependencies=("a", "b"))
            .build()
        )

        result = run(graph)

        assert result["a"].reason == CONDITION_FALSE
        assert result["join"].status is StageStatus.COMPLETED
        assert calls.counts == {"b": 1, "join": 1}

    def test_two_condition_false_dependencies_skip_the_join_as_not_reached(self):
        calls = Calls()
        graph = (
            Pipeline()
            .with_stage("a", calls.stage("a"), when=lambda ctx: False)
            .with_stage("b", calls.stage("b"), when=lambda ctx: False)
            .with_stage("join", calls.stage("join"), dependencies=("a", "b"))
            .with_stage("after", calls.stage("after"), dependencies=("join",))
            .build()
        )

        result = run(graph)

        assert result.ok
        assert result["join"].reason == result["after"].reason == NOT_REACHED
        assert calls.counts == {}

    def test_a_join_with_its_own_false_condition_is_skipped_by_it(self):
        calls = Calls()

        result = run(diamond(calls, ("fast",), when=lambda ctx: False))

        assert result["join"].reason == CONDITION_FALSE
        assert result["after"].reason == NOT_REACHED
        assert calls["join"] == 0


# --------------------------------------------------------------------------- bad input


class TestBadConditionsAndRoutes:
    @pytest.mark.parametrize("when", [True, "always", 1, StageOutput], ids=repr)
    def test_a_when_that_is_not_callable_is_refused(self, when):
        with pytest.raises(InvalidOptionError) as caught:
            Pipeline().with_stage("b", noop, when=when)

        error = caught.value
        assert isinstance(error, GraphError)
        assert (error.stage, error.option, error.value) == ("b", "when", when)
        assert "'b'" in str(error)

    def test_an_async_when_is_refused(self):
        async def when(ctx: StageContext) -> bool:
            return True

        with pytest.raises(InvalidOptionError) as caught:
            Pipeline().with_stage("b", noop, when=when)  # type: ignore[arg-type]

        assert (caught.value.stage, caught.value.option, caught.value.value) == ("b", "when", when)
        assert "async" in str(caught.value)

    def test_routes_naming_a_stage_that_is_not_a_successor_are_refused_by_build(self):
        pipeline = (
            Pipeline()
            .with_stage("classify", noop, StageKind.ROUTE, routes=("fast", "other"))
            .with_stage("fast", noop, dependencies=("classify",))
            .with_stage("other", noop)
        )

        with pytest.raises(InvalidOptionError) as caught:
            pipeline.build()

        error = caught.value
        assert isinstance(error, GraphError)
        assert (error.stage, error.option, error.value) == ("classify", "routes", "other")
        assert "'classify'" in str(error)
        assert "'other'" in str(error)
        assert "not a successor" in str(error)

    def test_routes_naming_an_indirect_successor_are_refused(self):
        pipeline = (
            Pipeline()
            .with_stage("classify", noop, StageKind.ROUTE, routes=("later",))
            .with_stage("fast", noop, dependencies=("classify",))
            .with_stage("later", noop, dependencies=("fast",))
        )

        with pytest.raises(InvalidOptionError) as caught:
            pipeline.build()

        assert (caught.value.option, caught.value.value) == ("routes", "later")

    def test_routes_naming_no_stage_at_all_are_refused_by_build(self):
        pipeline = (
            Pipeline()
            .with_stage("classify", noop, StageKind.ROUTE, routes=("fast", "ghost"))
            .with_stage("fast", noop, dependencies=("classify",))
        )

        with pytest.raises(InvalidOptionError) as caught:
            pipeline.build()

        assert (caught.value.stage, caught.value.value) == ("classify", "ghost")
        assert "'ghost'" in str(caught.value)

    def test_routes_on_a_stage_that_is_not_a_route_stage_are_refused(self):
        with pytest.raises(InvalidOptionError) as caught:
            Pipeline().with_stage("classify", noop, routes=("fast",))

        error = caught.value
        assert isinstance(error, GraphError)
        assert (error.stage, error.option, error.value) == ("classify", "routes", ("fast",))
        assert "StageKind.ROUTE" in str(error)

    @pytest.mark.parametrize("routes", [(), "fast", ("fast", "fast")], ids=repr)
    def test_routes_empty_a_bare_str_or_naming_a_stage_twice_are_refused(self, routes):
        with pytest.raises(InvalidOptionError) as caught:
            Pipeline().with_stage("classify", noop, StageKind.ROUTE, routes=routes)

        assert (caught.value.stage, caught.value.option) == ("classify", "routes")
