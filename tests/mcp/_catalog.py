"""The pipelines the MCP tests run (``--pipelines tests.mcp._catalog:catalog``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import BaseModel, Field

from stageflow import Catalog, Pipeline, StageContext


class Numbers(BaseModel):
    n: int = Field(1, description="The number to start from.")


class Gate(BaseModel):
    gate: str  # a file: the stage "hold" goes on once it exists


class Decision(BaseModel):
    approved: bool
    note: str = ""


async def source(ctx: StageContext) -> dict[str, int]:
    return {"n": ctx.data["n"]}


async def double(ctx: StageContext) -> dict[str, int]:
    return {"n": ctx.inputs.get_from("source", "n") * 2}


async def increment(ctx: StageContext) -> dict[str, int]:
    return {"n": ctx.inputs.get_from("double", "n") + 1}


async def hold(ctx: StageContext) -> dict[str, bool]:
    # Waits for its gate (a file the test makes) instead of for a time: the test decides
    # when the stage ends, and until then the run is in flight.
    gate = Path(ctx.data["gate"])
    while not gate.exists():
        await asyncio.sleep(0.01)
    return {"passed": True}


async def after(ctx: StageContext) -> dict[str, str]:
    return {"done": "yes"}


async def draft(ctx: StageContext) -> dict[str, str]:
    return {"text": f"post {ctx.data.get('title', 'untitled')}"}


async def publish(ctx: StageContext) -> dict[str, bool]:
    return {"published": ctx.inputs.get_from("approve", "approved")}


chain = (
    Pipeline("chain")
    .with_stage("source", source)
    .with_stage("double", double, dependencies=("source",))
    .with_stage("increment", increment, dependencies=("double",))
)
gated = (
    Pipeline("gated")
    .with_stage("start", after)
    .with_stage("hold", hold, dependencies=("start",))
    .with_stage("after", after, dependencies=("hold",))
)
approval = (
    Pipeline("approval")
    .with_stage("draft", draft)
    .with_input(
        "approve",
        schema=Decision,
        dependencies=("draft",),
        prompt=lambda ctx: f"Publish {ctx.inputs.get_from('draft', 'text')!r}?",
    )
    .with_stage("publish", publish, dependencies=("approve",))
)

catalog = (
    Catalog()
    .add("chain", chain, description="Three stages, one after the other", data=Numbers)
    .add("gated", gated, description="Holds until its gate file exists", data=Gate)
    .add("approval", approval, description="Waits for an approval", tags=("human",))
    .add("weird name!", chain, description="A name MCP tools may not have", data=Numbers)
)
empty = Catalog()
