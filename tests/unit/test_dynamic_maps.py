"""Dynamic graphs: ``with_map`` over a list known at run time (virtual time).

The durable tests run each scenario on the in-memory store and on a real SQLite file.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from stageflow import (
    CircuitBreakerPolicy,
    ConfigurationError,
    Engine,
    GraphError,
    InvalidOptionError,
    MapError,
    MapItemError,
    Pipeline,
    RetryPolicy,
    RunStatus,
    StageContext,
    StageOutput,
    StageStatus,
    StageTimeoutError,
)
from stageflow.testing import RecordingSink

from ._helpers import durably, noop, run, run_recorded, sleeper

WORDS = ["owl", "heron", "kite", "wren", "swift"]


def split(items: object, seconds: float = 0.0) -> Any:
    """A stage returning ``{"items": items}``."""
    return sleeper(seconds, items=items)


def mapped(stage: Any, items: object = WORDS, *, after: Sequence[str] = (), **options: Any) -> Any:
    """split -> score (a map over split.items) -> after stages."""
    pipeline = (
        Pipeline("m")
        .with_stage("split", split(items))
        .with_map("score", stage, over="split.items", dependencies=("split",), **options)
    )
    for name in after:
        pipeline = pipeline.with_stage(name, noop, dependencies=("score",))
    return pipeline.build()


async def length(ctx: StageContext) -> dict[str, Any]:
    return {"word": ctx.item, "length": len(ctx.item)}


class Items:
    """An item stage that counts its calls per key and can wait, fail or hang per item."""

    def __init__(
        self,
        *,
        seconds: Callable[[int], float] = lambda index: 0.0,
        fail: Callable[[StageContext, int], bool] = lambda ctx, n: False,
    ) -> None:
        self.calls: dict[str, int] = {}
        self.seconds = seconds
        self.fail = fail
        self.running = 0
        self.peak = 0

    async def __call__(self, ctx: StageContext) -> dict[str, Any]:
        key = ctx.item_key
        n = self.calls[key] = self.calls.get(key, 0) + 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.seconds(ctx.item_index))
            if self.fail(ctx, n):
                raise ValueError(f"item {key} failed")
        finally:
            self.running -= 1
        return {"item": ctx.item, "double": ctx.item * 2}


async def cancel_after(engine: Engine, graph: Any, seconds: float) -> None:
    task = asyncio.create_task(engine.run(graph, run_id="r1"))
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --------------------------------------------------------------------------- items


class TestItems:
    def test_the_stage_runs_once_per_item_seeing_item_index_and_key(self):
        seen: list[tuple[Any, ...]] = []

        async def look(ctx: StageContext) -> None:
            seen.append((ctx.item, ctx.item_index, ctx.item_key, ctx.stage))

        result = run(mapped(look, ["a", "b", "c"]))

        assert result.ok
        assert sorted(seen) == [
            ("a", 0, "0", "score[0]"),
            ("b", 1, "1", "score[1]"),
            ("c", 2, "2", "score[2]"),
        ]

    def test_the_output_is_the_items_outputs_in_item_order(self):
        result = run(mapped(length))

        assert result["score"].data == {"results": [{"word": w, "length": len(w)} for w in WORDS]}

    def test_results_keep_item_order_whatever_order_the_items_finish_in(self):
        n = len(WORDS)
        stage = Items(seconds=lambda index: n - index)  # the last item finishes first

        result, sink = run_recorded(mapped(stage, [1, 2, 3, 4, 5]))

        finished = [e.data["index"] for e in sink.of_type("item.completed")]
        assert finished == [4, 3, 2, 1, 0]
        assert [r["item"] for r in result["score"].data["results"]] == [1, 2, 3, 4, 5]
        assert result["score"].duration == pytest.approx(5)

    def test_results_keep_item_order_when_the_items_are_released_in_another_order(self):
        order = [2, 0, 3, 1]
        gates = {k: asyncio.Event() for k in range(4)}

        async def gated(ctx: StageContext) -> dict[str, int]:
            await gates[ctx.item_index].wait()
            position = order.index(ctx.item_index)
            if position + 1 < len(order):
                gates[order[position + 1]].set()
            return {"index": ctx.item_index}

        async def start(ctx: StageContext) -> dict[str, list[int]]:
            gates[order[0]].set()
            return {"items": [10, 11, 12, 13]}

        graph = (
            Pipeline()
            .with_stage("split", start)
            .with_map("score", gated, over="split.items", dependencies=("split",))
            .build()
        )

        result, sink = run_recorded(graph)

        assert [e.data["index"] for e in sink.of_type("item.completed")] == order
        assert result["score"].data == {"results": [{"index": k} for k in range(4)]}

    def test_an_empty_sequence_completes_with_no_results(self):
        stage = Items()

        result, sink = run_recorded(mapped(stage, [], after=("next",)))

        assert result.ok
        assert result["score"].status is StageStatus.COMPLETED
        assert result["score"].data == {"results": []}
        assert result["score"].items == ()
        assert result["next"].ok
        assert stage.calls == {}
        (started,) = sink.of_type("map.started")
        assert started.data == {"items": 0}

    def test_an_empty_sequence_under_collect_has_no_errors_either(self):
        result = run(mapped(noop, (), on_item_error="collect"))

        assert result["score"].data == {"results": [], "errors": []}

    def test_a_tuple_is_a_sequence_of_items(self):
        result = run(mapped(length, ("ab", "c")))

        assert [r["length"] for r in result["score"].data["results"]] == [2, 1]

    def test_items_see_the_maps_inputs(self):
        seen: list[Any] = []

        async def look(ctx: StageContext) -> None:
            seen.append(list(ctx.inputs["split"]["items"]))

        run(mapped(look, ["a", "b"]))

        assert seen == [["a", "b"], ["a", "b"]]

    def test_an_item_returning_nothing_has_an_empty_result(self):
        result = run(mapped(noop, ["a"]))

        assert result["score"].data == {"results": [{}]}

    def test_dependents_of_the_map_see_its_results(self):
        seen: list[Any] = []

        async def total(ctx: StageContext) -> None:
            seen.append(sum(r["length"] for r in ctx.inputs.get_from("score", "results")))

        graph = (
            Pipeline()
            .with_stage("split", split(["ab", "cde"]))
            .with_map("score", length, over="split.items", dependencies=("split",))
            .with_stage("total", total, dependencies=("score",))
            .build()
        )

        run(graph)

        assert seen == [5]

    def test_each_item_has_its_own_idempotency_key(self):
        keys: list[str] = []

        async def look(ctx: StageContext) -> None:
            keys.append(ctx.idempotency_key)

        run(mapped(look, ["a", "b", "c"]), run_id="r1")

        assert sorted(keys) == ["r1:score[0]", "r1:score[1]", "r1:score[2]"]

    def test_a_map_stage_may_have_a_condition(self):
        stage = Items()

        result = run(mapped(stage, [1, 2], when=lambda ctx: False))

        assert result["score"].reason == "condition false"
        assert stage.calls == {}


class TestOver:
    def test_a_callable_over_gives_the_items(self):
        seen: list[Any] = []

        def over(ctx: StageContext) -> list[str]:
            seen.append(dict(ctx.data))
            return ctx.data["words"]

        graph = Pipeline().with_map("score", length, over=over).build()

        result = run(graph, data={"words": ["ab", "c"]})

        assert [r["word"] for r in result["score"].data["results"]] == ["ab", "c"]
        assert seen == [{"words": ["ab", "c"]}]  # called once

    def test_a_callable_over_sees_the_maps_inputs(self):
        graph = (
            Pipeline()
            .with_stage("split", split(["x", "y", "z"]))
            .with_map(
                "score",
                length,
                over=lambda ctx: ctx.inputs["split"]["items"][1:],
                dependencies=("split",),
            )
            .build()
        )

        result = run(graph)

        assert [r["word"] for r in result["score"].data["results"]] == ["y", "z"]

    def test_over_naming_a_missing_field_fails_the_map_naming_stage_and_field(self):
        graph = (
            Pipeline()
            .with_stage("split", sleeper(0, pages=[1]))
            .with_map("score", length, over="split.items", dependencies=("split",))
            .with_stage("next", noop, dependencies=("score",))
            .build()
        )

        result = run(graph, Engine(fail_fast=False))

        assert result.status is RunStatus.FAILED
        error = result["score"].error
        assert isinstance(error, MapError)
        assert (error.stage, error.field, error.value) == ("score", "split.items", None)
        assert "'score'" in str(error)
        assert "'split.items'" in str(error)
        assert "'pages'" in str(error)  # the fields it has
        assert result["next"].reason == "dependency 'score' failed"

    @pytest.mark.parametrize(
        ("value", "type_name"),
        [
            (5, "int"),
            ("owls", "str"),
            (b"owls", "bytes"),
            ({"a": 1}, "dict"),
            (None, "NoneType"),
            ({1, 2}, "set"),
        ],
        ids=["int", "str", "bytes", "dict", "None", "set"],
    )
    def test_over_naming_a_value_that_is_no_sequence_of_items_fails_naming_its_type(
        self, value, type_name
    ):
        result = run(mapped(length, value))

        error = result["score"].error
        assert isinstance(error, MapError)
        assert isinstance(error, TypeError)
        assert (error.stage, error.field, error.value) == ("score", "split.items", value)
        assert "'score'" in str(error)
        assert "split.items" in str(error)
        assert f"not {type_name}" in str(error)

    def test_a_callable_over_returning_no_sequence_fails_naming_the_callable(self):
        def pages(ctx: StageContext) -> Any:
            return 42

        result = run(Pipeline().with_map("score", length, over=pages).build())

        error = result["score"].error
        assert isinstance(error, MapError)
        assert error.stage == "score"
        assert "pages" in error.field
        assert "not int" in str(error)

    def test_a_callable_over_that_raises_fails_the_map_with_its_error(self):
        def broken(ctx: StageContext) -> list[int]:
            raise LookupError("no index")

        stage = Items()

        result = run(Pipeline().with_map("score", stage, over=broken).build())

        assert result["score"].status is StageStatus.FAILED
        assert isinstance(result["score"].error, LookupError)
        assert stage.calls == {}


class TestKeys:
    def test_key_gives_items_their_names_and_keys(self):
        seen: list[tuple[str, str]] = []

        async def look(ctx: StageContext) -> None:
            seen.append((ctx.item_key, ctx.stage))

        result = run(mapped(look, ["owl", "kite"], key=str.upper))

        assert sorted(seen) == [("KITE", "score[KITE]"), ("OWL", "score[OWL]")]
        assert [r.stage for r in result["score"].items] == ["score[OWL]", "score[KITE]"]

    def test_keyed_items_are_stored_under_name_and_key(self, open_store):
        graph = mapped(length, ["owl", "kite"], key=lambda word: f"w-{word}")

        async def scenario(store: Any) -> Any:
            await Engine(store=store).run(graph, run_id="r1")
            return await store.stage_records("r1"), await store.load_state("r1", "score")

        records, state = durably(open_store, scenario)

        assert {"score[w-owl]", "score[w-kite]", "score"} <= set(records)
        assert records["score[w-owl]"].status is StageStatus.COMPLETED
        assert json.loads(records["score[w-kite]"].output) == {"word": "kite", "length": 4}
        assert json.loads(state) == {"keys": ["w-owl", "w-kite"]}

    def test_two_items_with_the_same_key_fail_the_map_naming_the_key(self):
        stage = Items()

        result = run(mapped(stage, ["owl", "OWL", "kite"], key=str.lower))

        error = result["score"].error
        assert isinstance(error, MapError)
        assert (error.stage, error.field, error.value) == ("score", "key", "owl")
        assert "'owl'" in str(error)
        assert stage.calls == {}

    @pytest.mark.parametrize("bad", [3, "", None], ids=repr)
    def test_a_key_that_is_no_non_empty_str_fails_the_map(self, bad):
        result = run(mapped(length, ["owl"], key=lambda item: bad))

        error = result["score"].error
        assert isinstance(error, MapError)
        assert (error.field, error.value) == ("key", bad)


class TestMaxParallel:
    @pytest.mark.parametrize("limit", [1, 2, 3, 5])
    def test_at_most_max_parallel_items_run_at_once(self, limit):
        stage = Items(seconds=lambda index: 1)

        result = run(mapped(stage, list(range(10)), max_parallel=limit))

        assert result.ok
        assert stage.peak == limit
        assert result["score"].duration == pytest.approx(-(-10 // limit))

    def test_without_max_parallel_every_item_runs_at_once(self):
        stage = Items(seconds=lambda index: 1)

        result = run(mapped(stage, list(range(50))))

        assert stage.peak == 50
        assert result["score"].duration == pytest.approx(1)

    def test_max_parallel_above_the_item_count_is_fine(self):
        stage = Items(seconds=lambda index: 1)

        result = run(mapped(stage, [1, 2], max_parallel=10))

        assert stage.peak == 2
        assert result.ok


class TestItemErrors:
    def test_under_fail_a_failed_item_fails_the_map_with_a_map_item_error(self):
        stage = Items(seconds=lambda index: 1, fail=lambda ctx, n: ctx.item_index == 2)

        result = run(mapped(stage, [1, 2, 3, 4], after=("next",)), Engine(fail_fast=False))

        assert result.status is RunStatus.FAILED
        error = result["score"].error
        assert isinstance(error, MapItemError)
        assert (error.stage, error.item, error.index) == ("score", "2", 2)
        assert error.error == "ValueError: item 2 failed"
        assert isinstance(error.__cause__, ValueError)
        assert "'score'" in str(error)
        assert "'2'" in str(error)
        assert result["next"].reason == "dependency 'score' failed"

    def test_under_fail_the_other_items_are_cancelled_or_never_start(self):
        # max_parallel=2: item 0 runs 5 s, item 1 fails at 1 s, items 2.. wait for a slot
        stage = Items(
            seconds=lambda index: 5 if index == 0 else 1, fail=lambda ctx, n: ctx.item_index == 1
        )

        result = run(mapped(stage, [1, 2, 3, 4, 5], max_parallel=2))

        items = result["score"].items
        assert [str(r.status) for r in items] == [
            "cancelled",
            "failed",
            "skipped",
            "skipped",
            "skipped",
        ]
        assert items[2].reason == "not started: another item failed"
        assert stage.calls == {"0": 1, "1": 1}
        assert result["score"].duration == pytest.approx(1)

    def test_under_skip_a_failed_item_has_no_result_and_the_map_completes(self):
        stage = Items(fail=lambda ctx, n: ctx.item_index in (1, 3))

        result, sink = run_recorded(mapped(stage, [1, 2, 3, 4], on_item_error="skip"))

        assert result.ok
        assert result["score"].data == {
            "results": [{"item": 1, "double": 2}, None, {"item": 3, "double": 6}, None]
        }
        assert [str(r.status) for r in result["score"].items] == [
            "completed",
            "failed",
            "completed",
            "failed",
        ]
        assert [e.data["index"] for e in sink.of_type("item.failed")] == [1, 3]

    def test_under_collect_failed_items_are_listed_with_index_key_and_error(self):
        stage = Items(fail=lambda ctx, n: ctx.item_key == "b")

        result = run(mapped(stage, ["a", "b", "c"], key=str, on_item_error="collect"))

        assert result.ok
        assert result["score"].data == {
            "results": [{"item": "a", "double": "aa"}, None, {"item": "c", "double": "cc"}],
            "errors": [{"index": 1, "key": "b", "error": "ValueError: item b failed"}],
        }

    def test_an_item_that_skips_itself_has_no_result_and_is_no_error(self):
        async def picky(ctx: StageContext) -> Any:
            if ctx.item % 2:
                return StageOutput.skip("odd")
            return {"even": ctx.item}

        result, sink = run_recorded(mapped(picky, [1, 2, 3], on_item_error="collect"))

        assert result["score"].data == {"results": [None, {"even": 2}, None], "errors": []}
        assert [r.reason for r in result["score"].items] == ["odd", None, "odd"]
        assert [e.data["reason"] for e in sink.of_type("item.skipped")] == ["odd", "odd"]

    def test_an_item_returning_a_failed_output_counts_as_failed(self):
        async def refuse(ctx: StageContext) -> StageOutput:
            return StageOutput.fail("no good")

        result = run(mapped(refuse, [1], on_item_error="collect"))

        assert result["score"].items[0].status is StageStatus.FAILED
        assert result["score"].data["errors"][0]["key"] == "0"


class TestPerItemOptions:
    def test_retry_applies_to_each_item(self):
        # item 1 fails twice, then completes; the others complete at once
        stage = Items(fail=lambda ctx, n: ctx.item_index == 1 and n <= 2)

        result = run(
            mapped(stage, [1, 2, 3], retry=RetryPolicy(attempts=3, backoff="fixed", base=1))
        )

        assert result.ok
        assert [r.attempts for r in result["score"].items] == [1, 3, 1]
        assert stage.calls == {"0": 1, "1": 3, "2": 1}
        assert result["score"].items[1].duration == pytest.approx(2)  # two 1 s backoffs
        assert result["score"].data["results"][1] == {"item": 2, "double": 4}

    def test_a_number_of_attempts_as_retry_applies_to_each_item(self):
        stage = Items(fail=lambda ctx, n: n < 3)

        result = run(mapped(stage, [1, 2], retry=3))

        assert [r.attempts for r in result["score"].items] == [3, 3]

    def test_an_item_out_of_attempts_fails_as_an_item(self):
        stage = Items(fail=lambda ctx, n: ctx.item_index == 0)

        result = run(
            mapped(
                stage,
                [1, 2],
                retry=RetryPolicy(attempts=2, backoff="fixed", base=1),
                on_item_error="collect",
            )
        )

        assert result["score"].items[0].attempts == 2
        assert result["score"].items[0].status is StageStatus.FAILED
        assert stage.calls == {"0": 2, "1": 1}

    def test_timeout_applies_to_each_item_on_virtual_time(self):
        stage = Items(seconds=lambda index: 10 if index == 1 else 1)

        result = run(mapped(stage, [1, 2, 3], timeout=2, on_item_error="collect"))

        slow = result["score"].items[1]
        assert isinstance(slow.error, StageTimeoutError)
        assert slow.error.stage == "score[1]"
        assert slow.duration == pytest.approx(2)
        assert [str(r.status) for r in result["score"].items] == [
            "completed",
            "failed",
            "completed",
        ]
        assert result["score"].duration == pytest.approx(2)

    def test_a_timed_out_item_under_retry_is_tried_again(self):
        stage = Items(seconds=lambda index: 10)
        policy = RetryPolicy(attempts=2, backoff="fixed", base=1)

        result = run(mapped(stage, [1], timeout=2, retry=policy, on_item_error="skip"))

        item = result["score"].items[0]
        assert item.attempts == 2
        assert isinstance(item.error, StageTimeoutError)
        assert item.duration == pytest.approx(5)  # 2 s, a 1 s backoff, 2 s

    def test_one_circuit_breaker_guards_all_the_maps_items(self):
        stage = Items(fail=lambda ctx, n: True)
        policy = CircuitBreakerPolicy(failure_threshold=2, recovery_timeout=30)

        result = run(
            mapped(
                stage, [1, 2, 3, 4], max_parallel=1, circuit_breaker=policy, on_item_error="collect"
            )
        )

        errors = [type(r.error).__name__ for r in result["score"].items]
        assert errors == ["ValueError", "ValueError", "CircuitOpenError", "CircuitOpenError"]
        assert stage.calls == {"0": 1, "1": 1}

    def test_events_from_inside_an_item_name_the_item(self):
        stage = Items(fail=lambda ctx, n: n == 1)

        _, sink = run_recorded(
            mapped(stage, ["a"], key=str, retry=RetryPolicy(attempts=2, backoff="fixed", base=1))
        )

        (retrying,) = sink.of_type("stage.retrying")
        assert retrying.stage == "score[a]"
        (completed,) = sink.of_type("item.completed")
        assert (completed.stage, completed.attempt) == ("score", 2)  # the item's attempt


class TestItemResults:
    def test_the_maps_result_holds_each_items_result_in_item_order(self):
        stage = Items(seconds=lambda index: 3 - index, fail=lambda ctx, n: ctx.item_index == 1)

        result = run(mapped(stage, [5, 6, 7], on_item_error="skip"))

        items = result["score"].items
        assert [r.stage for r in items] == ["score[0]", "score[1]", "score[2]"]
        assert [str(r.status) for r in items] == ["completed", "failed", "completed"]
        assert [r.attempts for r in items] == [1, 1, 1]
        assert [r.duration for r in items] == pytest.approx([3, 2, 1])
        assert items[0].data == {"item": 5, "double": 10}
        assert isinstance(items[1].error, ValueError)
        assert items[1].reason == "ValueError: item 1 failed"

    def test_the_spec_of_an_item_is_the_maps(self):
        graph = mapped(noop)

        assert graph.spec_of("score[3]") is graph["score"]
        assert graph.spec_of("score[any-key]") is graph["score"]
        assert graph.spec_of("split[0]") is None

    def test_the_run_events_count_the_graphs_own_stages_not_the_items(self):
        _, sink = run_recorded(mapped(noop, list(range(7))))

        (completed,) = sink.of_type("run.completed")
        assert completed.data["completed"] == 2

    def test_a_stage_that_is_not_a_map_has_no_items(self):
        result = run(Pipeline().with_stage("plain", noop).build())

        assert result["plain"].items == ()

    @pytest.mark.parametrize("attribute", ["item", "item_index", "item_key"])
    def test_asking_for_the_item_outside_a_map_is_a_configuration_error(self, attribute):
        async def look(ctx: StageContext) -> None:
            getattr(ctx, attribute)

        result = run(Pipeline().with_stage("plain", look).build())

        error = result["plain"].error
        assert isinstance(error, ConfigurationError)
        assert "'plain' is not a map stage" in str(error)


class TestMapEvents:
    def test_map_started_says_how_many_items(self):
        _, sink = run_recorded(mapped(noop, WORDS))

        (started,) = sink.of_type("map.started")
        assert (started.stage, started.data) == ("score", {"items": 5})

    def test_item_events_carry_the_map_name_the_item_key_and_index(self):
        stage = Items(seconds=lambda index: index + 1, fail=lambda ctx, n: ctx.item_key == "b")

        _, sink = run_recorded(mapped(stage, ["a", "b"], key=str, on_item_error="collect"))

        events = [
            (e.type, e.stage, dict(e.data)) for e in sink.events if e.type.startswith("item.")
        ]
        assert events == [
            ("item.started", "score", {"item": "a", "index": 0}),
            ("item.started", "score", {"item": "b", "index": 1}),
            ("item.completed", "score", {"item": "a", "index": 0, "duration": 1.0}),
            (
                "item.failed",
                "score",
                {"item": "b", "index": 1, "duration": 2.0, "reason": "ValueError: item b failed"},
            ),
        ]

    def test_the_map_stage_starts_and_ends_around_its_items(self):
        _, sink = run_recorded(mapped(noop, ["a"]))

        assert sink.types("score") == [
            "stage.started",
            "map.started",
            "item.started",
            "item.completed",
            "stage.completed",
        ]


# --------------------------------------------------------------------------- durable


class TestDurableMaps:
    def test_the_keys_are_stored_before_any_item_runs(self, open_store):
        seen: list[Any] = []

        def graph_with(store: Any) -> Any:
            async def look(ctx: StageContext) -> None:
                seen.append(await store.load_state("r1", "score"))

            return mapped(look, ["a", "b"], key=str, max_parallel=1)

        async def scenario(store: Any) -> Any:
            return await Engine(store=store).run(graph_with(store), run_id="r1")

        durably(open_store, scenario)

        assert [json.loads(s) for s in seen] == [{"keys": ["a", "b"]}] * 2

    def test_a_resume_after_an_item_failed_runs_only_the_unfinished_items(self, open_store):
        # max_parallel=1: items 0-2 complete, item 3 fails, 4 and 5 never start
        stage = Items(fail=lambda ctx, n: ctx.item_index == 3 and n == 1)
        graph = mapped(stage, [10, 11, 12, 13, 14, 15], max_parallel=1)
        plain = run(mapped(Items(), [10, 11, 12, 13, 14, 15]))

        async def scenario(store: Any) -> Any:
            first = await Engine(store=store).run(graph, run_id="r1")
            sink = RecordingSink()
            second = await Engine(store=store, sink=sink).resume("r1", graph)
            return first, second, sink

        first, second, sink = durably(open_store, scenario)

        assert first.status is RunStatus.FAILED
        assert second.ok
        assert stage.calls == {"0": 1, "1": 1, "2": 1, "3": 2, "4": 1, "5": 1}
        assert second["score"].data == plain["score"].data
        restored = [e.stage for e in sink.of_type("stage.restored")]
        assert sorted(restored) == ["score[0]", "score[1]", "score[2]", "split"]

    def test_items_that_finish_together_are_all_stored_and_not_run_again(self, open_store):
        # 60 items end at the same instant (one group commit on SQLite), the 61st fails later
        stage = Items(
            seconds=lambda index: 2 if index == 60 else 1,
            fail=lambda ctx, n: ctx.item_index == 60 and n == 1,
        )
        graph = mapped(stage, list(range(61)))

        async def scenario(store: Any) -> Any:
            first = await Engine(store=store).run(graph, run_id="r1")
            stored = [n for n in await store.stage_records("r1") if n.startswith("score[")]
            return first, stored, await Engine(store=store).resume("r1", graph)

        first, stored, second = durably(open_store, scenario)

        assert first.status is RunStatus.FAILED
        assert len(stored) == 60
        assert second.ok
        assert stage.calls == {str(k): 1 for k in range(60)} | {"60": 2}
        assert second["score"].data == {
            "results": [{"item": k, "double": 2 * k} for k in range(61)]
        }

    def test_a_resume_after_a_cancel_mid_map_runs_only_the_unfinished_items(self, open_store):
        stage = Items(seconds=lambda index: index + 1)  # item k ends at k + 1 s
        items = list(range(8))
        graph = mapped(stage, items, key=lambda k: f"k{k}")

        async def scenario(store: Any) -> Any:
            await cancel_after(Engine(store=store), graph, 3.5)  # k0, k1, k2 done
            done = sorted(n for n in await store.stage_records("r1") if n.startswith("score["))
            return done, await Engine(store=store).resume("r1", graph)

        done, second = durably(open_store, scenario)

        assert done == ["score[k0]", "score[k1]", "score[k2]"]
        assert second.ok
        assert stage.calls == {"k0": 1, "k1": 1, "k2": 1} | {f"k{k}": 2 for k in range(3, 8)}
        assert second["score"].data == {"results": [{"item": k, "double": 2 * k} for k in items]}

    def test_a_resumed_maps_items_report_what_they_took(self, open_store):
        stage = Items(seconds=lambda index: 2, fail=lambda ctx, n: ctx.item_index == 1 and n == 1)
        graph = mapped(stage, [1, 2], max_parallel=1)

        async def scenario(store: Any) -> Any:
            await Engine(store=store).run(graph, run_id="r1")
            return await Engine(store=store).resume("r1", graph)

        second = durably(open_store, scenario)

        first_item, second_item = second["score"].items
        assert (first_item.status, first_item.attempts) == (StageStatus.COMPLETED, 1)
        assert first_item.duration == pytest.approx(2)
        assert (second_item.status, second_item.attempts) == (StageStatus.COMPLETED, 1)

    def test_a_completed_map_is_restored_whole_on_resume(self, open_store):
        stage = Items()
        graph = (
            Pipeline("m")
            .with_stage("split", split([1, 2, 3]))
            .with_map("score", stage, over="split.items", dependencies=("split",))
            .with_stage("after", _flaky_once(), dependencies=("score",))
            .build()
        )

        async def scenario(store: Any) -> Any:
            await Engine(store=store).run(graph, run_id="r1")
            sink = RecordingSink()
            return await Engine(store=store, sink=sink).resume("r1", graph), sink

        second, sink = durably(open_store, scenario)

        assert second.ok
        assert stage.calls == {"0": 1, "1": 1, "2": 1}
        assert second["score"].data == {
            "results": [{"item": k, "double": 2 * k} for k in (1, 2, 3)]
        }
        assert "stage.restored" in sink.types("score")
        assert sink.of_type("item.started") == []

    def test_a_map_restored_whole_still_reports_its_items(self, open_store):
        graph = (
            Pipeline("m")
            .with_stage("split", split([1, 2, 3]))
            .with_map("score", Items(), over="split.items", dependencies=("split",))
            .with_stage("after", _flaky_once(), dependencies=("score",))
            .build()
        )

        async def scenario(store: Any) -> Any:
            first = await Engine(store=store).run(graph, run_id="r1")
            return first, await Engine(store=store).resume("r1", graph)

        first, second = durably(open_store, scenario)

        assert [r.stage for r in first["score"].items] == ["score[0]", "score[1]", "score[2]"]
        assert [(r.stage, str(r.status)) for r in second["score"].items] == [
            (r.stage, str(r.status)) for r in first["score"].items
        ]

    def test_a_map_over_changed_items_on_resume_is_refused_naming_the_keys(self, open_store):
        source = {"items": ["a", "b", "c"]}

        def over(ctx: StageContext) -> list[str]:
            return list(source["items"])

        stage = Items(fail=lambda ctx, n: ctx.item_index == 2 and n == 1)
        graph = Pipeline("m").with_map("score", stage, over=over).build()

        async def scenario(store: Any) -> Any:
            first = await Engine(store=store).run(graph, run_id="r1")
            source["items"] = ["a", "b", "c", "d"]
            return first, await Engine(store=store).resume("r1", graph)

        first, second = durably(open_store, scenario)

        assert first.status is RunStatus.FAILED
        error = second["score"].error
        assert isinstance(error, MapError)
        assert (error.stage, error.field) == ("score", "keys")
        assert stage.calls == {"0": 1, "1": 1, "2": 1}  # nothing ran on other items


def _flaky_once() -> Any:
    calls = [0]

    async def stage(ctx: StageContext) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise ConnectionError("down")

    return stage


# --------------------------------------------------------------------------- bad input


def refused(build: Callable[[], object]) -> InvalidOptionError:
    with pytest.raises(InvalidOptionError) as caught:
        build()
    assert isinstance(caught.value, GraphError)
    return caught.value


class TestBadMaps:
    def test_over_naming_a_stage_that_is_not_a_dependency_is_refused(self):
        error = refused(
            lambda: Pipeline().with_stage("split", noop).with_map("score", noop, over="split.items")
        )

        assert (error.stage, error.option, error.value) == ("score", "over", "split.items")
        assert "'split'" in str(error)
        assert "dependencies" in str(error)

    def test_over_naming_an_unknown_stage_is_refused(self):
        error = refused(lambda: Pipeline().with_map("score", noop, over="ghost.items"))

        assert (error.stage, error.option, error.value) == ("score", "over", "ghost.items")

    def test_over_naming_a_dependency_that_is_no_stage_is_refused_by_build(self):
        pipeline = Pipeline().with_map("score", noop, over="ghost.items", dependencies=("ghost",))

        with pytest.raises(GraphError, match="ghost"):
            pipeline.build()

    @pytest.mark.parametrize("over", ["items", ".items", "split.", "", "split"])
    def test_over_that_is_not_stage_dot_field_is_refused(self, over):
        error = refused(
            lambda: (
                Pipeline()
                .with_stage("split", noop)
                .with_map("score", noop, over=over, dependencies=("split",))
            )
        )

        assert (error.stage, error.option, error.value) == ("score", "over", over)
        assert "stage.field" in str(error)

    @pytest.mark.parametrize("over", [42, None, ["a", "b"]], ids=repr)
    def test_over_that_is_neither_a_str_nor_callable_is_refused(self, over):
        error = refused(lambda: Pipeline().with_map("score", noop, over=over))

        assert (error.stage, error.option, error.value) == ("score", "over", over)

    def test_a_key_that_is_not_callable_is_refused(self):
        error = refused(lambda: Pipeline().with_map("score", noop, over=lambda c: [], key="id"))

        assert (error.stage, error.option, error.value) == ("score", "key", "id")

    @pytest.mark.parametrize("limit", [0, -1, 1.5, "2", True], ids=repr)
    def test_max_parallel_that_is_not_an_int_of_at_least_one_is_refused(self, limit):
        error = refused(
            lambda: Pipeline().with_map("score", noop, over=lambda c: [], max_parallel=limit)
        )

        assert (error.stage, error.option, error.value) == ("score", "max_parallel", limit)

    @pytest.mark.parametrize("policy", ["ignore", "FAIL", None, ""], ids=repr)
    def test_an_unknown_on_item_error_is_refused(self, policy):
        error = refused(
            lambda: Pipeline().with_map("score", noop, over=lambda c: [], on_item_error=policy)
        )

        assert (error.stage, error.option, error.value) == ("score", "on_item_error", policy)
        assert "'collect'" in str(error)

    def test_an_unknown_option_is_refused(self):
        error = refused(lambda: Pipeline().with_map("score", noop, over=lambda c: [], route=("a",)))

        assert (error.stage, error.option) == ("score", "route")

    def test_routes_are_no_option_of_a_map(self):
        error = refused(
            lambda: Pipeline().with_map("score", noop, over=lambda c: [], routes=("a",))
        )

        assert (error.stage, error.option) == ("score", "routes")

    def test_a_bad_stage_option_is_refused_as_for_with_stage(self):
        error = refused(lambda: Pipeline().with_map("score", noop, over=lambda c: [], timeout=-1))

        assert (error.stage, error.option, error.value) == ("score", "timeout", -1)
