"""Waiting for a run within a tool call: progress notifications as its stages finish,
and the call's end at the bound, whatever the run does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from ..._events import EventType
from ..._service import RunService
from ..._status import FINISHED, RunStatus

logger = logging.getLogger("stageflow.mcp")

Report = Callable[[float, float, str], Awaitable[None]]
"""``report(progress, total, message)``: one progress notification to the caller."""

_FINISHES: Final[dict[str, str]] = {
    EventType.STAGE_COMPLETED: "completed",
    EventType.STAGE_RESTORED: "completed",  # in an earlier drive
    EventType.STAGE_FAILED: "failed",
    EventType.STAGE_SKIPPED: "skipped",
    EventType.STAGE_CANCELLED: "cancelled",
}


async def run_json(service: RunService, run_id: str) -> dict[str, Any]:
    """What get_run answers: the run (``RunService.get``) with the ``outputs`` of its
    completed stages."""
    shown = await service.get(run_id)
    shown["outputs"] = (await service.outputs(run_id))["outputs"]
    return shown


async def waited(
    service: RunService, run_id: str, seconds: float, *, bound: float, report: Report
) -> dict[str, Any]:
    """The run (as :func:`run_json`) once it has ended or stopped to wait for input, or
    after ``seconds`` (at most ``bound``) if it goes on longer; ``report`` is called as
    each of its stages finishes. Leaving early (the bound, the caller cancelled) leaves
    the run going: it is driven by the service, not here.

    A run still going has a ``note`` saying to poll get_run; a run waiting for input has
    one saying to give it with send_input.
    """
    seconds = min(seconds, bound)
    if seconds > 0:
        # Followed in a task of its own, given up on with asyncio's own cancel: an anyio
        # cancel scope (the SDK's) cancelling into asyncio.wait_for (the event log's wait)
        # can lose the cancellation on Python 3.11 and leave the call without an answer.
        follow = asyncio.get_running_loop().create_task(
            _followed(service, run_id, report), name=f"stageflow mcp follows {run_id}"
        )
        follow.add_done_callback(_retrieved)
        try:
            done, _ = await asyncio.wait([follow], timeout=seconds)
        finally:
            follow.cancel()  # (no-op once it is done) the run goes on: it is not followed
        if done:
            follow.result()  # what stopped it: an unknown run, the store
    shown = await run_json(service, run_id)
    status = shown["status"]
    if status == RunStatus.WAITING:
        shown["note"] = (
            "the run waits for input: give each input of waiting_for (its name, a value "
            "valid for its schema) with send_input, then poll get_run"
        )
    elif status not in FINISHED:
        shown["note"] = (
            f"the run is still {status} after {seconds:g} s and goes on: poll get_run with "
            f"run_id {run_id!r} (wait up to {bound:g} s a call) until its status is "
            "completed, failed or cancelled"
        )
    return shown


async def _followed(service: RunService, run_id: str, report: Report) -> None:
    """Follow the run's events until it ends, or stops to wait for an input not given
    yet, reporting each of the graph's stages that finishes (a map's items and a
    subgraph's stages are not counted)."""
    me = asyncio.current_task()
    stream = await service.events(run_id)  # (it ends after the run's end)
    stages: frozenset[str] | None = None
    finished: set[str] = set()
    try:
        async for event in stream:
            if me is not None and me.cancelling():
                return  # given up on, but the cancel was lost in a wait of the event log
            if stages is None:
                stages = _stages(service, event.pipeline)
            kind = _FINISHES.get(event.type)
            if kind is not None and event.stage in stages and event.stage not in finished:
                finished.add(event.stage)
                done = len(finished)
                await _report(report, done, len(stages), f"{event.stage} {kind}")
            elif event.stage is None and event.type == EventType.RUN_WAITING:
                # It stopped to wait; once its inputs are given (before or after), a
                # resume goes on with it: follow that drive too.
                shown = await service.get(run_id)
                if shown["status"] != RunStatus.RUNNING and shown["waiting_for"]:
                    return
    finally:
        await stream.aclose()


def _retrieved(follow: asyncio.Task[None]) -> None:
    """Take what ended ``follow``, so that a call given up on logs nothing of it."""
    if not follow.cancelled():
        follow.exception()


def _stages(service: RunService, pipeline: str) -> frozenset[str]:
    catalog = service.catalog
    if pipeline not in catalog:  # a run of a pipeline the catalog has no more
        return frozenset()
    return frozenset(spec.name for spec in catalog[pipeline].graph.stages)


async def _report(report: Report, done: int, total: int, message: str) -> None:
    try:
        await report(float(done), float(total), f"{message} ({done}/{total} stages)")
    except Exception:  # a progress notification never fails the call
        logger.debug("a progress notification could not be sent", exc_info=True)
