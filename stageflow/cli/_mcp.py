"""``stageflow mcp``: the MCP server of a catalog, over stdio or streamable HTTP."""

from __future__ import annotations

import asyncio
import signal
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._engine import Engine
from .._service import RunService
from ..ports import EventLog
from . import _store
from ._commands import StoreUrl, Verbose, _reported
from ._errors import CliError
from ._serve import _LOOPBACK, Pipelines, load_catalog

if TYPE_CHECKING:
    from ..ports import RunStore


class Transport(StrEnum):
    """How clients reach the server."""

    STDIO = "stdio"
    HTTP = "http"


def mcp(
    pipelines: Pipelines,
    store: StoreUrl = None,
    transport: Annotated[
        Transport,
        typer.Option(
            "--transport",
            help="stdio: a client starts this command and talks over its stdin and stdout; "
            "http: streamable HTTP at http://HOST:PORT/mcp.",
        ),
    ] = Transport.STDIO,
    host: Annotated[
        str, typer.Option("--host", help="http: the address to listen on (no authentication).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="http: the port.")] = 8001,
    wait_bound: Annotated[
        float,
        typer.Option(
            "--wait-bound",
            metavar="SECONDS",
            min=0.01,
            help="Seconds a tool call waits for a run at most; a longer run comes back with "
            "its run id, to poll with get_run.",
        ),
    ] = 25.0,
    log_level: Annotated[
        str,
        typer.Option("--log-level", help="http: uvicorn's: critical, error, warning, info, debug."),
    ] = "warning",
    verbose: Verbose = False,
) -> None:
    """Serve a catalog's pipelines to AI agents over MCP: tools to list pipelines and start, follow, answer and cancel runs of the store, one tool per pipeline, and each run as a resource. Needs the mcp extra.

    The runs it starts are driven by this process, not by the calls: a client that gives up on a call cancels nothing. Stopping the server (the stdio client leaves, Ctrl-C, SIGTERM) cancels the runs still going, which are recorded as cancelled: resume them later (stageflow resume, or POST /runs/ID/resume of stageflow serve).
    """  # noqa: E501 - one line: the help text keeps line breaks
    with _reported(verbose):
        try:
            from ..adapters.mcp import create_mcp_server
        except ImportError as error:
            raise CliError(
                f"stageflow mcp needs the mcp extra: pip install 'stageflow[mcp]' ({error})"
            ) from None
        catalog = load_catalog(pipelines)
        url = _store.store_url(store)
        opened = _store.open_store(url)
        if not isinstance(opened, EventLog):  # pragma: no cover - SQLAlchemyStore is one
            raise CliError(f"the store {_store.shown(url)} keeps no events (no EventLog)")
        service = RunService(Engine(store=opened, event_log=opened), catalog)
        server = create_mcp_server(service, wait_bound=wait_bound)
        shown = ", ".join(catalog.names)
        where = "stdio" if transport == Transport.STDIO else f"http://{host}:{port}/mcp"
        # stderr only: on stdio, stdout is the protocol's.
        typer.echo(
            f"serving {len(catalog)} pipelines ({shown}) of {_store.shown(url)} over MCP on "
            f"{where}",
            err=True,
        )
        if transport == Transport.HTTP and host not in _LOOPBACK:
            typer.echo(
                f"warning: {host} is reachable from other machines, and this server has no "
                "authentication: anyone who reaches it can start and cancel runs (docs/mcp.md)",
                err=True,
            )
        if transport == Transport.STDIO:
            asyncio.run(_stdio(server, service, opened))
        else:
            asyncio.run(_http(server, service, opened, host, port, log_level))


async def _stdio(server: Any, service: RunService, store: RunStore) -> None:
    from mcp.server.stdio import stdio_server

    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if main is not None:  # SIGTERM stops the server as the client leaving does
        loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    except asyncio.CancelledError:
        pass
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        await _closed(service, store)


async def _http(
    server: Any, service: RunService, store: RunStore, host: str, port: int, log_level: str
) -> None:
    import uvicorn

    app = server.streamable_http_app(host=host)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10
    )
    try:
        await uvicorn.Server(config).serve()
    finally:
        await _closed(service, store)


async def _closed(service: RunService, store: RunStore) -> None:
    try:
        await service.aclose()  # the runs still driven are recorded as cancelled
    finally:
        await store.aclose()
