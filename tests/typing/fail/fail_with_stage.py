"""with_stage misuse that mypy --strict must refuse (each marked line names the error)."""

from __future__ import annotations

from stageflow import Pipeline, StageContext


async def fetch(ctx: StageContext) -> dict[str, int]:
    return {"pages": 3}


async def two(ctx: StageContext, other: int) -> None:
    return None


async def none() -> None:
    return None


def returns_text(ctx: StageContext) -> str:
    return "not an output"


class NoExecute:
    pass


p = Pipeline()
p.with_stage("a", 42)  # E: Argument 2 to "with_stage" of "Pipeline" has incompatible type "int"
p.with_stage("a", "fetch")  # E: Argument 2 to "with_stage" of "Pipeline" has incompatible type
p.with_stage("a", two)  # E: Argument 2 to "with_stage"
p.with_stage("a", none)  # E: Argument 2 to "with_stage"
p.with_stage("a", returns_text)  # E: Argument 2 to "with_stage"
p.with_stage("a", NoExecute)  # E: Argument 2 to "with_stage"
p.with_stage("a", fetch, dependencies="b")  # E: "dependencies" to "with_stage" of "Pipeline"
p.with_stage("a", fetch, optional="b")  # E: "optional" to "with_stage" of "Pipeline" has
p.with_stage("a", fetch, tags="io")  # E: Argument "tags" to "with_stage" of "Pipeline" has
p.with_stage("a", fetch, timout=5)  # E: Unexpected keyword argument "timout" for "with_stage"
p.with_stage("a", fetch, timeout="5")  # E: "timeout" to "with_stage" of "Pipeline" has
p.with_stage("a", fetch, retry="3")  # E: Argument "retry" to "with_stage" of "Pipeline" has
p.with_stage(1, fetch)  # E: Argument 1 to "with_stage" of "Pipeline" has incompatible type "int"
