"""LoggingInterceptor: structured log records of stages and runs; a JSON formatter."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .._check import integer
from .._context import StageCall, StageContext
from .._dynamic import MapSpec
from .._redact import SECRETS, redacted, redacted_data
from .._result import RunResult, RunStatus, StageResult
from .._run import RunCall, RunContext
from .._spec import StageSpec
from .._status import StageStatus
from ..errors import ConfigurationError
from ._base import Priority
from ._telemetry import (
    CANCELLED,
    FAILED,
    RESTORED,
    TelemetryErrors,
    maps_of,
    outcome_of,
    outcome_of_error,
    restored,
)

if TYPE_CHECKING:
    from .._graph import StageGraph

_STANDARD: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _item_fields(ctx: StageContext) -> dict[str, Any]:
    """What the records of a map's item carry besides its stage name (``score[3]``)."""
    return {"item_key": ctx.item_key, "item_index": ctx.item_index}


def _trace_ids() -> dict[str, str]:
    """The current span's trace and span ids (hex), when a span is recording."""
    from opentelemetry import trace

    span = trace.get_current_span().get_span_context()
    if not span.is_valid:
        return {}
    return {"trace_id": f"{span.trace_id:032x}", "span_id": f"{span.span_id:016x}"}


class LoggingInterceptor(TelemetryErrors):
    """Logs each stage's and each run's end as a structured :mod:`logging` record.

    Records carry, in ``extra``: ``run_id``, ``pipeline``, ``stage`` (stage records:
    its name in the run, ``ctx.stage``, so ``etl.fetch``, ``refine[2].critique``,
    ``score[<key>]``), ``item_key`` and ``item_index`` (the records of a map's items),
    ``attempt`` (attempts made), ``outcome`` (completed, failed, skipped, cancelled,
    restored; for a run: its status) and ``duration`` (seconds), and ``trace_id`` /
    ``span_id`` when a span is current (with :class:`TracingInterceptor`, the stage's
    own span). Pair it with :class:`~stageflow.JsonFormatter` for JSON lines.

    A map stage's calls are its items: each item has its records; a map stage that
    failed (its items, or before them: ``over``) is logged when the run ends, as below.

    Levels: a stage's start at DEBUG; its end at ``level``, WARNING when it failed
    by returning ``StageOutput.fail``, ERROR with the traceback when it raised. A
    run's start and end at ``level``; ERROR when it failed, WARNING when cancelled.
    Nothing is built for a record whose level is disabled.

    Records off by level: the logger's level is read once per run, when the run
    starts (:meth:`applies`). When neither DEBUG nor ``level`` is enabled then, no
    stage record of that run can be written but its failures, so the run's stages
    are not wrapped at all and cost nothing; instead, when the run ends, each stage
    that failed is logged from the :class:`~stageflow.RunResult`, with the same
    level, fields and message as above (``stage <name> failed after <seconds>s:
    <error or reason>``; ``attempt`` and ``duration`` as the run recorded them;
    ERROR with the traceback when it raised, WARNING when it failed without
    raising), just before the run's own end record, and with the run's trace ids
    rather than the stage's; the failed items of maps are logged so too, before their
    map, in a run that completes as well. A failure is logged once either way. A run
    that raises instead of returning a result (its task cancelled, a
    ``KeyboardInterrupt``) has only its run record then. Changing the level while a
    run goes on takes effect from the next run.

    Args:
        logger: a logger or its name (default ``"stageflow.stages"``).
        level: the level of ordinary records (default INFO).
        priority: where it sits in the chain (default 300).
    """

    name = "logging"
    transparent = True  # looks at outputs, passes them through untouched: see Interceptor

    def __init__(
        self,
        logger: logging.Logger | str = "stageflow.stages",
        *,
        level: int = logging.INFO,
        priority: int = Priority.LOGGING,
    ) -> None:
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        if not isinstance(logger, logging.Logger):
            raise ConfigurationError(
                f"logger must be a Logger or a name, not {logger!r}", field="logger", value=logger
            )
        integer(level, "level", "a logging level (an int such as logging.INFO)", ge=0)
        self.logger = logger
        self.level = level
        self.priority = priority
        self.errors = 0
        # The runs whose stages go unwrapped (applies() said False), by id(run): their
        # failed stages are logged when they end.
        self._unwrapped: dict[int, RunContext] = {}

    def applies(self, run: RunContext) -> bool:
        """Whether this run's stage records can be written: the level, read once per run.

        True when the logger has DEBUG (stage starts) or ``level`` (stage ends) enabled.
        When False, the engine leaves this run's stages unwrapped and :meth:`wrap_run`
        logs the stages that failed when the run ends.
        """
        enabled = self.logger.isEnabledFor
        if enabled(logging.DEBUG) or enabled(self.level):
            return True
        self._unwrapped[id(run)] = run
        return False

    def _log(
        self,
        level: int,
        message: str,
        args: tuple[Any, ...],
        extra: dict[str, Any],
        error: BaseException | None = None,
    ) -> None:
        try:
            extra.update(_trace_ids())
            if SECRETS.active:  # known secrets masked before any handler sees the record
                message, args = redacted(message % args if args else message), ()
                extra = redacted_data(extra)
                if error is not None:
                    error = _masked_error(error)
            self.logger.log(level, message, *args, extra=extra, exc_info=error)
        except Exception as failure:  # noqa: BLE001 - telemetry never breaks a run
            self.failed(failure, "logging a record")

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        """Log the stage's start (DEBUG) and end."""
        name = spec.name
        enabled, level = self.logger.isEnabledFor, self.level
        # Decided here: only a map's calls (its items) read an item's key and index.
        item = isinstance(spec.dynamic, MapSpec)

        async def logged(ctx: StageContext) -> Any:
            stage = ctx.stage  # the spec's name but for an item or a nested stage
            if enabled(logging.DEBUG):
                extra = {"run_id": ctx.run_id, "pipeline": ctx.pipeline, "stage": stage,
                         "attempt": ctx.attempt}  # fmt: skip
                if item:
                    extra.update(_item_fields(ctx))
                self._log(logging.DEBUG, "stage %s started", (stage,), extra)
            try:
                output = await call(ctx)
            except BaseException as error:
                if outcome_of_error(error) == FAILED:
                    self._ended(ctx, stage, item, FAILED, logging.ERROR, error)
                else:
                    self._ended(ctx, stage, item, CANCELLED, level)
                raise
            outcome, reason = outcome_of(output)
            if outcome == FAILED:
                self._ended(ctx, stage, item, outcome, logging.WARNING, reason)
            elif enabled(level):
                outcome = RESTORED if restored(ctx, stage) else outcome
                self._ended(ctx, stage, item, outcome, level, reason)
            return output

        logged.__qualname__ = f"logged({name})"
        return logged

    def _ended(
        self,
        ctx: StageContext,
        name: str,
        item: bool,
        outcome: str,
        level: int,
        why: BaseException | str | None = None,
    ) -> None:
        if not self.logger.isEnabledFor(level):
            return
        # From the start of the first attempt, as the scheduler timed it.
        duration = ctx.clock.monotonic() - ctx.started
        extra: dict[str, Any] = {
            "run_id": ctx.run_id,
            "pipeline": ctx.pipeline,
            "stage": name,
            "attempt": ctx.attempts,
            "outcome": outcome,
            "duration": duration,
        }
        if item:
            extra.update(_item_fields(ctx))
        if why is None:
            self._log(level, "stage %s %s in %.3fs", (name, outcome, duration), extra)
        else:
            error = why if isinstance(why, BaseException) else None
            self._log(
                level, "stage %s %s after %.3fs: %s", (name, outcome, duration, why), extra, error
            )

    def wrap_run(self, graph: StageGraph, call: RunCall) -> RunCall:
        """Log the run's start and end."""
        logger, level, pipeline = self.logger, self.level, graph.name
        maps = _Maps.of(graph)

        async def logged_run(run: RunContext) -> RunResult:
            if logger.isEnabledFor(level):
                verb = "resumed" if run.resumed else "started"
                self._log(
                    level, "run %s of %s %s", (run.run_id, pipeline, verb),
                    {"run_id": run.run_id, "pipeline": pipeline},
                )  # fmt: skip
            try:
                result = await call(run)
            except BaseException as error:
                self._unwrapped.pop(id(run), None)
                outcome = outcome_of_error(error)  # cancelled: CancelledError and the like
                failed = outcome == FAILED
                at = logging.ERROR if failed else max(level, logging.WARNING)
                if logger.isEnabledFor(at):
                    self._log(
                        at, "run %s of %s %s: %s",
                        (run.run_id, pipeline, outcome, type(error).__name__),
                        {"run_id": run.run_id, "pipeline": pipeline, "outcome": outcome},
                        error if failed else None,
                    )  # fmt: skip
                raise
            status = result.status
            wrapped = self._unwrapped.pop(id(run), None) is not run
            # A completed run has no failed stage; it may have failed items (of a map
            # under on_item_error="skip" or "collect"), logged here when unwrapped.
            failed = status is not RunStatus.COMPLETED and status is not RunStatus.WAITING
            if (failed and (maps.any or not wrapped)) or (maps.tolerant and not wrapped):
                self._failed_stages(result, maps, wrapped=wrapped)
            at = {
                RunStatus.COMPLETED: level,
                RunStatus.FAILED: logging.ERROR,
                RunStatus.CANCELLED: max(level, logging.WARNING),
                RunStatus.WAITING: level,  # stopped to wait for input: no trouble
            }[status]
            if logger.isEnabledFor(at):
                self._log(
                    at, "run %s of %s %s in %.3fs%s",
                    (run.run_id, pipeline, status.value, result.duration,
                     "" if result.error is None else f": {result.error}"),
                    {"run_id": run.run_id, "pipeline": pipeline, "outcome": status.value,
                     "duration": result.duration},
                )  # fmt: skip
            return result

        logged_run.__qualname__ = f"logged_run({pipeline})"
        return logged_run

    def _failed_stages(self, result: RunResult, maps: _Maps, *, wrapped: bool) -> None:
        """Log what failed in a run whose stages ran unwrapped (``wrapped`` False), as
        wrap() would have: its failed stages and items. Either way, log its map stages
        that failed: a map's calls are its items, so its own end had no record."""
        if wrapped or not maps.any:
            spec_of = maps.graph.spec_of
            for name in result.with_status(StageStatus.FAILED):
                if not wrapped or _is_map(spec_of(name)):
                    self._failed(result, name, result[name])
            return
        for stage in result:  # in order: a map's failed items, then the map
            name = stage.stage
            for index, outcome in enumerate(stage.items):
                # No error: it failed in an earlier driver (a map restored whole), logged then
                if outcome.status is StageStatus.FAILED and outcome.error is not None:
                    key = outcome.stage[len(name) + 1 : -1]
                    self._failed(result, outcome.stage, outcome, key, index)
            if stage.status is StageStatus.FAILED:
                self._failed(result, name, stage)

    def _failed(
        self,
        result: RunResult,
        name: str,
        stage: StageResult,
        key: str | None = None,
        index: int = 0,
    ) -> None:
        error = stage.error
        # Raised: it has a traceback. StageOutput.fail, or an output no stage may
        # return, fails a stage with an error made for it, never raised.
        raised = error is not None and error.__traceback__ is not None
        level = logging.ERROR if raised else logging.WARNING
        if not self.logger.isEnabledFor(level):
            return
        duration = stage.duration or 0.0
        extra: dict[str, Any] = {
            "run_id": result.run_id,
            "pipeline": result.pipeline,
            "stage": name,
            "attempt": stage.attempts,
            "outcome": FAILED,
            "duration": duration,
        }
        if key is not None:
            extra["item_key"] = key
            extra["item_index"] = index
        self._log(
            level, "stage %s %s after %.3fs: %s",
            (name, FAILED, duration, error if raised else stage.reason),
            extra, error if raised else None,
        )  # fmt: skip

    def __repr__(self) -> str:
        return f"<LoggingInterceptor {self.logger.name!r} priority={self.priority}>"


def _is_map(spec: StageSpec | None) -> bool:
    return spec is not None and isinstance(spec.dynamic, MapSpec)


class _Maps(NamedTuple):
    """What a graph's map stages (its own, its subgraphs' and loops') ask of wrap_run."""

    graph: StageGraph
    any: bool  # it has one
    tolerant: bool  # one whose items may fail in a run that completes (skip, collect)

    @classmethod
    def of(cls, graph: StageGraph) -> _Maps:
        return cls(graph, *maps_of(graph))


def _jsonable(value: object) -> object:
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return repr(value)


class _MaskedError(Exception):
    """Stands for an exception whose text holds a known secret, in a log record."""


def _masked_error(error: BaseException) -> BaseException:
    """``error``, or a stand-in with its type's name and its text masked, when its text
    or its traceback hold a known secret (a handler formats it as it likes)."""
    import traceback

    text = "".join(traceback.format_exception(error))
    if not SECRETS.found(text):
        return error
    stand_in = _MaskedError(redacted(f"{type(error).__qualname__}: {error}"))
    stand_in.add_note(redacted(text.rstrip()))
    return stand_in


class JsonFormatter(logging.Formatter):
    """Formats each log record as one JSON object per line.

    Keys: ``ts`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message``,
    then every field the record got through ``extra`` (stageflow's: ``run_id``,
    ``pipeline``, ``stage``, ``attempt``, ``outcome``, ``duration``, ``trace_id``,
    ``span_id``, ...), and ``exc`` with the traceback when there is one. Values
    JSON cannot hold are written as their ``repr``. Fields whose name starts with ``_``
    are private to whoever set them and left out (Ray, once initialised, adds
    ``_ray_timestamp_ns`` to every record of the process).

    Example:
        >>> import logging
        >>> record = logging.LogRecord("stageflow", logging.INFO, "", 0, "hi %s", ("owls",), None)
        >>> record.created = 0.0
        >>> record.stage = "fetch"
        >>> JsonFormatter().format(record)
        '{"ts": "1970-01-01T00:00:00.000+00:00", "level": "INFO", "logger": "stageflow", \
"message": "hi owls", "stage": "fetch"}'
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        out: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out and key[:1] != "_":
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return redacted(json.dumps(out, default=_jsonable, ensure_ascii=False))
