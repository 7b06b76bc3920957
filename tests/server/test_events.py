"""The event streams (Server-Sent Events): order, resumption, heartbeats, many readers."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ._sse import Sent, aparse, read_events
from .conftest import Server

CLIENTS = 100  # the issue: 100 concurrent SSE clients on one run


@pytest.fixture(scope="module")
def finished(server: Server) -> tuple[str, list[Sent]]:
    """A completed run of the module's and all its events, read in one go."""
    run_id = server.start("quick", {"n": 5})
    return run_id, server.follow(run_id)


class TestStream:
    def test_events_come_in_order_as_id_event_and_json_data(
        self, server: Server, finished: tuple[str, list[Sent]]
    ):
        run_id, events = finished
        assert [e.id for e in events] == list(range(1, len(events) + 1))
        assert all(e.event == e.data["type"] and e.id == e.data["seq"] for e in events)
        assert all(e.data["run_id"] == run_id for e in events)
        assert events[0].event == "run.started"
        assert events[-1].event == "run.completed"
        started = [e.data["stage"] for e in events if e.event == "stage.started"]
        assert started[0] == "source"
        assert started[-1] == "total"

    def test_the_response_is_an_unbuffered_event_stream(
        self, server: Server, finished: tuple[str, list[Sent]]
    ):
        run_id, _ = finished
        with (
            server.client("read") as client,
            client.stream("GET", f"/runs/{run_id}/events") as response,
        ):
            response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["cache-control"] == "no-store"

    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(data=st.data())
    def test_a_client_that_reconnects_with_last_event_id_gets_exactly_the_rest(
        self, server: Server, finished: tuple[str, list[Sent]], data: st.DataObject
    ):
        run_id, events = finished
        k = data.draw(st.integers(1, len(events) - 1), label="events read before leaving")
        with server.client("read") as client:
            with client.stream("GET", f"/runs/{run_id}/events") as response:
                first = read_events(response, count=k)  # then it disconnects
            last = str(first[-1].id)
            with client.stream(
                "GET", f"/runs/{run_id}/events", headers={"Last-Event-ID": last}
            ) as response:
                rest = read_events(response)
        assert first + rest == events

    @pytest.mark.parametrize("k", [0, 3])
    def test_after_in_the_query_starts_there_too(
        self, server: Server, finished: tuple[str, list[Sent]], k: int
    ):
        run_id, events = finished
        with (
            server.client("read") as client,
            client.stream("GET", f"/runs/{run_id}/events", params={"after": k}) as response,
        ):
            assert read_events(response) == events[k:]

    def test_last_event_id_wins_over_after(self, server: Server, finished: tuple[str, list[Sent]]):
        run_id, events = finished
        with (
            server.client("read") as client,
            client.stream(
                "GET", f"/runs/{run_id}/events", params={"after": 0}, headers={"Last-Event-ID": "4"}
            ) as response,
        ):
            assert read_events(response) == events[4:]

    def test_after_the_last_event_of_an_ended_run_it_is_204(
        self, server: Server, finished: tuple[str, list[Sent]]
    ):
        run_id, events = finished
        with server.client("read") as client:
            response = client.get(
                f"/runs/{run_id}/events", headers={"Last-Event-ID": str(events[-1].id)}
            )
        assert (response.status_code, response.content) == (204, b"")

    @pytest.mark.parametrize(
        ("headers", "params", "field"),
        [
            ({"Last-Event-ID": "seven"}, {}, "Last-Event-ID"),
            ({"Last-Event-ID": "-1"}, {}, "Last-Event-ID"),
            ({}, {"after": -1}, "after"),
            ({}, {"after": "x"}, "after"),
        ],
    )
    def test_a_bad_position_is_422(
        self, server: Server, finished: tuple[str, list[Sent]], headers, params, field
    ):
        run_id, _ = finished
        with server.client("read") as client:
            response = client.get(f"/runs/{run_id}/events", headers=headers, params=params)
        assert response.status_code == 422
        assert response.json()["error"]["field"] == field

    def test_an_unknown_run_is_404_before_any_stream(self, server: Server):
        with server.client("read") as client:
            response = client.get("/runs/nope/events")
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "UnknownRunError"


class TestLiveRuns:
    def test_an_idle_stream_gets_heartbeats(self, server: Server):
        run_id = server.start("approval")  # it waits for input: its stream stays open

        async def heartbeats() -> int:
            seen = 0
            async with (
                server.async_client() as client,
                client.stream("GET", f"/runs/{run_id}/events") as response,
            ):
                async for sent in aparse(response):
                    if sent is None:
                        seen += 1
                        if seen == 3:
                            return seen
            return seen

        assert asyncio.run(asyncio.wait_for(heartbeats(), 30)) == 3
        assert server.status(run_id) == "waiting"

    def test_a_client_that_disconnects_does_not_cancel_the_run(self, server: Server):
        gate = server.gate()
        run_id = server.start("gated", {"gate": str(gate)})
        seen = server.follow(run_id, until="stage.started")  # "start": then it leaves
        assert seen[-1].data["stage"] == "start"
        with (
            server.client("read") as client,
            client.stream("GET", f"/runs/{run_id}/events") as response,
        ):
            held = read_events(response, count=len(seen) + 3)  # to hold's start, then leaves
        assert held[-1].data["stage"] == "hold"
        assert server.status(run_id) == "running"
        gate.touch()
        events = server.follow(run_id)
        assert events[-1].event == "run.completed"
        assert events[: len(held)] == held
        assert server.status(run_id) == "completed"

    def test_many_clients_on_one_run_all_get_every_event_in_order(self, server: Server):
        gate = server.gate()
        run_id = server.start("gated", {"gate": str(gate)})

        async def main() -> list[list[Sent]]:
            holding = asyncio.Semaphore(0)  # released by each client that saw hold start

            async def client() -> list[Sent]:
                got: list[Sent] = []
                async with (
                    server.async_client() as http,
                    http.stream("GET", f"/runs/{run_id}/events") as response,
                ):
                    assert response.status_code == 200
                    async for sent in aparse(response):
                        if sent is None:
                            continue
                        got.append(sent)
                        if sent.event == "stage.started" and sent.data["stage"] == "hold":
                            holding.release()
                return got

            clients = [asyncio.create_task(client()) for _ in range(CLIENTS)]
            for _ in range(CLIENTS):  # every client follows the live run ...
                await asyncio.wait_for(holding.acquire(), 30)
            gate.touch()  # ... before it goes on to its end
            return await asyncio.wait_for(asyncio.gather(*clients), 60)

        received = asyncio.run(main())
        events = server.follow(run_id)
        assert events[-1].event == "run.completed"
        assert all(got == events for got in received)
        assert len(received) == CLIENTS
