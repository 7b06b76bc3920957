"""The MCP server of a :class:`~stageflow.RunService` (the official ``mcp`` SDK; the
``mcp`` extra).

``stageflow mcp`` runs it over stdio or streamable HTTP; to embed it in your own
process::

    from mcp.server.stdio import stdio_server

    from stageflow import Engine, RunService
    from stageflow.adapters.mcp import create_mcp_server
    from stageflow.adapters.sqlalchemy import SQLAlchemyStore

    store = SQLAlchemyStore("sqlite:///runs.db")
    service = RunService(Engine(store=store, event_log=store), catalog)
    server = create_mcp_server(service, wait_bound=25)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
    await service.aclose()

See ``docs/mcp.md`` for the tools, the wait bound and the errors.
"""

from ._server import DEFAULT_WAIT_BOUND, RUN_URI, create_mcp_server
from ._tools import PIPELINE_TOOL_PREFIX, tool_name

__all__ = [
    "DEFAULT_WAIT_BOUND",
    "PIPELINE_TOOL_PREFIX",
    "RUN_URI",
    "create_mcp_server",
    "tool_name",
]
