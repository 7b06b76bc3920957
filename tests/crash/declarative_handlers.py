"""Handlers the declarative crash test's pipeline file names by dotted path.

Every call appends ``LABEL PID`` to the file named by ``STAGEFLOW_CRASH_CALLS`` (``os.write``
+ ``fsync``, so a SIGKILL loses none), where LABEL is ``split``, ``score[<item>]``,
``step[<iteration>]`` or ``report``.
"""

from __future__ import annotations

import asyncio
import os


def _log(label: str) -> None:
    fd = os.open(os.environ["STAGEFLOW_CRASH_CALLS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{label} {os.getpid()}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def split(count: int) -> dict[str, list[str]]:
    _log("split")
    return {"items": [f"d{i:03d}" for i in range(count)]}


async def score(item: str) -> dict[str, int]:
    _log(f"score[{item}]")
    await asyncio.sleep(0.004)  # slow enough to be killed among the items
    return {"score": int(item[1:]) % 7}


def step(iteration: int, total: int) -> dict[str, int]:
    _log(f"step[{iteration}]")
    return {"total": total + iteration}


def report(scores: list[dict[str, int]], final: int) -> dict[str, int]:
    _log("report")
    return {"sum": sum(s["score"] for s in scores), "final": final}
