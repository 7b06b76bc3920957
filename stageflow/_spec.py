"""StageSpec: one stage as declared, validated and frozen; and how a stage object is called."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import functools
import inspect
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, is_dataclass
from dataclasses import fields as dataclass_fields
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from . import _codec
from ._assist import AssistanceConfig, check_assist
from ._budget import Budget, Estimate
from ._check import integer, number, refuse
from ._policies import CircuitBreakerPolicy, RetryPolicy
from ._stage import StageKind, StageOutput
from ._status import StageStatus
from .errors import (
    InvalidOptionError,
    InvalidOutputError,
    InvalidStageError,
    InvalidStageNameError,
    RouteError,
)

if TYPE_CHECKING:
    from ._context import StageCall, StageContext
    from ._dynamic import InputSpec, LoopSpec, MapSpec

__all__ = ["Placement", "StageSpec"]

MAX_NAME_LENGTH: Final = 128
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_NO_NAMES: Final[frozenset[str]] = frozenset()  # shared: frozenset() allocates each call
_KINDS: Final = tuple(k.value for k in StageKind)


class StageSpec(NamedTuple):
    """One stage of a pipeline, frozen: what ``with_stage`` was given, validated.

    Interceptors read it in ``wrap(spec, call)`` to decide whether and how they apply.

    Attributes:
        name: the stage's name, unique in its graph.
        stage: the object given to ``with_stage`` (function, class or instance).
        kind: what the stage does (:class:`~stageflow.StageKind`).
        dependencies: the stages it waits for, in declaration order.
        optional: the subset of ``dependencies`` whose failure or skip does not
            skip this stage.
        tags: free labels, e.g. for interceptors to select stages.
        metadata: free, read-only data for your own interceptors.
        call: how the engine calls the stage (a thread hop for sync code included).
        timeout: seconds per attempt, or None (the engine's default applies).
        retry: the :class:`~stageflow.RetryPolicy`, or None (the engine's default).
        circuit_breaker: the :class:`~stageflow.CircuitBreakerPolicy`, or None.
        budget: the stage's own :class:`~stageflow.Budget`, or None.
        estimate: what it expects to spend (:class:`~stageflow.Estimate`), or None.
        output: the declared model of its output data (a pydantic model or a
            dataclass type), or None: see ``with_stage(output=)``.
        when: the stage's condition ``ctx -> bool``, or None: see ``with_stage(when=)``.
        routes: the successors a ROUTE stage chooses from, or None.
        dynamic: a :class:`~stageflow.MapSpec` for ``with_map``, a
            :class:`~stageflow.LoopSpec` for ``with_loop`` and ``with_subgraph``, an
            :class:`~stageflow.InputSpec` for ``with_input``, else None.
        placement: where its call runs (:class:`~stageflow.Placement`: ``runner=`` and
            ``resources=``), or None: in the engine's event loop, or the engine's
            default runner.
        assist: the LLM assistance asked for (``with_stage(assist=)``: one
            :class:`~stageflow.AssistanceConfig` per mode), or None.
    """

    name: str
    stage: object
    kind: StageKind
    dependencies: tuple[str, ...]
    optional: frozenset[str]
    tags: frozenset[str]
    metadata: Mapping[str, Any]
    call: StageCall
    timeout: float | None = None
    retry: RetryPolicy | None = None
    circuit_breaker: CircuitBreakerPolicy | None = None
    budget: Budget | None = None
    estimate: Estimate | None = None
    output: type | None = None
    when: Callable[[StageContext], bool] | None = None
    routes: tuple[str, ...] | None = None
    dynamic: MapSpec | LoopSpec | InputSpec | None = None
    placement: Placement | None = None
    assist: tuple[AssistanceConfig, ...] | None = None


class Placement(NamedTuple):
    """Where a stage's call runs: ``with_stage(runner=, resources=)``.

    Attributes:
        runner: a runner's name, resolved by the engine (``Engine(runners={"ray": ...})``),
            a :class:`~stageflow.ports.StageRunner` itself, or None: the engine's default
            runner (``Engine(runner=)``).
        resources: what the call needs where it runs, for the runner (Ray:
            ``{"num_cpus": 2, "num_gpus": 0, "memory": 2**30}``); empty: its defaults.
    """

    runner: Any
    resources: Mapping[str, Any]


# StageSpec(...) through NamedTuple's Python-level __new__ costs a frame per stage.
_new_spec: Callable[[tuple[Any, ...]], StageSpec] = functools.partial(tuple.__new__, StageSpec)


def check_name(name: object, what: str = "stage name") -> str:
    """Return ``name`` if it is a valid stage or pipeline name, else raise."""
    if (
        type(name) is str
        and len(name) <= MAX_NAME_LENGTH
        and name.isascii()
        and name.isidentifier()
    ):
        return name  # the common case, all in C
    if not isinstance(name, str):
        raise InvalidStageNameError(
            f"{what} must be a str, not {type(name).__name__} {name!r}", name=name
        )
    if not (
        0 < len(name) <= MAX_NAME_LENGTH
        and (name[0].isalpha() or name[0] == "_")
        and _NAME_CHARS.issuperset(name)
    ):
        raise InvalidStageNameError(
            f"invalid {what} {name!r}: use 1 to {MAX_NAME_LENGTH} ASCII letters, digits, "
            "'_' or '-', starting with a letter or '_'",
            name=name,
        )
    return name


OPTIONS: Final = (
    "dependencies",
    "optional",
    "tags",
    "metadata",
    "timeout",
    "retry",
    "circuit_breaker",
    "budget",
    "estimate",
    "output",
    "when",
    "routes",
    "runner",
    "resources",
    "assist",
)


def unknown_option(stage: object, options: Mapping[str, Any]) -> InvalidOptionError:
    """The error for ``with_stage`` keywords that are no option, with a suggestion."""
    option, value = next(iter(options.items()))
    close = difflib.get_close_matches(option, OPTIONS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; options: {', '.join(OPTIONS)}"
    return InvalidOptionError(
        f"stage {stage!r}: unknown option {option!r}={value!r}{hint}",
        stage=stage if isinstance(stage, str) else repr(stage),
        option=option,
        value=value,
    )


def _names(stage: str, option: str, value: object, what: str = "stage names") -> tuple[str, ...]:
    """Any iterable of str but a str itself (``("a")`` for ``("a",)`` is a classic typo)."""
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | Mapping):
        names = tuple(value)
        if all(isinstance(v, str) for v in names):
            return names
    hint = f" (did you mean ({value!r},)?)" if isinstance(value, str) else ""
    raise InvalidOptionError(
        f"stage {stage!r}: {option} must be a tuple of {what}, not "
        f"{type(value).__name__} {value!r}{hint}",
        stage=stage,
        option=option,
        value=value,
    )


def make_spec(
    name: object,
    stage: object,
    kind: object,
    dependencies: object,
    optional: object,
    tags: object,
    metadata: object,
    timeout: object = None,
    retry: object = None,
    circuit_breaker: object = None,
    budget: object = None,
    estimate: object = None,
    output: object = None,
    when: object = None,
    routes: object = None,
    runner: object = None,
    resources: object = None,
    assist: object = None,
) -> StageSpec:
    """Validate ``with_stage``'s arguments into a StageSpec (errors name stage, option, value).

    The name, kind and dependencies are checked here (their common case inline); every
    other option by its entry of ``_CHECKS``, when it is not ``with_stage``'s default.
    """
    if not (
        type(name) is str
        and len(name) <= MAX_NAME_LENGTH
        and name.isascii()
        and name.isidentifier()
    ):
        name = check_name(name)
    if not isinstance(kind, StageKind):
        kind = _kind(name, kind)
    deps = (
        dependencies if type(dependencies) is tuple else _names(name, "dependencies", dependencies)
    )
    for dep in deps:
        if type(dep) is not str:
            deps = _names(name, "dependencies", dependencies)  # raises, naming the value
    opt = _NO_NAMES if optional == () else _optional(name, optional, deps)
    if (  # the common case: no other option
        tags == ()
        and metadata is None
        and timeout is None
        and retry is None
        and circuit_breaker is None
        and budget is None
        and estimate is None
        and output is None
        and when is None
        and routes is None
        and runner is None
        and resources is None
        and assist is None
    ):
        return _new_spec(
            (name, stage, kind, deps, opt, _NO_NAMES, _EMPTY, stage_call(name, stage),
             None, None, None, None, None, None, None, None, None, None, None)
        )  # fmt: skip
    options = (
        tags, metadata, timeout, retry, circuit_breaker, budget, estimate, output, when, routes
    )  # fmt: skip
    tag_set, meta, *rest = (
        unset if value is default else check(name, option, value)
        for (option, default, unset, check), value in zip(_CHECKS, options, strict=True)
    )
    call = stage_call(name, stage)
    model, _, chosen = rest[-3:]
    if isinstance(model, type):  # a declared output model: the returned output is checked
        call = validated_call(name, model, call)
    if chosen is not None and kind is not StageKind.ROUTE:
        raise InvalidOptionError(
            f"stage {name!r}: routes= is for ROUTE stages; declare it with "
            f"StageKind.ROUTE (its kind is {kind.value!r})",
            stage=name,
            option="routes",
            value=chosen,
        )
    placement = None if runner is None and resources is None else (
        _placement(name, runner, resources)
    )  # fmt: skip
    assisted = None if assist is None else check_assist(name, "assist", assist)
    return _new_spec(
        (name, stage, kind, deps, opt, tag_set, meta, call, *rest, None, placement, assisted)
    )


def _placement(stage: str, runner: object, resources: object) -> Placement:
    """``runner=`` and ``resources=``, checked."""
    if runner is not None and not (isinstance(runner, str) and runner.strip()) \
            and not callable(getattr(runner, "bind", None)):  # fmt: skip
        refuse("runner", "a runner's name (a str the engine's runners= knows) or a StageRunner",
               runner, stage=stage)  # fmt: skip
    if resources is None:
        return Placement(runner, _EMPTY)
    if not isinstance(resources, Mapping) or not all(isinstance(k, str) for k in resources):
        refuse("resources", "a mapping of resource names to amounts, e.g. {'num_cpus': 2}",
               resources, stage=stage)  # fmt: skip
    for key, amount in resources.items():
        if key != "resources" and not (
            isinstance(amount, int | float) and not isinstance(amount, bool) and amount >= 0
        ):
            raise InvalidOptionError(
                f"stage {stage!r}: resources[{key!r}] must be a number >= 0, not {amount!r}",
                stage=stage,
                option="resources",
                value=amount,
            )
    return Placement(runner, MappingProxyType(dict(resources)))


def dynamic_spec(spec: StageSpec, dynamic: MapSpec | LoopSpec | InputSpec) -> StageSpec:
    """``spec`` made a map, loop, subgraph or input stage."""
    return spec._replace(dynamic=dynamic)


def _kind(stage: str, value: object) -> StageKind:
    if not (isinstance(value, str) and value in _KINDS):
        refuse("kind", f"a StageKind ({', '.join(_KINDS)})", value, stage=stage)
    return StageKind(value)


def _optional(stage: str, value: object, deps: tuple[str, ...]) -> frozenset[str]:
    optional = frozenset(_names(stage, "optional", value))
    stray = sorted(optional.difference(deps))
    if stray:
        raise InvalidOptionError(
            f"stage {stage!r}: optional names {stray!r}, which are not among its "
            f"dependencies {deps!r}; list them in dependencies too",
            stage=stage,
            option="optional",
            value=value,
        )
    return optional


# The checks of the options after ``optional``: each is given the stage's name, the
# option's and a value other than with_stage's default, and returns what the spec keeps.
_Check = Callable[[str, str, object], Any]


def _tags(stage: str, option: str, value: object) -> frozenset[str]:
    return frozenset(_names(stage, option, value, "strings"))


def _metadata(stage: str, option: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        refuse(option, "a mapping with str keys", value, stage=stage)
    return MappingProxyType(dict(value))


def _timeout(stage: str, option: str, value: object) -> float:
    return number(value, option, "a positive number of seconds", gt=0, stage=stage)


def _retry(stage: str, option: str, value: object) -> RetryPolicy:
    if isinstance(value, RetryPolicy):
        return value
    what = "a RetryPolicy or a number of attempts >= 1"
    return RetryPolicy(attempts=integer(value, option, what, ge=1, stage=stage))  # 3: 3 attempts


def _estimate(stage: str, option: str, value: object) -> Estimate:
    if isinstance(value, Estimate):
        return value
    what = "an Estimate or a number of tokens >= 0"
    return Estimate(tokens=integer(value, option, what, ge=0, stage=stage))  # 600: tokens


def _instance(cls: type[Any], what: str) -> _Check:
    def check(stage: str, option: str, value: object) -> Any:
        if not isinstance(value, cls):
            refuse(option, what, value, stage=stage)
        return value

    return check


def _output(stage: str, option: str, value: object) -> type:
    if not (isinstance(value, type) and (_codec.is_model_class(value) or is_dataclass(value))):
        refuse(option, "a pydantic model class or a dataclass type", value, stage=stage)
    OutputModel.of(value)  # made once per model
    return value


class OutputModel:
    """How a stage's output is checked against its declared model (``output=``).

    The output's keys must be the model's fields: each required one present, none
    unknown, every value valid for its field in pydantic's strict mode (no coercion:
    ``"1"`` is no int, a list no tuple). The output is never changed. A stage may
    also return an instance of the model itself: its fields are its output.
    """

    __slots__ = ("_adapters", "fields", "model", "required")

    def __init__(self, model: type) -> None:
        self.model = model
        if _codec.is_model_class(model):
            info = model.model_fields  # type: ignore[attr-defined]
            self.fields = tuple(info)
            self.required = frozenset(n for n, f in info.items() if f.is_required())
        else:
            fields = [f for f in dataclass_fields(model) if f.init]
            self.fields = tuple(f.name for f in fields)
            self.required = frozenset(
                f.name for f in fields if f.default is MISSING and f.default_factory is MISSING
            )
        self._adapters: dict[str, Any] | None = None

    @classmethod
    def of(cls, model: type) -> OutputModel:
        made = _OUTPUT_MODELS.get(model)
        if made is None:
            made = _OUTPUT_MODELS[model] = cls(model)
        return made

    def data(self, stage: str, out: object) -> Mapping[str, Any] | None:
        """The output data to check in what a stage returned (None: nothing to check)."""
        if isinstance(out, StageOutput):
            return out.data if out.status is StageStatus.COMPLETED else None
        if isinstance(out, Mapping):
            return out
        if out is None:
            return {}
        return None  # not an output at all: the engine says so

    def check(self, stage: str, data: Mapping[str, Any]) -> None:
        """Raise InvalidOutputError unless ``data`` matches the model."""
        name = self.model.__qualname__
        unknown = [k for k in data if k not in self.fields]
        missing = sorted(self.required.difference(data))
        if unknown or missing:
            said = [f"no field {k!r}" for k in unknown] + [f"field {k!r} missing" for k in missing]
            raise InvalidOutputError(
                f"stage {stage!r}: its output does not match its declared model {name}: "
                + ", ".join(said)
                + f" (fields: {', '.join(self.fields) or 'none'})",
                stage=stage,
                value=data,
            )
        import pydantic  # a core dependency; imported only for stages that declare a model

        try:
            if _codec.is_model_class(self.model):
                self.model.model_validate(dict(data), strict=True)  # type: ignore[attr-defined]
            else:
                adapters = self._adapters
                if adapters is None:
                    hints = _codec.field_types(self.model)
                    adapters = self._adapters = {
                        n: pydantic.TypeAdapter(hints.get(n, Any)) for n in self.fields
                    }
                for key, value in data.items():
                    try:
                        adapters[key].validate_python(value, strict=True)
                    except pydantic.ValidationError as error:
                        raise _Located(key, error) from None
        except _Located as located:
            raise self._mismatch(stage, data, located.key, located.error) from None
        except pydantic.ValidationError as error:
            loc = error.errors()[0]["loc"]
            raise self._mismatch(stage, data, str(loc[0]) if loc else "", error) from None

    def _mismatch(self, stage: str, data: Mapping[str, Any], key: str, error: Any) -> Exception:
        first = error.errors(include_url=False)[0]
        where = "".join(f"[{part!r}]" for part in (key, *first["loc"][1:])) if key else ""
        value = first.get("input")
        return InvalidOutputError(
            f"stage {stage!r}: its output does not match its declared model "
            f"{self.model.__qualname__}: output{where} is {type(value).__qualname__} "
            f"{value!r}: {first['msg']}",
            stage=stage,
            value=data,
        )

    def fields_of(self, out: object) -> dict[str, Any]:
        """An instance of the model as its output data (its fields, values as they are)."""
        return {name: getattr(out, name) for name in self.fields}


_OUTPUT_MODELS: weakref.WeakKeyDictionary[type, OutputModel] = weakref.WeakKeyDictionary()


class _Located(Exception):
    def __init__(self, key: str, error: Any) -> None:
        self.key = key
        self.error = error


def check_route(name: str, routes: tuple[str, ...], out: StageOutput) -> bool:
    """Check what ROUTE stage ``name`` returned (a completed one must choose one or more
    of its ``routes``); return whether it chose them all.

    Called on its output before anything else sees it: by the engine's chain when an
    interceptor wraps the stage (so a store never keeps a stray choice), else by the
    scheduler.

    Raises:
        RouteError: it chose none, or a stage that is not one of its routes.
    """
    chosen = out.routes
    if out.status is not StageStatus.COMPLETED:
        return False  # skipped or failed: no route to check
    if not chosen:
        raise RouteError(
            f"stage {name!r} is a ROUTE stage but chose no route: return "
            f"StageOutput.route(<one or more of {', '.join(map(repr, routes))}>, ...)",
            stage=name,
            chosen=(),
            routes=routes,
        )
    for target in chosen:
        if target not in routes:
            raise RouteError(
                f"stage {name!r} chose route {target!r}, which is not one of its routes "
                f"({', '.join(map(repr, routes))})",
                stage=name,
                chosen=chosen,
                routes=routes,
            )
    return len(chosen) == len(routes) and len(set(chosen)) == len(routes)


def validated_call(name: str, model: type, call: StageCall) -> StageCall:
    """``call``, its output checked against ``model`` (see :class:`OutputModel`)."""
    shape = OutputModel.of(model)

    async def validated(ctx: StageContext) -> Any:
        out = await call(ctx)
        if type(out) is model:
            return shape.fields_of(out)  # valid by construction
        data = shape.data(name, out)
        if data is not None:
            shape.check(ctx.stage, data)  # an item's own name: score[3]
        return out

    validated.__qualname__ = f"validated({getattr(call, '__qualname__', call)!s})"
    return validated


def _when(stage: str, option: str, value: object) -> Callable[[StageContext], bool]:
    if not callable(value) or isinstance(value, type):
        refuse(option, "a callable ctx -> bool", value, stage=stage)
    if inspect.iscoroutinefunction(value):
        refuse(option, "a plain (not async) callable ctx -> bool", value, stage=stage)
    return value


def _routes(stage: str, option: str, value: object) -> tuple[str, ...]:
    routes = _names(stage, option, value)
    if not routes:
        refuse(option, "one or more successor stage names", value, stage=stage)
    if len(set(routes)) != len(routes):
        twice = next(r for r in routes if routes.count(r) > 1)
        raise InvalidOptionError(
            f"stage {stage!r}: routes names {twice!r} twice",
            stage=stage,
            option=option,
            value=value,
        )
    return routes


_CHECKS: Final[tuple[tuple[str, object, object, _Check], ...]] = (
    # in StageSpec's order: option, with_stage's default, what the spec keeps for that,
    # the check of another value
    ("tags", (), _NO_NAMES, _tags),
    ("metadata", None, _EMPTY, _metadata),
    ("timeout", None, None, _timeout),
    ("retry", None, None, _retry),
    ("circuit_breaker", None, None, _instance(CircuitBreakerPolicy, "a CircuitBreakerPolicy")),
    ("budget", None, None, _instance(Budget, "a Budget")),
    ("estimate", None, None, _estimate),
    ("output", None, None, _output),
    ("when", None, None, _when),
    ("routes", None, None, _routes),
)


# --------------------------------------------------------------------------- calling a stage

# How a given function/class is to be called is worked out once per object, not once per
# with_stage: inspect is slow (~10 µs) and graphs often reuse one function for many stages.
_ANALYSIS: weakref.WeakKeyDictionary[object, tuple[str, bool]] = weakref.WeakKeyDictionary()


def _analyze(name: str, stage: object) -> tuple[str, bool]:
    """Return (how, is_async): how is "class", "method" or "function"."""
    if isinstance(stage, type):
        execute = getattr(stage, "execute", None)
        if not callable(execute):
            raise InvalidStageError(
                f"stage {name!r}: class {stage.__qualname__} has no execute(self, ctx) method",
                stage=name,
                value=stage,
            )
        try:
            inspect.signature(stage).bind()
        except TypeError:
            raise InvalidStageError(
                f"stage {name!r}: class {stage.__qualname__} must be constructible without "
                "arguments; pass an instance instead",
                stage=name,
                value=stage,
            ) from None
        except ValueError:  # no signature available (some builtins): let the call tell
            pass
        _check_arity(name, execute, f"{stage.__qualname__}.execute", bound=False)
        return "class", inspect.iscoroutinefunction(execute)
    execute = getattr(stage, "execute", None)
    if callable(execute):
        _check_arity(name, execute, f"{type(stage).__qualname__}.execute", bound=True)
        return "method", inspect.iscoroutinefunction(execute)
    if callable(stage):
        label = getattr(stage, "__qualname__", type(stage).__qualname__)
        _check_arity(name, stage, label, bound=True)
        is_async = inspect.iscoroutinefunction(stage) or (
            not inspect.isroutine(stage) and inspect.iscoroutinefunction(type(stage).__call__)
        )
        return "function", is_async
    raise InvalidStageError(
        f"stage {name!r}: expected an async or sync function, a class with execute(), or an "
        f"object with execute(); got {type(stage).__qualname__} {stage!r}",
        stage=name,
        value=stage,
    )


def _check_arity(name: str, fn: Any, label: str, *, bound: bool) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without a signature: the call itself will tell
    try:
        if bound:
            signature.bind(None)
        else:
            signature.bind(None, None)
    except TypeError:
        raise InvalidStageError(
            f"stage {name!r}: {label}{signature} must accept exactly one argument, "
            "the StageContext",
            stage=name,
            value=fn,
        ) from None


def _check_function(name: str, fn: types.FunctionType) -> None:
    """The slow path of a function whose code object is not simply ``f(ctx)``."""
    code = fn.__code__
    required = code.co_argcount - len(fn.__defaults__ or ())
    takes_one = code.co_argcount >= 1 or code.co_flags & inspect.CO_VARARGS
    required_kwonly = code.co_kwonlyargcount - len(fn.__kwdefaults__ or ())
    if required > 1 or not takes_one or required_kwonly > 0:
        _check_arity(name, fn, fn.__qualname__, bound=True)  # raises, with the signature


def stage_call(name: str, stage: object) -> StageCall:
    """The engine's call for ``stage``: the function itself when it is async."""
    if type(stage) is types.FunctionType:  # the common case, read off the code object
        code = stage.__code__
        if code.co_argcount - len(stage.__defaults__ or ()) != 1 or code.co_kwonlyargcount:
            _check_function(name, stage)
        return stage if code.co_flags & inspect.CO_COROUTINE else _in_thread(stage)
    try:
        how, is_async = _ANALYSIS[stage]
    except (KeyError, TypeError):  # TypeError: not weak-referenceable or unhashable
        how, is_async = _analyze(name, stage)
        with contextlib.suppress(TypeError):  # not weak-referenceable: analyze every time
            _ANALYSIS[stage] = (how, is_async)
    fn: Callable[[StageContext], Any]
    if how == "class":
        cls: Any = stage

        def fn(ctx: StageContext) -> Any:
            return cls().execute(ctx)

    elif how == "method":
        fn = stage.execute  # type: ignore[attr-defined]
    else:
        fn = stage  # type: ignore[assignment]
    return fn if is_async else _in_thread(fn)


def _in_thread(fn: Callable[[StageContext], Any]) -> StageCall:
    # asyncio.to_thread copies the contextvars, so spans and context reach the thread.
    async def call(ctx: StageContext) -> Any:
        out = await asyncio.to_thread(fn, ctx)
        if inspect.iscoroutine(out):  # e.g. a sync wrapper around an async function
            out.close()
            raise InvalidOutputError.of(
                ctx.stage,
                out,
                f"{getattr(fn, '__qualname__', fn)} is not declared async but returned a "
                "coroutine: declare it with async def",
            )
        return out

    call.__qualname__ = f"in_thread({getattr(fn, '__qualname__', fn)!s})"
    call.sync = fn  # type: ignore[attr-defined]  # what a runner elsewhere may call as it is
    return call
