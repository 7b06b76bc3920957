"""Handlers the example pipeline files name by dotted path."""

from __future__ import annotations

from pydantic import BaseModel

from stageflow import StageContext, StageOutput


def greet(name: str) -> dict[str, str]:
    """A plain function: its arguments come from the stage's ``with:``."""
    return {"greeting": f"hello {name}"}


async def split(ctx, text: str) -> dict[str, list[str]]:
    """Words of ``text``: a map's items."""
    return {"words": text.split()}


def upper(word: str) -> str:
    """A plain function returning a plain value: the stage's output is ``{"value": ...}``."""
    return word.upper()


def score(draft: str, iteration: int) -> dict[str, object]:
    """A loop body's stage: better each iteration."""
    return {"draft": f"{draft} v{iteration}", "score": iteration * 3}


def classify(text: str) -> dict[str, object]:
    """What a route reads."""
    return {"label": "long" if len(text) > 10 else "short", "size": len(text)}


class Summary(BaseModel):
    """A declared output model: references to its fields are checked when a file loads."""

    title: str
    score: float
    tags: list[str]


def summarize(text: str) -> dict[str, object]:
    """Returns what :class:`Summary` declares."""
    return {"title": text[:10], "score": len(text) / 10, "tags": text.split()[:2]}


async def triage(ctx: StageContext) -> StageOutput:
    """A ROUTE handler taking the context: it chooses by itself."""
    return StageOutput.route("fast" if len(ctx.data["text"]) < 10 else "slow", seen=True)


def echo(**values: object) -> dict[str, object]:
    """Whatever ``with:`` gives it."""
    return dict(values)


def fail(message: str) -> dict[str, object]:
    """Always raises: for failure paths."""
    raise RuntimeError(message)
