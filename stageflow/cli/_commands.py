"""The commands of ``stageflow``: run, resume, send, runs, show, graph, validate, events."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import shlex
import signal
import sys
import time
import traceback
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from .._budget import CostPolicy
from .._durable import DurableRun
from .._engine import Engine
from .._events import Event
from .._graph import StageGraph
from .._redact import redacted
from .._result import PendingInput, RunResult, RunStatus, StageResult
from .._service import run_json, usage_json
from .._sinks import FanOutSink
from .._status import StageStatus
from ..errors import (
    ConfigurationError,
    InputError,
    InputTimeoutError,
    RunLeasedError,
    StoreError,
    UnknownRunError,
)
from ..ports import EventLog, InputRecord, InputStore, RunRecord
from . import _store
from ._engine import EngineFlags, configured, target_engine
from ._errors import (
    EXIT_CANCELLED,
    EXIT_COMPLETED,
    EXIT_FAILED,
    EXIT_USAGE,
    EXIT_WAITING,
    CliError,
)
from ._format import money, run_currency
from ._load import load_graph, load_target
from ._progress import STYLE, ProgressView

if TYPE_CHECKING:
    from ..ports import RunCatalog, RunStore

TARGET_LABEL = "stageflow.target"
POLL = 0.2  # seconds between two looks at a followed run

app = typer.Typer(
    name="stageflow",
    help="Run stageflow pipelines durably, resume them, and inspect their runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _Masking:
    """A text stream whose writes have every known secret masked (see ``_redact``)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redacted(text))
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@app.callback()
def _masked() -> None:
    # Every command: what it prints has the secrets its runs resolved masked (a failed
    # stage's message, a traceback with --verbose).
    if not isinstance(sys.stdout, _Masking):
        sys.stdout = _Masking(sys.stdout)
    if not isinstance(sys.stderr, _Masking):
        sys.stderr = _Masking(sys.stderr)


class GraphFormat(enum.StrEnum):
    """The formats ``stageflow graph`` prints."""

    MERMAID = "mermaid"
    DOT = "dot"


Target = Annotated[
    str,
    typer.Argument(
        metavar="TARGET",
        help="path/to/file.py:attr or package.module:attr: a Pipeline, a StageGraph, "
        "or a function of no arguments returning one.",
        show_default=False,
    ),
]
RunId = Annotated[str, typer.Argument(metavar="RUN_ID", help="The run's id.", show_default=False)]
StoreUrl = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="URL",
        help=f"The store: sqlite:///path.db or postgresql://... (default: ${_store.STORE_ENV}, "
        f"else {_store.DEFAULT_STORE})",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts, nothing else.")]
Verbose = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show the tracebacks of errors in your code.")
]
Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        help="Cancel the run after this many seconds (exit 130; resume it later).",
        show_default=False,
    ),
]
FailFast = Annotated[
    bool | None,
    typer.Option(
        "--fail-fast/--no-fail-fast",
        help="On the first failed stage, cancel the others (the default); with "
        "--no-fail-fast, independent branches go on and only the failed stage's dependents "
        "are skipped.",
        show_default=False,
    ),
]
MaxParallel = Annotated[
    int | None,
    typer.Option(
        "--max-parallel", metavar="N", help="Run at most N stages at once.", min=1,
        show_default=False,
    ),
]  # fmt: skip
_ENGINE_PANEL = "Engine (override the target's own engine)"
BudgetTokens = Annotated[
    int | None,
    typer.Option(
        "--budget-tokens", metavar="N", min=0, rich_help_panel=_ENGINE_PANEL,
        help="The run budget's token limit (input and output).", show_default=False,
    ),
]  # fmt: skip
BudgetCost = Annotated[
    float | None,
    typer.Option(
        "--budget-cost", metavar="AMOUNT", min=0, rich_help_panel=_ENGINE_PANEL,
        help="The run budget's cost limit, in the price table's currency (needs prices).",
        show_default=False,
    ),
]  # fmt: skip
BudgetPolicy = Annotated[
    CostPolicy | None,
    typer.Option(
        "--budget-policy", rich_help_panel=_ENGINE_PANEL,
        help="What happens to a stage the run budget cannot cover (default: the engine's "
        "budget's, else block).", show_default=False,
    ),
]  # fmt: skip
Prices = Annotated[
    Path | None,
    typer.Option(
        "--prices", metavar="FILE", rich_help_panel=_ENGINE_PANEL,
        help="A price table, .toml or .json (see PriceTable.from_file).", show_default=False,
    ),
]  # fmt: skip
StageTimeout = Annotated[
    float | None,
    typer.Option(
        "--stage-timeout", metavar="SECONDS", rich_help_panel=_ENGINE_PANEL,
        help="Seconds each attempt of a stage without its own timeout may take.",
        show_default=False,
    ),
]  # fmt: skip
Retry = Annotated[
    int | None,
    typer.Option(
        "--retry", metavar="N", min=0, rich_help_panel=_ENGINE_PANEL,
        help="Retry a failed stage without its own retry option up to N times.",
        show_default=False,
    ),
]  # fmt: skip
Interceptors = Annotated[
    list[str] | None,
    typer.Option(
        "--interceptor", metavar="MOD:OBJ", rich_help_panel=_ENGINE_PANEL,
        help="Add an interceptor (an instance, or a class or function of no arguments "
        "making one), repeatable.", show_default=False,
    ),
]  # fmt: skip
LeaseTtl = Annotated[
    float | None,
    typer.Option(
        "--lease-ttl",
        metavar="SECONDS",
        envvar="STAGEFLOW_LEASE_TTL",
        help="Seconds the run's lease lives without renewal; a crashed driver's run can be "
        "resumed after it (default: 30).",
        rich_help_panel="Advanced",
        show_default=False,
    ),
]


# ----------------------------------------------------------------------------- errors


def _fail(message: str, code: int = EXIT_USAGE, cause: BaseException | None = None) -> NoReturn:
    raise CliError(message, code, cause)


@contextmanager
def _reported(verbose: bool = False) -> Iterator[None]:
    """Turn what stageflow refuses into one line on stderr and an exit code."""
    try:
        yield
    except CliError as error:
        typer.echo(f"error: {error.message}", err=True)
        if verbose and error.cause is not None:
            traceback.print_exception(error.cause, file=sys.stderr)
        elif error.cause is not None:
            typer.echo("(--verbose shows the traceback)", err=True)
        raise typer.Exit(error.code) from None
    except RunLeasedError as error:
        wait = max(0.0, error.expires_at - time.time())
        typer.echo(
            f"error: run {error.run_id!r} is driven by {error.owner}; its lease expires at "
            f"{_when(error.expires_at)} (local time), in {wait:.1f}s: if that driver stopped, "
            "resume it then, or now with --take-over if it is known dead (a live driver "
            "would stop its run at its next write)",
            err=True,
        )
        raise typer.Exit(EXIT_USAGE) from None
    except (ConfigurationError, StoreError, InputError, InputTimeoutError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(EXIT_USAGE) from None


def _absolute(target: str) -> str:
    """The target as a label: a file's path made absolute, so a resume finds it anywhere."""
    module, _, attr = target.rpartition(":")
    if module.endswith(".py") or "/" in module or "\\" in module:
        return f"{Path(module).resolve()}:{attr}"
    return target


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:  # piped: don't cut run ids to 80 columns
        console = Console(highlight=False, width=max(console.width, 160))
    return console


def _unknown(run_id: str, url: str) -> NoReturn:
    _fail(f"no run {run_id!r} in {_store.shown(url)}")


async def _get_run(store: RunCatalog, run_id: str, url: str) -> RunRecord:
    try:
        return await store.get_run(run_id)
    except UnknownRunError:
        _unknown(run_id, url)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _said(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


# ----------------------------------------------------------------------------- inputs


def _iso(ts: float) -> str:
    """A time as ISO 8601, local, with its offset: ``2026-12-02T14:57:43+01:00``."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _schema(text: str) -> dict[str, Any]:
    """An input row's JSON Schema, parsed ({} if it holds none)."""
    try:
        schema = json.loads(text) if text else {}
    except ValueError:
        return {}
    return schema if isinstance(schema, dict) else {}


def _pending(rows: Mapping[str, InputRecord]) -> tuple[PendingInput, ...]:
    """What a run waits for, from its input rows: those that waited and have no value,
    in the order they began to wait."""
    waiting = [r for r in rows.values() if r.waiting_since is not None and r.value is None]
    waiting.sort(key=lambda r: (r.waiting_since or 0.0, r.name))
    return tuple(PendingInput(r.name, r.prompt, _schema(r.schema), r.deadline) for r in waiting)


def _pending_json(pending: PendingInput) -> dict[str, Any]:
    return {
        "name": pending.name,
        "prompt": pending.prompt,
        "deadline": pending.deadline,
        "schema": dict(pending.schema),
    }


def _expects(schema: Mapping[str, Any]) -> str:
    """What a value must be, in a few words read off its JSON Schema (``{"approved":
    boolean, "note"?: string}``, ``"approve" | "reject"``, ``boolean``); "" where that
    would take more (the schema is in ``--json``)."""
    if "enum" in schema and isinstance(schema["enum"], list):
        return " | ".join(json.dumps(value) for value in schema["enum"])
    kind = schema.get("type")
    properties = schema.get("properties")
    if kind == "object" and isinstance(properties, dict):
        required = set(schema.get("required") or ())
        fields = []
        for field, about in properties.items():
            shown = _expects(about) if isinstance(about, dict) else ""
            optional = "" if field in required else "?"
            fields.append(f"{json.dumps(field)}{optional}: {shown or 'any'}")
        return "{" + ", ".join(fields) + "}"
    return kind if isinstance(kind, str) else ""


def _pending_lines(pending: Iterable[PendingInput]) -> list[str]:
    """Two lines per input: its name and prompt; what its value must be, its deadline."""
    lines = []
    for p in pending:
        lines.append(f"  {p.name}: {p.prompt}" if p.prompt else f"  {p.name}")
        details = []
        expects = _expects(p.schema)
        if expects:
            details.append(f"value {expects}")
        if p.deadline is not None:
            details.append(f"deadline {_iso(p.deadline)}")
        if details:
            lines.append("    " + ", ".join(details))
    return lines


def _print_waiting(
    console: Console, run_id: str, pending: tuple[PendingInput, ...], store_flag: str
) -> None:
    """How a waiting run goes on: the commands, each on a line of its own (unwrapped, to
    copy)."""
    console.print(f"waiting: give input with  {_send_hint(run_id, pending, store_flag)}",
                  markup=False, soft_wrap=True)  # fmt: skip
    console.print(f"then resume with  stageflow resume {run_id}{store_flag}",
                  markup=False, soft_wrap=True)  # fmt: skip


def _send_hint(run_id: str, pending: tuple[PendingInput, ...], store_flag: str) -> str:
    """The command that gives the input (NAME where the run waits for several)."""
    name = shlex.quote(pending[0].name) if len(pending) == 1 else "NAME"
    return f"stageflow send {run_id} {name} JSON{store_flag}"


# ----------------------------------------------------------------------------- run / resume


@dataclass(frozen=True)
class _Job:
    """What ``run`` and ``resume`` drive: a new run of ``target``, or (no target) a resume."""

    graph: StageGraph
    url: str
    run_id: str
    lease_ttl: float | None
    timeout: float | None
    engine: Engine
    data: Mapping[str, Any] | None = None
    target: str | None = None
    override: bool = False
    take_over: bool = False

    @property
    def resume(self) -> bool:
        return self.target is None


@dataclass(frozen=True)
class _Output:
    """How ``run`` and ``resume`` tell what happens: live progress (on a terminal), lines
    (piped), or only JSON at the end (``--json``)."""

    console: Console
    view: ProgressView
    as_json: bool
    verbose: bool
    hint: str  # the command that resumes the run
    store_flag: str  # " --store URL" when the command was given one, for the hints

    def live(self) -> AbstractContextManager[object]:
        if self.as_json or not self.console.is_terminal:
            return _nothing()
        return Live(self.view, console=self.console, refresh_per_second=10)

    def starting(self, job: _Job) -> None:
        governance = job.engine.governance  # the currency costs are printed in
        if governance is not None and governance.prices is not None:
            self.view.currency = governance.prices.currency
        if not self.as_json:
            verb = "resuming" if job.resume else "running"
            self.console.print(
                f"{verb} {job.graph.name!r} ({len(job.graph)} stages) as run {job.run_id} "
                f"in {_store.shown(job.url)}",
                markup=False,
            )

    def interrupted(self, job: _Job) -> None:
        if self.as_json:
            typer.echo(json.dumps(_interrupted(job.graph, job.run_id, self.view)))
            typer.echo(f"cancelled: resume with  {self.hint}", err=True)
        else:
            self.console.print(f"\ncancelled: resume with  {self.hint}", markup=False)

    def finished(self, result: RunResult, code: int) -> None:
        if self.as_json:
            typer.echo(json.dumps(_result_json(result)))
            if result.status is RunStatus.WAITING:
                send = _send_hint(result.run_id, result.waiting_for, self.store_flag)
                typer.echo(f"waiting: give input with  {send}  then resume with  {self.hint}",
                           err=True)  # fmt: skip
            elif code:
                typer.echo(f"{result.status.value}: resume with  {self.hint}", err=True)
        else:
            _summary(self.console, result, self.view, self.hint, self.verbose, self.store_flag)


_EXIT_CODES: Final = {
    RunStatus.COMPLETED: EXIT_COMPLETED,
    RunStatus.FAILED: EXIT_FAILED,
    RunStatus.WAITING: EXIT_WAITING,
}


def _drive(
    graph: StageGraph,
    *,
    url: str,
    run_id: str,
    as_json: bool,
    verbose: bool,
    explicit_store: bool,
    lease_ttl: float | None,
    timeout: float | None,
    engine: Engine,
    data: Mapping[str, Any] | None = None,
    target: str | None = None,
    override: bool = False,
    take_over: bool = False,
) -> NoReturn:
    """Run (``target`` given) or resume ``run_id``; print how it went; exit with its code."""
    job = _Job(graph, url, run_id, lease_ttl, timeout, engine, data, target, override, take_over)
    console = _console()
    view = ProgressView(graph.names, console, lines=not as_json and not console.is_terminal)
    store_flag = f" --store {_store.shown(url)}" if explicit_store else ""
    hint = f"stageflow resume {run_id}{store_flag}"
    out = _Output(console, view, as_json, verbose, hint, store_flag)
    try:
        with _reported(verbose):
            result = asyncio.run(_drive_job(job, out))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM
        out.interrupted(job)
        raise typer.Exit(EXIT_CANCELLED) from None
    code = _EXIT_CODES.get(result.status, EXIT_CANCELLED)
    out.finished(result, code)
    raise typer.Exit(code)


async def _drive_job(job: _Job, out: _Output) -> RunResult:
    _cancel_on_sigterm()
    store = _store.open_store(job.url, lease_ttl=job.lease_ttl)
    try:
        await _check_run_id(store, job)
        out.starting(job)
        return await _run_logged(store, job, out)
    finally:
        await store.aclose()


def _cancel_on_sigterm() -> None:
    """SIGTERM (a service manager stopping us) ends the run as Ctrl-C does: cancelled,
    recorded so, resumable."""
    main = asyncio.current_task()
    if main is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)


async def _check_run_id(store: RunStore, job: _Job) -> None:
    """A new run's id must be free; a resumed run must exist. Either way, the store opens
    now: a bad one says so before anything runs."""
    if job.resume:
        await store.get_run(job.run_id)
        return
    try:
        await store.get_run(job.run_id)
    except UnknownRunError:
        return
    _fail(f"run {job.run_id!r} exists in {_store.shown(job.url)}; resume it: "
          f"stageflow resume {job.run_id}")  # fmt: skip


async def _run_logged(store: RunStore, job: _Job, out: _Output) -> RunResult:
    """Drive the run, its events kept in the store's event log and shown as progress."""
    own = job.engine.event_log  # the target engine's own log gets the events too
    sinks = [s for s in (job.engine.sink, out.view) if s is not None]
    changes: dict[str, Any] = {"store": store}
    if isinstance(store, EventLog):
        changes["event_log"] = store
        if own is not None:
            sinks.append(own)
    changes["sink"] = FanOutSink(*sinks)
    engine = job.engine.replace(**changes)
    try:
        with out.live():
            if job.resume:
                return await engine.resume(
                    job.run_id, job.graph, timeout=job.timeout, override=job.override,
                    take_over=job.take_over,
                )  # fmt: skip
            return await engine.run(
                job.graph,
                job.data,
                run_id=job.run_id,
                timeout=job.timeout,
                labels={TARGET_LABEL: job.target or ""},
            )
    finally:
        if own is not None and own is not engine.event_log:
            await own.flush()  # the engine flushes its own log, not a sink
        _dropped(engine, job.run_id)


def _dropped(engine: Engine, run_id: str) -> None:
    """Say so on stderr when events of the run could not be kept in the store."""
    log = engine.event_log
    if log is not None and log.dropped:
        typer.echo(
            f"warning: {log.dropped} events of run {run_id} could not be written to the "
            "store's event log; `stageflow events` will not show them",
            err=True,
        )


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _result_json(result: RunResult) -> dict[str, Any]:
    stages = {}
    for r in result:
        error = _said(r.error)
        if error is None and r.status in (StageStatus.FAILED, StageStatus.CANCELLED):
            error = r.reason
        stages[r.stage] = {
            "status": r.status.value,
            "attempts": r.attempts,
            "duration": r.duration,
            "error": error,
        }
    return {
        "run_id": result.run_id,
        "pipeline": result.pipeline,
        "status": result.status.value,
        "duration": result.duration,
        "error": _said(result.error),
        "stages": stages,
        "usage": {"tokens": result.usage.total.tokens, "cost": result.usage.total.cost},
        "waiting_for": [_pending_json(pending) for pending in result.waiting_for],
    }


def _interrupted(graph: StageGraph, run_id: str, view: ProgressView) -> dict[str, Any]:
    named = {"done": "completed", "restored": "completed", "running": "cancelled",
             "retrying": "cancelled", "waiting": "cancelled"}  # fmt: skip
    return {
        "run_id": run_id,
        "pipeline": graph.name,
        "status": RunStatus.CANCELLED.value,
        "duration": None,
        "error": "KeyboardInterrupt: interrupted",
        "stages": {
            name: {
                "status": named.get(v.status, v.status),
                "attempts": v.attempts,
                "duration": v.duration,
                "error": v.note or None if v.status in ("failed", "cancelled") else None,
            }
            for name, v in view.stages.items()
        },
        "usage": None,
        "waiting_for": [],
    }


def _summary(
    console: Console,
    result: RunResult,
    view: ProgressView,
    hint: str,
    verbose: bool,
    store_flag: str = "",
) -> None:
    status = result.status.value
    style = {"completed": "green", "failed": "red", "waiting": "yellow"}.get(status, "magenta")
    console.print(
        f"[bold {style}]{status}[/]: run {result.run_id} of {result.pipeline!r} "
        f"in {result.duration:.2f}s"
    )
    restored = sum(1 for v in view.stages.values() if v.restored)
    counts = [
        f"{len(result.with_status(s))} {s.value}"
        for s in StageStatus
        if result.with_status(s) or s is StageStatus.COMPLETED
    ]
    restored_from = f"; {restored} restored from the store" if restored else ""
    console.print("stages: " + ", ".join(counts) + restored_from, markup=False)
    for r in result:
        if r.items:  # a map stage: how its items ended
            console.print(_items_line(r, view), markup=False)
    total = result.usage.total
    if total.tokens or total.cost:
        cost = "" if total.cost is None else f", cost {money(total.cost, view.currency)}"
        console.print(
            f"usage: {total.tokens} tokens ({total.input_tokens} in, {total.output_tokens} out)"
            f"{cost}",
            markup=False,
        )
    for r in result:
        if r.status is StageStatus.FAILED:
            console.print(f"  {r.stage}: {r.reason or _said(r.error)}", markup=False)
            if verbose and r.error is not None:
                console.print("".join(traceback.format_exception(r.error)).rstrip(), markup=False)
    if result.status is RunStatus.FAILED:
        console.print(f"failed: fix the cause, then resume with  {hint}", markup=False)
    elif result.status is RunStatus.CANCELLED:
        if result.error is not None:
            console.print(f"  {_said(result.error)}", markup=False)
        console.print(f"cancelled: resume with  {hint}", markup=False)
    elif result.status is RunStatus.WAITING:
        console.print("waiting for input:", markup=False)
        for line in _pending_lines(result.waiting_for):
            console.print(line, markup=False)
        _print_waiting(console, result.run_id, result.waiting_for, store_flag)


def _items_line(stage: StageResult, view: ProgressView) -> str:
    """``items of score: 998 completed, 2 skipped`` (``; 300 restored from the store``)."""
    counts: dict[str, int] = {}
    for item in stage.items:
        counts[item.status.value] = counts.get(item.status.value, 0) + 1
    shown = ", ".join(f"{counts[s.value]} {s.value}" for s in StageStatus if s.value in counts)
    row = view.stages.get(stage.stage)
    restored = row.restored_items if row is not None else 0
    return f"items of {stage.stage}: {shown}" + (
        f"; {restored} restored from the store" if restored else ""
    )


@app.command()
def resume(
    run_id: RunId,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            metavar="TARGET",
            help="The pipeline (default: the TARGET the run was started with).",
            show_default=False,
        ),
    ] = None,
    store: StoreUrl = None,
    as_json: AsJson = False,
    timeout: Timeout = None,
    max_parallel: MaxParallel = None,
    fail_fast: FailFast = None,
    verbose: Verbose = False,
    lease_ttl: LeaseTtl = None,
    take_over: Annotated[
        bool,
        typer.Option(
            "--take-over",
            rich_help_panel="Advanced",
            help="Take the run over from a driver whose lease has not expired yet. Only when "
            "that driver is known dead (killed, its host gone): a live one stops its run at "
            "its next write, and the stages it had in flight run again here.",
        ),
    ] = False,
    override: Annotated[
        bool,
        typer.Option(
            "--override",
            rich_help_panel=_ENGINE_PANEL,
            help="Let the target's engine govern this drive where its budget, prices or model "
            "chains differ from those stored with the run (the engine flags below are "
            "overrides already).",
        ),
    ] = False,
    budget_tokens: BudgetTokens = None,
    budget_cost: BudgetCost = None,
    budget_policy: BudgetPolicy = None,
    prices: Prices = None,
    stage_timeout: StageTimeout = None,
    retry: Retry = None,
    interceptor: Interceptors = None,
) -> None:
    """Go on with a run that did not complete: completed stages are restored, not run again.

    The run's stored budget, prices and model chains govern it again; budget and price flags override them for this drive.
    """  # noqa: E501 - one line: the help text keeps line breaks
    flags = EngineFlags(
        budget_tokens, budget_cost, budget_policy, None if prices is None else str(prices),
        stage_timeout, retry, tuple(interceptor or ()), max_parallel, fail_fast, lease_ttl,
    )  # fmt: skip
    url = _store.store_url(store)

    async def read() -> RunRecord:
        opened = _store.open_catalog(url)
        try:
            return await _get_run(opened, run_id, url)
        finally:
            await opened.aclose()

    with _reported(verbose):
        if not _store.exists(url):
            _store.open_catalog(url)  # a bad URL says so first
            _unknown(run_id, url)
        record = asyncio.run(read())
        chosen = target or record.labels.get(TARGET_LABEL)
        if not chosen:
            _fail(
                f"run {run_id!r} was not started by the stageflow command: give its pipeline "
                f"with --target path/to/file.py:attr"
            )
        graph, module = load_target(chosen)
        engine = configured(target_engine(module, chosen), flags)
    _drive(
        graph,
        url=url,
        run_id=run_id,
        as_json=as_json,
        verbose=verbose,
        explicit_store=store is not None,
        lease_ttl=lease_ttl,
        timeout=timeout,
        engine=engine,
        override=override or flags.money,
        take_over=take_over,
    )


# ----------------------------------------------------------------------------- send


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        _fail(
            f"JSON {text!r} is not valid JSON ({error}); a string is quoted: "
            f"'\"approve\"', an object: '{{\"approved\": true}}'"
        )


@app.command()
def send(
    run_id: RunId,
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="The input: its stage's name, or stage\\[key] for one item's (quote it).",
            show_default=False,
        ),
    ],
    value: Annotated[
        str,
        typer.Argument(
            metavar="JSON",
            help="The value, as JSON: true, '\"approve\"', '{\"approved\": true}'.",
            show_default=False,
        ),
    ],
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            metavar="TARGET",
            help="The pipeline whose input schema the value must match (default: the TARGET "
            "the run was started with).",
            show_default=False,
        ),
    ] = None,
    store: StoreUrl = None,
    as_json: AsJson = False,
    verbose: Verbose = False,
) -> None:
    """Give an input of a run its value: validated against the input's schema, stored once.

    Then resume the run with stageflow resume RUN_ID (a driver waiting for input takes it from the store by itself). Exits 2, storing nothing, when the value is invalid, the input is unknown, given already or past its deadline.
    """  # noqa: E501 - one line: the help text keeps line breaks
    url = _store.store_url(store)
    store_flag = f" --store {_store.shown(url)}" if store is not None else ""

    async def read() -> RunRecord:
        opened = _store.open_catalog(url)
        try:
            return await _get_run(opened, run_id, url)
        finally:
            await opened.aclose()

    async def give(graph: StageGraph) -> tuple[InputRecord, RunRecord, dict[str, InputRecord]]:
        opened = _store.open_store(url)
        try:
            try:
                await DurableRun.checked_record(opened, graph, run_id)  # the run's schema
                given = await Engine(store=opened).send(run_id, name, parsed, graph=graph)
                record = await opened.get_run(run_id)
            except UnknownRunError:
                _unknown(run_id, url)
            assert isinstance(opened, InputStore)
            return given, record, await opened.load_inputs(run_id)
        finally:
            await opened.aclose()

    with _reported(verbose):
        parsed = _parse_json(value)
        if not _store.exists(url):
            _store.open_catalog(url)  # a bad URL says so first
            _unknown(run_id, url)
        chosen = target or asyncio.run(read()).labels.get(TARGET_LABEL)
        if not chosen:
            _fail(
                f"run {run_id!r} was not started by the stageflow command: give its pipeline "
                f"with --target path/to/file.py:attr (its input's schema checks the value)"
            )
        given, record, rows = asyncio.run(give(load_graph(chosen)))
    pending = _pending(rows)
    if as_json:
        typer.echo(json.dumps({
            "run_id": run_id,
            "input": given.name,
            "given_at": given.given_at,
            "status": record.status.value,
            "waiting_for": [_pending_json(p) for p in pending],
        }))  # fmt: skip
        return
    console = _console()
    console.print(f"gave input {given.name!r} of run {run_id}", markup=False)
    resume_hint = f"stageflow resume {run_id}{store_flag}"
    if record.status is RunStatus.RUNNING:  # a driver waits, or one died holding the run
        console.print(
            f"run {run_id} is running: a driver waiting for input takes the value from the "
            f"store; if its driver stopped, resume with  {resume_hint}",
            markup=False,
            soft_wrap=True,
        )
        return
    if pending:
        console.print(f"run {run_id} still waits for:", markup=False)
        for line in _pending_lines(pending):
            console.print(line, markup=False)
        _print_waiting(console, run_id, pending, store_flag)
        return
    console.print(f"run {run_id} has every input it waits for: go on with  {resume_hint}",
                  markup=False, soft_wrap=True)  # fmt: skip


# ----------------------------------------------------------------------------- inspect


@app.command()
def runs(
    status: Annotated[
        RunStatus | None,
        typer.Option("--status", help="Only runs with this status.", show_default=False),
    ] = None,
    pipeline: Annotated[
        str | None,
        typer.Option(
            "--pipeline", metavar="NAME", help="Only runs of this pipeline.", show_default=False
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", min=1, help="At most N runs, newest first.")
    ] = 20,
    store: StoreUrl = None,
    as_json: AsJson = False,
) -> None:
    """List the store's runs, newest first."""
    url = _store.store_url(store)

    async def read() -> list[RunRecord]:
        opened = _store.open_catalog(url)
        try:
            return await opened.list_runs(status=status, pipeline=pipeline, limit=limit)
        finally:
            await opened.aclose()

    with _reported():
        _store.open_catalog(url)
        records = asyncio.run(read()) if _store.exists(url) else []
    if as_json:
        typer.echo(json.dumps([run_json(r) for r in records]))
        return
    console = _console()
    if not records:
        console.print(f"no runs in {_store.shown(url)}", markup=False)
        return
    table = Table(box=None, pad_edge=False)
    for column in ("run id", "pipeline", "status", "created", "updated"):
        table.add_column(column, no_wrap=column == "run id")
    for r in records:
        table.add_row(
            r.run_id,
            r.pipeline,
            f"[{_run_style(r.status)}]{r.status.value}",
            _when(r.created_at),
            _when(r.updated_at),
        )
    console.print(table)


def _run_style(status: RunStatus) -> str:
    return {"completed": "green", "failed": "red", "cancelled": "magenta"}.get(
        status.value, "yellow"
    )


def _input_json(row: InputRecord) -> dict[str, Any]:
    status = "given" if row.value is not None else "waiting" if row.waiting_since else "declared"
    return {
        "status": status,
        "prompt": row.prompt,
        "deadline": row.deadline,
        "waiting_since": row.waiting_since,
        "given_at": row.given_at,
        "value": None if row.value is None else json.loads(row.value),
        "schema": _schema(row.schema),
    }


def _waits(name: str, pending: tuple[PendingInput, ...]) -> bool:
    """Whether stage ``name`` waits: it is an input waiting, or an item of it is."""
    return any(p.name == name or p.name.startswith(f"{name}[") for p in pending)


@app.command()
def show(run_id: RunId, store: StoreUrl = None, as_json: AsJson = False) -> None:
    """Show a run: its record, each stage's outcome, what it spent, and the inputs it waits for."""
    url = _store.store_url(store)

    async def read() -> dict[str, Any]:
        opened = _store.open_catalog(url)
        try:
            record = await _get_run(opened, run_id, url)
            stages = await opened.stage_records(run_id)
            usage = await opened.load_usage(run_id)
            inputs = await opened.load_inputs(run_id) if isinstance(opened, InputStore) else {}
        finally:
            await opened.aclose()
        pending = _pending(inputs)
        order = list(json.loads(record.structure)) if record.structure else []
        order += [name for name in stages if name not in order]
        shown: dict[str, Any] = {}
        for name in order:
            s = stages.get(name)
            if s is None:  # not ended: an input stage waits, another is to run
                status = "waiting" if _waits(name, pending) else "pending"
                shown[name] = {"status": status, "attempts": 0, "duration": None,
                               "reason": None}  # fmt: skip
                continue
            duration = None if s.started is None or s.ended is None else s.ended - s.started
            shown[name] = {
                "status": s.status.value,
                "attempts": s.attempts,
                "duration": duration,
                "reason": s.reason,
            }
        used = {**usage_json(usage), "currency": run_currency(record)}
        return {
            **run_json(record),
            "stages": shown,
            "usage": used,
            "inputs": {name: _input_json(row) for name, row in sorted(inputs.items())},
            "waiting_for": [_pending_json(p) for p in pending],
        }

    with _reported():
        _store.open_catalog(url)
        if not _store.exists(url):
            _unknown(run_id, url)
        shown = asyncio.run(read())
    if as_json:
        typer.echo(json.dumps(shown))
        return
    console = _console()
    status = shown["status"]
    console.print(f"run {run_id} of {shown['pipeline']!r}: [{_run_style(RunStatus(status))}]"
                  f"{status}")  # fmt: skip
    console.print(
        f"created {_when(shown['created_at'])}, updated {_when(shown['updated_at'])}",
        markup=False,
    )
    if shown["error"]:
        console.print(f"error: {shown['error']}", markup=False)
    for key, value in shown["labels"].items():
        console.print(f"label {key} = {value}", markup=False)
    table = Table(box=None, pad_edge=False)
    for column in ("stage", "status", "attempts", "duration", "tokens", "cost", "reason"):
        table.add_column(column, overflow="fold" if column == "reason" else "ellipsis")
    by_stage, currency = shown["usage"]["by_stage"], shown["usage"]["currency"]
    for name, s in shown["stages"].items():
        used = by_stage.get(name)
        table.add_row(
            name,
            f"[{STYLE.get('done' if s['status'] == 'completed' else s['status'], '')}]"
            f"{s['status']}",
            str(s["attempts"]),
            "-" if s["duration"] is None else f"{s['duration']:.2f}s",
            str(used["tokens"]) if used else "",
            "" if not used else money(used["cost"], currency),
            s["reason"] or "",
        )
    console.print(table)
    usage = shown["usage"]
    if usage["tokens"] or usage["cost"]:
        cost = "" if usage["cost"] is None else f", cost {money(usage['cost'], currency)}"
        console.print(
            f"usage: {usage['tokens']} tokens ({usage['input_tokens']} in, "
            f"{usage['output_tokens']} out){cost}",
            markup=False,
        )
    _show_inputs(console, shown, run_id, "" if store is None else f" --store {_store.shown(url)}")


def _show_inputs(console: Console, shown: Mapping[str, Any], run_id: str, store_flag: str) -> None:
    """The inputs that waited or were given (those not asked for yet are in ``--json``), and
    for a waiting run how to give the rest."""
    asked = {name: row for name, row in shown["inputs"].items() if row["status"] != "declared"}
    if not asked:
        return
    table = Table(box=None, pad_edge=False)
    for column in ("input", "given", "deadline", "prompt"):
        table.add_column(column, overflow="fold" if column == "prompt" else "ellipsis",
                         no_wrap=column != "prompt")  # fmt: skip
    for name, row in asked.items():
        given = row["given_at"]
        table.add_row(
            escape(name),
            "[yellow]no, waiting" if given is None else f"[green]yes[/], {_iso(given)}",
            "-" if row["deadline"] is None else _iso(row["deadline"]),
            escape(row["prompt"] or ""),
        )
    console.print(table)
    pending = tuple(
        PendingInput(p["name"], p["prompt"], p["schema"], p["deadline"])
        for p in shown["waiting_for"]
    )
    if pending and shown["status"] == RunStatus.WAITING.value:
        _print_waiting(console, run_id, pending, store_flag)


# ----------------------------------------------------------------------------- events


_COSTS: Final = ("maximum", "spent", "requested")  # the amounts of a cost budget's events
_TIMES: Final = ("deadline", "given_at")  # the times of input events: printed as times
PAGE: Final = 1000  # events read from the log at a time
SETTLED: Final = 1.0  # seconds after a run stopped by which its driver wrote its last events
_DRIVE_ENDS: Final = {  # the event that ends a drive, by the status it leaves the run in
    RunStatus.COMPLETED: "run.completed",
    RunStatus.FAILED: "run.failed",
    RunStatus.CANCELLED: "run.cancelled",
    RunStatus.WAITING: "run.waiting",
}


def _event_line(
    event: Mapping[str, Any], currency: str | None = None
) -> tuple[str, str, str, str, str, str]:
    ts = event.get("ts")
    when = datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3] if ts else "-"
    data = event.get("data") or {}
    details = ""
    if isinstance(data, dict):
        costs = _COSTS if data.get("limit") == "cost" else ()
        details = " ".join(f"{k}={_detail(k, v, costs, currency)}" for k, v in data.items())
    return (
        str(event.get("seq", "")),
        when,
        str(event.get("type", "")),
        str(event.get("stage") or "-"),
        str(event.get("attempt") or ""),
        details,
    )


def _detail(key: str, value: object, costs: tuple[str, ...], currency: str | None) -> str:
    if key in costs and _amount(value):
        return money(value, currency)  # type: ignore[arg-type]  # a number: _amount()
    if key in _TIMES and _amount(value):
        return _iso(value)  # type: ignore[arg-type]
    return _value(value)


def _value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _amount(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _drive_header(event: Mapping[str, Any], earlier: int) -> str:
    """The line above the events of one drive of the run: its ``run.started`` and what
    follows. A drive after another in the log, or one the engine says resumed, is a
    resume (the first drive of a run started from Python without an event log left no
    events)."""
    data = event.get("data")
    resumed = earlier > 0 or (isinstance(data, dict) and data.get("resumed") is True)
    ts = event.get("ts")
    when = _when(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else "-"
    return f"-- run {'resumed' if resumed else 'started'} {when}"


def _json_line(event: Event) -> str:
    """The event as one line of JSON (``Event.to_dict()``; what JSON cannot hold, as its
    ``repr``)."""
    # Imported here: pydantic_core would be a third of `import stageflow`'s time.
    from pydantic_core import to_json

    return to_json(event.to_dict(), fallback=repr).decode()


def _event_log(store: RunCatalog, url: str) -> EventLog:
    if not isinstance(store, EventLog):  # pragma: no cover - SQLAlchemyStore is one
        _fail(f"the store {_store.shown(url)} keeps no events (it is no EventLog)")
    return store


async def _stored(log: EventLog, run_id: str, after: int = 0) -> AsyncIterator[Event]:
    """The run's events in the log with ``seq > after``, in order, read a page at a time."""
    while True:
        page = await log.read_events(run_id, after=after, limit=PAGE)
        for event in page:
            yield event
        if len(page) < PAGE:
            return
        after = page[-1].seq


async def _followed(store: RunCatalog, record: RunRecord, url: str) -> AsyncIterator[Event]:
    """The run's events, those stored and those to come, until it stops running.

    Each look (``record`` is the first's, then one every ``POLL`` seconds) reads the run's
    status, then its new events. The run's driver writes its last events just after its
    status (it flushes its event log before it exits), so the follow ends at the first
    look that finds nothing new after one that found the run stopped; at once when the
    run stopped ``SETTLED`` seconds ago and its last event ends its drive as its status
    says. A run that waits for input stopped: its resume is a drive of its own, to
    follow again.
    """
    log = _event_log(store, url)
    after, last = 0, None
    stopped = False  # the look before found the run not running
    while True:
        looked = time.time()
        new = False
        async for event in _stored(log, record.run_id, after):
            yield event
            after, last, new = event.seq, event, True
        if record.status is RunStatus.RUNNING:
            stopped = False
        elif (stopped and not new) or _settled(record, last, looked):
            return
        else:
            stopped = True
        await asyncio.sleep(POLL)
        record = await _get_run(store, record.run_id, url)


def _settled(record: RunRecord, last: Event | None, now: float) -> bool:
    """Whether the stopped run's events are surely all in the log: the last one ends its
    drive as its status says, and it stopped long enough ago for its driver to have
    written them."""
    return (
        last is not None
        and last.stage is None
        and str(last.type) == _DRIVE_ENDS.get(record.status)
        and now - record.updated_at >= SETTLED
    )


@app.command()
def events(
    run_id: RunId,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Keep printing new events while the run is running."),
    ] = False,
    store: StoreUrl = None,
    as_json: AsJson = False,
) -> None:
    """Print the events of a run, as the store's event log keeps them."""
    url = _store.store_url(store)
    console = _console()
    drives = 0  # the run.started events seen: a drive of the run begins at each
    currency: str | None = None  # of the costs of budget events

    def emit(event: Event) -> None:  # one line, as --follow and --json print events
        nonlocal drives
        if as_json:
            typer.echo(_json_line(event))
            return
        shown = event.to_dict()
        if shown["type"] == "run.started":
            console.print(_drive_header(shown, drives), markup=False)
            drives += 1
        seq, when, kind, stage, attempt, details = _event_line(shown, currency)
        console.print(f"{seq:>4} {when} {kind:<17} {stage:<16} {attempt:>2} {details}",
                      markup=False)  # fmt: skip

    async def watch() -> None:
        nonlocal currency
        opened = _store.open_catalog(url)
        try:
            record = await _get_run(opened, run_id, url)
            currency = run_currency(record)
            async for event in _followed(opened, record, url):
                emit(event)
        finally:
            await opened.aclose()

    async def read() -> tuple[RunRecord, list[Event]]:
        opened = _store.open_catalog(url)
        try:
            record = await _get_run(opened, run_id, url)
            return record, [event async for event in _stored(_event_log(opened, url), run_id)]
        finally:
            await opened.aclose()

    with _reported():
        _store.open_catalog(url)
        if not _store.exists(url):
            _unknown(run_id, url)
        if follow:
            try:
                asyncio.run(watch())
            except KeyboardInterrupt:
                raise typer.Exit(EXIT_CANCELLED) from None
            return
        record, stored = asyncio.run(read())
    if not stored:
        typer.echo(
            f"no events of run {run_id!r} in the store {_store.shown(url)} (runs driven by "
            "the stageflow command, or by an Engine with event_log=, keep them)",
            err=True,
        )
        return
    currency = run_currency(record)
    if as_json:
        for event in stored:
            emit(event)
        return
    table: Table | None = None  # one per drive, under its header line
    for event in stored:
        shown = event.to_dict()
        if shown["type"] == "run.started":
            if table is not None:
                console.print(table)
            console.print(_drive_header(shown, drives), markup=False)
            drives += 1
            table = None
        if table is None:
            table = Table(box=None, pad_edge=False)
            for column in ("seq", "time", "type", "stage", "attempt", "data"):
                table.add_column(column, overflow="fold" if column == "data" else "ellipsis")
        table.add_row(*_event_line(shown, currency))
    if table is not None:
        console.print(table)
