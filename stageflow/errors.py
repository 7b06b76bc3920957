"""The exceptions stageflow raises.

Every exception derives from :class:`StageflowError`, so ``except
StageflowError`` catches anything the framework itself raises. Errors found
while building a graph also derive from :class:`ValueError` (or
:class:`TypeError` for a value of the wrong type), so code written against
the builtin hierarchy keeps working::

    StageflowError
    ├── GraphError (ValueError)               Pipeline.with_stage() / build() refused the graph
    │   ├── InvalidStageNameError             a stage name is not an identifier-like string
    │   ├── InvalidStageError (TypeError)     the stage is neither a callable nor has execute()
    │   ├── InvalidOptionError                a stage option of the wrong type or value
    │   ├── DuplicateStageError               two stages share a name
    │   ├── UnknownDependencyError            a dependency names no stage of the graph
    │   ├── SelfDependencyError               a stage depends on itself
    │   └── CycleError                        the dependencies form a cycle (``a -> b -> a``)
    ├── ConfigurationError (ValueError)       a bad argument to Engine, Engine.run, a sink, ...
    │   ├── GraphMismatchError                a run resumed with another graph (``.changes``)
    │   └── UnknownModelError (KeyError)      a price table has no price for a model
    ├── StageError                            raised inside a run, about one stage (``.stage``)
    │   ├── StageFailedError                  the stage returned ``StageOutput.fail(...)``
    │   ├── InvalidOutputError (TypeError)    the stage returned something that is not an output
    │   ├── StageCancelledError               the stage was cancelled outside the run's control
    │   ├── StageTimeoutError (TimeoutError)  an attempt exceeded the stage's timeout
    │   ├── CircuitOpenError                  the stage's circuit breaker is open: not called
    │   ├── BudgetExceededError               a token or cost budget cannot cover the stage
    │   └── MissingInputError (KeyError)      ``ctx.inputs`` was asked for what is not there
    ├── StoreError                            a checkpoint store failed (backend errors become this)
    │   ├── UnknownRunError (KeyError)        no run has that id
    │   ├── RunExistsError                    a run with that id exists already
    │   ├── RunLeasedError                    another driver holds the run's lease
    │   ├── LeaseLostError                    the lease was taken over: no more writes
    │   └── SchemaError                       the database's schema is newer or not ours
    └── RunError                              ``RunResult.raise_for_status()``
        ├── RunFailedError                    one or more stages failed (``.failed``)
        └── RunCancelledError                 the run was cancelled or timed out
            └── RunTimeoutError               the run exceeded ``Engine.run(timeout=...)``

Errors name what is wrong: the stage, the field and the offending value are
both in the message and in attributes, so that tools can act on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "BudgetExceededError",
    "CircuitOpenError",
    "ConfigurationError",
    "CycleError",
    "DuplicateStageError",
    "GraphError",
    "GraphMismatchError",
    "InvalidOptionError",
    "InvalidOutputError",
    "InvalidStageError",
    "InvalidStageNameError",
    "LeaseLostError",
    "MissingInputError",
    "RunCancelledError",
    "RunError",
    "RunExistsError",
    "RunFailedError",
    "RunLeasedError",
    "RunTimeoutError",
    "SchemaError",
    "SelfDependencyError",
    "StageCancelledError",
    "StageError",
    "StageFailedError",
    "StageTimeoutError",
    "StageflowError",
    "StoreError",
    "UnknownDependencyError",
    "UnknownModelError",
    "UnknownRunError",
]


class StageflowError(Exception):
    """Base class of every exception raised by stageflow."""


# --------------------------------------------------------------------------- graph


class GraphError(StageflowError, ValueError):
    """A pipeline cannot become a valid :class:`~stageflow.StageGraph`.

    Attributes:
        stages: the names of the stages involved, in a meaningful order.
    """

    def __init__(self, message: str, stages: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.stages: tuple[str, ...] = tuple(stages)


class InvalidStageNameError(GraphError):
    """A stage (or pipeline) name is empty, not a string, or not identifier-like.

    Attributes:
        name: the rejected value.
    """

    def __init__(self, message: str, name: object) -> None:
        super().__init__(message, (name,) if isinstance(name, str) else ())
        self.name = name


class InvalidStageError(GraphError, TypeError):
    """The object given as a stage cannot be run.

    Attributes:
        stage: the stage name.
        value: the rejected object.
    """

    def __init__(self, message: str, stage: str, value: object) -> None:
        super().__init__(message, (stage,))
        self.stage = stage
        self.value = value


class InvalidOptionError(GraphError):
    """A stage option is unknown, or has a value of the wrong type or range.

    Attributes:
        stage: the stage name.
        option: the option's name.
        value: the rejected value.
    """

    def __init__(self, message: str, stage: str, option: str, value: object) -> None:
        super().__init__(message, (stage,))
        self.stage = stage
        self.option = option
        self.value = value


class DuplicateStageError(GraphError):
    """Two stages have the same name. ``stages`` holds that name."""


class UnknownDependencyError(GraphError):
    """A stage depends on a name that is no stage of the graph.

    Attributes:
        stage: the stage that declares the dependency.
        dependency: the unknown name.
    """

    def __init__(self, message: str, stage: str, dependency: str) -> None:
        super().__init__(message, (stage, dependency))
        self.stage = stage
        self.dependency = dependency


class SelfDependencyError(GraphError):
    """A stage lists itself among its dependencies. ``stages`` holds its name."""


class CycleError(GraphError):
    """The dependencies form a cycle.

    Attributes:
        cycle: the stages along the cycle, the first repeated at the end
            (``("a", "b", "a")`` for ``a -> b -> a``).
    """

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle: tuple[str, ...] = tuple(cycle)
        super().__init__(
            f"the dependencies form a cycle: {' -> '.join(self.cycle)}", self.cycle[:-1]
        )


# --------------------------------------------------------------------------- configuration


class ConfigurationError(StageflowError, ValueError):
    """An argument given to the engine, a run or a sink is invalid.

    Attributes:
        field: the argument's name.
        value: the rejected value.
    """

    def __init__(self, message: str, field: str, value: object) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class GraphMismatchError(ConfigurationError):
    """A run was resumed with a graph other than the one it started with.

    Attributes:
        run_id: the run.
        changes: what differs, in words (``"stage 'd' added"``, ...).
    """

    def __init__(self, run_id: str, changes: Sequence[str], graph: object) -> None:
        super().__init__(
            f"run {run_id!r} was started with another graph: {'; '.join(changes)}; resume it "
            "with the graph it started with",
            "graph",
            graph,
        )
        self.run_id = run_id
        self.changes: tuple[str, ...] = tuple(changes)


class UnknownModelError(ConfigurationError, KeyError):
    """A price table was asked for a model it has no price for (and no fallback).

    Attributes:
        model: the model.
        known: the models the table has prices for.
    """

    def __init__(self, model: str, known: Sequence[str]) -> None:
        listed = ", ".join(repr(m) for m in sorted(known)) or "none"
        super().__init__(
            f"no price for model {model!r}; the price table has {listed} (add it, or give "
            "the table a fallback)",
            "model",
            model,
        )
        self.model = model
        self.known: tuple[str, ...] = tuple(sorted(known))

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# --------------------------------------------------------------------------- stages


class StageError(StageflowError):
    """An error about one stage of a run.

    Attributes:
        stage: the stage's name.
    """

    def __init__(self, message: str, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


class StageFailedError(StageError):
    """The stage reported a failure with :meth:`StageOutput.fail`.

    Attributes:
        reason: the reason it gave.
    """

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"stage {stage!r} failed: {reason}", stage)
        self.reason = reason


class InvalidOutputError(StageError, TypeError):
    """A stage returned something that is not a StageOutput, a Mapping or None.

    Attributes:
        value: the returned object.
    """

    def __init__(self, stage: str, value: object, hint: str = "") -> None:
        super().__init__(
            f"stage {stage!r} returned {type(value).__qualname__} {_short_repr(value)}; "
            + (hint or "a stage must return a StageOutput, a Mapping (its output data) or None"),
            stage,
        )
        self.value = value


class StageCancelledError(StageError):
    """The stage raised CancelledError although the run did not cancel it."""


class StageTimeoutError(StageError, TimeoutError):
    """An attempt of the stage exceeded its timeout and was cancelled.

    Attributes:
        timeout: the limit, in seconds.
        attempt: the attempt that timed out.
    """

    def __init__(self, stage: str, timeout: float, attempt: int) -> None:
        super().__init__(f"stage {stage!r} timed out after {timeout:g}s (attempt {attempt})", stage)
        self.timeout = timeout
        self.attempt = attempt


class CircuitOpenError(StageError):
    """The stage's circuit breaker is open: the stage was not called.

    Attributes:
        key: the breaker's key.
        retry_after: seconds until the breaker lets a probe through.
    """

    def __init__(self, stage: str, key: object, retry_after: float) -> None:
        state = (
            f"is open (next probe in {retry_after:.3g}s)"
            if retry_after > 0
            else "is half-open and its probe calls are out"
        )
        super().__init__(f"stage {stage!r} not called: circuit {key!r} {state}", stage)
        self.key = key
        self.retry_after = retry_after


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
        stage: str,
        scope: str,
        limit: str,
        maximum: float,
        spent: float,
        requested: float,
        why: str = "",
    ) -> None:
        whose = "the run's" if scope == "run" else "its own"
        what = (
            f"cannot cover {requested:g} more ({spent:g} spent or reserved)"
            if requested
            else f"is spent ({spent:g})"
        )
        super().__init__(
            f"stage {stage!r}: {whose} {limit} budget of {maximum:g} {what}{why}", stage
        )
        self.scope = scope
        self.limit = limit
        self.maximum = maximum
        self.spent = spent
        self.requested = requested


class MissingInputError(StageError, KeyError):
    """``ctx.inputs`` was asked for a stage or key it does not hold.

    Attributes:
        dependency: the stage asked for.
        key: the key asked for, or None when the stage itself is missing.
    """

    def __init__(self, message: str, stage: str, dependency: str, key: str | None) -> None:
        super().__init__(message, stage)
        self.dependency = dependency
        self.key = key

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


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

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run with id {run_id!r}")
        self.run_id = run_id

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class RunExistsError(StoreError):
    """A run with this id exists already.

    Attributes:
        run_id: the id.
    """

    def __init__(self, run_id: str) -> None:
        super().__init__(f"a run with id {run_id!r} exists already")
        self.run_id = run_id


class RunLeasedError(StoreError):
    """Another driver holds the run's lease: two processes never drive one run.

    Attributes:
        run_id: the run.
        owner: who holds the lease.
        expires_at: when it expires unless renewed (seconds since the epoch).
    """

    def __init__(self, run_id: str, owner: str, expires_at: float) -> None:
        super().__init__(
            f"run {run_id!r} is being driven by {owner!r} (lease valid until {expires_at:.3f}, "
            "seconds since the epoch); resume it after that if its driver is gone"
        )
        self.run_id = run_id
        self.owner = owner
        self.expires_at = expires_at


class LeaseLostError(StoreError):
    """This driver's lease was taken over: its fencing token is stale, it may not write.

    Attributes:
        run_id: the run.
        token: the stale token.
    """

    def __init__(self, run_id: str, token: int) -> None:
        super().__init__(
            f"the lease on run {run_id!r} with token {token} was taken over by another "
            "driver; this one may write no more"
        )
        self.run_id = run_id
        self.token = token


class SchemaError(StoreError):
    """The database holds a stageflow schema this version cannot use (newer), or none."""


# --------------------------------------------------------------------------- runs


class RunError(StageflowError):
    """Raised by :meth:`RunResult.raise_for_status` for a run that did not complete.

    Attributes:
        run_id: the run's id.
    """

    def __init__(self, message: str, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class RunFailedError(RunError):
    """One or more stages failed.

    Attributes:
        failed: the names of the failed stages, in graph order.
    """

    def __init__(self, message: str, run_id: str, failed: Sequence[str]) -> None:
        super().__init__(message, run_id)
        self.failed: tuple[str, ...] = tuple(failed)


class RunCancelledError(RunError):
    """The run was cancelled before all its stages ended."""


class RunTimeoutError(RunCancelledError, TimeoutError):
    """The run exceeded its ``timeout``.

    Attributes:
        timeout: the limit, in seconds.
    """

    def __init__(self, run_id: str, timeout: float) -> None:
        super().__init__(f"run {run_id!r} exceeded its timeout of {timeout:g}s", run_id)
        self.timeout = timeout


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
