"""RunResult and StageResult: how a run ended, stage by stage."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from ._status import RunStatus, StageStatus
from ._usage import EMPTY as EMPTY_USAGE
from ._usage import UsageSummary
from .errors import (
    ConfigurationError,
    MissingOutputError,
    RunCancelledError,
    RunFailedError,
    RunWaitingError,
)

__all__ = ["PendingInput", "RunResult", "RunStatus", "StageResult"]

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


class StageResult:
    """How one stage of a run ended. Read-only by contract.

    Attributes:
        stage: the stage's name.
        status: completed, failed, skipped or cancelled.
        data: the output data (empty unless completed or failed with data). Of a stage
            that did not complete, a key it does not hold raises
            :class:`~stageflow.errors.MissingOutputError` (a KeyError) naming the stage,
            how it ended and its error (``__cause__``), not a bare KeyError.
        error: the exception that failed the stage, if any.
        reason: why it was skipped or failed, in words.
        attempts: how many attempts were made (0 when it never ran); an attempt
            refused by an open circuit breaker counts.
        started: when it started, in seconds since the run started (None if it never ran).
        ended: when it ended, in seconds since the run started.
        items: of a map stage, its items' results in item order (each named
            ``<stage>[<key>]``); empty for any other stage.
    """

    __slots__ = (
        "attempts", "data", "ended", "error", "items", "reason", "stage", "started", "status"
    )  # fmt: skip

    def __init__(
        self,
        stage: str,
        status: StageStatus,
        data: Mapping[str, Any] = _EMPTY,
        error: BaseException | None = None,
        reason: str | None = None,
        attempts: int = 0,
        started: float | None = None,
        ended: float | None = None,
        items: tuple[StageResult, ...] = (),
    ) -> None:
        self.stage = stage
        self.items = items
        self.status = status
        self.data = data
        self.error = error
        self.reason = reason
        self.attempts = attempts
        self.started = started
        self.ended = ended
        if status is not StageStatus.COMPLETED:
            self.data = _NoOutput(self, data)

    @property
    def duration(self) -> float | None:
        """Seconds between start and end, or None if the stage never ran."""
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started

    @property
    def ok(self) -> bool:
        """True when the stage completed."""
        return self.status is StageStatus.COMPLETED

    def __repr__(self) -> str:
        extra = f", reason={self.reason!r}" if self.reason else ""
        return f"<StageResult {self.stage!r} {self.status.value} attempts={self.attempts}{extra}>"


class _NoOutput(Mapping[str, Any]):
    """The data of a stage that did not complete: what it failed with (if anything);
    asking for any other key raises MissingOutputError, naming the stage and its error."""

    __slots__ = ("_data", "_error", "_reason", "_stage", "_status")

    def __init__(self, result: StageResult, data: Mapping[str, Any]) -> None:
        self._data = data
        self._stage = result.stage
        self._status = result.status
        self._error = result.error
        self._reason = result.reason

    def __getitem__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            reason = self._reason
            if reason is None and self._error is not None:
                reason = f"{type(self._error).__name__}: {self._error}"
            raise MissingOutputError.of(
                self._stage, key, str(self._status), reason
            ) from self._error

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(dict(self._data))


class PendingInput(NamedTuple):
    """An input a waiting run waits for (``RunResult.waiting_for``).

    Attributes:
        name: the input's name: what ``engine.send(run_id, name, value)`` addresses.
        prompt: what the person is to be shown (None: the stage has no prompt).
        schema: the JSON Schema of the value.
        deadline: when the wait ends (seconds since the epoch), or None.
    """

    name: str
    prompt: str | None
    schema: Mapping[str, Any]
    deadline: float | None


class RunResult:
    """The outcome of one run.

    ``result["stage"]`` is that stage's :class:`~stageflow.StageResult`, so
    ``result["summarize"].data["summary"]`` reads a stage's output; if that stage
    failed, was skipped or cancelled, that raises
    :class:`~stageflow.errors.MissingOutputError` naming it and its error.

    Attributes:
        run_id: the run's id.
        pipeline: the pipeline's name.
        status: completed (no stage failed), failed, cancelled, or waiting (for input:
            see ``waiting_for``; it goes on with ``Engine.resume`` once given).
        stages: every stage's result, by name, in graph order.
        started_at: wall-clock start, seconds since the epoch.
        duration: seconds the run took.
        error: the run-level error: the first stage error of a failed run, or the
            RunTimeoutError of a run that timed out.
        sink_errors: how many times the event sink raised (the run went on).
        usage: what the stages reported spending (``ctx.usage.report``): tokens and
            cost in all, ``by_stage`` and ``by_model``; a resumed run's includes what
            earlier drivers spent.
        waiting_for: the inputs a waiting run waits for, in graph order (an input per
            item's in item order); empty unless ``status`` is waiting.
    """

    __slots__ = (
        "duration",
        "error",
        "pipeline",
        "run_id",
        "sink_errors",
        "stages",
        "started_at",
        "status",
        "usage",
        "waiting_for",
    )

    def __init__(
        self,
        run_id: str,
        pipeline: str,
        status: RunStatus,
        stages: Mapping[str, StageResult],
        *,
        started_at: float,
        duration: float,
        error: BaseException | None = None,
        sink_errors: int = 0,
        usage: UsageSummary = EMPTY_USAGE,
        waiting_for: tuple[PendingInput, ...] = (),
    ) -> None:
        self.run_id = run_id
        self.pipeline = pipeline
        self.status = status
        self.stages = stages
        self.started_at = started_at
        self.duration = duration
        self.error = error
        self.sink_errors = sink_errors
        self.usage = usage
        self.waiting_for = waiting_for

    def __getitem__(self, stage: str) -> StageResult:
        try:
            return self.stages[stage]
        except KeyError:
            raise KeyError(
                f"run {self.run_id!r} of {self.pipeline!r} has no stage {stage!r}; "
                f"stages: {', '.join(self.stages)}"
            ) from None

    def __contains__(self, stage: object) -> bool:
        return stage in self.stages

    def __iter__(self) -> Iterator[StageResult]:
        return iter(self.stages.values())

    def __len__(self) -> int:
        return len(self.stages)

    @property
    def ok(self) -> bool:
        """True when the run completed."""
        return self.status is RunStatus.COMPLETED

    def with_status(self, status: StageStatus | str) -> tuple[str, ...]:
        """The names of the stages that ended with ``status`` (e.g. ``"failed"``), in order."""
        try:
            wanted = StageStatus(status)
        except ValueError:
            raise ConfigurationError(
                f"with_status takes one of {', '.join(s.value for s in StageStatus)}, "
                f"not {status!r}",
                field="status",
                value=status,
            ) from None
        return tuple(name for name, r in self.stages.items() if r.status is wanted)

    def raise_for_status(self) -> RunResult:
        """Return self if the run completed, else raise.

        Raises:
            RunFailedError: stages failed; ``failed`` names them, ``__cause__`` is the
                first stage error.
            RunCancelledError: the run was cancelled (``RunTimeoutError`` if it timed out).
            RunWaitingError: the run waits for input (``waiting_for`` names it).
        """
        if self.status is RunStatus.COMPLETED:
            return self
        if self.status is RunStatus.WAITING:
            names = tuple(pending.name for pending in self.waiting_for)
            raise RunWaitingError(
                f"run {self.run_id!r} of {self.pipeline!r} waits for input: "
                f"{', '.join(map(repr, names))}; send it (engine.send), then resume the run",
                run_id=self.run_id,
                waiting_for=names,
            )
        if self.status is RunStatus.FAILED:
            failed = self.with_status(StageStatus.FAILED)
            reasons = "; ".join(f"{n}: {self.stages[n].reason}" for n in failed[:5])
            more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
            raise RunFailedError(
                f"run {self.run_id!r} of {self.pipeline!r} failed: {reasons}{more}",
                run_id=self.run_id,
                failed=failed,
            ) from self.error
        if isinstance(self.error, RunCancelledError):
            raise self.error
        raise RunCancelledError(
            f"run {self.run_id!r} of {self.pipeline!r} was cancelled", run_id=self.run_id
        )

    def __repr__(self) -> str:
        return (
            f"<RunResult {self.pipeline!r} {self.run_id} {self.status.value} "
            f"stages={len(self.stages)} duration={self.duration:.6f}s>"
        )
