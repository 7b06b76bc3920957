"""``stageflow serve`` (the HTTP API of a catalog, with uvicorn) and ``stageflow token``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._catalog import Catalog
from .._engine import Engine
from .._service import RunService
from ..errors import ConfigurationError, GraphError
from ..ports import EventLog
from . import _store
from ._commands import AsJson, StoreUrl, Verbose, _reported
from ._errors import CliError
from ._load import call_factory, load_object

if TYPE_CHECKING:
    from ..ports import RunStore

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

Pipelines = Annotated[
    str,
    typer.Option(
        "--pipelines",
        metavar="MOD:CATALOG",
        help="path/to/file.py:attr or package.module:attr: a stageflow Catalog, a mapping of "
        "names to pipelines or graphs, or a function of no arguments returning one.",
        show_default=False,
    ),
]


def serve(
    pipelines: Pipelines,
    store: StoreUrl = None,
    host: Annotated[
        str, typer.Option("--host", help="The address to listen on (others: put TLS in front).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="The port.")] = 8000,
    tokens_file: Annotated[
        Path | None,
        typer.Option(
            "--tokens-file",
            metavar="FILE",
            help="Token lines 'NAME SCOPE[,SCOPE] sha256:HEX' (stageflow token makes them); "
            "$STAGEFLOW_TOKENS adds more (one a line, or separated by ';').",
            show_default=False,
        ),
    ] = None,
    heartbeat: Annotated[
        float,
        typer.Option(
            "--heartbeat",
            metavar="SECONDS",
            min=0.01,
            help="Seconds between two comments on an idle event stream.",
        ),
    ] = 15.0,
    max_body: Annotated[
        int, typer.Option("--max-body", metavar="BYTES", min=1, help="Request bodies at most.")
    ] = 1_000_000,
    log_level: Annotated[
        str, typer.Option("--log-level", help="uvicorn's: critical, error, warning, info, debug.")
    ] = "info",
    verbose: Verbose = False,
) -> None:
    """Serve a catalog's pipelines over HTTP: start, follow (Server-Sent Events), answer, cancel, resume and delete runs of the store. Needs the server extra.

    Every route but /healthz needs a bearer token (read, or run to change anything). The runs it starts are driven by this process; stopping it (Ctrl-C, SIGTERM) cancels those still going, which are recorded as cancelled: resume them later (POST /runs/ID/resume).
    """  # noqa: E501 - one line: the help text keeps line breaks
    with _reported(verbose):
        served = prepare(
            pipelines, store=store, host=host, port=port, tokens_file=tokens_file,
            heartbeat=heartbeat, max_body=max_body, log_level=log_level,
        )  # fmt: skip
        typer.echo(served.said, err=True)
        if host not in _LOOPBACK:
            typer.echo(
                f"warning: {host} is reachable from other machines, and tokens travel in "
                "the clear over HTTP: put a TLS proxy in front (docs/service.md)",
                err=True,
            )
        asyncio.run(served.run())


@dataclass(frozen=True)
class Served:
    """A server made ready by :func:`prepare`: ``run()`` serves until it is stopped (a
    signal, or ``server.should_exit = True``), then closes the store."""

    server: Any  # a uvicorn.Server
    store: RunStore
    said: str  # what the command prints first

    async def run(self) -> None:
        await _served(self.server, self.store)


def prepare(
    pipelines: str,
    *,
    store: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    tokens_file: Path | None = None,
    heartbeat: float = 15.0,
    max_body: int = 1_000_000,
    log_level: str = "info",
    log_config: Any = "uvicorn",
) -> Served:
    """What ``stageflow serve`` runs: the catalog loaded, the tokens read, the store
    opened, the service and its app made, and a uvicorn server of it (``log_config``:
    uvicorn's own logging setup, or None to leave logging as it is).

    Raises:
        CliError: the server extra is missing, the catalog does not load, no token.
        ConfigurationError: a tokens line is bad.
    """
    try:
        import uvicorn

        from ..adapters.http import create_app, load_tokens
    except ImportError as error:  # pragma: no cover - the dev extra installs it
        raise CliError(
            f"stageflow serve needs the server extra: pip install 'stageflow[server]' ({error})"
        ) from None
    catalog = load_catalog(pipelines)
    tokens = load_tokens(tokens_file)
    if not tokens:
        raise CliError(
            "no tokens: every route but /healthz needs one. Make one with "
            "stageflow token NAME --scope run, and put its line in --tokens-file FILE or "
            "$STAGEFLOW_TOKENS"
        )
    url = _store.store_url(store)
    opened = _store.open_store(url)
    if not isinstance(opened, EventLog):  # pragma: no cover - SQLAlchemyStore is one
        raise CliError(f"the store {_store.shown(url)} keeps no events (no EventLog)")
    service = RunService(Engine(store=opened, event_log=opened), catalog)
    app = create_app(service, tokens=tokens, max_body=max_body, heartbeat=heartbeat)
    _close_on_shutdown(app, opened)
    logging: dict[str, Any] = {} if log_config == "uvicorn" else {"log_config": log_config}
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="on",
        timeout_graceful_shutdown=10, **logging,
    )  # fmt: skip
    said = (
        f"serving {len(catalog)} pipelines ({', '.join(catalog.names)}) of "
        f"{_store.shown(url)} on http://{host}:{port} for {len(tokens)} tokens"
    )
    return Served(uvicorn.Server(config), opened, said)


async def _served(server: Any, store: RunStore) -> None:
    try:
        await server.serve()
    finally:  # (a signal ends the process inside serve(): the app's shutdown closed it)
        await store.aclose()


def _close_on_shutdown(app: Any, store: RunStore) -> None:
    """Close the store when the app shuts down, after the service (which the app's own
    lifespan closes). uvicorn ends the process with the signal that stopped it once
    the app has shut down, so that is the last moment to close it."""
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        try:
            async with inner(app):
                yield
        finally:
            await store.aclose()

    app.router.lifespan_context = lifespan


def load_catalog(spec: str) -> Catalog:
    """The catalog ``--pipelines`` names (a Catalog, a mapping, or a factory of one)."""
    value = load_object(spec, "--pipelines")
    if callable(value) and not isinstance(value, Catalog | Mapping):
        value = call_factory(value, spec)
    try:
        catalog = Catalog.of(value, field="--pipelines")
    except (ConfigurationError, GraphError) as error:
        raise CliError(f"--pipelines {spec}: {error}") from None
    if not len(catalog):
        raise CliError(f"--pipelines {spec}: the catalog is empty")
    return catalog


def token(
    name: Annotated[
        str,
        typer.Argument(metavar="NAME", help="Who holds it (ci, alice@ops).", show_default=False),
    ],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            metavar="SCOPE",
            help="read (list, show, follow) or run (start, cancel, resume, input, delete; "
            "implies read); repeatable. Default: read.",
            show_default=False,
        ),
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Make a token for stageflow serve: print the secret (once: give it to NAME) and its line for the tokens file (only the hash is kept)."""  # noqa: E501
    from ..adapters.http._auth import new_token

    with _reported():
        try:
            secret, made = new_token(name, scope or ["read"])
        except ConfigurationError as error:
            raise CliError(str(error)) from None
    if as_json:
        typer.echo(json.dumps({"name": made.name, "token": secret, "line": made.line}))
        return
    typer.echo(f"token: {secret}")
    typer.echo(f"line:  {made.line}")
    typer.echo(
        f"give the token to {made.name} (it is shown only now); add the line to the tokens "
        "file (--tokens-file) or $STAGEFLOW_TOKENS",
        err=True,
    )
