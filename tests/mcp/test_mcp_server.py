"""``create_mcp_server`` in this process, reached with the SDK's client in-process: what
the subprocess tests cannot reach (errors of every kind, a catalog that changed, a
progress notification that cannot be sent), and the arguments it refuses."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from mcp import MCPError
from pydantic import BaseModel, field_validator

from stageflow import Catalog, Engine, RunService
from stageflow.adapters.mcp import DEFAULT_WAIT_BOUND, create_mcp_server
from stageflow.adapters.mcp._errors import error_json, tool_error
from stageflow.adapters.mcp._waiting import waited
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.errors import (
    ConfigurationError,
    InputAlreadyGivenError,
    InputTimeoutError,
    InputValidationError,
    RunExistsError,
    RunLeasedError,
    StageflowError,
    StoreError,
    UnknownInputError,
    UnknownRunError,
)

from ._catalog import approval, chain
from ._catalog import catalog as test_catalog
from .conftest import answer, refusal, served


class Touchy(BaseModel):
    n: int

    @field_validator("n")
    @classmethod
    def explode(cls, n: int) -> int:
        raise RuntimeError("a bug in the data model")  # not a ValueError: no ValidationError


class TestCreateMcpServer:
    def test_a_service_that_is_no_run_service_is_refused(self) -> None:
        with pytest.raises(ConfigurationError) as caught:
            create_mcp_server(test_catalog)  # type: ignore[arg-type]
        assert caught.value.field == "service"

    @pytest.mark.parametrize("bound", [0, -1, "25", float("nan")])
    def test_a_wait_bound_that_is_no_positive_number_is_refused(
        self, tmp_path: Path, bound: Any
    ) -> None:
        store = SQLAlchemyStore(f"sqlite:///{tmp_path / 'runs.db'}")
        service = RunService(Engine(store=store, event_log=store), test_catalog)
        with pytest.raises(ConfigurationError) as caught:
            create_mcp_server(service, wait_bound=bound)
        assert caught.value.field == "wait_bound"

    def test_the_default_bound_is_below_the_60_s_clients_give_up_after(self) -> None:
        assert 0 < DEFAULT_WAIT_BOUND < 60


class TestErrorJson:
    @pytest.mark.parametrize(
        ("error", "field", "value"),
        [
            (InputValidationError("no", run_id="r", input="a", field="x.0", value=3), "value.x.0",
             3),
            (InputValidationError("no", run_id="r", input="a", field="", value=3), "value", 3),
            (ConfigurationError("bad", field="labels", value=[1]), "labels", [1]),
            (RunLeasedError.of("r", "elsewhere", 0.0), "run_id", "r"),
            (UnknownInputError("bad", run_id="r", input="a", known=()), "name", "a"),
            (InputAlreadyGivenError.of("r", "a"), "name", "a"),
            (InputTimeoutError.of("a", 0.0), "name", "a"),
            (UnknownRunError.of("r"), "run_id", "r"),
            (RunExistsError("bad", run_id="r"), "run_id", "r"),
            (StoreError("the database is gone"), None, None),
        ],
    )  # fmt: skip
    def test_each_error_names_the_argument_in_error_and_its_value(
        self, error: StageflowError, field: str | None, value: Any
    ) -> None:
        shown = error_json(error)
        assert shown == {
            "type": type(error).__name__, "message": str(error), "field": field, "value": value,
        }  # fmt: skip

    def test_a_pipeline_tools_data_fields_are_named_as_its_arguments(self) -> None:
        error = ConfigurationError("bad", field="data.items.0", value=1)
        assert error_json(error, data_is_arguments=True)["field"] == "items.0"
        assert error_json(error)["field"] == "data.items.0"

    def test_a_long_value_is_cut_short_and_one_that_is_no_json_shown_as_its_repr(self) -> None:
        long = error_json(ConfigurationError("bad", field="x", value="y" * 5000))["value"]
        assert long == "y" * 2000 + "..."
        odd = error_json(ConfigurationError("bad", field="x", value={1, 2}))["value"]
        assert odd == "{1, 2}"

    def test_a_store_that_fails_is_logged_and_what_the_caller_asked_wrong_is_not(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO, logger="stageflow.mcp"):
            failed = tool_error(StoreError("the database is gone"), tool="get_run")
            unknown = tool_error(UnknownRunError.of("r"), tool="get_run")
        assert failed.is_error
        assert unknown.is_error
        assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
            ("WARNING", "tool 'get_run': the store failed: the database is gone")
        ]

    def test_what_is_no_stageflow_error_shows_nothing_of_itself(self) -> None:
        shown = error_json(RuntimeError("secret at /home/me/.token"))
        assert shown == {
            "type": "InternalError", "message": "internal error (see the server's log)",
            "field": None, "value": None,
        }  # fmt: skip


class TestInProcess:
    def test_an_unexpected_error_is_an_internal_error_logged_here_and_shown_nowhere(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        catalog = Catalog().add("touchy", chain, data=Touchy)

        async def scenario() -> Any:
            async with served(tmp_path, catalog) as (client, _):
                return refusal(await client.call_tool("run_touchy", {"n": 1}))

        with caplog.at_level(logging.ERROR, logger="stageflow.mcp"):
            refused = asyncio.run(scenario())
        assert refused["type"] == "InternalError"
        assert "a bug" not in refused["message"]
        [record] = [r for r in caplog.records if r.name == "stageflow.mcp"]
        assert "run_touchy" in record.getMessage()
        assert record.exc_info is not None

    def test_a_run_id_taken_or_an_input_given_twice_is_refused_naming_it(
        self, tmp_path: Path
    ) -> None:
        async def scenario() -> tuple[Any, Any]:
            async with served(tmp_path) as (client, _):
                start = {"pipeline": "chain", "run_id": "twice", "wait": 5}
                answer(await client.call_tool("start_run", start))
                taken = refusal(await client.call_tool("start_run", start))
                waiting = answer(await client.call_tool("run_approval", {}))
                no = {"approved": False}
                give = {"run_id": waiting["run_id"], "name": "approve", "value": no}
                answer(await client.call_tool("send_input", give))
                twice = refusal(await client.call_tool("send_input", give))
            return taken, twice

        taken, twice = asyncio.run(scenario())
        assert (taken["type"], taken["field"], taken["value"]) == (
            "RunExistsError", "run_id", "twice",
        )  # fmt: skip
        assert (twice["type"], twice["field"], twice["value"]) == (
            "InputAlreadyGivenError", "name", "approve",
        )  # fmt: skip

    def test_a_bad_cursor_for_the_run_resources_is_an_error_naming_it(self, tmp_path: Path) -> None:
        async def scenario() -> MCPError:
            async with served(tmp_path) as (client, _):
                with pytest.raises(MCPError) as caught:
                    await client.list_resources(cursor="not-a-cursor")
                return caught.value

        error = asyncio.run(scenario())
        assert (error.data["type"], error.data["field"]) == ("ConfigurationError", "cursor")

    def test_a_run_of_a_pipeline_the_catalog_no_longer_has_is_still_shown(
        self, tmp_path: Path
    ) -> None:
        async def scenario() -> Any:
            async with served(tmp_path) as (client, _):
                done = answer(await client.call_tool("run_chain", {"n": 1}))
            seen: list[Any] = []

            async def progress(done: float, total: float | None, message: str | None) -> None:
                seen.append(message)

            async with served(tmp_path, Catalog({"approval": approval})) as (client, _):
                again = answer(await client.call_tool(
                    "get_run", {"run_id": done["run_id"], "wait": 5}, progress_callback=progress
                ))  # fmt: skip
            return again, seen

        again, seen = asyncio.run(scenario())
        assert again["status"] == "completed"
        assert seen == []  # its stages are no graph's of the catalog: nothing to count

    def test_a_progress_notification_that_cannot_be_sent_fails_nothing(
        self, tmp_path: Path
    ) -> None:
        async def broken(done: float, total: float, message: str) -> None:
            raise ConnectionResetError("the client is gone")

        async def scenario() -> Any:
            async with served(tmp_path) as (_, service):
                run_id = await service.start("chain", {"n": 2})
                return await waited(service, run_id, 5, bound=5, report=broken)

        assert asyncio.run(scenario())["status"] == "completed"


class TestCommand:
    @pytest.mark.parametrize(
        ("target", "said"),
        [
            ("tests.mcp._catalog:nothing", "has no attribute 'nothing'"),
            ("tests.mcp._catalog:empty", "tests.mcp._catalog:empty: the catalog is empty"),
        ],
    )
    def test_a_catalog_that_cannot_be_served_is_refused_before_the_store_is_opened(
        self, tmp_path: Path, target: str, said: str
    ) -> None:
        from typer.testing import CliRunner

        from stageflow.cli import EXIT_USAGE, app

        store = f"sqlite:///{tmp_path / 'runs.db'}"
        result = CliRunner().invoke(app, ["mcp", "--store", store, "--pipelines", target])
        assert result.exit_code == EXIT_USAGE, result.output
        assert result.output.startswith("error: ")
        assert said in result.output
        assert not (tmp_path / "runs.db").exists()
