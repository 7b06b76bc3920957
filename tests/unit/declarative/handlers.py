"""Handlers and output models the pipeline texts of these tests name by dotted path."""

from __future__ import annotations

from pydantic import BaseModel

from stageflow import StageContext


class Report(BaseModel):
    """A declared output model: references to its fields are checked at load."""

    title: str
    count: int
    tags: list[str]


class NotAModel:
    """A class that is neither a pydantic model nor a dataclass."""


def summarize(text: str, limit: int = 10) -> dict[str, object]:
    """Two arguments, one required."""
    return {"title": text[:limit], "count": len(text.split()), "tags": text.split()[:2]}


def count(items: list[object]) -> dict[str, int]:
    """How many items."""
    return {"count": len(items)}


def echo(**values: object) -> dict[str, object]:
    """Whatever ``with:`` gives it."""
    return dict(values)


def numbers(n: int) -> dict[str, object]:
    """``n`` integers, and ``n`` strings: a value for comprehensions to walk."""
    return {"values": list(range(n)), "words": [str(i) for i in range(n)]}


async def start(ctx: StageContext) -> dict[str, int]:
    """A stage without ``with:``: the handler is the stage."""
    return {"count": 1}


START_VALUE = 3
"""Not callable: a condition that names it is refused."""


class Shouter:
    """A handler class: ``execute`` takes the file's ``with:`` arguments."""

    def execute(self, word: str) -> dict[str, str]:
        return {"word": word.upper()}
