"""The MCP server of a RunService: tools, run resources, and what a call waits for."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, Final

from mcp.server import Server, ServerRequestContext
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    ListToolsResult,
    PaginatedRequestParams,
    ReadResourceRequestParams,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
    TextContent,
    TextResourceContents,
)

from ..._check import number
from ..._service import RunService
from ..._version import __version__
from ...errors import ConfigurationError
from ._errors import resource_error, tool_error
from ._tools import (
    CancelRun,
    GetRun,
    SendInput,
    StartRun,
    check_arguments,
    fixed_tools,
    pipeline_tools,
)
from ._waiting import run_json, waited

__all__ = ["DEFAULT_WAIT_BOUND", "RUN_URI", "create_mcp_server"]

DEFAULT_WAIT_BOUND: Final = 25.0
"""Seconds a tool call waits for a run at most: below the 60 s after which common MCP
clients give up on a call."""

RUN_URI: Final = "stageflow://runs/{run_id}"
"""The URI template of the run resources (what get_run answers, as JSON)."""

_RUN_URI: Final = re.compile(r"stageflow://runs/(?P<run_id>[^/?#]+)")
_LISTED: Final = 50  # runs a resources/list page holds

_Context = ServerRequestContext[Any]


def create_mcp_server(
    service: RunService, *, wait_bound: float = DEFAULT_WAIT_BOUND, name: str = "stageflow"
) -> Server[Any]:
    """The MCP server of ``service``: an ``mcp`` SDK low-level ``Server`` (run it over
    stdio or streamable HTTP, as ``stageflow mcp`` does).

    Tools: ``list_pipelines``, ``start_run``, ``get_run``, ``cancel_run``,
    ``send_input``, and ``run_<pipeline>`` for each catalog pipeline, whose input schema
    is the pipeline's data schema. A call that waits for a run (``start_run`` and
    ``get_run`` with ``wait``, a pipeline's tool) sends a progress notification as each
    stage finishes, when the client asked for progress, and returns within
    ``wait_bound`` seconds: the run with its outputs if it ended, else its run id and
    status, to poll with ``get_run``. Runs are driven by ``service``, never by a call:
    a client that goes away or gives up cancels nothing. Each run is a resource,
    ``stageflow://runs/{run_id}`` (get_run's JSON).

    A stageflow error comes back as a tool result with ``isError`` and
    ``{"error": {"type", "message", "field", "value"}}``; anything else as an internal
    error (logged here with its traceback, shown to no client).

    The caller owns ``service``: close it (``await service.aclose()``) once the server
    has stopped.

    Args:
        service: what the tools call.
        wait_bound: seconds a call waits for a run at most (a larger ``wait`` counts as
            this).
        name: the server's name, as clients show it.

    Raises:
        ConfigurationError: ``service`` is no RunService, or ``wait_bound`` is not a
            positive number of seconds.
    """
    if not isinstance(service, RunService):
        raise ConfigurationError(
            f"service must be a RunService, not {service!r}", field="service", value=service
        )
    number(wait_bound, "wait_bound", "a positive number of seconds", gt=0)
    bound = float(wait_bound)
    fixed = fixed_tools(bound)
    own = pipeline_tools(service.catalog, bound)
    tools = [tool for _, tool in fixed.values()] + [p.tool for p in own.values()]
    schemas = {tool.name: tool.input_schema for tool in tools}

    async def list_pipelines(ctx: _Context, arguments: Any) -> Any:
        tool_of = {p.entry.name: name for name, p in own.items()}
        return {
            "pipelines": [
                {**summary, "data_schema": entry.data_schema(), "tool": tool_of[entry.name]}
                for summary, entry in zip(service.pipelines(), service.catalog, strict=True)
            ]
        }

    async def start_run(ctx: _Context, arguments: StartRun) -> Any:
        run_id = await service.start(
            arguments.pipeline, arguments.data, labels=arguments.labels, run_id=arguments.run_id
        )
        return await waited(service, run_id, arguments.wait, bound=bound, report=_reporter(ctx))

    async def get_run(ctx: _Context, arguments: GetRun) -> Any:
        if arguments.wait > 0:
            return await waited(
                service, arguments.run_id, arguments.wait, bound=bound, report=_reporter(ctx)
            )
        return await run_json(service, arguments.run_id)

    async def cancel_run(ctx: _Context, arguments: CancelRun) -> Any:
        return await service.cancel(arguments.run_id)

    async def send_input(ctx: _Context, arguments: SendInput) -> Any:
        return await service.send(arguments.run_id, arguments.name, arguments.value)

    handlers: dict[str, Callable[[_Context, Any], Awaitable[Any]]] = {
        "list_pipelines": list_pipelines,
        "start_run": start_run,
        "get_run": get_run,
        "cancel_run": cancel_run,
        "send_input": send_input,
    }

    async def on_list_tools(
        ctx: _Context, params: PaginatedRequestParams | None
    ) -> ListToolsResult:
        return ListToolsResult(tools=tools)

    async def on_call_tool(ctx: _Context, params: CallToolRequestParams) -> CallToolResult:
        tool = params.name
        arguments = params.arguments or {}
        pipeline = own.get(tool)
        try:
            if pipeline is not None:
                run_id = await service.start(pipeline.entry.name, arguments)
                answer = await waited(service, run_id, bound, bound=bound, report=_reporter(ctx))
            elif tool in handlers:
                model, _ = fixed[tool]
                answer = await handlers[tool](ctx, check_arguments(model, arguments, tool))
            else:
                known = ", ".join(schemas)
                raise ConfigurationError(
                    f"no tool named {tool!r}; the tools are {known}", field="name", value=tool
                )
            return _result(answer)
        except Exception as error:  # noqa: BLE001 - every error is the call's result
            return tool_error(error, tool=tool, data_is_arguments=pipeline is not None)

    async def on_list_resource_templates(
        ctx: _Context, params: PaginatedRequestParams | None
    ) -> ListResourceTemplatesResult:
        return ListResourceTemplatesResult(
            resource_templates=[
                ResourceTemplate(
                    name="run",
                    title="A stageflow run",
                    uri_template=RUN_URI,
                    description="A run, as get_run answers: status, stages, outputs, usage, "
                    "pending inputs.",
                    mime_type="application/json",
                )
            ]
        )

    async def on_list_resources(
        ctx: _Context, params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        cursor = params.cursor if params is not None else None
        try:
            page = await service.list(limit=_LISTED, cursor=cursor)
        except Exception as error:  # noqa: BLE001 - a bad cursor, the store down
            raise resource_error(error, uri="resources/list") from None
        return ListResourcesResult(
            resources=[
                Resource(
                    name=run["run_id"],
                    title=f"{run['pipeline']} run {run['run_id']} ({run['status']})",
                    uri=RUN_URI.format(run_id=run["run_id"]),
                    mime_type="application/json",
                )
                for run in page["runs"]
            ],
            next_cursor=page["next"],
        )

    async def on_read_resource(
        ctx: _Context, params: ReadResourceRequestParams
    ) -> ReadResourceResult:
        uri = str(params.uri)
        try:
            found = _RUN_URI.fullmatch(uri)
            if found is None:
                raise ConfigurationError(
                    f"no resource {uri!r}: runs are {RUN_URI}", field="uri", value=uri
                )
            shown = await run_json(service, found["run_id"])
        except Exception as error:  # noqa: BLE001 - every error is the read's answer
            raise resource_error(error, uri=uri) from None
        text = _json(shown)
        return ReadResourceResult(
            contents=[TextResourceContents(uri=uri, text=text, mime_type="application/json")]
        )

    return Server(
        name,
        version=__version__,
        title="stageflow",
        instructions=_instructions(bound),
        get_tool_input_schema=schemas.get,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
        on_list_resources=on_list_resources,
        on_list_resource_templates=on_list_resource_templates,
        on_read_resource=on_read_resource,
    )


def _reporter(ctx: _Context) -> Callable[[float, float, str], Awaitable[None]]:
    async def report(progress: float, total: float, message: str) -> None:
        # A no-op when the call carried no progress token.
        await ctx.session.report_progress(progress, total, message)

    return report


def _json(value: Any) -> str:
    return json.dumps(value, default=repr, allow_nan=False)


def _result(answer: Any) -> CallToolResult:
    text = _json(answer)
    return CallToolResult(content=[TextContent(text=text)], structured_content=json.loads(text))


def _instructions(bound: float) -> str:
    return (
        "Runs stageflow pipelines. list_pipelines shows them and their data schemas; start "
        "a run with its run_<pipeline> tool or start_run. A call waits at most "
        f"{bound:g} s: a longer run comes back with its run_id and status, and goes on; "
        "poll get_run (with wait) until it is completed, failed or cancelled. A run that "
        "waits for input lists it in waiting_for: give it with send_input. Runs are "
        "resources too: stageflow://runs/{run_id}."
    )
