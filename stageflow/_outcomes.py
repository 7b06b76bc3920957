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

    def result(self, i: int) -> StageResult:
        """Stage i's StageResult, built now."""
        attempts, started, ended = self.taken(i)
        output = self.outputs[i]
        return StageResult(
            self.names[i],
            STATUS[self.status[i]],  # type: ignore[arg-type]
            _EMPTY if output is None else output,
            self.errors.get(i),
            self.reasons.get(i),
            attempts,
            started,
            ended,
        )

    def counts(self) -> dict[str, int]:
        """How many stages ended with each status."""
        return {str(STATUS[code]): self.status.count(code) for code in CODE.values()}


class StageResults(Mapping[str, StageResult]):
    """A run's stage results by name, in graph order; each built on first access."""

    __slots__ = ("_built", "_index", "_outcomes")

    def __init__(self, outcomes: Outcomes, index: Mapping[str, int]) -> None:
        self._outcomes = outcomes
        self._index = index
        self._built: dict[int, StageResult] = {}

    def __getitem__(self, name: str) -> StageResult:
        i = self._index[name]
        result = self._built.get(i)
        if result is None:
            result = self._built[i] = self._outcomes.result(i)
        return result

    def __iter__(self) -> Iterator[str]:
        return iter(self._outcomes.names)

    def __len__(self) -> int:
        return len(self._outcomes.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return f"<StageResults of {len(self)} stages>"
