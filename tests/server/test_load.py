"""Load on a real ``stageflow serve`` (SQLite): many runs started at once through the API
all complete, none lost, none driven twice (checked in the store once the server stopped).
The figures are in ``make bench`` (section SERVICE, ``benchmarks/service.py``)."""

from __future__ import annotations

import asyncio
import collections
import signal

import httpx

from stageflow.adapters.sqlalchemy import SQLAlchemyStore

from ._sse import aparse
from .conftest import Server

RUNS = 200
IN_FLIGHT = 50
STAGES = ("source", "double", "square", "total")  # the catalog's "quick" pipeline


async def _start_and_follow(server: Server) -> tuple[list[str], list[str]]:
    """Start RUNS runs, at most IN_FLIGHT at a time, each followed on its stream to its end;
    the run ids and the last event type each stream ended on."""
    gate = asyncio.Semaphore(IN_FLIGHT)
    ids: list[str] = []
    ends: list[str] = []
    async with server.async_client(
        limits=httpx.Limits(max_connections=2 * IN_FLIGHT + 10)
    ) as client:

        async def one(i: int) -> None:
            async with gate:
                response = await client.post("/runs", json={"pipeline": "quick", "data": {"n": i}})
                assert response.status_code == 201, response.text
                run_id = str(response.json()["run_id"])
                ids.append(run_id)
                last = ""
                async with client.stream("GET", f"/runs/{run_id}/events") as stream:
                    assert stream.status_code == 200
                    async for sent in aparse(stream):
                        if sent is not None:
                            last = sent.event
                ends.append(last)

        await asyncio.gather(*(one(i) for i in range(RUNS)))
    return ids, ends


async def _stored(server: Server, ids: list[str]) -> dict[str, tuple[str, int, dict[str, int]]]:
    """Per run: its status, its stage records, and its events counted by type (with
    ``stage.started:<stage>`` per stage)."""
    store = SQLAlchemyStore(server.store)
    found: dict[str, tuple[str, int, dict[str, int]]] = {}
    try:
        for run in await store.list_runs(limit=2 * RUNS):
            events = await store.read_events(run.run_id)
            kinds = collections.Counter(event.type for event in events)
            kinds.update(
                f"stage.started:{event.stage}" for event in events if event.type == "stage.started"
            )
            status = str(getattr(run.status, "value", run.status))
            found[run.run_id] = (status, len(await store.stage_records(run.run_id)), dict(kinds))
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            await close()
    return found


def test_many_runs_through_the_api_all_complete_once(own_server: Server) -> None:
    ids, ends = asyncio.run(_start_and_follow(own_server))
    assert own_server.stop() in (0, -signal.SIGTERM)

    assert len(ids) == len(set(ids)) == RUNS
    assert ends == ["run.completed"] * RUNS
    stored = asyncio.run(_stored(own_server, ids))
    assert set(stored) == set(ids)  # none lost, none extra
    for run_id in ids:
        status, records, kinds = stored[run_id]
        assert (status, records) == ("completed", len(STAGES)), run_id
        assert kinds["run.started"] == kinds["run.completed"] == 1, (run_id, kinds)
        assert kinds["stage.started"] == len(STAGES), (run_id, kinds)
        assert all(kinds[f"stage.started:{stage}"] == 1 for stage in STAGES), (run_id, kinds)
