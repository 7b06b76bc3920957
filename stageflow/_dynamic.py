"""What a dynamic stage declares: a map over a list known at run time, a loop, a subgraph.

Frozen values kept on a stage's :class:`~stageflow.StageSpec` (``spec.dynamic``),
validated by ``with_map`` / ``with_loop`` / ``with_subgraph`` and ``build()``. What
they decide at run time (the items, each iteration) the engine records in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

if TYPE_CHECKING:
    from ._context import StageContext
    from ._graph import StageGraph

__all__ = ["LoopSpec", "MapSpec"]

ITEM_ERRORS: Final = ("fail", "skip", "collect")
EXHAUSTED: Final = ("fail", "complete")


class MapSpec(NamedTuple):
    """A map stage's declaration: its stage runs once per item of a sequence.

    Attributes:
        over: ``"stage.field"`` naming a dependency's output field, or a callable
            ``ctx -> Sequence`` called once with the map's context.
        key: item -> str, the items' stable identity (None: the index).
        max_parallel: at most this many items at once (None: no limit).
        on_item_error: ``"fail"``, ``"skip"`` or ``"collect"``.
    """

    over: str | Callable[[StageContext], Sequence[Any]]
    key: Callable[[Any], str] | None = None
    max_parallel: int | None = None
    on_item_error: str = "fail"

    @property
    def source(self) -> tuple[str, str] | None:
        """``(stage, field)`` when ``over`` names a dependency's field, else None."""
        if isinstance(self.over, str):
            stage, _, field = self.over.partition(".")
            return stage, field
        return None


class LoopSpec(NamedTuple):
    """A loop or subgraph stage's declaration: a graph run inside the stage.

    A subgraph is a loop of one iteration without ``until``.

    Attributes:
        body: the graph run once per iteration.
        output: the body's stage whose output is an iteration's output.
        until: ``outputs -> bool`` called after each iteration with its output; true
            ends the loop (None: a subgraph).
        max_iterations: at most this many iterations.
        on_exhausted: ``"fail"`` or ``"complete"`` (with the last iteration's output)
            when ``max_iterations`` ran and ``until`` never held.
    """

    body: StageGraph
    output: str
    until: Callable[[Mapping[str, Any]], bool] | None = None
    max_iterations: int = 1
    on_exhausted: str = "fail"

    @property
    def is_loop(self) -> bool:
        """True for ``with_loop``, False for ``with_subgraph``."""
        return self.until is not None

    def prefix(self, stage: str, iteration: int) -> str:
        """What the body's stage names are prefixed with in one iteration:
        ``refine[2].`` for a loop, ``etl.`` for a subgraph."""
        return f"{stage}[{iteration}]." if self.until is not None else f"{stage}."
