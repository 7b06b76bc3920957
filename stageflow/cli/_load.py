"""TARGET: ``path/to/file.py:attr`` or ``package.module:attr``, loaded into a StageGraph.

A TARGET may also be a pipeline file (``.yaml``/``.yml``/``.json``/``.toml``), loaded with
:func:`~stageflow.adapters.declarative.load_pipeline`; its template parameters are given
with ``--param KEY=VALUE`` or carried in the target as ``file.yaml?key=value&...`` (the
label a run keeps, so that ``stageflow resume`` loads the same graph).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlencode

from .._graph import StageGraph
from .._pipeline import Pipeline
from ..errors import ConfigurationError, GraphError
from ._errors import CliError

if TYPE_CHECKING:
    from ..adapters.declarative import FileCatalog, LoadedPipeline

FILE_SUFFIXES: Final = (".yaml", ".yml", ".json", ".toml")
"""The suffixes of the pipeline files a TARGET may name."""

_loaded_files: dict[str, Path] = {}  # module names this process loaded from files


def load_graph(target: str, parameters: Mapping[str, Any] | None = None) -> StageGraph:
    """The StageGraph that ``target`` names, built and validated (see :func:`load_target`)."""
    return load_target(target, parameters)[0]


def is_file_target(target: str) -> bool:
    """Whether ``target`` names a pipeline file (``.yaml``, ``.yml``, ``.json``, ``.toml``),
    with or without ``?key=value`` parameters."""
    path = target.partition("?")[0]
    return path.lower().endswith(FILE_SUFFIXES)


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``--param KEY=VALUE`` (repeatable): VALUE is JSON when it parses, else a string."""
    parameters: dict[str, Any] = {}
    for item in items or ():
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise CliError(f"malformed --param {item!r}: expected KEY=VALUE")
        parameters[key.strip()] = _json_or_text(value)
    return parameters


def load_file(target: str, parameters: Mapping[str, Any] | None = None) -> LoadedPipeline:
    """The pipeline file ``target`` names, loaded with ``parameters`` (over those its
    ``?key=value`` part gives).

    Raises:
        CliError: the file's error in one line, ``file:line:column: field: message``.
    """
    path, given = _split_file(target)
    values = {**given, **(parameters or {})}
    _declarative(path)
    from ..adapters.declarative import load_pipeline

    try:
        return load_pipeline(path, parameters=values or None)
    except ConfigurationError as error:  # PipelineFileError among them: its one line
        raise CliError(str(error)) from error  # __cause__: for `validate --json`


def _declarative(path: str) -> None:
    """Check that the declarative extra is installed, and make the current folder
    importable (handlers import as in ``python -m``)."""
    try:
        import stageflow.adapters.declarative  # noqa: F401 - its import is the check
    except ImportError as error:  # pragma: no cover - the extra is not installed
        raise CliError(
            f"{path}: loading pipeline files needs the declarative extra "
            f"(pip install 'stageflow[declarative]'): {_said(error)}"
        ) from None
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def file_label(target: str, parameters: Mapping[str, Any] | None = None) -> str:
    """The label a run of a pipeline file keeps: its absolute path, and its parameters as
    ``?key=value`` (JSON values), so that a resume loads the same graph from anywhere."""
    path, given = _split_file(target)
    values = {**given, **(parameters or {})}
    label = str(Path(path).resolve())
    if values:
        label += "?" + urlencode({k: json.dumps(v) for k, v in values.items()})
    return label


def _split_file(target: str) -> tuple[str, dict[str, Any]]:
    path, _, query = target.partition("?")
    given = {key: _json_or_text(value) for key, value in parse_qsl(query, keep_blank_values=True)}
    return path, given


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def load_target(
    target: str, parameters: Mapping[str, Any] | None = None
) -> tuple[StageGraph, ModuleType]:
    """The StageGraph that ``target`` names, built and validated, and its module.

    The attribute may be a :class:`~stageflow.Pipeline` (built here), a
    :class:`~stageflow.StageGraph`, or a callable taking no arguments that returns
    either. A pipeline file (see :func:`is_file_target`) is loaded with ``parameters``;
    its module is an empty one (a file brings no ``engine``).

    Raises:
        CliError: one short line saying what is wrong (exit code 2); ``cause`` is the
            user's exception when their code raised.
    """
    if is_file_target(target):
        loaded = load_file(target, parameters)
        return loaded.graph, ModuleType("_stageflow_pipeline_file")
    if parameters:
        raise CliError(
            f"--param gives a pipeline file's template parameters; {target!r} is no "
            f"pipeline file ({', '.join(FILE_SUFFIXES)})"
        )
    module_part, colon, attr = target.rpartition(":")
    if not colon or not module_part or not attr:
        raise CliError(
            f"TARGET must be 'path/to/file.py:attribute' or 'package.module:attribute', "
            f"not {target!r}"
        )
    module = _import(module_part)
    value: object = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise CliError(_missing(module_part, value, attr, part))
        value = getattr(value, part)
    if not isinstance(value, Pipeline | StageGraph) and callable(value):
        if inspect.isclass(value):
            raise CliError(_not_a_pipeline(target, value))
        if _takes_arguments(value):
            raise CliError(
                f"{target} is a callable that takes arguments; stageflow calls it with none"
            )
        try:
            value = value()
        except Exception as error:  # noqa: BLE001 - the user's code: said in one line
            raise CliError(f"calling {target} raised {_said(error)}", cause=error) from None
    if isinstance(value, Pipeline):
        try:
            return value.build(), module
        except GraphError as error:
            raise CliError(f"invalid graph {value.name!r}: {error}", cause=error) from None
    if isinstance(value, StageGraph):
        return value, module
    raise CliError(_not_a_pipeline(target, value))


def load_object(spec: str, what: str) -> object:
    """The object ``spec`` (``path/to/file.py:attr`` or ``package.module:attr``) names.

    A pipeline file gives a :class:`~stageflow.Catalog` of that one pipeline (what
    ``--pipelines`` wants); a folder, the catalog of the pipeline files in it.
    """
    if is_file_target(spec) or (":" not in spec and Path(spec).is_dir()):
        return file_catalog(spec)
    module_part, colon, attr = spec.rpartition(":")
    if not colon or not module_part or not attr:
        raise CliError(
            f"{what} must be 'path/to/file.py:attribute' or 'package.module:attribute', "
            f"not {spec!r}"
        )
    value: object = _import(module_part)
    for part in attr.split("."):
        if not hasattr(value, part):
            raise CliError(_missing(module_part, value, attr, part))
        value = getattr(value, part)
    return value


def file_catalog(spec: str, *, strict: bool = True) -> FileCatalog:
    """The :class:`~stageflow.adapters.declarative.FileCatalog` of the pipeline file ``spec``
    names, or of every pipeline file of the folder it names (files find each other by
    name). ``strict``: the first file that fails to load is the error; else it is listed
    in the catalog's ``errors``."""
    path, _ = _split_file(spec)
    if not is_file_target(spec):
        folder_files(Path(path))  # a missing folder: the CLI's own one-line error
    _declarative(path)
    from ..adapters.declarative import load_catalog

    try:
        return load_catalog(path, strict=strict)
    except ConfigurationError as error:  # PipelineFileError among them: its one line
        raise CliError(str(error)) from error


def folder_files(folder: Path) -> list[Path]:
    """The pipeline files of ``folder`` (not its subfolders), sorted by name."""
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "not found"
        raise CliError(f"{folder}: {what}")
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(FILE_SUFFIXES)
    )


def call_factory(value: object, where: str) -> object:
    """``value()``, for a factory the user's module gives (its errors in one line)."""
    if _takes_arguments(value):
        raise CliError(f"{where} is a callable that takes arguments; stageflow calls it with none")
    try:
        return value()  # type: ignore[operator]
    except Exception as error:  # noqa: BLE001 - the user's code: said in one line
        raise CliError(f"calling {where} raised {_said(error)}", cause=error) from None


def _import(name: str) -> ModuleType:
    if name.endswith(".py") or "/" in name or "\\" in name:
        return _import_file(Path(name))
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:  # as `python -m` would
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        parents = {".".join(name.split(".")[: i + 1]) for i in range(name.count(".") + 1)}
        if error.name in parents:
            hint = " (a file? give its path: path/to/file.py:attribute)" if "." not in name else ""
            raise CliError(f"no module named {error.name!r}{hint}") from None
        raise CliError(f"importing {name} raised {_said(error)}", cause=error) from None
    except Exception as error:  # noqa: BLE001 - the user's code: said in one line
        raise CliError(f"importing {name} raised {_said(error)}", cause=error) from None


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        what = "a directory, not a file" if path.is_dir() else "not found"
        raise CliError(f"{path}: {what}")
    resolved = path.resolve()
    name = path.stem if path.stem.isidentifier() else "_stageflow_target"
    if name in sys.modules and _loaded_files.get(name) is None:
        name = f"_stageflow_target_{name}"  # never shadow a module imported otherwise
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise CliError(f"{path}: cannot be imported")
    folder = str(resolved.parent)
    if folder not in sys.path:  # as `python path/to/file.py` would: its siblings import
        sys.path.insert(0, folder)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    _loaded_files[name] = resolved
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - the user's code: said in one line
        del sys.modules[name]
        raise CliError(f"importing {path} raised {_said(error)}", cause=error) from None
    return module


def _missing(module: str, owner: object, attr: str, part: str) -> str:
    names = [n for n in dir(owner) if not n.startswith("__")]
    close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
    if not close:  # point at what could be a pipeline
        close = [n for n in names if isinstance(getattr(owner, n), Pipeline | StageGraph)][:1]
    hint = f"; did you mean {close[0]!r}?" if close else ""
    where = module if attr == part else f"{module}:{attr}"
    return f"{where} has no attribute {part!r}{hint}"


def _not_a_pipeline(target: str, value: object) -> str:
    what = f"the class {value.__name__}" if inspect.isclass(value) else f"a {type(value).__name__}"
    return (
        f"{target} is {what}, not a pipeline: expected a Pipeline, a StageGraph, "
        f"or a function of no arguments returning one"
    )


def _takes_arguments(value: object) -> bool:
    try:
        signature = inspect.signature(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    try:
        signature.bind()
    except TypeError:
        return True
    return False


def _said(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
