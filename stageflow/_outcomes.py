"""The outcomes of a run's stages, stored by column.

A run records each stage's status, output, timings and attempts into flat
arrays indexed by stage number, and builds a :class:`StageResult` only when
someone asks for it. On the success path that is a handful of stores per stage
instead of an object the garbage collector must track for the rest of the run.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final

from ._result import StageResult
from ._status import CANCELLED, CODE, COMPLETED, FAILED, NONE, SKIPPED, STATUS

__all__ = ["CANCELLED", "COMPLETED", "FAILED", "NONE", "SKIPPED", "Outcomes", "StageResults"]

_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})
_SMALL: Final = 64
_TIMES: Final = array("d", bytes(16 * _SMALL))  # zeros, sliced (copied) by small Outcomes
_ATTEMPTS: Final = array("I", bytes(4 * _SMALL))


class Outcomes:
    """Per-stage outcomes of one run, by stage number.

    Attributes:
        status: a status code per stage (``NONE`` until it ends).
        outputs: the output data of each stage (None until it has one).
        times: ``started, ended`` per stage, seconds since the run started.
        attempts: calls made per stage (0: it never ran).
        errors: the exception of each failed stage, by number.
        reasons: why a stage was skipped, failed or cancelled, by number.
        restored: for stages whose outcome an earlier driver stored, by number: the
            attempts it took and when it started and ended (that driver's seconds
            since its run started), as ``StageContext.report_restored`` said. None
            until a stage is restored: a run without a store never makes it.
    """

    __slots__ = (
        "attempts",
        "errors",
        "names",
        "outputs",
        "reasons",
        "restored",
        "status",
        "times",
    )

    def __init__(self, names: tuple[str, ...]) -> None:
        n = len(names)
        self.names = names
        self.status = bytearray(n)
        self.outputs: list[Mapping[str, Any] | None] = [None] * n
        if n <= _SMALL:  # a slice of zeros is cheaper (a loop makes one per iteration)
            self.times = _TIMES[: 2 * n]
            self.attempts = _ATTEMPTS[:n]
        else:
            self.times = array("d", bytes(16 * n))
            self.attempts = array("I", bytes(4 * n))
        self.errors: dict[int, BaseException] = {}
        self.reasons: dict[int, str] = {}
        self.restored: dict[int, tuple[int, float | None, float | None]] | None = None

    def taken(self, i: int) -> tuple[int, float | None, float | None]:
        """Stage i's attempts, start and end: as restored, else as this run recorded them."""
        restored = self.restored
        if restored is not None and i in restored:
            return restored[i]
        attempts = self.attempts[i]
        if attempts or self.status[i] == CANCELLED:
            return attempts, self.times[2 * i], self.times[2 * i + 1]
        return attempts, None, None

    def result(self, i: int, items: tuple[StageResult, ...] = ()) -> StageResult:
        """Stage i's StageResult, built now."""
        attempts, started, ended = self.taken(i)
        output = self.outputs[i]
        return StageResult(
            self.names[i],
            STATUS[self.status[i]],
            _EMPTY if output is None else output,
            self.errors.get(i),
            self.reasons.get(i),
            attempts,
            started,
            ended,
            items,
        )

    def results(self) -> tuple[StageResult, ...]:
        """Every outcome's StageResult, in order (a map's items)."""
        return tuple(self.result(i) for i in range(len(self.names)))

    def counts(self) -> dict[str, int]:
        """How many stages ended with each status."""
        return {str(STATUS[code]): self.status.count(code) for code in CODE.values()}


class StageResults(Mapping[str, StageResult]):
    """A run's stage results by name, each built on first access: the graph's stages in
    graph order, then those of subgraphs and loop iterations (``etl.fetch``,
    ``refine[2].critique``) in the order they ran. A map stage's result holds its items'.

    ``parts`` are the run's nested outcomes as ``(map, outcomes)``: the items of the map
    stage of that full name (``refine[2].score``), or, with ``map`` None, the stages of a
    subgraph or a loop iteration.
    """

    __slots__ = ("_built", "_index", "_items", "_nested", "_outcomes", "_parts")

    def __init__(
        self,
        outcomes: Outcomes,
        index: Mapping[str, int],
        parts: list[tuple[str | None, Outcomes]] | None = None,
    ) -> None:
        self._outcomes = outcomes
        self._index = index
        self._parts = parts or []
        self._built: dict[str, StageResult] = {}
        self._nested: dict[str, tuple[Outcomes, int]] | None = None
        self._items: dict[str, Outcomes] = {}

    def _where(self) -> dict[str, tuple[Outcomes, int]]:
        """Where each nested stage's outcome is (and, in ``_items``, each map's items)."""
        nested = self._nested
        if nested is None:
            nested = {}
            for owner, outcomes in self._parts:
                if owner is None:
                    for i, name in enumerate(outcomes.names):
                        nested[name] = (outcomes, i)
                else:  # a map run again (a retry of a loop) replaces its items
                    self._items[owner] = outcomes
            self._nested = nested
        return nested

    def __getitem__(self, name: str) -> StageResult:
        result = self._built.get(name)
        if result is not None:
            return result
        i = self._index.get(name)
        if i is not None:
            outcomes = self._outcomes
        elif self._parts and name in self._where():
            outcomes, i = self._where()[name]
        else:
            raise KeyError(name)
        items: tuple[StageResult, ...] = ()
        if self._parts:
            self._where()
            found = self._items.get(name)
            if found is not None:
                items = found.results()
        result = self._built[name] = outcomes.result(i, items)
        return result

    def __iter__(self) -> Iterator[str]:
        yield from self._outcomes.names
        if self._parts:
            yield from self._where()

    def __len__(self) -> int:
        return len(self._outcomes.names) + (len(self._where()) if self._parts else 0)

    def __contains__(self, name: object) -> bool:
        if name in self._index:
            return True
        return bool(self._parts) and isinstance(name, str) and name in self._where()

    def __repr__(self) -> str:
        return f"<StageResults of {len(self)} stages>"
