"""Pipelines as files: YAML (JSON, TOML) described by a published schema, built into the
same :class:`~stageflow.Pipeline` code builds (extra ``declarative``:
``pip install 'stageflow[declarative]'``).

A file names its stages' handlers by dotted path or registered name, passes them
``with:`` arguments holding ``$inputs.x`` / ``$stage.field`` references, and decides at
run time with CEL expressions (``when:``, routes, a loop's ``until:``), compiled and
type-checked when the file loads, evaluated by Google's CEL, never by Python ``eval``.
See docs/declarative.md.

Example:
    >>> loaded = loads_pipeline('''
    ... name: greet
    ... inputs: {who: {type: string, default: world}}
    ... stages:
    ...   - id: hello
    ...     handler: examples.declarative.handlers.greet
    ...     with: {name: $inputs.who}
    ... ''')
    >>> loaded.graph.names
    ('hello',)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._build import LoadedPipeline, build_document, import_object
from ._catalog import FileCatalog, load_catalog
from ._export import export_pipeline
from ._expr import MAX_COST, MAX_DEPTH, MAX_EXPRESSION, MAX_NESTED_MACROS
from ._model import PipelineDecl, StageDecl
from ._source import read_source

__all__ = [
    "MAX_COST",
    "MAX_DEPTH",
    "MAX_EXPRESSION",
    "MAX_NESTED_MACROS",
    "FileCatalog",
    "LoadedPipeline",
    "PipelineDecl",
    "StageDecl",
    "export_pipeline",
    "import_object",
    "load_catalog",
    "load_pipeline",
    "loads_pipeline",
    "pipeline_schema",
]


def load_pipeline(
    path: str | Path,
    *,
    handlers: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    catalog: Any = None,
) -> LoadedPipeline:
    """Load a pipeline file (``.yaml``/``.yml``, ``.json``, ``.toml``) and build its graph.

    Args:
        path: the file.
        handlers: names a file's ``handler:`` may use instead of a dotted path, to
            stages (functions, classes).
        parameters: the values of a template's ``parameters:``.
        catalog: where ``subgraph: name`` / ``loop.body: name`` find pipelines by name
            (a :class:`~stageflow.Catalog`, or a catalog of files).

    Raises:
        PipelineFileError: anything wrong in the file, naming its file, line, column,
            field and value: the schema, a handler that cannot be imported, a reference
            to an unknown stage, input or field, an expression that does not parse or
            type-check, and every error ``Pipeline.build()`` raises.
        ConfigurationError: a template parameter is missing, unknown or of the wrong type.
    """
    return build_document(read_source(path), handlers=handlers, parameters=parameters,
                          catalog=catalog, _reading=(Path(path).resolve(),))  # fmt: skip


def loads_pipeline(
    text: str,
    *,
    format: str = "yaml",  # noqa: A002 - the file format's name
    name: str = "<string>",
    handlers: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    catalog: Any = None,
) -> LoadedPipeline:
    """:func:`load_pipeline` for a pipeline held in a string (``format``: ``"yaml"``,
    ``"json"`` or ``"toml"``; ``name`` is what errors call it)."""
    if format not in ("yaml", "json", "toml"):
        from ...errors import ConfigurationError

        raise ConfigurationError(f"format must be 'yaml', 'json' or 'toml', not {format!r}",
                                 field="format", value=format)  # fmt: skip
    source = read_source(f"pipeline.{format}", text, name=name)
    return build_document(source, handlers=handlers, parameters=parameters, catalog=catalog)


def pipeline_schema() -> dict[str, Any]:
    """The JSON Schema of a pipeline file (what ``stageflow schema`` prints), for editors."""
    schema = PipelineDecl.model_json_schema(by_alias=True)
    schema["$id"] = "https://stageflow.dev/schema/pipeline-1.json"
    checked: dict[str, Any] = json.loads(json.dumps(schema))
    return checked
