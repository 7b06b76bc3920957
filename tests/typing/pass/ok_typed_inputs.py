"""ctx.inputs.get_from: typed with type=, Any without."""

from __future__ import annotations

from typing import Any, TypedDict, assert_type

from stageflow import StageContext


class Page(TypedDict):
    url: str
    words: int


async def consume(ctx: StageContext) -> dict[str, Any]:
    pages = ctx.inputs.get_from("fetch", "pages", type=int)
    assert_type(pages, int)
    title = ctx.inputs.get_from("fetch", "title", "untitled", type=str)
    assert_type(title, str)
    maybe = ctx.inputs.get_from("fetch", "ratio", None, type=float)
    assert_type(maybe, float | None)
    page = ctx.inputs.get_from("fetch", "page", type=Page)
    assert_type(page, Page)
    names = ctx.inputs.get_from("fetch", "names", type=list)
    assert_type(names, list[Any])
    raw = ctx.inputs.get_from("fetch", "raw")
    assert_type(raw, Any)
    other = ctx.inputs.get_from("fetch", "other", default=0)
    assert_type(other, Any)
    return {"n": pages + page["words"], "title": title.upper()}
