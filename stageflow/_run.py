"""What a run-level interceptor hook sees of the run it wraps."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from ._durable import Checkpointing
    from ._graph import StageGraph
    from ._result import RunResult

__all__ = ["RunCall", "RunContext"]


class RunContext:
    """One run, as an interceptor's ``wrap_run`` hook sees it.

    Attributes:
        run_id: the run's id.
        graph: the graph being run.
        data: the run's initial data (read-only).
        resumed: True when :meth:`Engine.resume` drives the run.
        timeout: the run's timeout in seconds, or None.
    """

    __slots__ = ("_checkpointing", "data", "graph", "resumed", "run_id", "timeout")

    def __init__(
        self,
        graph: StageGraph,
        run_id: str,
        data: Mapping[str, Any],
        *,
        resumed: bool = False,
        timeout: float | None = None,
        checkpointing: Checkpointing | None = None,
    ) -> None:
        self.graph = graph
        self.run_id = run_id
        self.data = data
        self.resumed = resumed
        self.timeout = timeout
        self._checkpointing = checkpointing

    @property
    def pipeline(self) -> str:
        """The pipeline's name."""
        return self.graph.name

    def __repr__(self) -> str:
        resumed = " resumed" if self.resumed else ""
        return f"<RunContext {self.run_id!r} pipeline={self.graph.name!r}{resumed}>"


RunCall: TypeAlias = Callable[[RunContext], Awaitable["RunResult"]]
"""What ``wrap_run`` wraps and returns: drives one run to its RunResult."""
