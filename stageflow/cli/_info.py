"""``stageflow info``: the version, the store, a catalog, and which extras are installed."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import platform
from typing import Annotated, Any, Final

import typer

from .._version import __version__
from . import _store
from ._commands import AsJson, StoreUrl, Verbose, _reported
from ._errors import CliError

EXTRAS: Final[dict[str, tuple[str, ...]]] = {
    "sqlite": ("sqlalchemy", "aiosqlite"),
    "postgres": ("sqlalchemy", "asyncpg"),
    "otel": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
    "cli": ("typer", "rich"),
    "jsonschema": ("jsonschema",),
    "server": ("fastapi", "uvicorn", "sse_starlette"),
    "mcp": ("mcp",),
    "testing": ("hypothesis",),
}
"""Each extra, and the modules that are there when it is installed."""


def info(
    store: StoreUrl = None,
    pipelines: Annotated[
        str | None,
        typer.Option(
            "--pipelines",
            metavar="MOD:CATALOG",
            help="A catalog to load and list (as stageflow serve takes it).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", metavar="SECONDS", min=0.01, help="Give up reaching the store after this."
        ),
    ] = 10.0,
    as_json: AsJson = False,
    verbose: Verbose = False,
) -> None:
    """Show stageflow's version, the store (reachable or not, its schema version), a catalog's pipelines and which extras are installed.

    A store that cannot be reached is reported, not an error (exit 0); a catalog that does not load is (exit 2). A SQLite file that does not exist is not created.
    """  # noqa: E501 - one line: the help text keeps line breaks
    with _reported(verbose):
        found = gather(store, pipelines, timeout)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    typer.echo(f"stageflow {found['version']} (Python {found['python']})")
    seen = found["store"]
    if seen["reachable"]:
        state = f"reachable, schema version {seen['schema_version']}"
    else:
        state = f"not reachable: {seen['error']}"
    typer.echo(f"store:    {seen['url']} ({state})")
    catalog = found["catalog"]
    if catalog is not None:
        names = ", ".join(catalog["pipelines"])
        typer.echo(f"catalog:  {catalog['spec']}: {len(catalog['pipelines'])} pipelines: {names}")
    extras = found["extras"]
    installed = [name for name, there in extras.items() if there]
    missing = [name for name, there in extras.items() if not there]
    typer.echo(f"extras:   {', '.join(installed) or 'none'}")
    if missing:
        typer.echo(f"missing:  {', '.join(missing)} (pip install 'stageflow[{missing[0]}]')")


def gather(store: str | None, pipelines: str | None, timeout: float) -> dict[str, Any]:
    """What ``stageflow info`` shows, as JSON-ready values.

    Raises:
        CliError: the catalog does not load.
    """
    catalog = None
    if pipelines is not None:
        from ._serve import load_catalog

        catalog = {"spec": pipelines, "pipelines": list(load_catalog(pipelines).names)}
    url = _store.store_url(store)
    return {
        "version": __version__,
        "python": platform.python_version(),
        "store": {"url": _store.shown(url), **_reach(url, timeout)},
        "catalog": catalog,
        "extras": {name: installed(modules) for name, modules in EXTRAS.items()},
    }


def installed(modules: tuple[str, ...]) -> bool:
    """Whether every module of ``modules`` can be found (without importing it)."""
    for module in modules:
        try:
            if importlib.util.find_spec(module) is None:
                return False
        except (ImportError, ValueError):  # a parent package missing, or broken
            return False
    return True


def _reach(url: str, timeout: float) -> dict[str, Any]:
    """``reachable``, ``schema_version`` and ``error`` of the store at ``url``."""
    if not _store.exists(url):
        path = _store.sqlite_path(url)
        return _unreached(f"no SQLite file {path} (nothing has run there; not created)")
    try:
        opened = _store.open_catalog(url)
    except CliError as error:
        return _unreached(error.message)
    except Exception as error:  # noqa: BLE001 - e.g. a file that is no SQLite database
        return _unreached(f"{type(error).__name__}: {error}")
    try:
        asyncio.run(_opened(opened, timeout))
    except TimeoutError:
        return _unreached(f"no answer within {timeout:g} s")
    except Exception as error:  # noqa: BLE001 - reported: info is what diagnoses it
        return _unreached(f"{type(error).__name__}: {error}")
    # Opening a store brings an older schema up to this stageflow's (newer is refused).
    from ..adapters.sqlalchemy._schema import SCHEMA_VERSION

    return {"reachable": True, "schema_version": SCHEMA_VERSION, "error": None}


async def _opened(store: Any, timeout: float) -> None:
    try:
        await asyncio.wait_for(store.open(), timeout)
    finally:
        await store.aclose()


def _unreached(why: str) -> dict[str, Any]:
    return {"reachable": False, "schema_version": None, "error": why}
