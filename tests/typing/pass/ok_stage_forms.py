"""Every stage form with_stage takes, and every option, typed as a user would write them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, assert_type

from stageflow import (
    Budget,
    CircuitBreakerPolicy,
    Estimate,
    Pipeline,
    RetryPolicy,
    StageContext,
    StageFunction,
    StageKind,
    StageLike,
    StageOutput,
    StageReturn,
    SyncStageFunction,
)


async def fetch(ctx: StageContext) -> dict[str, int]:
    return {"pages": 3}


async def maybe(ctx: StageContext) -> StageOutput:
    return StageOutput.skip("nothing to do")


async def nothing(ctx: StageContext) -> None:
    return None


def parse(ctx: StageContext) -> Mapping[str, object]:
    return {"words": ctx.inputs.get_from("fetch", "pages", type=int) * 100}


def with_default(ctx: StageContext, retries: int = 3) -> StageReturn:
    return None


class Report:
    """A class: instantiated for every attempt."""

    async def execute(self, ctx: StageContext) -> dict[str, str]:
        return {"text": "done"}


class Counter:
    """An instance, with a sync execute."""

    def __init__(self, start: int) -> None:
        self.count = start

    def execute(self, ctx: StageContext) -> StageOutput:
        self.count += 1
        return StageOutput.ok(count=self.count)


deps: list[str] = ["fetch"]
a: StageFunction = fetch
b: SyncStageFunction = parse
c: StageLike = Report

pipeline = (
    Pipeline("typed")
    .with_stage("fetch", fetch, StageKind.WORK)
    .with_stage("maybe", maybe, "guard")
    .with_stage("nothing", nothing)
    .with_stage("parse", parse, dependencies=deps)
    .with_stage("with_default", with_default, dependencies={"parse"})
    .with_stage("lambda_", lambda ctx: {"x": 1})
    .with_stage("report", Report, dependencies=("parse",), optional=["parse"])
    .with_stage(
        "count",
        Counter(0),
        dependencies=frozenset({"fetch"}),
        tags=("io",),
        metadata={"owner": "me"},
        timeout=5,
        retry=3,
        circuit_breaker=CircuitBreakerPolicy(),
        budget=Budget(max_tokens=1000),
        estimate=Estimate(tokens=10),
    )
    .with_stage("retried", fetch, retry=RetryPolicy(attempts=2), estimate=100, timeout=0.5)
)
assert_type(pipeline, Pipeline)
assert_type(pipeline.build().names, tuple[str, ...])


def any_stage(stage: Any) -> Pipeline:
    return Pipeline().with_stage("any", stage)  # Any passes: checked at run time
