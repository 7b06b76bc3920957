"""From a :class:`~stageflow.StageGraph` back to a pipeline file that loads to an equal graph."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from typing import Any, Literal

import yaml

from ..._dynamic import FAIL, InputSpec, LoopSpec, MapSpec
from ..._graph import StageGraph
from ..._pipeline import Pipeline
from ..._policies import CircuitBreakerPolicy, RetryPolicy
from ..._spec import StageSpec
from ..._status import StageKind
from ...errors import ConfigurationError
from ._build import PY_TYPES, Condition, LoadedPipeline, generated_fields, import_object
from ._model import PipelineDecl

__all__ = ["declaration", "export_pipeline"]

Format = Literal["yaml", "json"]


def export_pipeline(
    pipeline: StageGraph | Pipeline | LoadedPipeline,
    *,
    format: Format = "yaml",  # noqa: A002 - the file's format
    handlers: Mapping[str, Any] | None = None,
    description: str | None = None,
    version: str | None = None,
    category: str | None = None,
) -> str:
    """A pipeline file's text that :func:`load_pipeline` loads back to an equal graph.

    Every stage's function, condition, item list, key, ``until`` and output model is
    written as its dotted path (``module.function``), so each must be importable: a
    module-level function, class or instance. Stages a file declared (with ``with:``
    arguments or CEL expressions) are written as the file had them. The result has the
    same structure (:func:`~stageflow.StageGraph` fingerprint, what a resume checks), the
    same options and the same functions.

    Args:
        pipeline: a built graph, a pipeline (it is built), or a loaded file (its
            ``inputs:``, ``outputs:`` and descriptions are kept).
        format: ``"yaml"`` or ``"json"``.
        handlers: names to write for stage objects that have no importable path
            (``{name: stage}``, as ``load_pipeline(handlers=)`` takes them back).
        description: the file's ``description:``.
        version: the file's ``version:``.
        category: the file's ``category:``.

    Raises:
        ConfigurationError: a stage's function, condition or model cannot be named
            (a lambda, a closure), its metadata is not JSON data, or a bad argument;
            ``field`` is ``<stage>.<option>``.
    """
    if format not in ("yaml", "json"):
        raise ConfigurationError(f"format must be 'yaml' or 'json', not {format!r}",
                                 field="format", value=format)  # fmt: skip
    document = declaration(pipeline, handlers=handlers, description=description,
                           version=version, category=category)  # fmt: skip
    if format == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    return _yaml(document)


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, but U+0085, U+2028 and U+2029 come back: PyYAML writes them
    raw in quoted scalars, where a reader takes them for line breaks; a double-quoted
    scalar escapes them."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    odd = any(c in value for c in "\x85\u2028\u2029")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style='"' if odd else None)


_Dumper.add_representer(str, _text)


def _yaml(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def declaration(
    pipeline: StageGraph | Pipeline | LoadedPipeline,
    *,
    handlers: Mapping[str, Any] | None = None,
    description: str | None = None,
    version: str | None = None,
    category: str | None = None,
) -> dict[str, Any]:
    """The pipeline file's content as plain data (see :func:`export_pipeline`)."""
    loaded = pipeline if isinstance(pipeline, LoadedPipeline) else None
    if loaded is not None:
        graph = loaded.graph
    elif isinstance(pipeline, Pipeline):
        graph = pipeline.build()
    elif isinstance(pipeline, StageGraph):
        graph = pipeline
    else:
        raise ConfigurationError(
            f"export takes a StageGraph, a Pipeline or a loaded file, not "
            f"{type(pipeline).__name__} {pipeline!r}",
            field="pipeline",
            value=pipeline,
        )
    if handlers is not None and not isinstance(handlers, Mapping):
        raise ConfigurationError(f"handlers must be a mapping of names to stages, not "
                                 f"{handlers!r}", field="handlers", value=handlers)  # fmt: skip
    names = {id(obj): name for name, obj in (handlers or {}).items()}
    document: dict[str, Any] = {"name": graph.name}
    decl = loaded.declaration if loaded is not None else None
    given = {"version": version, "description": description, "category": category}
    for key, value in given.items():
        chosen = getattr(decl, key) or None if value is None and decl is not None else value
        if chosen is not None:
            document[key] = chosen
    if decl is not None:
        if decl.tags:
            document["tags"] = list(decl.tags)
        if decl.inputs:
            document["inputs"] = _plain_fields(decl.inputs)
    document["stages"] = _Exporter(names).stages(graph, "")
    if decl is not None and decl.outputs:
        document["outputs"] = decl.outputs
    PipelineDecl.model_validate(document)  # what load_pipeline checks first: never invalid
    return document


class _Exporter:
    def __init__(self, names: Mapping[int, str]) -> None:
        self.names = names

    def stages(self, graph: StageGraph, prefix: str) -> list[dict[str, Any]]:
        return [self.stage(spec, prefix + spec.name) for spec in graph.stages]

    def stage(self, spec: StageSpec, where: str) -> dict[str, Any]:
        out: dict[str, Any] = {"id": spec.name}
        metadata = dict(spec.metadata)
        text = metadata.get("description")
        if isinstance(text, str) and text:  # (an empty one stays metadata: the loader drops it)
            out["description"] = metadata.pop("description")
        dynamic = spec.dynamic
        file_stage = getattr(spec.stage, "__stageflow_declaration__", None)
        if isinstance(dynamic, InputSpec):
            out["input"] = self.input(dynamic, where)
            if dynamic.map is not None:
                out.update(self.map(dynamic.map, where))
        elif isinstance(dynamic, LoopSpec):
            body = {"name": dynamic.body.name, "stages": self.stages(dynamic.body, where + ".")}
            if dynamic.is_loop:
                out["loop"] = {
                    "body": body,
                    "until": self.expression(dynamic.until, where, "until"),
                    "max_iterations": dynamic.max_iterations,
                    "on_exhausted": dynamic.on_exhausted,
                    "output_stage": dynamic.output,
                }
            else:
                out["subgraph"] = body
                out["output_stage"] = dynamic.output
        elif file_stage is not None:  # as the file declared it: with:, routes by when:
            if file_stage.handler is not None:
                out["handler"] = file_stage.handler
            if file_stage.with_:
                out["with"] = file_stage.with_
        else:
            out["handler"] = self.path(spec.stage, where, "handler", self.names)
        default_kind = StageKind.ROUTE if spec.routes is not None else StageKind.WORK
        if dynamic is None and spec.kind is not default_kind:
            out["kind"] = spec.kind.value
        if spec.dependencies:
            out["dependencies"] = list(spec.dependencies)
        if spec.optional:
            out["optional"] = sorted(spec.optional)
        if spec.tags:
            out["tags"] = sorted(spec.tags)
        if metadata:
            out["metadata"] = _json(metadata, where, "metadata")
        if spec.when is not None:
            out["when"] = self.expression(spec.when, where, "when")
        if spec.timeout is not None:
            out["timeout"] = spec.timeout
        if spec.retry is not None:
            out["retry"] = _policy(spec.retry, RetryPolicy(), where, "retry")
        if spec.circuit_breaker is not None:
            out["circuit_breaker"] = _policy(spec.circuit_breaker, CircuitBreakerPolicy(),
                                             where, "circuit_breaker")  # fmt: skip
        if spec.budget is not None:
            budget = spec.budget
            fields = {"max_tokens": budget.max_tokens, "max_cost": budget.max_cost,
                      "warn_at": budget.warn_at}  # fmt: skip
            out["budget"] = {k: v for k, v in fields.items() if v is not None}
            out["budget"]["policy"] = str(budget.policy)
        if spec.estimate is not None:
            out["estimate"] = {"tokens": spec.estimate.tokens, "cost": spec.estimate.cost}
        if spec.placement is not None:
            out.update(_placement(spec.placement, where))
        if spec.output is not None and not isinstance(dynamic, InputSpec):
            out["output"] = self.path(spec.output, where, "output")
        if spec.routes is not None:
            declared = file_stage.routes if file_stage is not None else None
            out["routes"] = ([r if isinstance(r, str) else r.model_dump(exclude_none=True)
                              for r in declared] if declared else list(spec.routes))  # fmt: skip
        if isinstance(dynamic, MapSpec):
            out.update(self.map(dynamic, where))
        return out

    def map(self, spec: MapSpec, where: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(spec.over, str):
            out["over"] = f"${spec.over}"
        else:
            out["over"] = self.expression(spec.over, where, "over")
        if spec.key is not None:
            out["key"] = self.expression(spec.key, where, "key")
        if spec.max_parallel is not None:
            out["max_parallel"] = spec.max_parallel
        if spec.on_item_error != "fail":
            out["on_item_error"] = spec.on_item_error
        return out

    def input(self, spec: InputSpec, where: str) -> dict[str, Any]:
        schema = spec.schema.schema
        fields = generated_fields(schema)
        out: dict[str, Any] = {}
        if fields is not None:
            out["schema"] = _plain_fields(fields)
        elif any(schema is python for python in PY_TYPES.values()):
            out["schema"] = next(name for name, python in PY_TYPES.items() if schema is python)
        else:
            out["schema"] = {"python": self.path(schema, where, "schema")}
        if isinstance(spec.prompt, str):
            if "${{" in spec.prompt:
                raise _refused(
                    where,
                    "prompt",
                    "its prompt holds '${{', which a file reads "
                    "as an expression: give the prompt as a function",
                    spec.prompt,
                )
            out["prompt"] = spec.prompt
        elif spec.prompt is not None:
            out["prompt"] = self.expression(spec.prompt, where, "prompt")
        if spec.timeout is not None:
            out["timeout"] = spec.timeout
        if spec.on_timeout is not FAIL and spec.on_timeout != FAIL:
            out["on_timeout"] = _json(spec.on_timeout, where, "on_timeout")
        return out

    def expression(self, fn: Any, where: str, what: str) -> Any:
        """A CEL text the file had, else ``{python: dotted.path}``."""
        if isinstance(fn, Condition):
            return fn.text
        return {"python": self.path(fn, where, what)}

    def path(self, obj: Any, where: str, what: str, names: Mapping[int, str] | None = None
             ) -> str:  # fmt: skip
        if names and id(obj) in names:
            return names[id(obj)]
        found = _dotted(obj)
        if found is None:
            hint = "; or name it in handlers=" if what == "handler" else ""
            raise _refused(where, what, f"its {what} {obj!r} has no importable path: export "
                           "writes module.name, so it must be a module-level function, class "
                           f"or instance{hint}", obj)  # fmt: skip
        return found


def _dotted(obj: Any) -> str | None:
    """``module.qualname`` of ``obj`` if importing it gives ``obj`` back, else a module-level
    name bound to it, else None."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    found = None
    if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
        try:
            if import_object(f"{module}.{qualname}") is obj:
                found = f"{module}.{qualname}"
        except LookupError:
            pass
    if found is None:
        owner_name = module if isinstance(module, str) else type(obj).__module__
        owner = sys.modules.get(owner_name)
        for name, value in vars(owner).items() if owner is not None else ():
            if value is obj and not name.startswith("_"):
                found = f"{owner_name}.{name}"
                break
    return found


def _policy(policy: Any, defaults: Any, where: str, what: str) -> dict[str, Any]:
    """A RetryPolicy's or CircuitBreakerPolicy's fields that differ from the defaults."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(policy):
        value = getattr(policy, field.name)
        if value == getattr(defaults, field.name):
            continue
        if field.name in ("retry_on", "give_up_on", "failure_on"):
            out[field.name] = [_Exporter({}).path(cls, where, f"{what}.{field.name}")
                               for cls in value]  # fmt: skip
        else:
            out[field.name] = _json(value, where, f"{what}.{field.name}")
    return out


def _placement(placement: Any, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if placement.runner is not None:
        if not isinstance(placement.runner, str):
            raise _refused(where, "runner", f"its runner {placement.runner!r} is an object: "
                           "a file names runners (runner: ray, given to "
                           "Engine(runners={...}))", placement.runner)  # fmt: skip
        out["runner"] = placement.runner
    if placement.resources:
        out["resources"] = _json(dict(placement.resources), where, "resources")
    return out


def _plain_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {name: spec if isinstance(spec, str) else spec.model_dump(exclude_unset=True)
            for name, spec in fields.items()}  # fmt: skip


def _json(value: Any, where: str, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise _refused(where, what, f"its {what} is not JSON data, which a file holds: "
                       f"{value!r}", value) from None  # fmt: skip


def _refused(where: str, what: str, why: str, value: object) -> ConfigurationError:
    """What export cannot write: ``stage '<where>': <why>``, field ``<where>.<what>``."""
    return ConfigurationError(f"stage {where!r}: {why}", field=f"{where}.{what}", value=value)
