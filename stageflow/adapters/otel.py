"""OTelEventSink: stageflow's events as OpenTelemetry log records (and span events).

Needs only the OpenTelemetry API (``opentelemetry-api`` 1.38 or later, for the
keyword form of ``Logger.emit``); what becomes of the records is the SDK's
business (``pip install stageflow[otel]``), configured by the application.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber, get_logger_provider

from .._events import Event, EventType
from .._version import __version__
from ..errors import ConfigurationError
from ..interceptors._telemetry import TelemetryErrors

if TYPE_CHECKING:
    from opentelemetry._logs import Logger, LoggerProvider
    from opentelemetry.util.types import AttributeValue

__all__ = ["OTelEventSink"]

LOGGER_NAME: Final = "stageflow"
DATA_PREFIX: Final = "stageflow.data."

_WARNING_TYPES: Final = frozenset({EventType.BUDGET_EXCEEDED.value, EventType.CIRCUIT_OPENED.value})
_SCALARS: Final = frozenset({str, bool, int, float})


def _value(value: object) -> AttributeValue:
    """``value`` as an OTel attribute value: itself if OTel can hold it, else its ``repr``.

    OTel holds str, bool, int, float and homogeneous sequences of one of those.
    """
    if isinstance(value, str):
        return str(value)  # the same object for a str; the plain value of a StrEnum member
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)  # an IntEnum member: its plain value
    if isinstance(value, float):
        return float(value)
    if isinstance(value, list | tuple):
        kinds = {type(item) for item in value}
        if not kinds or (len(kinds) == 1 and kinds <= _SCALARS):
            return cast("AttributeValue", tuple(value))
    return repr(value)


def event_attributes(event: Event) -> dict[str, AttributeValue]:
    """The attributes an event's log record and span event carry (``stageflow.*``)."""
    attributes: dict[str, AttributeValue] = {
        "stageflow.event": str(event.type),
        "stageflow.run_id": event.run_id,
        "stageflow.pipeline": event.pipeline,
    }
    if event.stage is not None:
        attributes["stageflow.stage"] = event.stage
    attributes["stageflow.seq"] = event.seq
    attributes["stageflow.attempt"] = event.attempt
    data: Mapping[str, object] = event.data
    for key, value in data.items():
        attributes[DATA_PREFIX + str(key)] = _value(value)
    return attributes


class OTelEventSink(TelemetryErrors):
    """Sends every event to OpenTelemetry: a log record each, and a span event.

    Each event becomes a log record of the logger ``"stageflow"``, through the
    OpenTelemetry Logs API:

    - ``event_name`` and ``body``: the event's type (``stage.completed``, ``custom.x``);
    - ``timestamp``: the event's ``ts``, in nanoseconds;
    - severity ``INFO``, or ``WARN`` for ``*.failed``, ``budget.exceeded`` and
      ``circuit.opened``;
    - attributes: ``stageflow.event`` (the type), ``stageflow.run_id``,
      ``stageflow.pipeline``, ``stageflow.stage`` (absent for run events),
      ``stageflow.seq``, ``stageflow.attempt``, and each item of the event's data
      as ``stageflow.data.<key>``. A value OpenTelemetry cannot hold (anything but
      str, bool, int, float or a homogeneous list or tuple of one of those) is
      sent as its ``repr``;
    - the current context, so the record carries the trace and span ids of the
      span current when the event was emitted. With
      :class:`~stageflow.TracingInterceptor`, that is the stage's span for the
      events emitted while a stage runs (``custom.*``, ``stage.retrying``,
      ``attempt.started``, ``circuit.*``, ``checkpoint.saved``) and the run's span for the others
      (``run.*``, ``stage.started``, a stage's end).

    With ``span_events=True`` the event is also added, with the same name,
    attributes and timestamp, to the current span if it is recording. It is off
    by default: the TracingInterceptor's spans already show the lifecycle, and
    a span keeps only its last 128 events by default (the SDK's limit), which
    a large run's lifecycle events would fill.

    Telemetry never breaks a run: an OpenTelemetry call that raises (an exporter,
    a processor) is counted in ``errors``, the first is logged (logger
    ``"stageflow"``) and the sink goes on. ``try_emit`` does its work at once: use
    it directly, not behind a :class:`~stageflow.BufferedSink`, whose background
    task would not see the stage's span.

    Args:
        logger_provider: an OpenTelemetry ``LoggerProvider`` (default: the global
            one, as ``opentelemetry._logs.get_logger_provider()`` gives it; a
            provider set globally later is still used).
        span_events: also add each event to the current recording span.

    Example:
        >>> from stageflow import Engine
        >>> from stageflow.adapters.otel import OTelEventSink
        >>> engine = Engine(sink=OTelEventSink())
    """

    name = "OTelEventSink"

    def __init__(
        self, *, logger_provider: LoggerProvider | None = None, span_events: bool = False
    ) -> None:
        if logger_provider is not None and (
            isinstance(logger_provider, type)
            or not callable(getattr(logger_provider, "get_logger", None))
        ):
            raise ConfigurationError(
                f"logger_provider must be an OpenTelemetry LoggerProvider instance, "
                f"not {logger_provider!r}",
                field="logger_provider",
                value=logger_provider,
            )
        if not isinstance(span_events, bool):
            raise ConfigurationError(
                f"span_events must be True or False, not {span_events!r}",
                field="span_events",
                value=span_events,
            )
        provider = logger_provider if logger_provider is not None else get_logger_provider()
        self.logger_provider: LoggerProvider = provider
        self.span_events = span_events
        self.errors = 0
        self._logger: Logger = provider.get_logger(LOGGER_NAME, __version__)

    def try_emit(self, event: Event) -> None:
        """Emit the event's log record (and span event) now; never raises."""
        try:
            type_ = str(event.type)
            attributes = event_attributes(event)
            timestamp = int(event.ts * 1e9)
            context = otel_context.get_current()
        except Exception as error:  # noqa: BLE001 - a repr() that raises, say
            self.failed(error, f"converting {event.type}")
            return
        warning = type_.endswith(".failed") or type_ in _WARNING_TYPES
        try:
            self._logger.emit(
                timestamp=timestamp,
                context=context,
                severity_number=SeverityNumber.WARN if warning else SeverityNumber.INFO,
                severity_text="WARN" if warning else "INFO",
                body=type_,
                attributes=attributes,
                event_name=type_,
            )
        except Exception as error:  # noqa: BLE001 - telemetry never breaks a run
            self.failed(error, f"emitting the log record of {event.type}")
        if self.span_events:
            try:
                span = trace.get_current_span(context)
                if span.is_recording():
                    span.add_event(type_, attributes, timestamp)
            except Exception as error:  # noqa: BLE001 - telemetry never breaks a run
                self.failed(error, f"adding {event.type} to the span")

    async def emit(self, event: Event) -> None:
        """Same as :meth:`try_emit`: this sink never waits."""
        self.try_emit(event)

    def __repr__(self) -> str:
        return f"OTelEventSink(logger_provider={self.logger_provider!r})"
