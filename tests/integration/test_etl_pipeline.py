"""A realistic pipeline: parallel branches, a skipped branch, a failing stage, events on disk."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from stageflow import (
    Engine,
    JsonLinesSink,
    Pipeline,
    RunFailedError,
    StageGraph,
    StageKind,
    StageOutput,
    StageStatus,
)
from stageflow.testing import run_virtual

ORDERS = [
    {"id": 1, "customer": "ada", "amount": 120.0},
    {"id": 2, "customer": "bob", "amount": -5.0},
    {"id": 3, "customer": "ada", "amount": 30.0},
]
CUSTOMERS = {"ada": {"tier": "gold"}, "bob": {"tier": "silver"}}


async def extract_orders(ctx):
    for page in range(3):
        await asyncio.sleep(1)  # one page per second
        ctx.emit("progress", page=page + 1, of=3)
    return {"orders": ORDERS}


async def extract_customers(ctx):
    await asyncio.sleep(2)
    return {"customers": CUSTOMERS}


async def extract_promotions(ctx):
    await asyncio.sleep(0.5)
    if not ctx.data.get("promotions_enabled", False):
        return StageOutput.skip("promotions are disabled")
    return {"promotions": {"gold": 0.1}}


async def apply_promotions(ctx):
    return {"discounts": ctx.inputs.get_from("extract_promotions", "promotions")}


async def validate(ctx):
    orders = ctx.inputs.get_from("extract_orders", "orders")
    rejected = [o["id"] for o in orders if o["amount"] <= 0]
    await asyncio.sleep(1)
    if rejected:
        return StageOutput.fail(f"{len(rejected)} invalid orders", rejected=rejected)
    return {"valid": orders}


async def load_orders(ctx):
    return {"loaded": len(ctx.inputs.get_from("validate", "valid"))}


async def notify(ctx):
    return {"sent": True}


def enrich(ctx):  # CPU-bound work: a plain def, run in a worker thread
    customers = ctx.inputs.get_from("extract_customers", "customers")
    discounts = ctx.inputs.get_from("apply_promotions", "discounts", default={})
    enriched = []
    for order in ctx.inputs.get_from("extract_orders", "orders"):
        tier = customers[order["customer"]]["tier"]
        enriched.append({**order, "tier": tier, "discount": discounts.get(tier, 0.0)})
    return {"orders": enriched}


async def report(ctx):
    orders = ctx.inputs.get_from("enrich", "orders")
    await asyncio.sleep(1)
    by_tier: dict[str, float] = {}
    for order in orders:
        by_tier[order["tier"]] = by_tier.get(order["tier"], 0.0) + order["amount"]
    return {"revenue_by_tier": by_tier}


def build_graph() -> StageGraph:
    extract = (
        Pipeline("nightly-etl")
        .with_stage("extract_orders", extract_orders, StageKind.WORK)
        .with_stage("extract_customers", extract_customers, StageKind.WORK)
        .with_stage("extract_promotions", extract_promotions, StageKind.WORK)
    )
    transform = (
        Pipeline("transform")
        .with_stage("apply_promotions", apply_promotions, StageKind.TRANSFORM,
                    dependencies=("extract_promotions",))
        .with_stage("validate", validate, StageKind.GUARD, dependencies=("extract_orders",))
        .with_stage("load_orders", load_orders, dependencies=("validate",))
        .with_stage("notify", notify, dependencies=("load_orders",))
        .with_stage("enrich", enrich, StageKind.ENRICH,
                    dependencies=("extract_orders", "extract_customers", "apply_promotions"),
                    optional=("apply_promotions",))
        .with_stage("report", report, dependencies=("enrich",))
    )  # fmt: skip
    return extract.compose(transform).build()


def _read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class TestEtlPipeline:
    @pytest.fixture
    def outcome(self, tmp_path):
        graph = build_graph()
        path = tmp_path / "events" / "nightly.jsonl"
        path.parent.mkdir()
        with JsonLinesSink(path) as sink:
            engine = Engine(sink=sink, fail_fast=False, max_parallel=3)
            result = run_virtual(engine.run(graph, data={"date": "2024-06-01"}, run_id="n-1"))
        return graph, result, _read_events(path)

    def test_independent_branches_complete_despite_the_failure(self, outcome):
        _, result, _ = outcome

        assert result.status == "failed"
        assert result.with_status(StageStatus.COMPLETED) == (
            "extract_orders",
            "extract_customers",
            "enrich",
            "report",
        )
        assert result["report"].data == {"revenue_by_tier": {"gold": 150.0, "silver": -5.0}}
        assert result["enrich"].data["orders"][0]["discount"] == 0.0

    def test_the_skipped_and_failed_branches_end_as_expected(self, outcome):
        graph, result, _ = outcome

        assert result["extract_promotions"].reason == "promotions are disabled"
        assert result["apply_promotions"].reason == "dependency 'extract_promotions' was skipped"
        assert result["validate"].status is StageStatus.FAILED
        assert result["validate"].data == {"rejected": [2]}
        # enrich depends on apply_promotions optionally: the skip stops there.
        assert (
            set(result.with_status(StageStatus.SKIPPED))
            == {
                "extract_promotions",
                "apply_promotions",
                *graph.descendants("validate"),
            }
            == {"extract_promotions", "apply_promotions", "load_orders", "notify"}
        )
        with pytest.raises(RunFailedError) as info:
            result.raise_for_status()
        assert info.value.failed == ("validate",)

    def test_the_event_file_is_complete_and_ordered(self, outcome):
        graph, result, events = outcome

        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert {e["run_id"] for e in events} == {"n-1"}
        assert {e["pipeline"] for e in events} == {"nightly-etl"}
        assert events[0]["type"] == "run.started"
        assert events[0]["data"] == {"stages": len(graph)}
        assert events[-1]["type"] == "run.failed"
        assert events[-1]["data"]["completed"] == 4
        assert events[-1]["data"]["failed"] == 1
        assert events[-1]["data"]["skipped"] == 4
        assert events[-1]["data"]["duration"] == pytest.approx(result.duration)

    def test_each_stage_has_one_terminal_event_matching_its_result(self, outcome):
        graph, result, events = outcome

        for name in graph.names:
            terminal = [
                e for e in events if e["stage"] == name and e["type"].split(".")[1] in
                {"completed", "failed", "skipped", "cancelled"}
            ]  # fmt: skip
            assert len(terminal) == 1, name
            assert terminal[0]["type"] == f"stage.{result[name].status.value}"

    def test_event_order_is_consistent_with_the_graph(self, outcome):
        graph, result, events = outcome
        started = {e["stage"]: e["seq"] for e in events if e["type"] == "stage.started"}
        ended = {
            e["stage"]: e["seq"]
            for e in events
            if e["stage"] and e["type"] in {"stage.completed", "stage.failed", "stage.skipped"}
        }

        # A stage that ran started after all its dependencies ended, and ended after it started.
        for spec in graph:
            if spec.name in started:
                assert all(ended[dep] < started[spec.name] for dep in spec.dependencies)
                assert started[spec.name] < ended[spec.name]
        # Stages skipped because of a dependency never started.
        assert {"apply_promotions", "load_orders", "notify"}.isdisjoint(started)
        assert result["extract_promotions"].attempts == 1

    def test_custom_progress_events_fall_within_their_stage(self, outcome):
        _, _, events = outcome
        seqs = {(e["type"], e["stage"]): e["seq"] for e in events}
        progress = [e for e in events if e["type"] == "custom.progress"]

        assert [e["data"] for e in progress] == [
            {"page": 1, "of": 3},
            {"page": 2, "of": 3},
            {"page": 3, "of": 3},
        ]
        assert all(e["stage"] == "extract_orders" for e in progress)
        assert seqs[("stage.started", "extract_orders")] < progress[0]["seq"]
        assert progress[-1]["seq"] < seqs[("stage.completed", "extract_orders")]

    def test_at_most_three_stages_ran_at_once(self, outcome):
        _, _, events = outcome
        running = peak = 0
        for event in events:
            if event["type"] == "stage.started":
                running += 1
                peak = max(peak, running)
            elif event["type"] in {"stage.completed", "stage.failed"} or (
                event["type"] == "stage.skipped" and event["attempt"] > 0
            ):
                running -= 1

        assert peak == 3
        assert running == 0
