"""What a run-level interceptor hook sees of the run it wraps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from ._clock import LoopClock
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._durable import DurableRun
    from ._graph import StageGraph
    from ._result import RunResult
    from .ports import Clock

__all__ = ["RunCall", "RunContext"]

MAX_LABELS: Final = 64
"""At most this many labels per run."""
MAX_LABEL_KEY: Final = 256
"""A label's key: 1 to this many characters."""
MAX_LABEL_VALUE: Final = 1024
"""A label's value: at most this many characters (may be empty)."""

_NO_LABELS: Final[Mapping[str, str]] = MappingProxyType({})


def check_labels(labels: object) -> Mapping[str, str]:
    """``labels`` checked and copied, read-only (ConfigurationError naming what is wrong)."""
    if labels is None:
        return _NO_LABELS
    if not isinstance(labels, Mapping):
        raise ConfigurationError(
            f"labels must be a mapping of str to str, not {type(labels).__name__} {_shown(labels)}",
            field="labels",
            value=labels,
        )
    if len(labels) > MAX_LABELS:
        raise ConfigurationError(
            f"a run has at most {MAX_LABELS} labels, not {len(labels)}",
            field="labels",
            value=labels,
        )
    for key, value in labels.items():
        if not isinstance(key, str) or not 0 < len(key) <= MAX_LABEL_KEY:
            raise ConfigurationError(
                f"a label's key must be a str of 1 to {MAX_LABEL_KEY} characters, "
                f"not {_shown(key)}",
                field="labels",
                value=key,
            )
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE:
            raise ConfigurationError(
                f"label {key!r}: the value must be a str of at most {MAX_LABEL_VALUE} "
                f"characters, not {_shown(value)}",
                field="labels",
                value=value,
            )
    return MappingProxyType(dict(labels)) if labels else _NO_LABELS


def frozen_labels(labels: Mapping[str, str] | None) -> Mapping[str, str]:
    """Labels as a read-only mapping (not checked: a resume's come from the store)."""
    if not labels:
        return _NO_LABELS
    return labels if isinstance(labels, MappingProxyType) else MappingProxyType(dict(labels))


def _shown(value: object) -> str:
    """A value for an error message: its repr, cut short if long."""
    if isinstance(value, str) and len(value) > 40:
        return f"{value[:40]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


class RunContext:
    """One run, as an interceptor's ``wrap_run`` hook sees it.

    Attributes:
        run_id: the run's id.
        graph: the graph being run.
        data: the run's initial data (read-only).
        resumed: True when :meth:`Engine.resume` drives the run.
        timeout: the run's timeout in seconds, or None.
        labels: the run's labels (read-only; empty by default): those given to
            :meth:`Engine.run`, or on a resume those the store kept with the run.
        durable: the run's link to its store (see ``StageContext.durable``), or None
            when the run is not durable.
        clock: the engine's clock: time the run on it.
        wait: True when the driver keeps waiting for input instead of stopping the run
            to wait (``Engine.run(wait=True)``).
    """

    __slots__ = ("clock", "data", "durable", "graph", "labels", "resumed", "run_id", "timeout",
                 "wait")  # fmt: skip

    def __init__(
        self,
        graph: StageGraph,
        run_id: str,
        data: Mapping[str, Any],
        *,
        resumed: bool = False,
        timeout: float | None = None,
        durable: DurableRun | None = None,
        labels: Mapping[str, str] | None = None,
        clock: Clock | None = None,
        wait: bool = False,
    ) -> None:
        self.graph = graph
        self.wait = wait
        self.run_id = run_id
        self.data = data
        self.resumed = resumed
        self.timeout = timeout
        self.labels: Mapping[str, str] = frozen_labels(labels)
        self.durable = durable
        self.clock: Clock = clock if clock is not None else LoopClock()

    @property
    def pipeline(self) -> str:
        """The pipeline's name."""
        return self.graph.name

    def __repr__(self) -> str:
        resumed = " resumed" if self.resumed else ""
        return f"<RunContext {self.run_id!r} pipeline={self.graph.name!r}{resumed}>"


RunCall: TypeAlias = Callable[[RunContext], Awaitable["RunResult"]]
"""What ``wrap_run`` wraps and returns: drives one run to its RunResult."""
