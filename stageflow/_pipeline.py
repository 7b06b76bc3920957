"""Pipeline: the immutable fluent builder of a StageGraph."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from ._budget import Budget, Estimate
from ._check import integer, number, refuse
from ._dynamic import (
    EXHAUSTED,
    FAIL,
    ITEM_ERRORS,
    InputSchema,
    InputSpec,
    InvalidValue,
    LoopSpec,
    MapSpec,
)
from ._graph import StageGraph
from ._policies import CircuitBreakerPolicy, RetryPolicy
from ._spec import (
    MAX_NAME_LENGTH,
    OPTIONS,
    StageSpec,
    check_name,
    dynamic_spec,
    make_spec,
    unknown_option,
)
from ._stage import StageKind
from .errors import GraphError, InvalidOptionError

if TYPE_CHECKING:
    from ._assist import AssistOption
    from ._context import StageContext, StageLike
    from .ports import StageRunner

__all__ = ["Pipeline"]

_new_pipeline = object.__new__

StageNames: TypeAlias = tuple[str, ...] | list[str] | AbstractSet[str]
"""Stage names as ``with_stage`` takes them: a tuple, list or set of str, not a str itself."""


class Pipeline:
    """An immutable description of stages and their dependencies.

    Every ``with_*`` method returns a new Pipeline, so a partial pipeline can be
    shared, extended in several ways and composed. ``build()`` validates the whole
    graph and returns a frozen :class:`~stageflow.StageGraph`.

    Example:
        >>> async def fetch(ctx):
        ...     return {"pages": 3}
        >>> async def report(ctx):
        ...     return {"text": f"{ctx.inputs.get_from('fetch', 'pages')} pages"}
        >>> graph = (
        ...     Pipeline("research")
        ...     .with_stage("fetch", fetch, StageKind.WORK)
        ...     .with_stage("report", report, dependencies=("fetch",))
        ...     .build()
        ... )
        >>> graph.names
        ('fetch', 'report')
    """

    # A pipeline is a node of a persistent linked list, newest stage first: it holds its last
    # stage and the pipeline it extends. with_stage is O(1) and never copies, so building n
    # stages is O(n), and every intermediate Pipeline stays valid and shareable.
    __slots__ = ("_count", "_name", "_previous", "_spec")

    def __init__(self, name: str = "pipeline") -> None:
        self._name = check_name(name, "pipeline name")
        self._previous: Pipeline | None = None
        self._spec: StageSpec | None = None
        self._count = 0

    @property
    def name(self) -> str:
        """The pipeline's name (runs, events and spans carry it)."""
        return self._name

    def _extend(self, spec: StageSpec) -> Pipeline:
        new = _new_pipeline(Pipeline)
        new._name = self._name
        new._previous = self
        new._spec = spec
        new._count = self._count + 1
        return new

    if TYPE_CHECKING:
        # What a type checker sees: no **unknown, so that a misspelt option is an error,
        # and precise types for the stage and the names. At run time the definition
        # below takes any keyword and refuses the unknown ones with a "did you mean".
        # tests/typing/test_typing.py keeps the two signatures the same.
        def with_stage(
            self,
            name: str,
            stage: StageLike,
            kind: StageKind | str = StageKind.WORK,
            *,
            dependencies: StageNames = (),
            optional: StageNames = (),
            tags: StageNames = (),
            metadata: Mapping[str, Any] | None = None,
            timeout: float | None = None,
            retry: RetryPolicy | int | None = None,
            circuit_breaker: CircuitBreakerPolicy | None = None,
            budget: Budget | None = None,
            estimate: Estimate | int | None = None,
            output: type[Any] | None = None,
            when: Callable[[StageContext], bool] | None = None,
            routes: StageNames | None = None,
            runner: str | StageRunner | None = None,
            resources: Mapping[str, Any] | None = None,
            assist: AssistOption | None = None,
        ) -> Pipeline:
            """Return a new Pipeline with one more stage (see ``help(Pipeline.with_stage)``).

            ``stage`` is a :data:`~stageflow.StageLike`; ``dependencies``, ``optional``
            and ``tags`` are a tuple, list or set of str (a bare str is refused).
            """
            ...

    else:

        def with_stage(
            self,
            name: str,
            stage: object,
            kind: StageKind | str = StageKind.WORK,
            *,
            dependencies: Iterable[str] = (),
            optional: Iterable[str] = (),
            tags: Iterable[str] = (),
            metadata: Mapping[str, Any] | None = None,
            timeout: float | None = None,
            retry: RetryPolicy | int | None = None,
            circuit_breaker: CircuitBreakerPolicy | None = None,
            budget: Budget | None = None,
            estimate: Estimate | int | None = None,
            output: type[Any] | None = None,
            when: Callable[[StageContext], bool] | None = None,
            routes: Iterable[str] | None = None,
            runner: str | StageRunner | None = None,
            resources: Mapping[str, Any] | None = None,
            assist: AssistOption | None = None,
            **unknown: Any,
        ) -> Pipeline:
            """Return a new Pipeline with one more stage.

            Args:
                name: unique name: ASCII letters, digits, ``_`` and ``-``, starting with a
                    letter or ``_``.
                stage: an ``async def f(ctx)``, a plain ``def f(ctx)`` (run in a worker
                    thread), a class with ``execute(self, ctx)`` (instantiated with no
                    arguments for every attempt) or an object with ``execute(ctx)``.
                kind: what the stage does; informative only.
                dependencies: the stages that must end before this one starts; their
                    outputs are in ``ctx.inputs``.
                optional: those of ``dependencies`` whose failure or skip does not skip
                    this stage (their output is then absent from ``ctx.inputs``).
                tags: free labels, for interceptors to select stages.
                metadata: free read-only data for your own interceptors.
                timeout: seconds each attempt may take; past it the attempt is cancelled
                    and fails with :class:`~stageflow.errors.StageTimeoutError`.
                retry: a :class:`~stageflow.RetryPolicy`, or a number of attempts.
                circuit_breaker: a :class:`~stageflow.CircuitBreakerPolicy`.
                budget: the stage's own token/cost :class:`~stageflow.Budget` (on top of
                    the run's, from ``Engine(budget=)``).
                estimate: what the stage expects to spend, checked against the budgets
                    (and reserved) before each attempt: an :class:`~stageflow.Estimate`
                    or a number of tokens.
                output: the model of the stage's output data, a pydantic model class
                    or a dataclass type: its keys must be the model's fields, each
                    value valid in pydantic's strict mode (checked, never coerced), or
                    the stage fails with :class:`~stageflow.errors.InvalidOutputError`;
                    returning an instance of the model gives its fields. A durable run
                    checks before it starts that the fields' types can be stored.
                when: a condition ``ctx -> bool``, called with the stage's context once
                    its dependencies have ended, before any interceptor: false skips
                    the stage with the reason ``condition false`` (no attempt, no
                    retry), a branch not taken (see docs/dynamic.md for joins).
                routes: for a ``StageKind.ROUTE`` stage, the direct successors it
                    chooses from: it returns ``StageOutput.route("a", **data)`` and
                    those it did not choose are skipped (``not routed by '<stage>'``).
                runner: where the stage's call runs: a runner's name the engine knows
                    (``Engine(runners={"ray": RayRunner()})``) or a
                    :class:`~stageflow.ports.StageRunner`; the scheduler and the
                    interceptors stay in the engine, only the call crosses (default:
                    the engine's ``runner=``, else its event loop).
                resources: what the call needs where it runs, for its runner (Ray:
                    ``{"num_cpus": 2, "num_gpus": 1, "memory": 2**30}``).
                assist: LLM assistance for the stage, done by the engine's
                    :class:`~stageflow.AssistanceInterceptor`: modes (``"validate"``,
                    ``"analyze"``, ``"diagnose"``) or
                    :class:`~stageflow.AssistanceConfig` objects (timeout, policy).

            Raises:
                InvalidStageNameError: ``name`` is not a valid name.
                InvalidStageError: ``stage`` cannot be called with a context.
                InvalidOptionError: an option is unknown, or has the wrong type or value.
            """
            if unknown:
                raise unknown_option(name, unknown)
            spec = make_spec(
                name, stage, kind, dependencies, optional, tags, metadata, timeout, retry,
                circuit_breaker, budget, estimate, output, when, routes, runner, resources,
                assist,
            )  # fmt: skip
            new = _new_pipeline(Pipeline)  # _extend, inlined: with_stage is BUILD's hot path
            new._name = self._name
            new._previous = self
            new._spec = spec
            new._count = self._count + 1
            return new

    def with_map(
        self,
        name: str,
        stage: StageLike,
        *,
        over: str | Callable[[StageContext], Sequence[Any]],
        key: Callable[[Any], str] | None = None,
        max_parallel: int | None = None,
        on_item_error: str = "fail",
        **options: Any,
    ) -> Pipeline:
        """Return a new Pipeline with a map stage: ``stage`` runs once per item.

        The items are a sequence known only at run time. Each call sees its item as
        ``ctx.item`` (with ``ctx.item_index`` and ``ctx.item_key``); every option of
        ``with_stage`` (timeout, retry, circuit breaker, budget, estimate, output)
        applies to each item. The map's output is ``{"results": [...]}``, the items'
        output data in item order whatever the order they finish in.

        Args:
            name: the map stage's name.
            stage: what runs per item (anything ``with_stage`` takes).
            over: ``"stage.field"``, a field of one of ``dependencies`` holding a
                sequence, or a callable ``ctx -> Sequence`` called once.
            key: item -> str, a stable identity for each item (default: its index);
                the item's outcome is stored under ``name[key]``.
            max_parallel: at most this many items at once (default: no limit).
            on_item_error: ``"fail"`` (default: the first failed item fails the map and
                cancels the others), ``"skip"`` (its result is None) or ``"collect"``
                (its result is None and ``{"index", "key", "error"}`` is in the output's
                ``"errors"``).
            **options: ``with_stage``'s options (``dependencies``, ``when``, ...).

        Raises:
            InvalidOptionError: ``over`` names no dependency's field, or another option
                is invalid.
        """
        spec = self._spec_of(name, stage, StageKind.WORK, options)
        declared = _map_spec(name, spec, over, key, max_parallel, on_item_error)
        return self._extend(dynamic_spec(spec, declared))

    def with_loop(
        self,
        name: str,
        body: StageGraph | Pipeline,
        *,
        until: Callable[[Mapping[str, Any]], bool],
        max_iterations: int | None = None,
        on_exhausted: str = "fail",
        output_stage: str | None = None,
        **options: Any,
    ) -> Pipeline:
        """Return a new Pipeline with a loop stage: ``body`` runs once per iteration.

        After each iteration, ``until(output)`` is called with the iteration's output
        (the output data of the body's ``output_stage``); true ends the loop, whose
        output is that iteration's. Each iteration's stages are named with it
        (``refine[2].critique``) and see ``ctx.loop.iteration`` and
        ``ctx.loop.previous`` (the previous iteration's output, None in the first).

        Args:
            name: the loop stage's name.
            body: the graph (or pipeline) run per iteration.
            until: ``output -> bool``, true when the loop is done.
            max_iterations: at most this many iterations (required: there is no unbounded
                loop; leaving it out is an InvalidOptionError).
            on_exhausted: ``"fail"`` (default: :class:`~stageflow.errors.LoopExhaustedError`)
                or ``"complete"`` (with the last iteration's output) when
                ``max_iterations`` ran without ``until`` holding.
            output_stage: the body's stage whose output is an iteration's output
                (default: the body's only stage that no other depends on).
            **options: ``with_stage``'s options (``dependencies``, ``timeout`` for the
                whole loop, ``when``, ...).

        Raises:
            InvalidOptionError: ``body`` is no graph, ``until`` is not callable,
                ``max_iterations`` is missing or < 1, or another option is invalid.
        """
        _no_placement(name, options, "a loop")
        spec = self._spec_of(name, _nested_placeholder, StageKind.WORK, options)
        graph = _body(name, body)
        if not callable(until) or isinstance(until, type):
            refuse("until", "a callable output -> bool", until, stage=name)
        if max_iterations is None:
            refuse("max_iterations", "an int >= 1 (loops are bounded)", None, stage=name)
        integer(max_iterations, "max_iterations", "an int >= 1 (loops are bounded)", ge=1,
                stage=name)  # fmt: skip
        if on_exhausted not in EXHAUSTED:
            refuse("on_exhausted", " or ".join(map(repr, EXHAUSTED)), on_exhausted, stage=name)
        loop = LoopSpec(graph, _output_stage(name, graph, output_stage), until, max_iterations,
                        on_exhausted)  # fmt: skip
        _check_length(name, "body", loop)
        return self._extend(dynamic_spec(spec._replace(stage=graph), loop))

    def with_subgraph(
        self,
        name: str,
        graph: StageGraph | Pipeline,
        *,
        output_stage: str | None = None,
        **options: Any,
    ) -> Pipeline:
        """Return a new Pipeline with a subgraph stage: ``graph`` runs as one stage.

        Its stages appear as ``name.stage`` in results, events, spans and the store;
        its root stages see this stage's inputs too (``ctx.inputs.get_from`` names a
        dependency of the subgraph stage). The subgraph's output is the output of its
        ``output_stage``, for the stages that depend on it.

        Args:
            name: the subgraph stage's name.
            graph: the graph (or pipeline) to run.
            output_stage: the stage of ``graph`` whose output is the subgraph's
                (default: its only stage that no other depends on).
            **options: ``with_stage``'s options (``dependencies``, ``when``, ...).

        Raises:
            InvalidOptionError: ``graph`` is no graph, ``output_stage`` names none of its
                stages, or another option is invalid.
        """
        _no_placement(name, options, "a subgraph")
        spec = self._spec_of(name, _nested_placeholder, StageKind.WORK, options)
        body = _body(name, graph, "graph")
        nested = LoopSpec(body, _output_stage(name, body, output_stage))
        _check_length(name, "graph", nested)
        return self._extend(dynamic_spec(spec._replace(stage=body), nested))

    def with_input(
        self,
        name: str,
        *,
        schema: Any,
        dependencies: Iterable[str] = (),
        prompt: str | Callable[[StageContext], str] | None = None,
        timeout: float | None = None,
        on_timeout: Any = FAIL,
        over: str | Callable[[StageContext], Sequence[Any]] | None = None,
        key: Callable[[Any], str] | None = None,
        max_parallel: int | None = None,
        on_item_error: str = "fail",
        **options: Any,
    ) -> Pipeline:
        """Return a new Pipeline with an input stage: a value a person (or a system) gives.

        It runs no code. Once its dependencies have ended it *waits*: the run goes on
        with its other branches, and when nothing else can run, ``Engine.run`` returns
        a result with status ``waiting`` listing what it waits for
        (``result.waiting_for``), holding no lease. ``await engine.send(run_id, name,
        value)`` validates and stores the value; ``Engine.resume`` then goes on, or a
        driver started with ``run(..., wait=True)`` goes on by itself. The stage's
        output is the value: a model's fields for a pydantic model ``schema``, else
        ``{"value": value}``.

        Args:
            name: the input's name (what senders address it by).
            schema: what the value must be: a pydantic model class, any type pydantic
                validates (``bool``, ``Literal["approve", "reject"]``, ...), or an
                :class:`~stageflow.InputSchema` such as
                ``stageflow.adapters.jsonschema.JSONSchema({...})`` for a JSON Schema
                document (the output is then the JSON object, or ``{"value": ...}``).
            dependencies: the stages that must end before it waits (their outputs are
                what a ``prompt`` callable sees in ``ctx.inputs``).
            prompt: what the person is shown: a str, or ``ctx -> str`` called once
                when the stage first waits; stored with the wait, so that an API or a
                UI shows it.
            timeout: seconds from the first wait to its deadline, which is stored:
                a resume or a waiting driver after it applies ``on_timeout``, and a
                value sent after it is refused (None: no deadline).
            on_timeout: ``"fail"`` (default: the stage fails with
                :class:`~stageflow.errors.InputTimeoutError`) or the value to complete
                with at the deadline (valid for ``schema``, checked here).
            over: one input per item of a list known at run time, as ``with_map``
                takes it (``"stage.field"`` or ``ctx -> Sequence``): item ``key``'s
                input is ``name[key]`` (``approve[doc-17]``), its prompt sees
                ``ctx.item``, and the stage's output is ``{"results": [...]}``, the
                values in item order. ``key``, ``max_parallel`` and ``on_item_error``
                are ``with_map``'s.
            **options: ``optional``, ``tags``, ``metadata`` and ``when`` as
                ``with_stage`` takes them; an input stage runs no code, so ``retry``,
                ``circuit_breaker``, ``budget``, ``estimate`` and ``output`` do not apply.

        Raises:
            InvalidOptionError: ``schema`` is no type pydantic validates, ``timeout`` is
                no positive number, ``on_timeout`` is invalid for ``schema`` (or given
                without a ``timeout``), ``prompt`` is neither a str nor callable, or
                another option is invalid or does not apply.
        """
        code = [k for k in options if k in _CODE_OPTIONS]
        if code:
            raise InvalidOptionError(
                f"stage {name!r}: {code[0]}= does not apply to an input stage: it runs no "
                f"code (with_input takes {', '.join(sorted(_INPUT_OPTIONS))})",
                stage=name,
                option=code[0],
                value=options[code[0]],
            )
        spec = self._spec_of(
            name, _input_placeholder, StageKind.INPUT, {"dependencies": dependencies, **options}
        )
        if isinstance(schema, InputSchema):  # e.g. stageflow.adapters.jsonschema.JSONSchema
            checked = schema
        elif isinstance(schema, Mapping):
            raise InvalidOptionError(
                f"stage {name!r}: schema is a dict: for a JSON Schema document, pass "
                "stageflow.adapters.jsonschema.JSONSchema(schema) (pip install "
                "'stageflow[jsonschema]'), or give a pydantic model or type",
                stage=name,
                option="schema",
                value=schema,
            )
        else:
            try:
                checked = InputSchema(schema)
            except ValueError:
                refuse("schema", "a pydantic model class or a type pydantic validates, or "
                       "an InputSchema", schema, stage=name)  # fmt: skip
        if prompt is not None and not isinstance(prompt, str) and not callable(prompt):
            refuse("prompt", "a str, a callable ctx -> str, or None", prompt, stage=name)
        if timeout is not None:
            timeout = number(timeout, "timeout", "a positive number of seconds, or None",
                             gt=0, stage=name)  # fmt: skip
        if not (isinstance(on_timeout, str) and on_timeout == FAIL):
            if timeout is None:
                refuse("on_timeout", "'fail' without a timeout (there is no deadline)",
                       on_timeout, stage=name)  # fmt: skip
            try:
                on_timeout = checked.validate(on_timeout)
            except InvalidValue as error:
                raise InvalidOptionError(
                    f"stage {name!r}: on_timeout {on_timeout!r} is no valid value for its "
                    f"schema: {error}",
                    stage=name,
                    option="on_timeout",
                    value=on_timeout,
                ) from None
        items = None
        if over is not None:
            items = _map_spec(name, spec, over, key, max_parallel, on_item_error)
        else:
            for option, value, unset in (("key", key, None), ("max_parallel", max_parallel, None),
                                         ("on_item_error", on_item_error, "fail")):  # fmt: skip
                if value != unset:
                    refuse(option, "given only with over= (an input per item)", value, stage=name)
        declared = InputSpec(checked, prompt, timeout, on_timeout, items)
        output = checked.schema if checked.is_model else None
        return self._extend(dynamic_spec(spec._replace(stage=schema, output=output), declared))

    def _spec_of(
        self, name: str, stage: object, kind: StageKind, options: Mapping[str, Any]
    ) -> StageSpec:
        unknown = {k: v for k, v in options.items() if k not in _SPEC_OPTIONS}
        if unknown:
            raise unknown_option(name, unknown)
        given = {"dependencies": (), "optional": (), "tags": (), **options}
        return make_spec(
            name, stage, kind, given.pop("dependencies"), given.pop("optional"),
            given.pop("tags"), given.pop("metadata", None), **given,
        )  # fmt: skip

    def compose(self, other: Pipeline) -> Pipeline:
        """Return a new Pipeline with ``other``'s stages after this one's.

        Stages of ``other`` may depend on stages of this pipeline. Names must stay
        unique (checked by ``build()``). The result keeps this pipeline's name.
        """
        if not isinstance(other, Pipeline):
            raise GraphError(f"compose() takes a Pipeline, not {type(other).__name__} {other!r}")
        pipeline = self
        for spec in other._specs():
            pipeline = pipeline._extend(spec)
        return pipeline

    def _specs(self) -> list[StageSpec]:
        specs: list[StageSpec] = []
        node = self
        while node._spec is not None:
            specs.append(node._spec)
            node = node._previous  # type: ignore[assignment]
        specs.reverse()
        return specs

    @property
    def stages(self) -> tuple[StageSpec, ...]:
        """The stages declared so far, in declaration order."""
        return tuple(self._specs())

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[StageSpec]:
        return iter(self._specs())

    def build(self) -> StageGraph:
        """Validate the whole pipeline and return its frozen :class:`~stageflow.StageGraph`.

        Raises:
            EmptyPipelineError: the pipeline has no stages.
            DuplicateStageError: two stages share a name.
            DuplicateDependencyError: a stage lists a dependency twice.
            UnknownDependencyError: a dependency names no stage.
            SelfDependencyError: a stage depends on itself.
            CycleError: the dependencies form a cycle; the error names it.
        """
        return StageGraph._from_specs(self._name, self._specs())

    def __repr__(self) -> str:
        return f"<Pipeline {self._name!r} with {self._count} stages>"


_SPEC_OPTIONS: Final = frozenset(OPTIONS) - {"routes"}
_INPUT_OPTIONS: Final = frozenset({"optional", "tags", "metadata", "when", "dependencies",
                                   "prompt", "timeout", "on_timeout", "schema"})  # fmt: skip
_CODE_OPTIONS: Final = _SPEC_OPTIONS - _INPUT_OPTIONS


def _no_placement(name: str, options: Mapping[str, Any], what: str) -> None:
    """A loop or subgraph calls no code of its own: its body's stages have runners."""
    for option in ("runner", "resources"):
        if option in options:
            raise InvalidOptionError(
                f"stage {name!r}: {option}= does not apply to {what}, which calls no code of "
                f"its own: give it to the stages of its body",
                stage=name,
                option=option,
                value=options[option],
            )


async def _input_placeholder(ctx: StageContext) -> None:
    """The call of an input stage until an engine puts its wait there."""
    raise AssertionError(f"stage {ctx.stage!r} runs only on an engine")  # pragma: no cover


async def _nested_placeholder(ctx: StageContext) -> None:
    """The call of a loop or subgraph stage until an engine puts its driver there."""
    raise AssertionError(f"stage {ctx.stage!r} runs only on an engine")  # pragma: no cover


def _map_spec(
    name: str, spec: StageSpec, over: Any, key: Any, max_parallel: Any, on_item_error: Any
) -> MapSpec:
    """``with_map``'s (and ``with_input(over=)``'s) item options, checked."""
    if isinstance(over, str):
        source, dot, field = over.partition(".")
        if not (dot and source and field):
            refuse("over", "'stage.field' or a callable ctx -> Sequence", over, stage=name)
        if source not in spec.dependencies:
            raise InvalidOptionError(
                f"stage {name!r}: over names {over!r}, but {source!r} is not one of its "
                f"dependencies {spec.dependencies!r}; add it to dependencies",
                stage=name,
                option="over",
                value=over,
            )
    elif not callable(over):
        refuse("over", "'stage.field' or a callable ctx -> Sequence", over, stage=name)
    if key is not None and not callable(key):
        refuse("key", "a callable item -> str, or None", key, stage=name)
    if max_parallel is not None:
        integer(max_parallel, "max_parallel", "an int >= 1 or None", ge=1, stage=name)
    if on_item_error not in ITEM_ERRORS:
        refuse("on_item_error", " or ".join(map(repr, ITEM_ERRORS)), on_item_error, stage=name)
    return MapSpec(over, key, max_parallel, on_item_error)


def _body(name: str, body: object, option: str = "body") -> StageGraph:
    if isinstance(body, Pipeline):
        body = body.build()
    if not isinstance(body, StageGraph):
        refuse(option, "a StageGraph or a Pipeline", body, stage=name)
    waiting = [spec.name for spec in body.stages if isinstance(spec.dynamic, InputSpec)]
    if waiting:
        raise InvalidOptionError(
            f"stage {name!r}: {body.name!r} has the input stage {waiting[0]!r}; a run waits "
            "for input at its top level only: declare it with_input before or after this "
            "stage",
            stage=name,
            option=option,
            value=body,
        )
    return body


def _longest(graph: StageGraph) -> int:
    """The longest name a stage of ``graph`` has in a run (a nested one's full name)."""
    longest = 0
    for spec in graph.stages:
        size = len(spec.name)
        if isinstance(spec.dynamic, LoopSpec):
            size = len(spec.dynamic.prefix(spec.name, spec.dynamic.max_iterations))
            size += _longest(spec.dynamic.body)
        longest = max(longest, size)
    return longest


def _check_length(name: str, option: str, nested: LoopSpec) -> None:
    """Refuse a body whose stages' full names would be too long for a store to keep."""
    size = len(nested.prefix(name, nested.max_iterations)) + _longest(nested.body)
    if size > MAX_NAME_LENGTH:
        raise InvalidOptionError(
            f"stage {name!r}: the full names of its stages (e.g. "
            f"{nested.prefix(name, nested.max_iterations)!r}...) reach {size} characters; a "
            f"stage's full name is at most {MAX_NAME_LENGTH}: use shorter names",
            stage=name,
            option=option,
            value=nested.body,
        )


def _output_stage(name: str, body: StageGraph, chosen: object) -> str:
    if chosen is not None:
        if not isinstance(chosen, str) or chosen not in body.index:
            raise InvalidOptionError(
                f"stage {name!r}: output_stage {chosen!r} is no stage of {body.name!r} "
                f"(stages: {', '.join(body.names)})",
                stage=name,
                option="output_stage",
                value=chosen,
            )
        return chosen
    leaves = [spec.name for i, spec in enumerate(body.stages) if not body.successors[i]]
    if len(leaves) != 1:
        raise InvalidOptionError(
            f"stage {name!r}: {body.name!r} ends in {len(leaves)} stages "
            f"({', '.join(map(repr, leaves))}); say which one's output is its output with "
            "output_stage=",
            stage=name,
            option="output_stage",
            value=None,
        )
    return leaves[0]
