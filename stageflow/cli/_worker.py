"""``stageflow submit``, ``stageflow worker`` and ``stageflow workers``: queued runs, and the
processes that claim and drive them."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from .._engine import Engine
from .._worker import Worker
from ..interceptors import JsonFormatter
from ..ports import RunQueue
from . import _store
from ._commands import AsJson, LeaseTtl, StoreUrl, Verbose, _console, _parse_json, _reported, _when
from ._errors import CliError
from ._serve import Pipelines, load_catalog

Queues = Annotated[
    list[str] | None,
    typer.Option(
        "--queue", metavar="QUEUE", help="A queue to claim runs of, repeatable (default: default).",
        show_default=False,
    ),
]  # fmt: skip


def submit(
    pipeline: Annotated[
        str, typer.Argument(metavar="PIPELINE", help="The catalog's pipeline to run.")
    ],
    pipelines: Pipelines,
    store: StoreUrl = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", metavar="JSON", help="The run's data, a JSON object.", show_default=False
        ),
    ] = None,
    queue: Annotated[str, typer.Option("--queue", help="The queue a worker claims it from.")] = (
        "default"
    ),
    priority: Annotated[int, typer.Option("--priority", help="Higher is claimed first.")] = 0,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id", metavar="ID", help="The run's id (default: a new ULID).", show_default=False
        ),
    ] = None,
    as_json: AsJson = False,
    verbose: Verbose = False,
) -> None:
    """Queue a run of a catalog's pipeline for a worker (stageflow worker) and print its id; nothing runs here."""  # noqa: E501 - one line: the help text keeps line breaks
    with _reported(verbose):
        catalog = load_catalog(pipelines)
        if pipeline not in catalog:
            raise CliError(
                f"--pipelines {pipelines} has no pipeline {pipeline!r} (it has: "
                f"{', '.join(catalog.names)})"
            )
        entry = catalog[pipeline]
        given = {} if data is None else _parse_json(data)
        if not isinstance(given, dict):
            raise CliError(f"--data must be a JSON object, not {data}")
        valid = entry.validate_data(given)
        url = _store.store_url(store)
        opened = _store.open_store(url)

        async def queued() -> str:
            try:
                return await Engine(store=opened).submit(
                    entry.graph, valid, queue=queue, priority=priority, run_id=run_id
                )
            finally:
                await opened.aclose()

        submitted = asyncio.run(queued())
    if as_json:
        typer.echo(json.dumps({"run_id": submitted, "queue": queue, "status": "queued"}))
    else:
        typer.echo(submitted)


def worker(
    pipelines: Pipelines,
    store: StoreUrl = None,
    queue: Queues = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", metavar="N", min=1, help="Runs driven at once.")
    ] = 4,
    limit: Annotated[
        list[str] | None,
        typer.Option(
            "--limit",
            metavar="QUEUE=N",
            show_default=False,
            help="At most N runs of QUEUE driven at once by all its workers together "
            "(give every worker of the queue the same), repeatable.",
        ),
    ] = None,
    lease_ttl: LeaseTtl = None,
    poll: Annotated[
        float,
        typer.Option(
            "--poll",
            metavar="SECONDS",
            min=0.001,
            help="Seconds between two rounds of claims when nothing was queued.",
        ),
    ] = 0.5,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            metavar="SECONDS",
            min=0,
            help="On SIGTERM or Ctrl-C: seconds to let the runs driven here end; those still "
            "going then go back to their queue, for another worker.",
        ),
    ] = 30.0,
    log_json: Annotated[
        bool,
        typer.Option("--log-json", help="Log one JSON object a line (stderr), for collectors."),
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Claim queued runs (stageflow submit, Engine.submit) of the store and drive them until SIGTERM or Ctrl-C. Runs of a worker that died are taken over once their lease expires; waiting runs go on once their input is given."""  # noqa: E501 - one line: the help text keeps line breaks
    with _reported(verbose):
        catalog = load_catalog(pipelines)
        limits = _limits(limit or [])
        url = _store.store_url(store)
        opened = _store.open_store(url, lease_ttl=lease_ttl)
        if not isinstance(opened, RunQueue):  # pragma: no cover - SQLAlchemyStore is one
            raise CliError(f"the store {_store.shown(url)} keeps no queued runs")
        engine = Engine(store=opened)
        kept = Worker(
            engine, catalog, queues=queue or ["default"], concurrency=concurrency,
            limits=limits, poll=poll, grace=grace,
        )  # fmt: skip
        _logging(log_json)
        typer.echo(
            f"worker {kept.owner}: {len(catalog)} pipelines, queues {', '.join(kept.queues)}, "
            f"{concurrency} at once, on {_store.shown(url)}",
            err=True,
        )
        asyncio.run(_serve(kept, opened))


async def _serve(kept: Worker, store: RunQueue) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, kept.stop)
    try:
        await kept.run()
    finally:
        await store.aclose()  # type: ignore[attr-defined]


def _limits(given: list[str]) -> dict[str, int]:
    limits: dict[str, int] = {}
    for text in given:
        name, sep, count = text.partition("=")
        if not sep or not count.strip().isdigit() or int(count) < 1:
            raise CliError(f"--limit {text!r}: write QUEUE=N, N an int >= 1 (e.g. gpu=2)")
        limits[name.strip()] = int(count)
    return limits


def _logging(as_json: bool) -> None:
    """The worker's journal (claims, releases) and stageflow's warnings on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("stageflow")
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def workers(
    store: StoreUrl = None,
    within: Annotated[
        float,
        typer.Option(
            "--within",
            metavar="SECONDS",
            min=0,
            help="Workers heard from in the last SECONDS count as live.",
        ),
    ] = 60.0,
    every: Annotated[
        bool, typer.Option("--all", help="Also the workers not heard from (stopped or dead).")
    ] = False,
    as_json: AsJson = False,
    verbose: Verbose = False,
) -> None:
    """List the live workers of the store: queues, concurrency, last heartbeat, and the runs each drives."""  # noqa: E501 - one line: the help text keeps line breaks
    with _reported(verbose):
        url = _store.store_url(store)
        if not _store.exists(url):
            raise CliError(f"no store at {_store.shown(url)}")
        opened = _store.open_store(url)
        if not isinstance(opened, RunQueue):  # pragma: no cover - SQLAlchemyStore is one
            raise CliError(f"the store {_store.shown(url)} keeps no workers")

        async def listed() -> list[Any]:
            try:
                after = None if every else time.time() - within
                return await opened.list_workers(seen_after=after)
            finally:
                await opened.aclose()

        found = asyncio.run(listed())
    if as_json:
        typer.echo(json.dumps([
            {"owner": w.owner, "host": w.host, "pid": w.pid, "queues": list(w.queues),
             "concurrency": w.concurrency, "started_at": w.started_at, "seen_at": w.seen_at,
             "runs": list(w.runs)}
            for w in found
        ]))  # fmt: skip
        return
    if not found:
        typer.echo(f"no live workers in {_store.shown(url)}", err=True)
        return
    table = Table(box=None, pad_edge=False)
    for column in ("worker", "queues", "driving", "seen", "runs"):
        table.add_column(column, no_wrap=column != "runs")
    for w in found:
        table.add_row(
            escape(w.owner), escape(", ".join(w.queues)), f"{len(w.runs)}/{w.concurrency}",
            _when(w.seen_at), escape(" ".join(w.runs)),
        )  # fmt: skip
    _console().print(table)


__all__ = ["submit", "worker", "workers"]
