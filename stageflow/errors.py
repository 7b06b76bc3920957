"""The exceptions stageflow raises.

Every exception derives from :class:`StageflowError`, so ``except
StageflowError`` catches anything the framework itself raises. Errors found
while building a graph also derive from :class:`ValueError` (or
:class:`TypeError` for a value of the wrong type), so code written against
the builtin hierarchy keeps working::

    StageflowError
    ├── GraphError (ValueError)                 Pipeline.with_stage() / build() refused the graph
    │   ├── InvalidStageNameError               a stage name is not an identifier-like string
    │   ├── InvalidStageError (TypeError)       the stage is neither a callable nor has execute()
    │   ├── InvalidOptionError                  a stage option of the wrong type or value
    │   ├── EmptyPipelineError                  build() of a pipeline without stages
    │   ├── DuplicateStageError                 two stages share a name
    │   ├── DuplicateDependencyError            a stage lists a dependency twice
    │   ├── UnknownDependencyError              a dependency names no stage of the graph
    │   ├── SelfDependencyError                 a stage depends on itself
    │   └── CycleError                          the dependencies form a cycle (``a -> b -> a``)
    ├── ConfigurationError (ValueError)         a bad argument to Engine, Engine.run, a sink, ...
    │   ├── PipelineFileError                   a pipeline file is invalid (``.file``, ``.line``)
    │   ├── GraphMismatchError                  a run resumed with another graph (``.changes``)
    │   ├── UnknownModelError (KeyError)        a price table has no price for a model
    │   ├── UnknownPipelineError (KeyError)     a catalog has no pipeline of that name
    │   └── CodecError (TypeError)              a value cannot be stored faithfully (``.field``)
    ├── StageError                              raised inside a run, about one stage (``.stage``)
    │   ├── MissingOutputError (KeyError)       ``result[x].data[key]``: the stage did not complete
    │   ├── ExpressionError                     a file's CEL expression could not be evaluated
    │   ├── StageFailedError                    the stage returned ``StageOutput.fail(...)``
    │   ├── InvalidOutputError (TypeError)      the stage returned something that is not an output
    │   ├── StageCancelledError                 the stage was cancelled outside the run's control
    │   ├── StageTimeoutError (TimeoutError)    an attempt exceeded the stage's timeout
    │   ├── WorkerLostError                     the process running a remote call died
    │   ├── RemoteError                         a remote call raised what cannot cross back
    │   ├── CircuitOpenError                    the stage's circuit breaker is open: not called
    │   ├── BudgetExceededError                 a token or cost budget cannot cover the stage
    │   ├── AssistanceBlockedError              its LLM pre-validation said no (policy block)
    │   ├── RouteError                          a ROUTE stage chose none or a stray target
    │   ├── MapError (TypeError)                a map's ``over`` is missing or no sequence
    │   ├── MapItemError                        an item failed (``on_item_error="fail"``)
    │   ├── LoopExhaustedError                  ``max_iterations`` ran, ``until`` never held
    │   ├── SubgraphFailedError                 a stage inside a subgraph or loop failed
    │   ├── InputTimeoutError (TimeoutError)    an input's deadline passed before it was given
    │   └── MissingInputError (KeyError)        ``ctx.inputs`` was asked for what is not there
    │       └── InputTypeError (TypeError)      ``get_from(..., type=)`` found another type
    ├── StoreError                              a store failed (backend errors become this)
    │   ├── UnknownRunError (KeyError)          no run has that id
    │   ├── RunExistsError                      a run with that id exists already
    │   ├── RunLeasedError                      another driver holds the run's lease
    │   ├── RunNotRetryableError                a retry of a run that did not fail or get cancelled
    │   ├── LeaseLostError                      the lease was taken over: no more writes
    │   └── SchemaError                         the database's schema is newer or not ours
    ├── InputError                              about one input of a run (``.run_id``, ``.input``)
    │   ├── InputValidationError (ValueError)   a value sent does not match the input's schema
    │   ├── InputAlreadyGivenError              the input has its value already
    │   └── UnknownInputError (KeyError)        the run waits for no such input
    └── RunError                                ``RunResult.raise_for_status()``
        ├── RunFailedError                      one or more stages failed (``.failed``)
        ├── RunWaitingError                     the run waits for input (``.waiting_for``)
        └── RunCancelledError                   the run was cancelled or timed out
            └── RunTimeoutError (TimeoutError)  the run exceeded ``Engine.run(timeout=...)``

Errors name what is wrong: the stage, the field and the offending value are
both in the message and in attributes, so that tools can act on them.

Every class is built the same way: the message first, then its fields as
keyword arguments, each kept as the attribute of the same name::

    UnknownRunError(f"no run with id {run_id!r}", run_id=run_id)
    ConfigurationError("max_parallel must be ...", field="max_parallel", value=0)

A class whose message follows from its fields also has a classmethod ``of``
that writes the standard message, so that every raise site (a store adapter
of yours included) says the same: ``LeaseLostError.of(run_id, token)``,
``StageTimeoutError.of(stage, timeout, attempt)``, ``CycleError.of(cycle)``.

Errors pickle and copy (``copy.copy``, ``copy.deepcopy``) with their message,
their fields and any attribute added since (notes included), so they cross a
process boundary intact, as long as the fields' values pickle themselves.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, Self

__all__ = [
    "AssistanceBlockedError",
    "BudgetExceededError",
    "CircuitOpenError",
    "CodecError",
    "ConfigurationError",
    "CycleError",
    "DuplicateDependencyError",
    "DuplicateStageError",
    "EmptyPipelineError",
    "ExpressionError",
    "GraphError",
    "GraphMismatchError",
    "InputAlreadyGivenError",
    "InputError",
    "InputTimeoutError",
    "InputTypeError",
    "InputValidationError",
    "InvalidOptionError",
    "InvalidOutputError",
    "InvalidStageError",
    "InvalidStageNameError",
    "LeaseLostError",
    "LoopExhaustedError",
    "MapError",
    "MapItemError",
    "MissingInputError",
    "MissingOutputError",
    "PipelineFileError",
    "RemoteError",
    "RouteError",
    "RunCancelledError",
    "RunError",
    "RunExistsError",
    "RunFailedError",
    "RunLeasedError",
    "RunNotRetryableError",
    "RunTimeoutError",
    "RunWaitingError",
    "SchemaError",
    "SelfDependencyError",
    "StageCancelledError",
    "StageError",
    "StageFailedError",
    "StageTimeoutError",
    "StageflowError",
    "StoreError",
    "SubgraphFailedError",
    "UnknownDependencyError",
    "UnknownInputError",
    "UnknownModelError",
    "UnknownPipelineError",
    "UnknownRunError",
    "WorkerLostError",
]


class StageflowError(Exception):
    """Base class of every exception raised by stageflow.

    A subclass's constructor takes the message first and its fields as
    keyword-only arguments, each kept as the attribute of the same name
    (``def __init__(self, message: str, *, stage: str) -> None``). Pickling and
    copying rebuild the error by calling the constructor again with the message
    and those attributes; a subclass of yours whose constructor has another
    shape is pickled the way Python pickles any exception.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:
        # The message as it is: KeyError (a base of some subclasses) would repr() it.
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()

    def __reduce__(self) -> str | tuple[Any, ...]:
        fields = _keyword_fields(type(self))
        if fields is None or len(self.args) != 1:
            return super().__reduce__()
        state = dict(self.__dict__)
        given = {name: state.pop(name) for name in fields if name in state}
        return _rebuild, (type(self), self.args[0], given), state or None


def _rebuild(cls: Callable[..., StageflowError], message: str, fields: dict[str, Any]) -> Any:
    """Unpickle an error: its constructor called with the message and the fields."""
    return cls(message, **fields)


_FIELDS: dict[type[StageflowError], tuple[str, ...] | None] = {}
_POSITIONAL, _POSITIONAL_OR_KEYWORD, _KEYWORD_ONLY = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
    inspect.Parameter.KEYWORD_ONLY,
)


def _keyword_fields(cls: type[StageflowError]) -> tuple[str, ...] | None:
    """The keyword-only parameters of ``cls``'s constructor: what ``__reduce__`` passes
    back to it; None if the constructor does not take ``(message, *, ...)``."""
    if cls in _FIELDS:
        return _FIELDS[cls]
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # self
    kinds = [p.kind for p in params]
    shaped = bool(kinds) and kinds[0] in (_POSITIONAL, _POSITIONAL_OR_KEYWORD)
    if shaped and all(kind is _KEYWORD_ONLY for kind in kinds[1:]):
        fields: tuple[str, ...] | None = tuple(p.name for p in params[1:])
    else:
        fields = None
    _FIELDS[cls] = fields
    return fields


# --------------------------------------------------------------------------- graph


class GraphError(StageflowError, ValueError):
    """A pipeline cannot become a valid :class:`~stageflow.StageGraph`.

    Attributes:
        stages: the names of the stages involved, in a meaningful order.
    """

    def __init__(self, message: str, *, stages: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.stages: tuple[str, ...] = tuple(stages)


class InvalidStageNameError(GraphError):
    """A stage (or pipeline) name is empty, not a string, or not identifier-like.

    Attributes:
        name: the rejected value.
    """

    def __init__(self, message: str, *, name: object) -> None:
        super().__init__(message, stages=(name,) if isinstance(name, str) else ())
        self.name = name


class InvalidStageError(GraphError, TypeError):
    """The object given as a stage cannot be run.

    Attributes:
        stage: the stage name.
        value: the rejected object.
    """

    def __init__(self, message: str, *, stage: str, value: object) -> None:
        super().__init__(message, stages=(stage,))
        self.stage = stage
        self.value = value


class InvalidOptionError(GraphError):
    """A stage option is unknown, or has a value of the wrong type or range.

    Attributes:
        stage: the stage name.
        option: the option's name.
        value: the rejected value.
    """

    def __init__(self, message: str, *, stage: str, option: str, value: object) -> None:
        super().__init__(message, stages=(stage,))
        self.stage = stage
        self.option = option
        self.value = value


class EmptyPipelineError(GraphError):
    """``build()`` of a pipeline that has no stage: there would be nothing to run.

    Attributes:
        pipeline: the pipeline's name.
    """

    def __init__(self, message: str, *, pipeline: str) -> None:
        super().__init__(message)
        self.pipeline = pipeline

    @classmethod
    def of(cls, pipeline: str) -> Self:
        """The error with its standard message."""
        return cls(
            f"pipeline {pipeline!r} has no stages: add one with with_stage() before build()",
            pipeline=pipeline,
        )


class DuplicateStageError(GraphError):
    """Two stages have the same name.

    Attributes:
        stage: that name (``stages`` holds it too).
    """

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message, stages=(stage,))
        self.stage = stage


class DuplicateDependencyError(GraphError):
    """A stage lists the same dependency more than once.

    Attributes:
        stage: the stage that declares the dependencies.
        dependency: the name listed twice (``stages`` is ``(stage, dependency)``).
    """

    def __init__(self, message: str, *, stage: str, dependency: str) -> None:
        super().__init__(message, stages=(stage, dependency))
        self.stage = stage
        self.dependency = dependency


class UnknownDependencyError(GraphError):
    """A stage depends on a name that is no stage of the graph.

    Attributes:
        stage: the stage that declares the dependency.
        dependency: the unknown name.
    """

    def __init__(self, message: str, *, stage: str, dependency: str) -> None:
        super().__init__(message, stages=(stage, dependency))
        self.stage = stage
        self.dependency = dependency


class SelfDependencyError(GraphError):
    """A stage lists itself among its dependencies.

    Attributes:
        stage: its name (``stages`` holds it too).
    """

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message, stages=(stage,))
        self.stage = stage


class CycleError(GraphError):
    """The dependencies form a cycle.

    Attributes:
        cycle: the stages along the cycle, the first repeated at the end
            (``("a", "b", "a")`` for ``a -> b -> a``); ``stages`` is it without
            the repetition.
    """

    def __init__(self, message: str, *, cycle: Sequence[str]) -> None:
        super().__init__(message, stages=tuple(cycle)[:-1])
        self.cycle: tuple[str, ...] = tuple(cycle)

    @classmethod
    def of(cls, cycle: Sequence[str]) -> Self:
        """The error with its standard message: ``the dependencies form a cycle: a -> b -> a``."""
        return cls(f"the dependencies form a cycle: {' -> '.join(cycle)}", cycle=cycle)


# --------------------------------------------------------------------------- configuration


class ConfigurationError(StageflowError, ValueError):
    """An argument given to the engine, a run or a sink is invalid.

    Attributes:
        field: the argument's name.
        value: the rejected value.
    """

    def __init__(self, message: str, *, field: str, value: object) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class PipelineFileError(ConfigurationError):
    """A pipeline file (YAML, JSON, TOML) is invalid: raised when it is loaded.

    The message starts with ``file:line:column:`` and the field (``stages[2].when``).

    Attributes:
        file: the file's name as it was given.
        line: the 1-based line of the value in error.
        column: the 1-based column.
        field: the dotted path of the value in the file (``""`` for the whole file).
        value: the value refused.
    """

    def __init__(
        self, message: str, *, file: str, line: int, column: int, field: str, value: object
    ) -> None:
        super().__init__(message, field=field, value=value)
        self.file = file
        self.line = line
        self.column = column


class GraphMismatchError(ConfigurationError):
    """A run was resumed with a graph other than the one it started with.

    Attributes:
        run_id: the run.
        changes: what differs, in words (``"stage 'd' added"``, ...).
        value: the graph given (``field`` is ``"graph"``).
    """

    def __init__(
        self, message: str, *, run_id: str, changes: Sequence[str], value: object = None
    ) -> None:
        super().__init__(message, field="graph", value=value)
        self.run_id = run_id
        self.changes: tuple[str, ...] = tuple(changes)

    @classmethod
    def of(cls, run_id: str, changes: Sequence[str], graph: object = None) -> Self:
        """The error with its standard message, which lists the changes."""
        return cls(
            f"run {run_id!r} was started with another graph: {'; '.join(changes)}; resume it "
            "with the graph it started with",
            run_id=run_id,
            changes=changes,
            value=graph,
        )


class UnknownModelError(ConfigurationError, KeyError):
    """A price table was asked for a model it has no price for (and no fallback).

    Attributes:
        model: the model (``value`` too; ``field`` is ``"model"``).
        known: the models the table has prices for, sorted.
    """

    def __init__(self, message: str, *, model: str, known: Sequence[str]) -> None:
        super().__init__(message, field="model", value=model)
        self.model = model
        self.known: tuple[str, ...] = tuple(sorted(known))

    @classmethod
    def of(cls, model: str, known: Sequence[str]) -> Self:
        """The error with its standard message, which lists the known models."""
        listed = ", ".join(repr(m) for m in sorted(known)) or "none"
        return cls(
            f"no price for model {model!r}; the price table has {listed} (add it, or give "
            "the table a fallback)",
            model=model,
            known=known,
        )


class UnknownPipelineError(ConfigurationError, KeyError):
    """A catalog was asked for a pipeline it does not hold.

    Attributes:
        pipeline: the name asked for (``value`` too; ``field`` is ``"pipeline"``).
        known: the names the catalog holds, sorted.
    """

    def __init__(self, message: str, *, pipeline: str, known: Sequence[str]) -> None:
        super().__init__(message, field="pipeline", value=pipeline)
        self.pipeline = pipeline
        self.known: tuple[str, ...] = tuple(sorted(known))

    @classmethod
    def of(cls, pipeline: str, known: Sequence[str]) -> Self:
        """The error with its standard message, which lists the known names."""
        listed = ", ".join(repr(name) for name in sorted(known)) or "none"
        return cls(
            f"no pipeline named {pipeline!r} in the catalog; it has {listed}",
            pipeline=pipeline,
            known=known,
        )


class CodecError(ConfigurationError, TypeError):
    """A value cannot be stored faithfully: a stage's output or state, a run's data.

    Attributes:
        field: where in the stored value, e.g. ``"the output of stage 'a'['x']"``.
        value: the offending object (a dict key of the wrong type is the key).
        value_type: its type.
        stage: the stage whose output or state it is, or None (a run's data, or
            a value encoded outside a stage).
    """

    def __init__(
        self, message: str, *, field: str, value: object, stage: str | None = None
    ) -> None:
        super().__init__(message, field=field, value=value)
        self.stage = stage

    @property
    def value_type(self) -> type[Any]:
        """The offending object's type."""
        return type(self.value)


# --------------------------------------------------------------------------- stages


class StageError(StageflowError):
    """An error about one stage of a run.

    Attributes:
        stage: the stage's name.
    """

    def __init__(self, message: str, *, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


class ExpressionError(StageError):
    """A CEL expression of a pipeline file, or one of its ``$`` references, could not be
    evaluated for a stage: a value missing, of the wrong type, or over a limit.

    Attributes:
        field: where the expression is (``when``, ``with.text``, ``routes[0].when``, ...).
        expression: the expression as written.
    """

    def __init__(self, message: str, *, stage: str, field: str, expression: str) -> None:
        super().__init__(message, stage=stage)
        self.field = field
        self.expression = expression


class StageFailedError(StageError):
    """The stage reported a failure with :meth:`StageOutput.fail`.

    Attributes:
        reason: the reason it gave.
    """

    def __init__(self, message: str, *, stage: str, reason: str) -> None:
        super().__init__(message, stage=stage)
        self.reason = reason

    @classmethod
    def of(cls, stage: str, reason: str) -> Self:
        """The error with its standard message: ``stage 'a' failed: <reason>``."""
        return cls(f"stage {stage!r} failed: {reason}", stage=stage, reason=reason)


class AssistanceBlockedError(StageError):
    """A pre-validation by the LLM assistant said the stage's input is not fit, and the
    stage's ``assist=`` policy is ``block``: the stage did not run.

    Attributes:
        text: what the assistant said (known secrets masked).
        confidence: how sure it said it was, 0 to 1.
    """

    def __init__(self, message: str, *, stage: str, text: str, confidence: float) -> None:
        super().__init__(message, stage=stage)
        self.text = text
        self.confidence = confidence

    @classmethod
    def of(cls, stage: str, text: str, confidence: float) -> Self:
        """The error with its standard message."""
        said = f": {text}" if text else ""
        message = f"stage {stage!r} blocked by its pre-validation (confidence {confidence:g})"
        return cls(message + said, stage=stage, text=text, confidence=confidence)


class InvalidOutputError(StageError, TypeError):
    """A stage returned something that is not a StageOutput, a Mapping or None.

    Attributes:
        value: the returned object.
    """

    def __init__(self, message: str, *, stage: str, value: object) -> None:
        super().__init__(message, stage=stage)
        self.value = value

    @classmethod
    def of(cls, stage: str, value: object, hint: str = "") -> Self:
        """The error with its standard message: what was returned, then ``hint`` or
        what a stage must return."""
        return cls(
            f"stage {stage!r} returned {type(value).__qualname__} {_short_repr(value)}; "
            + (hint or "a stage must return a StageOutput, a Mapping (its output data) or None"),
            stage=stage,
            value=value,
        )


class StageCancelledError(StageError):
    """The stage raised CancelledError although the run did not cancel it."""


class StageTimeoutError(StageError, TimeoutError):
    """An attempt of the stage exceeded its timeout and was cancelled.

    Attributes:
        timeout: the limit, in seconds.
        attempt: the attempt that timed out.
    """

    def __init__(self, message: str, *, stage: str, timeout: float, attempt: int) -> None:
        super().__init__(message, stage=stage)
        self.timeout = timeout
        self.attempt = attempt

    @classmethod
    def of(cls, stage: str, timeout: float, attempt: int) -> Self:
        """The error with its standard message: ``stage 'a' timed out after 2s (attempt 1)``."""
        return cls(
            f"stage {stage!r} timed out after {timeout:g}s (attempt {attempt})",
            stage=stage,
            timeout=timeout,
            attempt=attempt,
        )


class WorkerLostError(StageError):
    """The process running the stage's call elsewhere (a Ray worker, a node) died before
    the call ended: a failure of the attempt, retried under the stage's retry policy.

    Attributes:
        runner: the runner that ran it (``"ray"``).
        reason: what the runner said happened.
    """

    def __init__(self, message: str, *, stage: str, runner: str, reason: str) -> None:
        super().__init__(message, stage=stage)
        self.runner = runner
        self.reason = reason

    @classmethod
    def of(cls, stage: str, runner: str, reason: str) -> Self:
        """The error with its standard message: ``stage 'embed': its ray worker died: ...``."""
        return cls(f"stage {stage!r}: its {runner} worker died: {reason}", stage=stage,
                   runner=runner, reason=reason)  # fmt: skip


class RemoteError(StageError):
    """The stage's call, run elsewhere (a Ray worker), raised an exception that does not
    pickle, so it cannot be raised here as itself: this says what it was.

    Attributes:
        type_name: the exception's class, ``module.QualName``.
        text: ``str()`` of the exception.
        traceback: where it was raised, as the worker formatted it.
    """

    def __init__(self, message: str, *, stage: str, type_name: str, text: str,
                 traceback: str) -> None:  # fmt: skip
        super().__init__(message, stage=stage)
        self.type_name = type_name
        self.text = text
        self.traceback = traceback

    @classmethod
    def of(cls, stage: str, type_name: str, text: str, traceback: str) -> Self:
        """The error with its standard message, for an exception of ``type_name`` that did
        not pickle: ``stage 'a' raised pkg.Boom: bad (where its call ran; ...)``."""
        return cls(
            f"stage {stage!r} raised {type_name}: {text} (where its call ran; the exception "
            "does not pickle, so it is not raised here as itself: give it an __init__ that "
            "its args rebuild, or a __reduce__)",
            stage=stage, type_name=type_name, text=text, traceback=traceback,
        )  # fmt: skip


class CircuitOpenError(StageError):
    """The stage's circuit breaker is open: the stage was not called.

    Attributes:
        key: the breaker's key.
        retry_after: seconds until the breaker lets a probe through (0: the
            breaker is half-open and its probe calls are out).
    """

    def __init__(self, message: str, *, stage: str, key: object, retry_after: float) -> None:
        super().__init__(message, stage=stage)
        self.key = key
        self.retry_after = retry_after

    @classmethod
    def of(cls, stage: str, key: object, retry_after: float) -> Self:
        """The error with its standard message, which says when the next probe is."""
        state = (
            f"is open (next probe in {retry_after:.3g}s)"
            if retry_after > 0
            else "is half-open and its probe calls are out"
        )
        return cls(
            f"stage {stage!r} not called: circuit {key!r} {state}",
            stage=stage,
            key=key,
            retry_after=retry_after,
        )


class BudgetExceededError(StageError):
    """A token or cost budget cannot cover the stage: it is blocked.

    Raised before the stage runs when its estimate does not fit what is left (a
    ``block`` policy, or a ``downgrade`` policy whose model chain is exhausted), or
    by ``ctx.usage.report`` when what the stage reports goes over a ``block`` budget
    (the usage is recorded all the same: it was spent).

    Attributes:
        scope: ``"run"`` or ``"stage"``: whose budget.
        limit: ``"tokens"`` or ``"cost"``.
        maximum: the budget's limit.
        spent: what was spent before (at admission: and reserved by running stages).
        requested: what the stage asked for (its estimate or its report).
    """

    def __init__(
        self,
        message: str,
        *,
        stage: str,
        scope: str,
        limit: str,
        maximum: float,
        spent: float,
        requested: float,
    ) -> None:
        super().__init__(message, stage=stage)
        self.scope = scope
        self.limit = limit
        self.maximum = maximum
        self.spent = spent
        self.requested = requested

    @classmethod
    def of(
        cls,
        stage: str,
        scope: str,
        limit: str,
        maximum: float,
        spent: float,
        requested: float,
        why: str = "",
    ) -> Self:
        """The error with its standard message, ``why`` appended to it."""
        whose = "the run's" if scope == "run" else "its own"
        what = (
            f"cannot cover {requested:g} more ({spent:g} spent or reserved)"
            if requested
            else f"is spent ({spent:g})"
        )
        return cls(
            f"stage {stage!r}: {whose} {limit} budget of {maximum:g} {what}{why}",
            stage=stage,
            scope=scope,
            limit=limit,
            maximum=maximum,
            spent=spent,
            requested=requested,
        )


# --------------------------------------------------------------------------- dynamic stages


class RouteError(StageError):
    """A ROUTE stage chose no successor, or one outside its ``routes``.

    Attributes:
        chosen: the targets it chose (empty when it chose none).
        routes: the successors it may choose from.
    """

    def __init__(
        self, message: str, *, stage: str, chosen: Sequence[str], routes: Sequence[str]
    ) -> None:
        super().__init__(message, stage=stage)
        self.chosen: tuple[str, ...] = tuple(chosen)
        self.routes: tuple[str, ...] = tuple(routes)


class MapError(StageError, TypeError):
    """A map stage cannot make its items: ``over`` names a missing field or a value
    that is no sequence, or two items have the same key.

    Attributes:
        field: what ``over`` names (``"split.items"``), or the callable's name.
        value: the offending value (the field's value, or the duplicate key).
    """

    def __init__(self, message: str, *, stage: str, field: str, value: object) -> None:
        super().__init__(message, stage=stage)
        self.field = field
        self.value = value


class MapItemError(StageError):
    """An item of a map stage failed, and the map's ``on_item_error`` is ``"fail"``.

    Attributes:
        item: the failed item's key.
        index: its position in the items.
        error: what it failed with, in words (the exception is ``__cause__``).
    """

    def __init__(self, message: str, *, stage: str, item: str, index: int, error: str) -> None:
        super().__init__(message, stage=stage)
        self.item = item
        self.index = index
        self.error = error


class LoopExhaustedError(StageError):
    """A loop stage ran ``max_iterations`` without its ``until`` holding, and its
    ``on_exhausted`` is ``"fail"``.

    Attributes:
        iterations: how many iterations ran.
    """

    def __init__(self, message: str, *, stage: str, iterations: int) -> None:
        super().__init__(message, stage=stage)
        self.iterations = iterations


class SubgraphFailedError(StageError):
    """A stage inside a subgraph or loop stage failed, so the enclosing stage failed.

    Attributes:
        inner: the full name of the stage that failed (``etl.fetch``, ``refine[2].critique``).
        reason: how it failed, in words (its exception is ``__cause__``).
    """

    def __init__(self, message: str, *, stage: str, inner: str, reason: str) -> None:
        super().__init__(message, stage=stage)
        self.inner = inner
        self.reason = reason


class InputTimeoutError(StageError, TimeoutError):
    """An input's deadline passed before a value was given (``with_input(timeout=)``
    with ``on_timeout="fail"``); a value sent after it is refused with it too.

    Attributes:
        deadline: when the wait ended, seconds since the epoch.
    """

    def __init__(self, message: str, *, stage: str, deadline: float) -> None:
        super().__init__(message, stage=stage)
        self.deadline = deadline

    @classmethod
    def of(cls, stage: str, deadline: float) -> Self:
        """The error with its standard message."""
        return cls(
            f"input {stage!r}: its deadline passed ({_when(deadline)}) before a value was given",
            stage=stage,
            deadline=deadline,
        )


def _when(at: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(at, datetime.UTC).isoformat(timespec="seconds")


class MissingInputError(StageError, KeyError):
    """``ctx.inputs`` was asked for a stage or key it does not hold.

    Attributes:
        dependency: the stage asked for.
        key: the key asked for, or None when the stage itself is missing.
    """

    def __init__(
        self, message: str, *, stage: str, dependency: str, key: str | None = None
    ) -> None:
        super().__init__(message, stage=stage)
        self.dependency = dependency
        self.key = key


class MissingOutputError(StageError, KeyError):
    """A stage's result was asked for output it does not have, because the stage did
    not complete: ``result["x"].data["k"]`` of a stage that failed, was skipped or
    cancelled. ``__cause__`` is the stage's error, if it has one.

    Attributes:
        key: the key asked for.
        status: how the stage ended (``"failed"``, ``"skipped"``, ``"cancelled"``).
        reason: why, in words, or None.
    """

    def __init__(
        self, message: str, *, stage: str, key: str, status: str, reason: str | None = None
    ) -> None:
        super().__init__(message, stage=stage)
        self.key = key
        self.status = status
        self.reason = reason

    @classmethod
    def of(cls, stage: str, key: str, status: str, reason: str | None = None) -> Self:
        """The standard message: the stage, how it ended and why, the key asked for."""
        why = f": {reason}" if reason else ""
        return cls(
            f"stage {stage!r} {status}{why}; so its output has no {key!r} "
            f"(read result[{stage!r}].status and .error before its data)",
            stage=stage,
            key=key,
            status=status,
            reason=reason,
        )


class InputTypeError(MissingInputError, TypeError):
    """``ctx.inputs.get_from(dependency, key, type=T)`` found a value that is not a ``T``.

    A :class:`MissingInputError` (the input asked for is not there as asked) and a
    :class:`TypeError`.

    Attributes:
        dependency: the stage asked for.
        key: the key asked for.
        expected: the name of the type asked for.
        actual: the name of the value's type.
    """

    def __init__(
        self, message: str, *, stage: str, dependency: str, key: str, expected: str, actual: str
    ) -> None:
        super().__init__(message, stage=stage, dependency=dependency, key=key)
        self.expected = expected
        self.actual = actual

    @classmethod
    def of(
        cls, stage: str, dependency: str, key: str, expected: str, actual: str, shown: str = ""
    ) -> Self:
        """The standard message: stage, dependency, key, the type asked for and the value's
        (``shown``: the value's repr, if it is to be in the message)."""
        value = f" = {shown}" if shown else ""
        return cls(
            f"stage {stage!r}: the output of {dependency!r} has {key!r}{value}, a {actual}, "
            f"not the {expected} asked for by get_from(..., type={expected})",
            stage=stage,
            dependency=dependency,
            key=key,
            expected=expected,
            actual=actual,
        )


# --------------------------------------------------------------------------- stores


class StoreError(StageflowError):
    """A checkpoint store could not do what was asked.

    Adapters translate their backend's exceptions into this (``__cause__`` keeps
    the original), so callers handle one family whatever the database.
    """


class UnknownRunError(StoreError, KeyError):
    """No run has this id.

    Attributes:
        run_id: the id asked for.
    """

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id

    @classmethod
    def of(cls, run_id: str) -> Self:
        """The error with its standard message: ``no run with id 'r1'``."""
        return cls(f"no run with id {run_id!r}", run_id=run_id)


class RunExistsError(StoreError):
    """A run with this id exists already.

    Attributes:
        run_id: the id.
    """

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id

    @classmethod
    def of(cls, run_id: str) -> Self:
        """The error with its standard message: ``a run with id 'r1' exists already``."""
        return cls(f"a run with id {run_id!r} exists already", run_id=run_id)


class RunLeasedError(StoreError):
    """Another driver holds the run's lease: two processes never drive one run.

    Attributes:
        run_id: the run.
        owner: who holds the lease.
        expires_at: when it expires unless renewed (seconds since the epoch).
    """

    def __init__(self, message: str, *, run_id: str, owner: str, expires_at: float) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.owner = owner
        self.expires_at = expires_at

    @classmethod
    def of(cls, run_id: str, owner: str, expires_at: float) -> Self:
        """The error with its standard message, which says who holds the lease until when."""
        return cls(
            f"run {run_id!r} is being driven by {owner!r} (lease valid until {expires_at:.3f}, "
            "seconds since the epoch); resume it after that if its driver is gone",
            run_id=run_id,
            owner=owner,
            expires_at=expires_at,
        )


class RunNotRetryableError(StoreError):
    """A run that did not end failed or cancelled cannot be retried.

    Attributes:
        run_id: the run.
        status: its status (``running``, ``waiting``, ``completed``).
    """

    def __init__(self, message: str, *, run_id: str, status: str) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.status = status

    @classmethod
    def of(cls, run_id: str, status: str) -> Self:
        """The error with its standard message."""
        return cls(
            f"run {run_id!r} is {status}: only a run that ended failed or cancelled "
            "can be retried (resume a stopped run instead)",
            run_id=run_id,
            status=status,
        )


class LeaseLostError(StoreError):
    """This driver's lease was taken over: its fencing token is stale, it may not write.

    Attributes:
        run_id: the run.
        token: the stale token.
    """

    def __init__(self, message: str, *, run_id: str, token: int) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.token = token

    @classmethod
    def of(cls, run_id: str, token: int) -> Self:
        """The error with its standard message, which names the run and the stale token."""
        return cls(
            f"the lease on run {run_id!r} with token {token} was taken over by another "
            "driver; this one may write no more",
            run_id=run_id,
            token=token,
        )


class SchemaError(StoreError):
    """The database holds a stageflow schema this version cannot use (newer), or none."""


# --------------------------------------------------------------------------- runs


class InputError(StageflowError):
    """About one input of a run (``with_input``): sending it, or waiting for it.

    Attributes:
        run_id: the run.
        input: the input's name (``approve[doc-17]`` for one item's).
    """

    def __init__(self, message: str, *, run_id: str, input: str) -> None:  # noqa: A002
        super().__init__(message)
        self.run_id = run_id
        self.input = input


class InputValidationError(InputError, ValueError):
    """A value sent for an input does not match its schema; nothing was stored.

    Attributes:
        field: where in the value, dotted (``"approved"``, ``"items.0.sku"``; ``""``:
            the value itself).
        value: the offending value there.
    """

    def __init__(
        self,
        message: str,
        *,
        run_id: str,
        input: str,  # noqa: A002
        field: str,
        value: object,
    ) -> None:
        super().__init__(message, run_id=run_id, input=input)
        self.field = field
        self.value = value


class InputAlreadyGivenError(InputError):
    """The input has a value already: a second one is refused, whoever sends it."""

    @classmethod
    def of(cls, run_id: str, input: str) -> Self:  # noqa: A002
        """The error with its standard message."""
        return cls(
            f"run {run_id!r}: input {input!r} was given already; an input takes one value",
            run_id=run_id,
            input=input,
        )


class UnknownInputError(InputError, KeyError):
    """The run waits for no input of this name (it has none, or it has ended).

    Attributes:
        known: the run's inputs (those that could still be given), sorted.
    """

    def __init__(
        self,
        message: str,
        *,
        run_id: str,
        input: str,  # noqa: A002
        known: Sequence[str] = (),
    ) -> None:
        super().__init__(message, run_id=run_id, input=input)
        self.known: tuple[str, ...] = tuple(sorted(known))

    @classmethod
    def of(cls, run_id: str, input: str, known: Sequence[str] = (), why: str = "") -> Self:  # noqa: A002
        """The error with its standard message (``why``: the run has ended, in words)."""
        if why:
            text = f"run {run_id!r} {why}: it waits for no input, {input!r} included"
        else:
            listed = ", ".join(map(repr, known)) or "none"
            text = f"run {run_id!r} has no input {input!r} (its inputs: {listed})"
        return cls(text, run_id=run_id, input=input, known=known)


class RunError(StageflowError):
    """Raised by :meth:`RunResult.raise_for_status` for a run that did not complete.

    Attributes:
        run_id: the run's id.
    """

    def __init__(self, message: str, *, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class RunFailedError(RunError):
    """One or more stages failed.

    Attributes:
        failed: the names of the failed stages, in graph order.
    """

    def __init__(self, message: str, *, run_id: str, failed: Sequence[str]) -> None:
        super().__init__(message, run_id=run_id)
        self.failed: tuple[str, ...] = tuple(failed)


class RunWaitingError(RunError):
    """The run waits for input: it stopped, not ended (send the input, then resume).

    Attributes:
        waiting_for: the names of the inputs it waits for.
    """

    def __init__(self, message: str, *, run_id: str, waiting_for: Sequence[str]) -> None:
        super().__init__(message, run_id=run_id)
        self.waiting_for: tuple[str, ...] = tuple(waiting_for)


class RunCancelledError(RunError):
    """The run was cancelled before all its stages ended."""


class RunTimeoutError(RunCancelledError, TimeoutError):
    """The run exceeded its ``timeout``.

    Attributes:
        timeout: the limit, in seconds.
    """

    def __init__(self, message: str, *, run_id: str, timeout: float) -> None:
        super().__init__(message, run_id=run_id)
        self.timeout = timeout

    @classmethod
    def of(cls, run_id: str, timeout: float) -> Self:
        """The error with its standard message: ``run 'r1' exceeded its timeout of 5s``."""
        return cls(
            f"run {run_id!r} exceeded its timeout of {timeout:g}s", run_id=run_id, timeout=timeout
        )


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
