"""Pipeline files on the command line: ``validate``, ``run``, ``graph`` (any TARGET, a file
among them, with ``--param``), ``schema``, ``export`` and ``pipelines``.

A TARGET may be a pipeline file (``.yaml``/``.yml``/``.json``/``.toml``) whose ``inputs:``
check the run's data first and whose ``outputs:`` are printed at the end.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, NoReturn

import typer
from rich.markup import escape
from rich.table import Table

from .._catalog import Catalog
from .._graph import StageGraph
from .._ids import new_run_id
from .._pipeline import Pipeline
from .._result import RunResult, RunStatus
from ..errors import ConfigurationError, PipelineFileError, StageflowError
from . import _store
from ._commands import (
    _EXIT_CODES,
    AsJson,
    BudgetCost,
    BudgetPolicy,
    BudgetTokens,
    FailFast,
    GraphFormat,
    Interceptors,
    LeaseTtl,
    MaxParallel,
    Prices,
    Retry,
    StageTimeout,
    StoreUrl,
    Timeout,
    Verbose,
    _absolute,
    _console,
    _drive_job,
    _Job,
    _Output,
    _reported,
    _result_json,
    _send_hint,
    _summary,
)
from ._engine import EngineFlags, configured, target_engine
from ._errors import EXIT_CANCELLED, EXIT_COMPLETED, EXIT_FAILED, CliError
from ._load import (
    file_catalog,
    file_label,
    is_file_target,
    load_file,
    load_object,
    load_target,
    parse_params,
)
from ._progress import ProgressView

if TYPE_CHECKING:
    from ..adapters.declarative import LoadedPipeline

ENTRY_POINTS: Final = "stageflow.pipelines"
"""The entry-point group ``stageflow pipelines`` lists by default."""

FileTarget = Annotated[
    str,
    typer.Argument(
        metavar="TARGET",
        help="A pipeline file (.yaml, .yml, .json, .toml), or path/to/file.py:attr or "
        "package.module:attr: a Pipeline, a StageGraph, or a function of no arguments "
        "returning one.",
        show_default=False,
    ),
]
Params = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        metavar="KEY=VALUE",
        help="A pipeline file's template parameter, repeatable; VALUE is JSON when it "
        "parses, else a string.",
        show_default=False,
    ),
]
Output = Annotated[
    Path | None,
    typer.Option(
        "--output", "-o", metavar="FILE", help="Write it to FILE (default: print it).",
        show_default=False,
    ),
]  # fmt: skip


# ----------------------------------------------------------------------------- validate


def validate(
    target: FileTarget, param: Params = None, as_json: AsJson = False, verbose: Verbose = False
) -> None:
    """Load the pipeline (a file, or mod:attr), build its graph and say whether it is valid (exit 2 if not).

    With --json: {"ok": true, "name", "stages"} or {"ok": false, "error": {file, line, column, field, message}}.
    """  # noqa: E501 - one line: the help text keeps line breaks
    if not as_json:
        with _reported(verbose):
            graph = load_target(target, parse_params(param))[0]
        typer.echo(f"ok: {graph.name} ({len(graph)} stages)")
        if is_file_target(target):  # a mod:attr target's line stays as it was, alone
            for name in graph.names:
                typer.echo(f"  {name}")
        return
    try:
        graph = _json_load(target, param)
    except _Refused as refused:
        typer.echo(json.dumps({"ok": False, "error": refused.error}))
        raise typer.Exit(2) from None
    typer.echo(json.dumps({"ok": True, "name": graph.name, "stages": list(graph.names)}))


class _Refused(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error["message"])
        self.error = error


def _json_load(target: str, param: list[str] | None) -> StageGraph:
    """The graph, or :class:`_Refused` with the error as ``validate --json`` prints it."""
    try:
        return load_target(target, parse_params(param))[0]
    except CliError as error:
        cause = error.__cause__
        if isinstance(cause, PipelineFileError):
            raise _Refused(
                {"file": cause.file, "line": cause.line, "column": cause.column,
                 "field": cause.field, "message": str(cause)}
            ) from None  # fmt: skip
        field = cause.field if isinstance(cause, ConfigurationError) else None
        file = target.partition("?")[0] if is_file_target(target) else None
        raise _Refused(
            {"file": file, "line": None, "column": None, "field": field, "message": error.message}
        ) from None


# ----------------------------------------------------------------------------- run


def run(
    target: FileTarget,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            "-d",
            metavar="KEY=VALUE|JSON|@FILE",
            help="The run's data, repeatable: KEY=VALUE (VALUE is JSON when it parses, "
            'n=3, tags=["a"], else a string, topic=owls), a JSON object (\'{"n": 3}\'), '
            "or @FILE, a file holding one.",
            show_default=False,
        ),
    ] = None,
    param: Params = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id", metavar="ID", help="The run's id (default: a new ULID).", show_default=False
        ),
    ] = None,
    store: StoreUrl = None,
    as_json: AsJson = False,
    timeout: Timeout = None,
    max_parallel: MaxParallel = None,
    fail_fast: FailFast = None,
    verbose: Verbose = False,
    lease_ttl: LeaseTtl = None,
    budget_tokens: BudgetTokens = None,
    budget_cost: BudgetCost = None,
    budget_policy: BudgetPolicy = None,
    prices: Prices = None,
    stage_timeout: StageTimeout = None,
    retry: Retry = None,
    interceptor: Interceptors = None,
) -> None:
    """Run a pipeline durably, with live progress. A pipeline file's inputs: check the data first; its outputs: are printed at the end.

    Exits 0 when it completed, 1 when a stage failed, 3 when it waits for input (give it with stageflow send RUN_ID NAME JSON, then resume), 130 when it was cancelled (Ctrl-C or --timeout): resume it with stageflow resume RUN_ID.
    """  # noqa: E501 - one line: the help text keeps line breaks
    flags = EngineFlags(
        budget_tokens, budget_cost, budget_policy, None if prices is None else str(prices),
        stage_timeout, retry, tuple(interceptor or ()), max_parallel, fail_fast, lease_ttl,
    )  # fmt: skip
    loaded: LoadedPipeline | None = None
    with _reported(verbose):
        values = parse_data(data)
        parameters = parse_params(param)
        if is_file_target(target):
            loaded = load_file(target, parameters)
            graph, engine = loaded.graph, configured(None, flags)
            try:
                values = loaded.validate_data(values)
            except ConfigurationError as error:
                raise CliError(f"--data: {error}") from None
            label = file_label(target, parameters)
        else:
            graph, module = load_target(target, parameters)
            engine = configured(target_engine(module, target), flags)
            label = _absolute(target)
        url = _store.store_url(store)
        _store.open_store(url, lease_ttl=lease_ttl)  # a bad URL: refused before any work
    job = _Job(graph, url, run_id or new_run_id(), lease_ttl, timeout, engine, values, label)
    _drive(job, _FileRun(loaded, values), as_json=as_json, verbose=verbose,
           explicit_store=store is not None)  # fmt: skip


def parse_data(items: list[str] | None) -> dict[str, Any]:
    """``--data`` items merged in order: ``KEY=VALUE``, a JSON object, ``@FILE``."""
    data: dict[str, Any] = {}
    for item in items or ():
        stripped = item.strip()
        if stripped.startswith("@"):
            data.update(_data_file(stripped[1:]))
        elif stripped.startswith("{"):
            data.update(_data_object(stripped, f"--data {item!r}"))
        else:
            key, equals, value = item.partition("=")
            if not equals or not key.strip():
                raise CliError(
                    f"malformed --data {item!r}: expected KEY=VALUE, a JSON object or @FILE"
                )
            try:
                data[key.strip()] = json.loads(value)
            except ValueError:
                data[key.strip()] = value
    return data


def _data_file(name: str) -> dict[str, Any]:
    path = Path(name)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CliError(f"--data @{name}: cannot read it: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise CliError(f"--data @{name}: not UTF-8 text") from None
    return _data_object(text, f"--data @{name}")


def _data_object(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise CliError(f"{where}: not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise CliError(f"{where}: must be a JSON object, not {type(value).__name__}")
    return value


@dataclass(frozen=True)
class _FileRun:
    """What a run of a pipeline file adds: its ``outputs:``, read off the result."""

    loaded: LoadedPipeline | None
    data: Mapping[str, Any]

    def outputs(self, result: RunResult) -> dict[str, Any] | None:
        if self.loaded is None or result.status is not RunStatus.COMPLETED:
            return None
        if not self.loaded.declaration.outputs:
            return None
        try:
            return self.loaded.outputs(result, self.data)
        except StageflowError as error:
            raise CliError(f"outputs of {self.loaded.name!r}: {error}", EXIT_FAILED) from None


def _drive(
    job: _Job, file: _FileRun, *, as_json: bool, verbose: bool, explicit_store: bool
) -> NoReturn:
    """Drive the run as ``stageflow run`` does; then print the file's outputs."""
    console = _console()
    view = ProgressView(job.graph.names, console, lines=not as_json and not console.is_terminal)
    store_flag = f" --store {_store.shown(job.url)}" if explicit_store else ""
    hint = f"stageflow resume {job.run_id}{store_flag}"
    out = _Output(console, view, as_json, verbose, hint, store_flag)
    try:
        with _reported(verbose):
            result = asyncio.run(_drive_job(job, out))
    except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM
        out.interrupted(job)
        raise typer.Exit(EXIT_CANCELLED) from None
    code = _EXIT_CODES.get(result.status, EXIT_CANCELLED)
    with _reported(verbose):
        outputs = file.outputs(result)
    if not as_json:
        _summary(console, result, view, hint, verbose, store_flag)
        if outputs is not None:
            console.print("outputs:", markup=False)
            for name, value in outputs.items():
                console.print(f"  {name}: {_shown(value)}", markup=False, soft_wrap=True)
        raise typer.Exit(code)
    shown = _result_json(result)
    if outputs is not None:
        shown["outputs"] = outputs
    typer.echo(json.dumps(shown, default=str))
    if result.status is RunStatus.WAITING:
        send = _send_hint(result.run_id, result.waiting_for, store_flag)
        typer.echo(f"waiting: give input with  {send}  then resume with  {hint}", err=True)
    elif code:
        typer.echo(f"{result.status.value}: resume with  {hint}", err=True)
    raise typer.Exit(code)


def _shown(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


# ----------------------------------------------------------------------------- graph


def graph(
    target: FileTarget,
    format: Annotated[  # noqa: A002 - the option's name
        GraphFormat, typer.Option("--format", "-f", help="The diagram's language.")
    ] = GraphFormat.MERMAID,
    param: Params = None,
    verbose: Verbose = False,
) -> None:
    """Print the pipeline's graph (a file, or mod:attr) as Mermaid or Graphviz dot."""
    with _reported(verbose):
        built = load_target(target, parse_params(param))[0]
    typer.echo(built.to_mermaid() if format is GraphFormat.MERMAID else built.to_dot())


# ----------------------------------------------------------------------------- schema


def schema(output: Output = None) -> None:
    """Print the JSON Schema of a pipeline file (for editors: yaml-language-server, VS Code)."""
    with _reported():
        try:
            from ..adapters.declarative import pipeline_schema
        except ImportError as error:  # pragma: no cover - the extra is not installed
            raise CliError(f"needs the declarative extra: {error}") from None
        _write(json.dumps(pipeline_schema(), indent=2) + "\n", output)


def _write(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        raise CliError(f"--output {output}: cannot write it: {error.strerror or error}") from None
    typer.echo(f"wrote {output}", err=True)


# ----------------------------------------------------------------------------- export


class ExportFormat(StrEnum):
    """The language of an exported pipeline file."""

    YAML = "yaml"
    JSON = "json"


def export(
    target: FileTarget,
    output: Output = None,
    format: Annotated[  # noqa: A002 - the option's name
        ExportFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="yaml or json (default: by --output's suffix, else yaml).",
            show_default=False,
        ),
    ] = None,
    param: Params = None,
    verbose: Verbose = False,
) -> None:
    """Write a pipeline built in Python (mod:attr) as a pipeline file that loads back to an equal graph.

    Its stages, conditions and models are written as dotted paths, so they must be importable (module-level); a stage that is not is named in the error. stageflow validate FILE checks the result.
    """  # noqa: E501 - one line: the help text keeps line breaks
    with _reported(verbose):
        try:
            from ..adapters.declarative import export_pipeline
        except ImportError as error:  # pragma: no cover - the extra is not installed
            raise CliError(f"needs the declarative extra: {error}") from None
        json_suffix = output is not None and output.suffix.lower() == ".json"
        chosen = format or (ExportFormat.JSON if json_suffix else ExportFormat.YAML)
        parameters = parse_params(param)
        exported: Any = (load_file(target, parameters) if is_file_target(target)
                         else load_target(target, parameters)[0])  # fmt: skip
        try:
            text = export_pipeline(exported, format=chosen.value)
        except ConfigurationError as error:
            raise CliError(f"{target}: {error}") from None
        if chosen is ExportFormat.YAML:
            text = f"# exported by: stageflow export {target}\n{text}"
        _write(text, output)
    module = target.rpartition(":")[0]
    if module.endswith(".py"):  # imported by path: its dotted paths need its folder
        folder = Path(module).resolve().parent
        typer.echo(f"note: {Path(module).stem} was imported from {folder}: the file loads "
                   f"where that module imports (PYTHONPATH={folder}), or export "
                   "package.module:attr", err=True)  # fmt: skip


# ----------------------------------------------------------------------------- pipelines


@dataclass(frozen=True)
class _Row:
    """A pipeline of a catalog, or what could not be loaded (``error``)."""

    name: str
    category: str | None = None
    description: str = ""
    stages: int | None = None
    source: str = ""
    error: str | None = None

    def json(self) -> dict[str, Any]:
        return {"name": self.name, "category": self.category, "description": self.description,
                "stages": self.stages, "source": self.source, "error": self.error}  # fmt: skip


def pipelines(
    source: Annotated[
        str | None,
        typer.Argument(
            metavar="[FOLDER|FILE|MOD:CATALOG]",
            help="A folder of pipeline files, a pipeline file, or a stageflow Catalog "
            f"(mod:attr); default: the entry points of group {ENTRY_POINTS!r}.",
            show_default=False,
        ),
    ] = None,
    as_json: AsJson = False,
    verbose: Verbose = False,
) -> None:
    """List a catalog's pipelines: name, category, description, stages. Exits 1 when one of them cannot be loaded (listed with its error)."""  # noqa: E501
    with _reported(verbose):
        rows = _catalog_rows(source)
    failed = any(row.error for row in rows)
    if as_json:
        typer.echo(json.dumps([row.json() for row in rows]))
    elif not rows:
        where = source or f"entry points of group {ENTRY_POINTS!r}"
        typer.echo(f"no pipelines in {where}", err=True)
    else:
        console = _console()
        table = Table(box=None, pad_edge=False)
        for column in ("name", "category", "stages", "description"):
            table.add_column(column, no_wrap=column != "description")
        for row in rows:
            if row.error:
                table.add_row(escape(row.name), "", "", f"[red]error: {escape(row.error)}[/]")
            else:
                table.add_row(escape(row.name), escape(row.category or ""), str(row.stages),
                              escape(row.description))  # fmt: skip
        console.print(table)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_COMPLETED)


def _catalog_rows(source: str | None) -> list[_Row]:
    if source is None:
        return _entry_point_rows()
    if is_file_target(source) or (":" not in source and Path(source).is_dir()):
        return _file_rows(source)
    if ":" not in source:
        raise CliError(f"{source}: not found (a folder, a pipeline file, or mod:attr)")
    return _catalog_value_rows(load_object(source, "the catalog"), source)


def _file_rows(source: str) -> list[_Row]:
    """The pipelines of a folder or file (loaded as one catalog: files may name each other),
    its templates, and each file that does not load, with its error."""
    catalog = file_catalog(source, strict=False)
    rows = [_Row(e.name, e.category, e.description, len(e.graph), catalog.source(e.name))
            for e in catalog]  # fmt: skip
    rows += [_Row(name, description="a template: give its parameters (--param)",
                  source=catalog.source(name)) for name in catalog.templates]  # fmt: skip
    rows += [_Row(Path(where).name, source=where, error=str(error))
             for where, error in catalog.errors.items()]  # fmt: skip
    return rows


def _catalog_value_rows(value: object, where: str) -> list[_Row]:
    """The rows of what a target or entry point gives: a Catalog (or a mapping of names
    to pipelines), a Pipeline, a StageGraph, or a function of no arguments returning one."""
    if callable(value) and not isinstance(value, Catalog | Mapping | Pipeline | StageGraph):
        try:
            value = value()
        except Exception as error:  # noqa: BLE001 - the user's code: said in one line
            raise CliError(f"calling {where} raised {type(error).__name__}: {error}") from None
    if isinstance(value, Pipeline | StageGraph):
        value = {value.name: value}
    try:
        catalog = Catalog.of(value, field=where)
    except StageflowError as error:
        raise CliError(f"{where}: {error}") from None
    return [_Row(e.name, e.category, e.description, len(e.graph), where) for e in catalog]


def _entry_point_rows() -> list[_Row]:
    rows: list[_Row] = []
    for point in sorted(entry_points(group=ENTRY_POINTS), key=lambda p: p.name):
        where = f"{point.value} (entry point {point.name})"
        try:
            rows.extend(_catalog_value_rows(point.load(), where))
        except CliError as error:
            rows.append(_Row(point.name, source=point.value, error=error.message))
        except Exception as error:  # noqa: BLE001 - the distribution's code: one line
            said = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            rows.append(_Row(point.name, source=point.value, error=f"loading it raised {said}"))
    return rows
