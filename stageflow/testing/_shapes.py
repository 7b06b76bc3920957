"""Graph shapes for tests: what the strategies generate, usable without Hypothesis."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._pipeline import Pipeline
from ..errors import GraphError


async def _noop(ctx: Any) -> dict[str, Any]:
    return {"stage": ctx.stage}


@dataclass(frozen=True)
class DagShape:
    """The shape of a graph: stage names and their dependencies, in declaration order.

    ``a in shape.ancestors(b)`` exactly when ``b in shape.descendants(a)``.

    Attributes:
        stages: ``(name, dependencies)`` pairs; a dependency may be declared later.

    Example:
        >>> shape = DagShape((("fetch", ()), ("parse", ("fetch",)), ("index", ("parse",))))
        >>> sorted(shape.ancestors("index")), sorted(shape.descendants("fetch"))
        (['fetch', 'parse'], ['index', 'parse'])
    """

    stages: tuple[tuple[str, tuple[str, ...]], ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The stage names, in declaration order."""
        return tuple(name for name, _ in self.stages)

    def dependencies(self, name: str) -> tuple[str, ...]:
        """The dependencies declared for ``name``."""
        return self._dependencies(name)[name]

    def ancestors(self, name: str) -> frozenset[str]:
        """Every stage that ``name`` depends on, directly or not."""
        return frozenset(_reachable(self._dependencies(name), name))

    def descendants(self, name: str) -> frozenset[str]:
        """Every stage that depends on ``name``, directly or not."""
        dependents: dict[str, list[str]] = {n: [] for n in self._dependencies(name)}
        for n, deps in self.stages:
            for d in deps:
                dependents[d].append(n)
        return frozenset(_reachable(dependents, name))

    def _dependencies(self, name: str) -> dict[str, tuple[str, ...]]:
        """Each stage's dependencies; a KeyError naming the stages if ``name`` is not one."""
        deps = dict(self.stages)
        if not isinstance(name, str) or name not in deps:
            known = ", ".join(repr(n) for n in deps) or "none"
            raise KeyError(f"{name!r} is not a stage of this shape (its stages: {known})")
        return deps

    def pipeline(
        self,
        stage: object | Callable[[str], object] = _noop,
        *,
        name: str = "generated",
        per_stage: bool = False,
    ) -> Pipeline:
        """A Pipeline of this shape; every stage is ``stage`` (or ``stage(name)`` with
        ``per_stage=True``)."""
        p = Pipeline(name)
        for n, deps in self.stages:
            p = p.with_stage(n, stage(n) if per_stage else stage, dependencies=deps)  # type: ignore[operator, arg-type]
        return p


@dataclass(frozen=True)
class InvalidDagShape:
    """A graph declaration that must be refused, and the GraphError subclass expected."""

    stages: tuple[tuple[str, tuple[str, ...]], ...]
    expected: type[GraphError]

    def build(self, stage: object = _noop) -> Any:
        """Declare and build it: must raise ``expected``."""
        p = Pipeline("invalid")
        for n, deps in self.stages:
            p = p.with_stage(n, stage, dependencies=deps)  # type: ignore[arg-type]
        return p.build()


def _reachable(edges: Mapping[str, Iterable[str]], name: str) -> set[str]:
    """Every name reachable from ``name`` along ``edges`` (not ``name`` itself, unless cyclic)."""
    seen: set[str] = set()
    stack = list(edges[name])
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(edges[n])
    return seen
