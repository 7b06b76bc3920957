"""``stageflow mcp`` with the ``mcp`` SDK's real client, over stdio and streamable HTTP:
the tools and their schemas, runs started and waited for (results, progress, the
bound), human input, cancelling, runs as resources, and errors that name the field."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import MCPError
from mcp_types import TextResourceContents
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from stageflow.adapters.mcp import tool_name

from ._catalog import Gate, Numbers
from .conftest import BOUND, Connect, HttpServer, answer, refusal, stdio

FIXED = ["list_pipelines", "start_run", "get_run", "cancel_run", "send_input"]


def run(scenario: Any) -> Any:
    return asyncio.run(scenario)


class TestTools:
    def test_the_tools_are_the_fixed_ones_and_one_per_pipeline_with_its_data_schema(
        self, connect: Connect
    ) -> None:
        async def scenario() -> None:
            async with connect() as client:
                tools = {tool.name: tool for tool in (await client.list_tools()).tools}
            own = ["run_chain", "run_gated", "run_approval", "run_weird_name_"]
            assert list(tools) == [*FIXED, *own]
            assert tools["run_chain"].input_schema == Numbers.model_json_schema()
            assert tools["run_gated"].input_schema == Gate.model_json_schema()
            assert tools["run_approval"].input_schema == {"type": "object"}  # no data model
            assert tools["run_chain"].description.startswith("Three stages, one after the other.")
            assert f"at most {BOUND:g} s" in tools["run_chain"].description
            start = tools["start_run"].input_schema
            assert start["required"] == ["pipeline"]
            assert set(start["properties"]) == {"pipeline", "data", "labels", "run_id", "wait"}
            assert tools["get_run"].annotations.read_only_hint is True  # type: ignore[union-attr]

        run(scenario())

    def test_list_pipelines_shows_each_pipeline_its_data_schema_and_its_tool(
        self, connect: Connect
    ) -> None:
        async def scenario() -> None:
            async with connect() as client:
                listed = answer(await client.call_tool("list_pipelines", {}))["pipelines"]
            assert [p["name"] for p in listed] == ["chain", "gated", "approval", "weird name!"]
            chain = listed[0]
            assert chain["stages"] == 3
            assert chain["description"] == "Three stages, one after the other"
            assert chain["data_schema"] == Numbers.model_json_schema()
            assert [p["tool"] for p in listed] == [
                "run_chain", "run_gated", "run_approval", "run_weird_name_",
            ]  # fmt: skip

        run(scenario())

    def test_tool_names_keep_to_what_mcp_allows_and_never_collide(self) -> None:
        assert tool_name("weird name!") == "run_weird_name_"
        assert tool_name("a/b", taken={"run_a_b": 1}) == "run_a_b_2"
        assert tool_name("x" * 300) == "run_" + "x" * 124
        assert len(tool_name("x" * 300, taken={"run_" + "x" * 124: 1})) == 128


class TestWaiting:
    def test_a_pipeline_tool_returns_the_runs_outputs_when_it_ends_within_the_bound(
        self, connect: Connect
    ) -> None:
        async def scenario() -> None:
            async with connect() as client:
                done = answer(await client.call_tool("run_chain", {"n": 4}))
            assert done["status"] == "completed"
            assert done["pipeline"] == "chain"
            assert done["outputs"] == {
                "source": {"n": 4}, "double": {"n": 8}, "increment": {"n": 9},
            }  # fmt: skip
            assert [s["status"] for s in done["stages"]] == ["completed"] * 3
            assert "note" not in done

        run(scenario())

    def test_start_run_with_wait_returns_the_result_and_without_it_the_run_id(
        self, connect: Connect
    ) -> None:
        async def scenario() -> None:
            async with connect() as client:
                done = answer(await client.call_tool(
                    "start_run",
                    {"pipeline": "chain", "data": {"n": 2}, "labels": {"by": "mcp"}, "wait": 9},
                ))  # fmt: skip
                started = answer(await client.call_tool("start_run", {"pipeline": "chain"}))
                later = answer(await client.call_tool(
                    "get_run", {"run_id": started["run_id"], "wait": 9}
                ))  # fmt: skip
            assert done["status"] == "completed"
            assert done["labels"] == {"by": "mcp"}
            assert done["outputs"]["increment"] == {"n": 5}
            assert started["run_id"] != done["run_id"]
            assert later["status"] == "completed"
            assert later["outputs"]["increment"] == {"n": 3}  # the default n=1

        run(scenario())

    def test_progress_notifications_come_in_order_as_the_stages_finish(
        self, connect: Connect
    ) -> None:
        seen: list[tuple[float, float | None, str | None]] = []

        async def progress(done: float, total: float | None, message: str | None) -> None:
            seen.append((done, total, message))

        async def scenario() -> Any:
            async with connect() as client:
                return answer(
                    await client.call_tool("run_chain", {"n": 1}, progress_callback=progress)
                )

        assert run(scenario())["status"] == "completed"
        assert seen == [
            (1.0, 3.0, "source completed (1/3 stages)"),
            (2.0, 3.0, "double completed (2/3 stages)"),
            (3.0, 3.0, "increment completed (3/3 stages)"),
        ]

    def test_a_client_of_the_handshake_protocol_gets_the_same_answers_and_progress(
        self, tmp_path: Path
    ) -> None:
        seen: list[str | None] = []

        async def progress(done: float, total: float | None, message: str | None) -> None:
            seen.append(message)

        async def scenario() -> tuple[str, Any, Any]:
            async with stdio(tmp_path, mode="legacy") as client:
                done = answer(
                    await client.call_tool("run_chain", {"n": 2}, progress_callback=progress)
                )
                refused = refusal(await client.call_tool("run_chain", {"n": "x"}))
                return client.protocol_version, done, refused

        version, done, refused = run(scenario())
        assert version in HANDSHAKE_PROTOCOL_VERSIONS  # (2025-11-25 and before)
        assert done["outputs"]["increment"] == {"n": 5}
        assert seen == [
            "source completed (1/3 stages)",
            "double completed (2/3 stages)",
            "increment completed (3/3 stages)",
        ]
        assert (refused["field"], refused["value"]) == ("n", "x")

    @pytest.mark.slow
    def test_a_longer_run_comes_back_with_its_run_id_and_goes_on_until_polled_done(
        self, connect: Connect, gate: Path
    ) -> None:
        async def scenario() -> tuple[Any, Any, Any]:
            async with connect() as client:
                started = time.monotonic()
                first = answer(await client.call_tool(
                    "start_run", {"pipeline": "gated", "data": {"gate": str(gate)}, "wait": 1}
                ))  # fmt: skip
                waited = time.monotonic() - started
                assert waited < BOUND
                between = answer(await client.call_tool("get_run", {"run_id": first["run_id"]}))
                gate.touch()
                last = answer(await client.call_tool(
                    "get_run", {"run_id": first["run_id"], "wait": BOUND}
                ))  # fmt: skip
            return first, between, last

        first, between, last = run(scenario())
        assert first["status"] == "running"
        assert "poll get_run" in first["note"]
        assert first["outputs"] == {"start": {"done": "yes"}}
        assert between["status"] == "running"
        assert between["driven"] is True
        assert last["status"] == "completed"
        assert last["outputs"]["after"] == {"done": "yes"}
        assert "note" not in last

    @pytest.mark.slow
    def test_a_wait_beyond_the_bound_counts_as_the_bound(self, tmp_path: Path, gate: Path) -> None:
        async def scenario() -> tuple[Any, float]:
            async with stdio(tmp_path, "--wait-bound", "1") as client:
                started = time.monotonic()
                answered = answer(await client.call_tool(
                    "start_run", {"pipeline": "gated", "data": {"gate": str(gate)}, "wait": 600}
                ))  # fmt: skip
                return answered, time.monotonic() - started

        answered, waited = run(scenario())
        assert answered["status"] == "running"
        assert "after 1 s" in answered["note"]
        assert waited < 60  # not the 600 asked for

    def test_a_client_that_leaves_during_a_call_cancels_no_run(
        self, http_server: HttpServer, gate: Path
    ) -> None:
        run_id = f"leaver-{uuid.uuid4().hex}"

        async def leave() -> None:
            began = anyio.Event()

            async def progress(done: float, total: float | None, message: str | None) -> None:
                began.set()  # the stage "start" finished: the run is under way

            async with http_server.client() as client, anyio.create_task_group() as calls:
                calls.start_soon(lambda: client.call_tool(
                    "start_run",
                    {"pipeline": "gated", "data": {"gate": str(gate)}, "run_id": run_id,
                     "wait": BOUND},
                    progress_callback=progress,
                ))  # fmt: skip
                await began.wait()
                calls.cancel_scope.cancel()  # the call given up, then the session closed

        async def come_back() -> tuple[Any, Any]:
            async with http_server.client() as client:
                still = answer(await client.call_tool("get_run", {"run_id": run_id}))
                gate.touch()
                done = answer(await client.call_tool("get_run", {"run_id": run_id, "wait": BOUND}))
            return still, done

        run(leave())
        still, done = run(come_back())
        assert (still["status"], still["driven"]) == ("running", True)
        assert done["status"] == "completed"

    def test_over_stdio_the_client_leaving_stops_the_server_which_records_its_runs_cancelled(
        self, tmp_path: Path, gate: Path
    ) -> None:
        async def leave() -> str:
            async with stdio(tmp_path) as client:
                started = answer(await client.call_tool(
                    "start_run", {"pipeline": "gated", "data": {"gate": str(gate)}}
                ))  # fmt: skip
                return str(started["run_id"])

        async def come_back(run_id: str) -> Any:
            async with stdio(tmp_path) as client:
                return answer(await client.call_tool("get_run", {"run_id": run_id}))

        shown = run(come_back(run(leave())))
        assert (shown["status"], shown["driven"]) == ("cancelled", False)
        assert "Traceback" not in (tmp_path / "server.log").read_text()


class TestInput:
    def test_a_run_waits_for_its_input_and_completes_once_it_is_given(
        self, connect: Connect
    ) -> None:
        async def scenario() -> tuple[Any, Any, Any, Any]:
            async with connect() as client:
                waiting = answer(await client.call_tool("run_approval", {"title": "owls"}))
                run_id = waiting["run_id"]
                shown = answer(await client.call_tool("get_run", {"run_id": run_id}))
                given = answer(await client.call_tool(
                    "send_input", {"run_id": run_id, "name": "approve", "value": {"approved": True}}
                ))  # fmt: skip
                done = answer(await client.call_tool("get_run", {"run_id": run_id, "wait": BOUND}))
            return waiting, shown, given, done

        waiting, shown, given, done = run(scenario())
        assert waiting["status"] == "waiting"
        assert "send_input" in waiting["note"]
        assert shown["status"] == "waiting"
        [pending] = shown["waiting_for"]
        assert pending["name"] == "approve"
        assert pending["prompt"] == "Publish 'post owls'?"
        assert pending["schema"]["required"] == ["approved"]
        assert given["value"] == {"approved": True, "note": ""}
        assert given["resumed"] is True
        assert done["status"] == "completed"
        assert done["outputs"]["publish"] == {"published": True}
        assert done["waiting_for"] == []

    def test_a_value_that_does_not_match_the_inputs_schema_is_refused_naming_the_field(
        self, connect: Connect
    ) -> None:
        async def scenario() -> tuple[Any, Any]:
            async with connect() as client:
                waiting = answer(await client.call_tool("run_approval", {}))
                maybe = {"approved": "maybe"}
                refused = refusal(await client.call_tool(
                    "send_input", {"run_id": waiting["run_id"], "name": "approve", "value": maybe}
                ))  # fmt: skip
                unknown = refusal(await client.call_tool(
                    "send_input", {"run_id": waiting["run_id"], "name": "nope", "value": 1}
                ))  # fmt: skip
                still = answer(await client.call_tool("get_run", {"run_id": waiting["run_id"]}))
            return refused, unknown, still

        refused, unknown, still = run(scenario())
        assert refused["type"] == "InputValidationError"
        assert (refused["field"], refused["value"]) == ("value.approved", "maybe")
        assert "nothing was stored" in refused["message"]
        assert unknown["type"] == "UnknownInputError"
        assert (unknown["field"], unknown["value"]) == ("name", "nope")
        assert still["status"] == "waiting"


class TestCancel:
    def test_cancel_run_cancels_a_running_run(self, connect: Connect, gate: Path) -> None:
        async def scenario() -> tuple[Any, Any, Any]:
            async with connect() as client:
                started = answer(await client.call_tool(
                    "start_run", {"pipeline": "gated", "data": {"gate": str(gate)}}
                ))  # fmt: skip
                cancelled = answer(await client.call_tool(
                    "cancel_run", {"run_id": started["run_id"]}
                ))  # fmt: skip
                again = answer(await client.call_tool(
                    "cancel_run", {"run_id": started["run_id"]}
                ))  # fmt: skip
            return started, cancelled, again

        started, cancelled, again = run(scenario())
        assert cancelled == {"run_id": started["run_id"], "status": "cancelled"}
        assert again == cancelled  # an ended run is left as it ended


class TestResources:
    def test_a_run_is_a_resource_whose_json_is_what_get_run_answers(self, connect: Connect) -> None:
        async def scenario() -> tuple[Any, Any, Any, Any]:
            async with connect() as client:
                done = answer(await client.call_tool("run_chain", {"n": 3}))
                uri = f"stageflow://runs/{done['run_id']}"
                read = await client.read_resource(uri)
                templates = await client.list_resource_templates()
                listed = await client.list_resources()
            return done, read, templates, listed

        done, read, templates, listed = run(scenario())
        [content] = read.contents
        assert isinstance(content, TextResourceContents)
        assert content.mime_type == "application/json"
        shown = json.loads(content.text)
        assert shown == {**done, "driven": False}
        assert [t.uri_template for t in templates.resource_templates] == [
            "stageflow://runs/{run_id}"
        ]
        uris = [r.uri for r in listed.resources]
        assert f"stageflow://runs/{done['run_id']}" in uris

    def test_reading_an_unknown_run_or_uri_is_an_error_naming_it(self, connect: Connect) -> None:
        async def scenario() -> list[MCPError]:
            errors = []
            async with connect() as client:
                for uri in ("stageflow://runs/no-such-run", "stageflow://elsewhere/x"):
                    with pytest.raises(MCPError) as caught:
                        await client.read_resource(uri)
                    errors.append(caught.value)
            return errors

        run_error, uri_error = run(scenario())
        assert run_error.data["type"] == "UnknownRunError"
        assert (run_error.data["field"], run_error.data["value"]) == ("run_id", "no-such-run")
        assert uri_error.data["field"] == "uri"
        assert "stageflow://runs/{run_id}" in uri_error.message


class TestErrors:
    @pytest.mark.parametrize(
        ("tool", "arguments", "kind", "field", "value"),
        [
            ("start_run", {"pipeline": "nope"}, "UnknownPipelineError", "pipeline", "nope"),
            ("start_run", {"pipeline": "chain", "data": {"n": "many"}}, "ConfigurationError",
             "data.n", "many"),
            ("run_chain", {"n": "many"}, "ConfigurationError", "n", "many"),
            ("run_gated", {}, "ConfigurationError", "gate", {}),  # (the data given)
            ("start_run", {"pipeline": "chain", "wait": -1}, "ConfigurationError", "wait", -1),
            ("start_run", {}, "ConfigurationError", "pipeline", None),
            ("start_run", {"pipeline": "chain", "colour": "red"}, "ConfigurationError",
             "colour", "red"),
            ("get_run", {"run_id": "no-such-run"}, "UnknownRunError", "run_id", "no-such-run"),
            ("get_run", {"run_id": "no-such-run", "wait": 1}, "UnknownRunError", "run_id",
             "no-such-run"),
            ("cancel_run", {"run_id": "no-such-run"}, "UnknownRunError", "run_id", "no-such-run"),
            ("send_input", {"run_id": "no-such-run", "name": "approve", "value": True},
             "UnknownRunError", "run_id", "no-such-run"),
            ("get_run", {"run_id": "not a run id!"}, "ConfigurationError", "run_id",
             "not a run id!"),
            ("no_such_tool", {}, "ConfigurationError", "name", "no_such_tool"),
        ],
    )  # fmt: skip
    def test_bad_input_is_a_tool_error_naming_the_field_and_value(
        self,
        quick_connect: Connect,
        tool: str,
        arguments: dict[str, Any],
        kind: str,
        field: str,
        value: Any,
    ) -> None:
        async def scenario() -> Any:
            async with quick_connect() as client:
                return refusal(await client.call_tool(tool, arguments))

        refused = run(scenario())
        assert (refused["type"], refused["field"], refused["value"]) == (kind, field, value)
        assert "Traceback" not in refused["message"]

    def test_errors_come_back_the_same_over_stdio(self, tmp_path: Path) -> None:
        async def scenario() -> list[Any]:
            async with stdio(tmp_path) as client:
                return [
                    refusal(await client.call_tool("start_run", {"pipeline": "nope"})),
                    refusal(await client.call_tool("run_chain", {"n": "many"})),
                ]

        unknown, invalid = run(scenario())
        assert (unknown["type"], unknown["field"]) == ("UnknownPipelineError", "pipeline")
        assert (invalid["type"], invalid["field"], invalid["value"]) == (
            "ConfigurationError", "n", "many",
        )  # fmt: skip
