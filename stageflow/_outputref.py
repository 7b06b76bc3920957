"""OutputRef: a stage's output data left where a runner ran its call."""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from typing import Any

from ._stage import StageOutput

__all__ = ["OutputRef", "fetched"]


class OutputRef(Mapping[str, Any], abc.ABC):
    """A stage's output data left where its call ran (a runner's object store): the
    engine keeps the reference, and a runner hands it on to a dependent it runs too,
    without the data travelling through the engine's process.

    A runner returns ``StageOutput(status, ref)`` from its call with its own subclass.
    The engine fetches the data (:meth:`fetch`, once; it is kept) where it needs it: a
    checkpoint storing it, a dependent running elsewhere (in the engine, on another
    runner), a dependent with a ``when=`` condition or a map, loop or subgraph reading
    it, an ``output=`` model checking it, a stage nothing depends on (its output is the
    run's result). Anything else reading it as a Mapping (a ``RunResult`` read after the
    run) fetches it then, blocking until it is there.

    A subclass gives :meth:`load` (awaitable) and :meth:`load_blocking`.
    """

    __slots__ = ("_data", "runner")

    def __init__(self, runner: object) -> None:
        self.runner = runner  # the runner that holds it: it may hand it on
        self._data: dict[str, Any] | None = None

    @abc.abstractmethod
    async def load(self) -> Mapping[str, Any]:
        """The data, brought from where it is."""

    @abc.abstractmethod
    def load_blocking(self) -> Mapping[str, Any]:
        """The data, brought from where it is, blocking the calling thread meanwhile."""

    @property
    def fetched(self) -> bool:
        """Whether the data is in this process."""
        return self._data is not None

    async def fetch(self) -> dict[str, Any]:
        """The data, fetched once and kept."""
        if self._data is None:
            data = await self.load()
            self._data = data if type(data) is dict else dict(data)
        return self._data

    def _value(self) -> dict[str, Any]:
        if self._data is None:
            data = self.load_blocking()
            self._data = data if type(data) is dict else dict(data)
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._value()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._value())

    def __len__(self) -> int:
        return len(self._value())

    def __contains__(self, key: object) -> bool:
        return key in self._value()

    def __reduce__(self) -> tuple[Any, ...]:
        return dict, (self._value(),)  # pickled, it is its data

    def __repr__(self) -> str:
        held = repr(self._data) if self._data is not None else "not fetched"
        return f"<{type(self).__name__} {held}>"


async def fetched(out: Any) -> Any:
    """``out`` (what a stage's call returned) with an :class:`OutputRef` in it fetched."""
    if isinstance(out, StageOutput) and isinstance(out.data, OutputRef):
        await out.data.fetch()
    return out
