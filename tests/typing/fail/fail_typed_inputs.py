"""get_from(type=) gives a typed value: using it as another type is an error."""

from __future__ import annotations

from stageflow import StageContext


async def consume(ctx: StageContext) -> None:
    pages = ctx.inputs.get_from("fetch", "pages", type=int)
    pages.upper()  # E: "int" has no attribute "upper"
    text: str = ctx.inputs.get_from("fetch", "title", type=bytes)  # E: has type "bytes", variable
    print(text)
    ctx.inputs.get_from("fetch", 3)  # E: No overload variant of "get_from" of "StageInputs"
