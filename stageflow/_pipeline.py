"""Pipeline: the immutable fluent builder of a StageGraph."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, TypeAlias

from ._budget import Budget, Estimate
from ._graph import StageGraph
from ._policies import CircuitBreakerPolicy, RetryPolicy
from ._spec import StageSpec, check_name, make_spec, unknown_option
from ._stage import StageKind
from .errors import GraphError

if TYPE_CHECKING:
    from ._context import StageLike

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

            Raises:
                InvalidStageNameError: ``name`` is not a valid name.
                InvalidStageError: ``stage`` cannot be called with a context.
                InvalidOptionError: an option is unknown, or has the wrong type or value.
            """
            if unknown:
                raise unknown_option(name, unknown)
            spec = make_spec(
                name, stage, kind, dependencies, optional, tags, metadata, timeout, retry,
                circuit_breaker, budget, estimate, output,
            )  # fmt: skip
            new = _new_pipeline(Pipeline)  # _extend, inlined: with_stage is BUILD's hot path
            new._name = self._name
            new._previous = self
            new._spec = spec
            new._count = self._count + 1
            return new

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
