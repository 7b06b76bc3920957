"""From a parsed pipeline file to the same :class:`~stageflow.Pipeline` code would build."""

from __future__ import annotations

import asyncio
import difflib
import functools
import importlib
import inspect
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError, create_model

from ..._budget import Budget, Estimate
from ..._graph import StageGraph
from ..._pipeline import Pipeline
from ..._policies import CircuitBreakerPolicy, RetryPolicy
from ..._spec import check_name
from ..._stage import StageOutput
from ...errors import (
    ConfigurationError,
    CycleError,
    GraphError,
    MissingInputError,
    PipelineFileError,
    RouteError,
    SelfDependencyError,
)
from . import _expr
from ._expr import REQUIRED, ROOTS, Expression, ExpressionProblem, Ref, Scope, parse_ref
from ._model import FieldDecl, GraphDecl, InputDecl, PipelineDecl, Python, RouteDecl, StageDecl
from ._source import Source, read_source

if TYPE_CHECKING:
    from ..._catalog import CatalogEntry

__all__ = ["PY_TYPES", "Condition", "LoadedPipeline", "build_document", "generated_fields"]

P = tuple[str | int, ...]

PY_TYPES: dict[str, Any] = {
    "string": str, "integer": int, "number": float, "boolean": bool, "array": list,
    "object": dict, "any": Any,
}  # fmt: skip
_CEL_KINDS = {"string": "string", "integer": "int", "number": "double", "boolean": "bool",
              "array": "list", "object": "map", "any": "dyn"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class LoadedPipeline:
    """A pipeline file, loaded: its graph and what the file says about it.

    Attributes:
        name: the pipeline's name (``name:``).
        graph: the built :class:`~stageflow.StageGraph`.
        pipeline: the :class:`~stageflow.Pipeline` it was built from (extend it, compose it).
        version: ``version:``, or None.
        description: ``description:``.
        category: ``category:``, or None.
        tags: ``tags:``.
        data: the pydantic model of the run's data made from ``inputs:`` (defaults
            applied, types checked), or None when the file declares no inputs.
        file: where it was read from (None: from a string).
        declaration: the file's content as its model (:class:`PipelineDecl`).
    """

    name: str
    graph: StageGraph
    pipeline: Pipeline
    version: str | None
    description: str
    category: str | None
    tags: tuple[str, ...]
    data: type[BaseModel] | None
    file: str | None
    declaration: PipelineDecl
    _outputs: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def validate_data(self, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The run's data checked against ``inputs:`` and completed with its defaults.

        Raises:
            ConfigurationError: a required input is missing or a value has the wrong type
                (``field`` names it).
        """
        from ..._catalog import CatalogEntry

        return CatalogEntry(self.name, self.graph, data=self.data).validate_data(data)

    def outputs(self, result: Any, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The file's ``outputs:`` read from a finished run's result (and its data).

        An output reading a stage that did not complete (a branch not taken) is None.

        Raises:
            MissingInputError: an output names a field a completed stage lacks, or an
                input the data lacks.
        """
        view = _ResultView(result, data or {})
        outputs: dict[str, Any] = {}
        for name, value in self._outputs.items():
            try:
                outputs[name] = _render(value, view, None)
            except MissingInputError as error:
                if error.dependency in view.inputs or error.dependency == "inputs":
                    raise
                outputs[name] = None  # a stage that did not complete (a branch not taken)
        return outputs

    def catalog_entry(self, name: str | None = None) -> CatalogEntry:
        """This pipeline as a :class:`~stageflow.CatalogEntry` (for ``Catalog.add``-style use)."""
        from ..._catalog import CatalogEntry

        return CatalogEntry(name or self.name, self.graph, self.description, self.category,
                            self.data, self.tags)  # fmt: skip


class _ResultView:
    """What output references read from a RunResult: completed stages' data, the run data."""

    __slots__ = ("data", "inputs")

    def __init__(self, result: Any, data: Mapping[str, Any]) -> None:
        self.data = data
        self.inputs = {name: r.data for name, r in result.stages.items() if r.ok}


# --------------------------------------------------------------------------- load


class _Context:
    """What a whole load shares: handlers, the catalog, the files being read (cycles)."""

    def __init__(self, handlers: Mapping[str, Any], catalog: Any, reading: tuple[Path, ...]):
        self.handlers = handlers
        self.catalog = catalog
        self.reading = reading


def build_document(
    source: Source,
    *,
    handlers: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    catalog: Any = None,
    _reading: tuple[Path, ...] = (),
) -> LoadedPipeline:
    """Validate ``source`` and build its pipeline (see :func:`load_pipeline`)."""
    if handlers is not None and not isinstance(handlers, Mapping):
        raise ConfigurationError(f"handlers must be a mapping of names to stages, not "
                                 f"{handlers!r}", field="handlers", value=handlers)  # fmt: skip
    raw = source.data
    if not isinstance(raw, Mapping):
        raise source.error((), "a pipeline file is a mapping (name:, stages:, ...), not "
                           f"{type(raw).__name__}", raw)  # fmt: skip
    raw = _instantiate(source, raw, parameters or {})
    decl = _validate(source, raw)
    context = _Context(handlers or {}, catalog, _reading)
    builder = _Builder(source, context, decl)
    pipeline = builder.stages(decl.stages, ("stages",), Pipeline(_pipeline_name(source, decl)),
                              outer={}, loop=False)  # fmt: skip
    graph = builder.build(pipeline, decl.stages, ("stages",))
    data_model = _data_model(decl.name, decl.inputs) if decl.inputs else None
    outputs = builder.outputs(decl)
    return LoadedPipeline(
        decl.name, graph, pipeline, decl.version, decl.description, decl.category,
        tuple(decl.tags), data_model, source.name if source.base is not None else None, decl,
        outputs,
    )  # fmt: skip


def _pipeline_name(source: Source, decl: PipelineDecl) -> str:
    try:
        return check_name(decl.name, "pipeline name")
    except GraphError as error:
        raise source.error(("name",), str(error), decl.name) from None


# --------------------------------------------------------------------------- templates

_PARAM = re.compile(r"\$params\.([A-Za-z_][A-Za-z0-9_]*)")
_EXPRESSION_KEYS = frozenset({"when", "until", "key"})


def _instantiate(source: Source, raw: Mapping[str, Any], given: Mapping[str, Any]) -> Any:
    """Substitute a template's ``$params.x`` (typed where a whole value, a CEL literal
    inside an expression, text elsewhere)."""
    if not isinstance(given, Mapping):
        raise ConfigurationError(f"parameters must be a mapping, not {given!r}",
                                 field="parameters", value=given)  # fmt: skip
    declared_raw = raw.get("parameters") or {}
    if not isinstance(declared_raw, Mapping):
        raise source.error(("parameters",), "a mapping of parameter names to their types",
                           declared_raw)  # fmt: skip
    values: dict[str, Any] = {}
    for name, spec in declared_raw.items():
        try:
            decl = _field(spec)
        except ValidationError as error:
            raise source.error(("parameters", name), _first(error), spec) from None
        if name in given:
            values[name] = _check_field(source, ("parameters", name), f"parameter {name!r}",
                                        decl, given[name], given=True)  # fmt: skip
        elif "default" in (spec if isinstance(spec, Mapping) else {}):
            values[name] = decl.default
        else:
            raise ConfigurationError(
                f"{source.name}: template parameter {name!r} is required: give it "
                f"(parameters={{{name!r}: ...}}, or --param {name}=...)",
                field=f"parameters.{name}",
                value=None,
            )
    unknown = [name for name in given if name not in declared_raw]
    if unknown:
        hint = _did_you_mean(unknown[0], list(declared_raw))
        raise ConfigurationError(
            f"{source.name}: unknown template parameter {unknown[0]!r}{hint}; the file declares "
            f"{', '.join(map(repr, declared_raw)) or 'none'}",
            field=f"parameters.{unknown[0]}",
            value=given[unknown[0]],
        )

    def sub(value: Any, path: P, expression: bool) -> Any:
        if isinstance(value, str) and "$params" in value:
            whole = _PARAM.fullmatch(value)
            for match in _PARAM.finditer(value):
                if match[1] not in values:
                    raise source.error(path, f"{match[0]}: unknown template parameter "
                                       f"{match[1]!r}{_did_you_mean(match[1], list(values))}",
                                       value)  # fmt: skip
            if whole is not None and not expression:
                return values[whole[1]]
            as_expression = expression or "${{" in value

            def text(match: re.Match[str]) -> str:
                v = values[match[1]]
                return _expr.literal(v) if as_expression else str(v)

            return _PARAM.sub(text, value)
        if isinstance(value, Mapping):
            return {k: sub(v, (*path, k), k in _EXPRESSION_KEYS) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v, (*path, i), expression) for i, v in enumerate(value)]
        return value

    return {k: (v if k == "parameters" else sub(v, (k,), False)) for k, v in raw.items()}


def _field(spec: Any) -> FieldDecl:
    if isinstance(spec, str):
        return FieldDecl(type=spec)  # type: ignore[arg-type]
    return FieldDecl.model_validate(spec)


def _first(error: ValidationError) -> str:
    first = error.errors()[0]
    return str(first["msg"])


def _check_field(source: Source, path: P, label: str, decl: FieldDecl, value: Any,
                 *, given: bool = False) -> Any:  # fmt: skip
    model = create_model("Value", value=(_annotation(decl), ...))
    try:
        return model.model_validate({"value": value}).value  # type: ignore[attr-defined]
    except ValidationError as error:
        raise ConfigurationError(
            f"{source.name}: {label}: {_first(error)} (given {value!r})",
            field=".".join(str(p) for p in path),
            value=value,
        ) from None


def _annotation(decl: FieldDecl) -> Any:
    if decl.enum:
        return Literal[tuple(decl.enum)]
    return PY_TYPES[decl.type]


def _data_model(name: str, fields: Mapping[str, FieldDecl | str]) -> type[BaseModel]:
    definitions: dict[str, Any] = {}
    for key, spec in fields.items():
        decl = _field(spec) if isinstance(spec, str) else spec
        required = isinstance(spec, str) or "default" not in spec.model_fields_set
        definitions[key] = (_annotation(decl), ... if required else decl.default)
    model_name = re.sub(r"\W", "_", name.title()) + "Data"
    model: type[BaseModel] = create_model(model_name, **definitions)
    _GENERATED[model] = dict(fields)
    return model


_GENERATED: weakref.WeakKeyDictionary[type, dict[str, FieldDecl | str]] = (
    weakref.WeakKeyDictionary()
)  # the models made from a file's fields, and those fields (what export writes back)


def generated_fields(model: Any) -> dict[str, FieldDecl | str] | None:
    """The fields a file declared, if ``model`` was made from them (an input's schema)."""
    try:
        return _GENERATED.get(model)
    except TypeError:  # not weakly referenceable: not one of ours
        return None


# --------------------------------------------------------------------------- validation


def _validate(source: Source, raw: Mapping[str, Any]) -> PipelineDecl:
    try:
        return PipelineDecl.model_validate(raw)
    except ValidationError as error:
        raise _schema_error(source, raw, error) from None


_ALL_FIELDS = sorted(
    {
        name
        for model in (PipelineDecl, StageDecl, GraphDecl, InputDecl, FieldDecl, RouteDecl)
        for name in model.model_fields
    }
    | {"with", "schema"}
)


def _schema_error(source: Source, raw: Any, error: ValidationError) -> PipelineFileError:
    problems: dict[P, list[str]] = {}
    order: list[tuple[P, Any, bool]] = []
    for item in error.errors():
        path, value, is_key = _data_path(raw, item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            name = str(path[-1])
            message = f"unknown field {name!r}{_did_you_mean(name, _ALL_FIELDS)}"
        elif kind == "missing":
            message = f"{item['loc'][-1]!r} is required"
            path = (
                (*path, item["loc"][-1]) if path == _data_path(raw, item["loc"][:-1])[0] else path
            )
        else:
            message = str(item["msg"])
            if "union" in kind or kind.endswith("_type") or kind == "literal_error":
                message = message[0].lower() + message[1:]
        if path not in problems:
            problems[path] = []
            order.append((path, value, is_key or kind == "extra_forbidden"))
        if message not in problems[path]:
            problems[path].append(message)
    path, value, is_key = order[0]
    message = " or ".join(problems[path])
    if not isinstance(value, Mapping | list) and kind != "missing":
        message += f" (given {value!r})"
    more = len(order) - 1
    if more:
        rest = "; ".join(
            f"{_expr_path(p)} (line {source.locate(p).line}): {' or '.join(problems[p])}"
            for p, _, _ in order[1:6]
        )
        message += f"; and {more} more: {rest}"
    return source.error(path, message, value, key=is_key)


def _expr_path(path: P) -> str:
    from ._source import dotted_path

    return dotted_path(path)


def _data_path(raw: Any, loc: Sequence[Any]) -> tuple[P, Any, bool]:
    """The part of a pydantic error location that is in the data (union members dropped)."""
    path: list[str | int] = []
    value = raw
    for part in loc:
        in_list = isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        if (isinstance(value, Mapping) and part in value) or in_list:
            value = value[part]
            path.append(part)
        elif isinstance(value, Mapping) and isinstance(part, str) and part not in _UNION_TAGS:
            path.append(part)  # an unknown key: its own location
            return tuple(path), None, True
    return tuple(path), value, False


_UNION_TAGS = frozenset({
    "str", "int", "float", "bool", "list", "dict", "RetryDecl", "BreakerDecl", "BudgetDecl",
    "EstimateDecl", "RouteDecl", "GraphDecl", "Python", "FieldDecl", "function-after",
    "function-before", "literal['fail']", "none", "python-object", "field-map", "type-name",
})  # fmt: skip


def _did_you_mean(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------- handlers


def import_object(dotted: str) -> Any:
    """The object at ``module.attr`` / ``module:attr`` (a nested ``Class.attr`` too).

    Raises:
        LookupError: with a message naming what is missing (and what is close).
    """
    if not isinstance(dotted, str) or not re.fullmatch(r"[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?",
                                                       dotted):  # fmt: skip
        raise LookupError(f"{dotted!r} is no dotted path (module.attribute)")
    if ":" in dotted:
        module_name, attrs = dotted.split(":")
        return _attrs(_import(module_name), attrs.split("."), module_name)
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and not module_name.startswith(error.name):
                raise LookupError(f"importing {module_name!r} failed: {error}") from None
            continue
        except Exception as error:  # noqa: BLE001 - the module's own import error, named
            raise LookupError(f"importing {module_name!r} raised {type(error).__name__}: "
                              f"{error}") from None  # fmt: skip
        return _attrs(module, parts[cut:], module_name)
    return _import(parts[0])


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name != name.split(".", maxsplit=1)[0] and not name.startswith(str(error.name)):
            raise LookupError(f"importing {name!r} failed: {error}") from None
        import pkgutil

        known = [m.name for m in pkgutil.iter_modules()]
        raise LookupError(f"no module named {error.name!r}"
                          f"{_did_you_mean(str(error.name), known)}") from None  # fmt: skip
    except Exception as error:  # noqa: BLE001 - the module's own import error, named
        raise LookupError(f"importing {name!r} raised {type(error).__name__}: {error}") from None


def _attrs(obj: Any, attrs: Sequence[str], where: str) -> Any:
    for attr in attrs:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            known = [n for n in dir(obj) if not n.startswith("_")]
            path = getattr(obj, "__path__", None)  # a package: its submodules not imported yet
            if path is not None:
                import pkgutil

                known += [m.name for m in pkgutil.iter_modules(path)]
            raise LookupError(f"{where!r} has no attribute {attr!r}"
                              f"{_did_you_mean(attr, known)}") from None  # fmt: skip
        where = f"{where}.{attr}"
    return obj


# --------------------------------------------------------------------------- stages


class _Builder:
    def __init__(self, source: Source, context: _Context, decl: PipelineDecl) -> None:
        self.source = source
        self.context = context
        self.inputs: dict[str, tuple[str, Any]] = {}
        for name, spec in decl.inputs.items():
            field_decl = _field(spec) if isinstance(spec, str) else spec
            has_default = not isinstance(spec, str) and "default" in spec.model_fields_set
            kind = _CEL_KINDS[field_decl.type]
            if field_decl.enum:
                kinds = {type(v) for v in field_decl.enum}
                kind = "string" if kinds == {str} else "dyn"
            self.inputs[name] = (kind, field_decl.default if has_default else REQUIRED)

    def error(self, path: P, message: str, value: object = None, *, key: bool = False
              ) -> PipelineFileError:  # fmt: skip
        return self.source.error(path, message, value, key=key)

    # ----------------------------------------------------------------- a list of stages

    def stages(
        self,
        decls: Sequence[StageDecl],
        path: P,
        pipeline: Pipeline,
        *,
        outer: Mapping[str, type[Any] | None],
        loop: bool,
        escapes: list[str] | None = None,
    ) -> Pipeline:
        """Add the stages of one list; the outer stages they read are put in ``escapes``."""
        ids: dict[str, type[Any] | None] = {}
        for i, decl in enumerate(decls):
            where = (*path, i)
            try:
                check_name(decl.id)
            except GraphError as error:
                raise self.error((*where, "id"), str(error).split(": ", 1)[-1], decl.id) from None
            if decl.id in ROOTS:
                raise self.error((*where, "id"), f"{decl.id!r} is a reference root ($"
                                 f"{decl.id}): name the stage otherwise", decl.id)  # fmt: skip
            ids[decl.id] = self.model(decl.output, (*where, "output")) if decl.output else None
        visible = {**outer, **ids}
        for i, decl in enumerate(decls):
            pipeline = self.stage(pipeline, decl, (*path, i), visible, (set(ids), escapes), loop)
        return pipeline

    def build(self, pipeline: Pipeline, decls: Sequence[StageDecl], path: P) -> StageGraph:
        try:
            return pipeline.build()
        except GraphError as error:
            raise self.graph_error(error, decls, path) from None

    def graph_error(self, error: GraphError, decls: Sequence[StageDecl], path: P
                    ) -> PipelineFileError:  # fmt: skip
        index = {d.id: i for i, d in enumerate(decls)}
        stage = getattr(error, "stage", None)
        if isinstance(error, CycleError) and error.cycle:
            stage = error.cycle[0]
        if stage not in index:
            return self.error(path, str(error), None)
        return self.place(error, decls[index[stage]], (*path, index[stage]))

    def place(self, error: GraphError, decl: StageDecl, where: P) -> PipelineFileError:
        """``error`` of the stage ``decl`` (at ``where``), at the field it is about."""
        dependency = getattr(error, "dependency", None)
        if isinstance(error, SelfDependencyError):
            dependency = decl.id
        option = getattr(error, "option", None)
        if dependency is not None and dependency in decl.dependencies:
            where = (*where, "dependencies", decl.dependencies.index(dependency))
        elif isinstance(option, str) and option in _OPTION_FIELDS:
            where = (*where, _OPTION_FIELDS[option])
        return self.error(where, str(error), getattr(error, "value", None))

    # ----------------------------------------------------------------- one stage

    def stage(
        self,
        pipeline: Pipeline,
        decl: StageDecl,
        where: P,
        visible: Mapping[str, type[Any] | None],
        local: tuple[set[str], list[str] | None],
        loop: bool,
    ) -> Pipeline:
        scope = Scope(decl.id, visible, self.inputs, item=decl.over is not None, loop=loop)
        try:
            options: dict[str, Any] = self.options(decl, where)
        except ConfigurationError as error:  # a policy's own check (RetryPolicy, Budget, ...)
            if isinstance(error, PipelineFileError):
                raise
            raise self.error(_policy_path(decl, where, error.field), str(error),
                             error.value) from None  # fmt: skip
        exclusive = [k for k in ("handler", "loop", "subgraph", "input") if getattr(decl, k)]
        routing = decl.routes is not None and any(isinstance(r, RouteDecl) and r.when is not None
                                                  for r in decl.routes)  # fmt: skip
        if len(exclusive) > 1:
            raise self.error((*where, exclusive[1]), f"a stage has one of handler:, loop:, "
                             f"subgraph: and input:, not both {exclusive[0]}: and "
                             f"{exclusive[1]}:", decl.id, key=True)  # fmt: skip
        if not exclusive and not routing:
            raise self.error(where, f"stage {decl.id!r} needs handler:, loop:, subgraph:, input: "
                             "or routes with when: conditions", decl.id)  # fmt: skip
        self.misplaced(decl, where, exclusive[0] if exclusive else "routes")
        when = self.when(decl, where, scope)
        if when is not None:
            options["when"] = when
        over = None
        if decl.over is not None and decl.kind not in (None, "work") and decl.input is None:
            raise self.error((*where, "kind"), f"kind: {decl.kind} does not apply to a map "
                             "(over:): its stage kind is work", decl.kind)  # fmt: skip
        if decl.over is not None:
            over = self.over(decl, where, scope, local[0])
            options.update(self.map_options(decl, where, scope))
        try:
            if decl.input is not None:
                pipeline = self.input_stage(pipeline, decl, where, scope, options, over, local)
            elif decl.loop is not None:
                pipeline = self.loop_stage(pipeline, decl, where, scope, options, local)
            elif decl.subgraph is not None:
                pipeline = self.subgraph_stage(pipeline, decl, where, scope, options, local)
            else:
                stage, kind = self.call(decl, where, scope, routing)
                if over is not None:
                    pipeline = pipeline.with_map(
                        decl.id, stage, over=over, **self.deps(decl, scope, local), **options
                    )
                else:  # fmt: skip
                    pipeline = pipeline.with_stage(
                        decl.id, stage, kind, **self.deps(decl, scope, local), **options
                    )
        except GraphError as error:
            raise self.place(error, decl, where) from None
        except ConfigurationError as error:  # a policy's own check (Budget, RetryPolicy)
            if isinstance(error, PipelineFileError):
                raise
            raise self.error((*where, error.field), str(error), error.value) from None
        return pipeline

    def misplaced(self, decl: StageDecl, where: P, what: str) -> None:
        """Refuse the fields that do not apply to this kind of stage (never ignore them)."""
        given = decl.model_fields_set
        applies = {
            "with_": what == "handler",
            "runner": what == "handler",
            "resources": what == "handler",
            "routes": what in ("handler", "routes"),
            "output_stage": what in ("loop", "subgraph"),
        }
        for field_name, ok in applies.items():
            name = field_name.rstrip("_")
            if not ok and what != "routes" and field_name in given and getattr(decl, field_name):
                raise self.error((*where, name), f"{name}: does not apply to a stage with "
                                 f"{what}:", getattr(decl, field_name), key=True)  # fmt: skip
        if what == "routes" and decl.with_:
            raise self.error((*where, "with"), "with: needs a handler: (a route by "
                             "expressions calls nothing)", decl.with_, key=True)  # fmt: skip
        if decl.over is None:
            for name in ("key", "max_parallel", "on_item_error"):
                if name in given:
                    raise self.error((*where, name), f"{name}: is for a map: give over: too",
                                     getattr(decl, name), key=True)  # fmt: skip
        elif what in ("loop", "subgraph"):
            raise self.error((*where, "over"), f"over: does not apply to a stage with {what}: "
                             "(map a handler, or an input)", decl.over, key=True)  # fmt: skip

    def deps(self, decl: StageDecl, scope: Scope, local: tuple[set[str], list[str] | None]
             ) -> dict[str, Any]:  # fmt: skip
        """``dependencies``, with the stages its references read added: those of its list
        as dependencies, the others (of an enclosing list) passed up."""
        ids, escapes = local
        deps = list(decl.dependencies)
        for name in scope.referenced:
            if name in ids:
                if name not in deps:
                    deps.append(name)
            elif escapes is not None and name not in escapes:
                escapes.append(name)
        return {"dependencies": tuple(deps), "optional": tuple(decl.optional)}

    def options(self, decl: StageDecl, where: P) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if decl.tags:
            options["tags"] = tuple(decl.tags)
        metadata = dict(decl.metadata)
        if decl.description:
            metadata.setdefault("description", decl.description)
        if metadata:
            options["metadata"] = metadata
        if decl.timeout is not None:
            options["timeout"] = decl.timeout
        if decl.retry is not None:
            if isinstance(decl.retry, int):
                options["retry"] = decl.retry
            else:
                fields = decl.retry.model_dump(exclude_none=True)
                for name in ("retry_on", "give_up_on"):
                    if name in fields:
                        fields[name] = self.exceptions(fields[name], (*where, "retry", name))
                options["retry"] = RetryPolicy(**fields)
        if decl.circuit_breaker is not None:
            fields = decl.circuit_breaker.model_dump(exclude_none=True)
            if "failure_on" in fields:
                fields["failure_on"] = self.exceptions(
                    fields["failure_on"], (*where, "circuit_breaker", "failure_on")
                )
            options["circuit_breaker"] = CircuitBreakerPolicy(**fields)  # fmt: skip
        if decl.budget is not None:
            options["budget"] = Budget(**decl.budget.model_dump(exclude_none=True))
        if decl.estimate is not None:
            options["estimate"] = (decl.estimate if isinstance(decl.estimate, int)
                                   else Estimate(**decl.estimate.model_dump()))  # fmt: skip
        if decl.output is not None and decl.input is None:
            options["output"] = self.model(decl.output, (*where, "output"))
        if decl.runner is not None:
            options["runner"] = decl.runner
        if decl.resources is not None:
            options["resources"] = decl.resources
        if decl.routes is not None and decl.input is None:
            options["routes"] = tuple(r if isinstance(r, str) else r.to for r in decl.routes)
        return options

    def exceptions(self, paths: Sequence[str], where: P) -> tuple[type[BaseException], ...]:
        found = []
        for i, dotted in enumerate(paths):
            obj = self.python(dotted, (*where, i), "an exception class")
            if not (isinstance(obj, type) and issubclass(obj, BaseException)):
                raise self.error((*where, i), f"{dotted!r} is no exception class", dotted)
            found.append(obj)
        return tuple(found)

    def model(self, dotted: str, where: P) -> type[Any]:
        import dataclasses

        obj = self.python(dotted, where, "a model class")
        if not (isinstance(obj, type) and (issubclass(obj, BaseModel)
                                           or dataclasses.is_dataclass(obj))):  # fmt: skip
            raise self.error(where, f"{dotted!r} is no pydantic model or dataclass", dotted)
        return obj

    def python(self, dotted: str, where: P, what: str) -> Any:
        try:
            return import_object(dotted)
        except LookupError as error:
            raise self.error(where, f"{what} {dotted!r}: {error}", dotted) from None

    def handler(self, decl: StageDecl, where: P) -> Any:
        name = decl.handler
        assert name is not None
        registered = self.context.handlers
        if name in registered:
            return registered[name]
        if "." not in name and ":" not in name:
            raise self.error((*where, "handler"), f"no handler registered as {name!r}"
                             f"{_did_you_mean(name, list(registered))} (registered: "
                             f"{', '.join(map(repr, registered)) or 'none'}); a handler is a "
                             "registered name or a dotted path (module.function)",
                             name)  # fmt: skip
        return self.python(name, (*where, "handler"), "handler")

    # ----------------------------------------------------------------- expressions

    def expression(
        self, text: str, where: P, scope: Scope, label: str, *, expect: str | None = None,
        template: str | None = None,
    ) -> Expression:  # fmt: skip
        """``text`` compiled; a problem placed in the file. ``template``: the ``${{ }}``
        value ``text`` was made from (the problem is placed, and shown, in it)."""
        try:
            return Expression(text, scope, label, expect=expect)
        except ExpressionProblem as problem:
            if template is None:
                raise self.at(where, text, problem.offset, str(problem)) from None
            _, place = _expr.template_expression(template)
            raise self.at(where, template, place(problem.offset), str(problem)) from None

    def at(self, where: P, text: str, offset: int, message: str) -> PipelineFileError:
        """An error at ``offset`` in the expression ``text`` found at ``where``."""
        error = self.error(where, message, text)
        line = error.line
        column = error.column
        before = text[:offset]
        if "\n" in before:
            return error  # a block scalar: the value's start is what we know
        raw_line = _line_of(self.source, line)
        if raw_line is not None:
            found = raw_line.find(text, column - 1)
            if found >= 0:
                column = found + 1 + offset
        return PipelineFileError(
            str(error).replace(f":{error.line}:{error.column}:", f":{line}:{column}:", 1),
            file=error.file, line=line, column=column, field=error.field, value=text,
        )  # fmt: skip

    def when(self, decl: StageDecl, where: P, scope: Scope) -> Any:
        if decl.when is None:
            return None
        if isinstance(decl.when, Python):
            return self.callable(decl.when.python, (*where, "when", "python"), "condition")
        expression = self.expression(decl.when, (*where, "when"), scope, "when", expect="bool")
        return Condition(expression, decl.when)

    def callable(self, dotted: str, where: P, what: str) -> Any:
        obj = self.python(dotted, where, what)
        if not callable(obj):
            raise self.error(where, f"{what} {dotted!r} is not callable", dotted)
        return obj

    def over(self, decl: StageDecl, where: P, scope: Scope, ids: set[str]) -> Any:
        """``with_map``'s ``over``: ``"stage.field"`` for a field of a stage of the same
        list (``ids``), else an expression (an outer stage's field, read through the
        loop or subgraph stage, which depends on it)."""
        over = decl.over
        if isinstance(over, Python):
            return self.callable(over.python, (*where, "over", "python"), "item list")
        assert over is not None
        ref = parse_ref(over)
        if ref is not None and ref.root in ids and len(ref.path) == 1 \
                and isinstance(ref.path[0], str):  # fmt: skip
            try:
                _expr.check_ref(ref, scope)
            except ExpressionProblem as problem:
                raise self.at((*where, "over"), over, 0, str(problem)) from None
            return f"{ref.root}.{ref.path[0]}"
        template = over if "${{" in over else None
        text = _expr.template_expression(over)[0] if template is not None else over
        items_scope = Scope(scope.stage, scope.stages, scope.inputs, loop=scope.loop,
                            referenced=scope.referenced)  # fmt: skip
        expression = self.expression(text, (*where, "over"), items_scope, "over",
                                     template=template)  # fmt: skip
        return _Items(expression, over)

    def map_options(self, decl: StageDecl, where: P, scope: Scope) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if decl.max_parallel is not None:
            options["max_parallel"] = decl.max_parallel
        if decl.on_item_error != "fail":
            options["on_item_error"] = decl.on_item_error
        if decl.key is not None:
            if isinstance(decl.key, Python):
                options["key"] = self.callable(decl.key.python, (*where, "key", "python"), "key")
            else:
                key_scope = Scope(decl.id, {}, {}, item=True)
                expression = self.expression(decl.key, (*where, "key"), key_scope, "key")
                options["key"] = _Key(expression, decl.key)
        return options

    # ----------------------------------------------------------------- calls

    def call(self, decl: StageDecl, where: P, scope: Scope, routing: bool) -> tuple[Any, Any]:
        kind: Any = decl.kind or ("route" if decl.routes is not None else "work")
        args = self.arguments(decl, where, scope)
        handler = self.handler(decl, where) if decl.handler is not None else None
        if handler is not None and args is not None:
            self.check_signature(handler, decl, where, args)
        routes: list[tuple[str, Expression | None]] | None = None
        if routing:
            assert decl.routes is not None
            route_scope = Scope(
                decl.id,
                scope.stages,
                scope.inputs,
                item=scope.item,
                loop=scope.loop,
                output=True,
                referenced=scope.referenced,
            )
            routes = []
            for i, route in enumerate(decl.routes):
                if isinstance(route, str) or route.when is None:
                    routes.append((route if isinstance(route, str) else route.to, None))
                    continue
                expression = self.expression(
                    route.when,
                    (*where, "routes", i, "when"),
                    route_scope,
                    f"routes[{i}].when",
                    expect="bool",
                )
                routes.append((route.to, expression))  # fmt: skip
        if handler is not None and args is None and routes is None:
            return handler, kind
        return _file_stage(decl, handler, args, routes), kind

    def arguments(self, decl: StageDecl, where: P, scope: Scope) -> _Args | None:
        if not decl.with_:
            return None
        return _Args({k: self.value(v, (*where, "with", k), scope, f"with.{k}")
                      for k, v in decl.with_.items()})  # fmt: skip

    def value(self, value: Any, where: P, scope: Scope, label: str) -> Any:
        """A ``with:`` value: constants kept, references and ``${{ }}`` compiled."""
        if isinstance(value, str):
            if value.startswith("$$"):
                return _Const(value[1:])
            if "${{" in value:
                text = _expr.template_expression(value)[0]
                return self.expression(text, where, scope, label, template=value)
            ref = parse_ref(value)
            if ref is not None:
                try:
                    _expr.check_ref(ref, scope)
                except ExpressionProblem as problem:
                    raise self.at(where, value, 0, str(problem)) from None
                return _Reference(_expr.resolver(ref, scope), ref)
            if value.startswith("$") and re.match(r"\$[A-Za-z_]", value):
                raise self.error(where, f"{value!r} is no reference ($stage.field, "
                                 "$inputs.name); write $$ for a literal $", value)  # fmt: skip
            return _Const(value)
        if isinstance(value, Mapping):
            return _Nested({k: self.value(v, (*where, k), scope, f"{label}.{k}")
                            for k, v in value.items()})  # fmt: skip
        if isinstance(value, list):
            return _Nested([self.value(v, (*where, i), scope, f"{label}[{i}]")
                            for i, v in enumerate(value)])  # fmt: skip
        return _Const(value)

    def check_signature(self, handler: Any, decl: StageDecl, where: P, args: _Args) -> None:
        try:
            signature = inspect.signature(_target(handler, instantiate=False))
        except (TypeError, ValueError):
            return
        params = list(signature.parameters.values())
        takes_ctx = bool(params) and _is_ctx(params[0])
        named = params[1:] if takes_ctx else params
        if any(p.kind is p.VAR_KEYWORD for p in named):
            return
        accepted = [p.name for p in named if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for name in args.values:
            if name not in accepted:
                raise self.error((*where, "with", name), f"handler {decl.handler!r} takes no "
                                 f"argument {name!r}{_did_you_mean(name, accepted)}; it takes "
                                 f"{', '.join(map(repr, accepted)) or 'none'}", name,
                                 key=True)  # fmt: skip
        missing = [p.name for p in named if p.default is p.empty
                   and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                   and p.name not in args.values]  # fmt: skip
        if missing:
            raise self.error((*where, "with"), f"handler {decl.handler!r} needs the argument "
                             f"{missing[0]!r}: give it under with:", missing[0],
                             key=True)  # fmt: skip

    # ----------------------------------------------------------------- dynamic stages

    def nested(self, graph: str | GraphDecl, where: P, scope: Scope, *, loop: bool,
               name: str) -> StageGraph:  # fmt: skip
        """A loop's body or a subgraph: inline stages, another file or a catalog name."""
        if isinstance(graph, str):
            looks_like_file = graph.endswith((".yaml", ".yml", ".json", ".toml")) or "/" in graph
            graph = GraphDecl(file=graph) if looks_like_file else GraphDecl(pipeline=graph)
        given = [k for k in ("stages", "file", "pipeline") if getattr(graph, k) is not None]
        if len(given) != 1:
            raise self.error(where, "a nested graph has one of stages:, file: and pipeline: "
                             f"(given: {', '.join(given) or 'none'})", None)  # fmt: skip
        if graph.stages is not None:
            if graph.parameters:
                raise self.error(
                    (*where, "parameters"),
                    "parameters: are for a file: or a pipeline: template, not inline stages",
                    graph.parameters,
                )
            outer = {k: v for k, v in scope.stages.items() if k != scope.stage}
            escapes: list[str] = []
            pipeline = self.stages(graph.stages, (*where, "stages"),
                                   Pipeline(graph.name or name), outer=outer, loop=loop,
                                   escapes=escapes)  # fmt: skip
            scope.referenced.extend(n for n in escapes if n not in scope.referenced)
            return self.build(pipeline, graph.stages, (*where, "stages"))
        if graph.file is not None:
            return self.file(graph.file, graph.parameters, (*where, "file"))
        return self.catalog_graph(str(graph.pipeline), graph.parameters, (*where, "pipeline"))

    def file(self, relative: str, parameters: Mapping[str, Any], where: P) -> StageGraph:
        base = self.source.base or Path.cwd()
        target = (base / relative).resolve()
        if target in self.context.reading:
            chain = " -> ".join(p.name for p in (*self.context.reading, target))
            raise self.error(where, f"the files include each other: {chain}", relative)
        if not target.is_file():
            raise self.error(where, f"no file {relative!r} (looked for {target})", relative)
        try:
            loaded = build_document(read_source(target), handlers=self.context.handlers,
                                    parameters=parameters, catalog=self.context.catalog,
                                    _reading=(*self.context.reading, target))  # fmt: skip
        except ConfigurationError as error:
            raise self.error(where, f"in {relative!r}: {error}", relative) from None
        return loaded.graph

    def catalog_graph(self, name: str, parameters: Mapping[str, Any], where: P) -> StageGraph:
        catalog = self.context.catalog
        if catalog is None:
            raise self.error(
                where,
                f"pipeline {name!r}: no catalog to find it in (load the "
                "file with catalog=, or name a file: with its suffix)",
                name,
            )
        if parameters:
            templates = getattr(catalog, "template", None)
            if templates is None:
                raise self.error(where, "parameters: need a catalog of files", parameters)
            try:
                return templates(name, parameters).graph  # type: ignore[no-any-return]
            except ConfigurationError as error:
                raise self.error(where, str(error), name) from None
        try:
            return catalog[name].graph  # type: ignore[no-any-return]
        except KeyError:
            known = list(getattr(catalog, "names", catalog))  # a Catalog iterates its entries
            raise self.error(where, f"no pipeline {name!r} in the catalog"
                             f"{_did_you_mean(name, known)}", name) from None  # fmt: skip

    def loop_stage(self, pipeline: Pipeline, decl: StageDecl, where: P, scope: Scope,
                   options: dict[str, Any], local: Any) -> Pipeline:  # fmt: skip
        spec = decl.loop
        assert spec is not None
        body = self.nested(spec.body, (*where, "loop", "body"), scope, loop=True,
                           name=f"{decl.id}-body")  # fmt: skip
        if isinstance(spec.until, Python):
            until = self.callable(spec.until.python, (*where, "loop", "until", "python"), "until")
        else:
            until_scope = Scope(decl.id, {}, {}, output=True)
            expression = self.expression(spec.until, (*where, "loop", "until"), until_scope,
                                         "loop.until", expect="bool")  # fmt: skip
            until = _Until(expression, spec.until)
        return pipeline.with_loop(decl.id, body, until=until, max_iterations=spec.max_iterations,
                                  on_exhausted=spec.on_exhausted, output_stage=spec.output_stage,
                                  **self.deps(decl, scope, local), **options)  # fmt: skip

    def subgraph_stage(self, pipeline: Pipeline, decl: StageDecl, where: P, scope: Scope,
                       options: dict[str, Any], local: Any) -> Pipeline:  # fmt: skip
        assert decl.subgraph is not None
        graph = self.nested(decl.subgraph, (*where, "subgraph"), scope, loop=False,
                            name=decl.id)  # fmt: skip
        return pipeline.with_subgraph(decl.id, graph, output_stage=decl.output_stage,
                                      **self.deps(decl, scope, local), **options)  # fmt: skip

    def input_stage(self, pipeline: Pipeline, decl: StageDecl, where: P, scope: Scope,
                    options: dict[str, Any], over: Any, local: Any) -> Pipeline:  # fmt: skip
        spec = decl.input
        assert spec is not None
        schema = self.schema(spec, (*where, "input", "schema"), decl.id)
        prompt: Any = None
        if isinstance(spec.prompt, Python):
            prompt = self.callable(spec.prompt.python, (*where, "input", "prompt", "python"),
                                   "prompt")  # fmt: skip
        elif isinstance(spec.prompt, str) and "${{" in spec.prompt:
            text = _expr.template_expression(spec.prompt)[0]
            expression = self.expression(text, (*where, "input", "prompt"), scope,
                                         "input.prompt", template=spec.prompt)  # fmt: skip
            prompt = _Prompt(expression, spec.prompt)
        else:
            prompt = spec.prompt
        input_options = {k: v for k, v in options.items() if k in ("tags", "metadata", "when")}
        for name in ("max_parallel", "on_item_error", "key"):
            if name in options:
                input_options[name] = options[name]
        extra: dict[str, Any] = {}
        if spec.on_timeout != "fail":
            extra["on_timeout"] = spec.on_timeout
        return pipeline.with_input(decl.id, schema=schema, prompt=prompt, timeout=spec.timeout,
                                   over=over, **extra, **self.deps(decl, scope, local),
                                   **input_options)  # fmt: skip

    def schema(self, spec: InputDecl, where: P, stage: str) -> Any:
        schema = spec.schema_
        if isinstance(schema, Python):
            return self.python(schema.python, (*where, "python"), "schema")
        if isinstance(schema, str):
            if schema not in PY_TYPES:
                hint = _did_you_mean(schema, list(PY_TYPES))
                raise self.error(where, f"unknown type {schema!r}{hint} (one of "
                                 f"{', '.join(PY_TYPES)})", schema)  # fmt: skip
            return PY_TYPES[schema]
        return _data_model(f"{stage}-input", schema)

    def outputs(self, decl: PipelineDecl) -> dict[str, Any]:
        ids = {s.id: self.model(s.output, ("stages", i, "output")) if s.output else None
               for i, s in enumerate(decl.stages)}  # fmt: skip
        scope = Scope("outputs", ids, self.inputs)
        return {name: self.value(value, ("outputs", name), scope, f"outputs.{name}")
                for name, value in decl.outputs.items()}  # fmt: skip


_OPTION_FIELDS = {
    "timeout": "timeout", "retry": "retry", "circuit_breaker": "circuit_breaker",
    "budget": "budget", "estimate": "estimate", "output": "output", "when": "when",
    "routes": "routes", "over": "over", "key": "key", "max_parallel": "max_parallel",
    "on_item_error": "on_item_error", "tags": "tags", "optional": "optional",
    "max_iterations": "loop", "until": "loop", "on_exhausted": "loop",
    "output_stage": "output_stage", "schema": "input", "prompt": "input",
    "on_timeout": "input", "body": "loop", "graph": "subgraph", "runner": "runner",
    "resources": "resources",
}  # fmt: skip


def _policy_path(decl: StageDecl, where: P, field_name: str) -> P:
    """Where in a stage the field a policy refused is (``retry.base``, ``budget``)."""
    for name in ("retry", "circuit_breaker", "budget", "estimate"):
        given = getattr(decl, name)
        if isinstance(given, BaseModel) and field_name in type(given).model_fields:
            return (*where, name, field_name)
    return where


def _line_of(source: Source, line: int) -> str | None:
    text = getattr(source, "text", None)
    if text is None:
        return None
    lines = text.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else None


def _is_ctx(param: inspect.Parameter) -> bool:
    if param.name == "ctx":
        return True
    annotation = param.annotation
    return bool(getattr(annotation, "__name__", annotation) == "StageContext")


# --------------------------------------------------------------------------- runtime


class _Const:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class _Reference:
    __slots__ = ("get", "ref")

    def __init__(self, get: Any, ref: Ref) -> None:
        self.get = get
        self.ref = ref


class _Nested:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _render(value: Any, ctx: Any, output: Any) -> Any:
    if isinstance(value, _Const):
        return value.value
    if isinstance(value, _Reference):
        return value.get(ctx, output)
    if isinstance(value, Expression):
        return value.evaluate(ctx, output)
    if isinstance(value, _Nested):
        inner = value.value
        if isinstance(inner, dict):
            return {k: _render(v, ctx, output) for k, v in inner.items()}
        return [_render(v, ctx, output) for v in inner]
    return value


class _Args:
    """A stage's ``with:``: compiled once, rendered per call."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def render(self, ctx: Any) -> dict[str, Any]:
        return {k: _render(v, ctx, None) for k, v in self.values.items()}


class Condition:
    """``when:``: a CEL expression as ``with_stage(when=)`` takes a condition."""

    __slots__ = ("expression", "text")

    def __init__(self, expression: Expression, text: str) -> None:
        self.expression = expression
        self.text = text

    def __call__(self, ctx: Any) -> bool:
        value = self.expression.evaluate(ctx)
        if type(value) is not bool:
            raise self.expression._error(f"it gave {value!r}, not a bool")
        return value

    def __repr__(self) -> str:
        return f"when({self.text!r})"


class _Until(Condition):
    """``loop.until:``: called with the iteration's output (``$output``)."""

    __slots__ = ()

    def __call__(self, output: Any) -> bool:
        value = self.expression.evaluate(None, output)
        if type(value) is not bool:
            raise self.expression._error(f"it gave {value!r}, not a bool")
        return value


class _ItemView:
    __slots__ = ("item",)

    def __init__(self, item: Any) -> None:
        self.item = item


class _Key(Condition):
    """``key:``: item -> str from ``$item``."""

    __slots__ = ()

    def __call__(self, item: Any) -> str:  # type: ignore[override]
        value = self.expression.evaluate(_ItemView(item))
        return value if isinstance(value, str) else str(value)


class _Items(Condition):
    """``over:`` as an expression: ctx -> the items."""

    __slots__ = ()

    def __call__(self, ctx: Any) -> Any:
        return self.expression.evaluate(ctx)


class _Prompt(Condition):
    __slots__ = ()

    def __call__(self, ctx: Any) -> str:  # type: ignore[override]
        return str(self.expression.evaluate(ctx))


def _file_stage(decl: StageDecl, handler: Any, args: _Args | None,
                routes: list[tuple[str, Expression | None]] | None) -> Any:  # fmt: skip
    """The stage function of a file stage that needs more than its handler: ``with:``
    arguments, or routes chosen by expressions."""
    call = _handler_call(handler, args) if handler is not None else None

    async def stage(ctx: Any) -> Any:
        output = await call(ctx) if call is not None else {}
        if routes is None:
            return output
        data = output.data if isinstance(output, StageOutput) else output
        data = data.model_dump() if isinstance(data, BaseModel) else data
        for target, expression in routes:
            if expression is None or _truth(expression, ctx, data):
                return StageOutput.route(target, **(data or {}))
        raise RouteError(  # a failure of the attempt: retried under retry:
            f"stage {decl.id!r}: no route's when: holds and no route is the default (one "
            f"without when:); routes: {', '.join(t for t, _ in routes)}",
            stage=decl.id,
            chosen=(),
            routes=tuple(t for t, _ in routes),
        )

    stage.__qualname__ = stage.__name__ = f"file_stage[{decl.id}]"
    stage.__stageflow_declaration__ = decl  # type: ignore[attr-defined]
    return stage


def _truth(expression: Expression, ctx: Any, output: Any) -> bool:
    value = expression.evaluate(ctx, output)
    if type(value) is not bool:
        raise expression._error(f"it gave {value!r}, not a bool")
    return value is True


def _target(handler: Any, *, instantiate: bool = True) -> Any:
    """What a handler's call calls: a class's ``execute`` (on an instance made once: the
    file's handler is one object), an object's ``execute``, else the handler itself."""
    if isinstance(handler, type) and hasattr(handler, "execute"):
        if not instantiate:  # its signature, as bound: self dropped
            return functools.partial(handler.execute, None)
        return handler().execute
    if not inspect.isfunction(handler) and hasattr(handler, "execute"):
        return handler.execute
    return handler


def _handler_call(handler: Any, args: _Args | None) -> Callable[[Any], Any]:
    target = _target(handler)
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        params = []
    takes_ctx = bool(params) and _is_ctx(params[0])
    if args is None:
        takes_ctx = True
    is_async = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(
        getattr(target, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    )

    async def call(ctx: Any) -> Any:
        kwargs = args.render(ctx) if args is not None else {}
        fn = functools.partial(target, ctx) if takes_ctx else target
        out = await fn(**kwargs) if is_async else await asyncio.to_thread(fn, **kwargs)
        if out is None or isinstance(out, Mapping | StageOutput | BaseModel):
            return out
        return {"value": out}

    return call
