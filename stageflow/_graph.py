"""StageGraph: a validated, frozen pipeline with the indices a run needs precomputed."""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from ._dynamic import InputSpec
from ._spec import StageSpec
from .errors import (
    CycleError,
    DuplicateDependencyError,
    DuplicateStageError,
    EmptyPipelineError,
    InvalidOptionError,
    SelfDependencyError,
    UnknownDependencyError,
)

if TYPE_CHECKING:
    from ._context import StageContext
    from ._result import RunResult

__all__ = ["StageGraph"]


_name_of = operator.itemgetter(0)  # StageSpec is a NamedTuple: its name, in C

# What graph.run() runs the graph with. The engine sits two layers above this module and
# installs itself here when it is imported (stageflow imports it), so that this module
# needs nothing from the layers above it.
_DEFAULT_RUN: list[Callable[..., Awaitable[RunResult]]] = []


def set_default_run(run: Callable[..., Awaitable[RunResult]]) -> None:
    """Make ``run(graph, data, **kwargs)`` what :meth:`StageGraph.run` calls."""
    _DEFAULT_RUN[:] = [run]


class StageGraph:
    """A frozen, validated graph of stages, made by :meth:`Pipeline.build`.

    Stages are numbered in declaration order; ``successors``, ``in_degree`` (and
    ``predecessors``) are indexed by that number, so a run is O(V + E).

    Attributes:
        name: the pipeline's name.
        stages: the stage specs, in declaration order.
        index: stage name -> its number.
        successors: for each stage, the numbers of the stages that depend on it.
        in_degree: for each stage, how many dependencies it has.
        roots: the numbers of the stages without dependencies.
        names: the stage names, in declaration order.
        guards: stage number -> its ``when`` condition, for the stages that have one.
        routes: stage number -> the numbers of its ``routes``, for ROUTE stages.
    """

    __slots__ = (
        "__weakref__",
        "guards",
        "in_degree",
        "index",
        "name",
        "names",
        "roots",
        "routes",
        "stages",
        "successors",
    )

    name: str
    names: tuple[str, ...]
    stages: tuple[StageSpec, ...]
    index: Mapping[str, int]
    successors: tuple[tuple[int, ...], ...]
    in_degree: tuple[int, ...]
    roots: tuple[int, ...]
    guards: Mapping[int, Callable[[StageContext], bool]]
    routes: Mapping[int, frozenset[int]]

    def __init__(self) -> None:
        raise TypeError("a StageGraph is made by Pipeline(...).build()")

    @classmethod
    def _from_specs(cls, name: str, specs: Sequence[StageSpec]) -> StageGraph:
        if not specs:
            raise EmptyPipelineError.of(name)
        index: dict[str, int] = {}
        setdefault = index.setdefault
        for i, spec in enumerate(specs):
            if setdefault(spec.name, i) != i:
                raise DuplicateStageError(
                    f"pipeline {name!r}: two stages are named {spec.name!r}", stage=spec.name
                )
        n = len(specs)
        successors: list[list[int]] = [[] for _ in range(n)]
        backward_only = True  # every dependency declared before its dependent: no cycle possible
        dynamic: list[int] = []  # stages with a condition or routes
        for i, spec in enumerate(specs):
            if spec.when is not None or spec.routes is not None:
                dynamic.append(i)
            for dep in spec.dependencies:
                j = index.get(dep)
                if j is None:
                    raise UnknownDependencyError(
                        f"stage {spec.name!r} depends on {dep!r}, which is no stage of "
                        f"pipeline {name!r}",
                        stage=spec.name,
                        dependency=dep,
                    )
                if j >= i:
                    if j == i:
                        raise SelfDependencyError(
                            f"stage {spec.name!r} depends on itself", stage=spec.name
                        )
                    backward_only = False
                succ = successors[j]
                if succ and succ[-1] == i:  # i's dependencies are appended together
                    raise DuplicateDependencyError(
                        f"stage {spec.name!r} lists dependency {dep!r} more than once",
                        stage=spec.name,
                        dependency=dep,
                    )
                succ.append(i)
        in_degree = tuple(len(spec.dependencies) for spec in specs)
        if not backward_only:
            _check_acyclic(specs, successors, in_degree)
        guards: dict[int, Callable[[StageContext], bool]] = {}
        routes: dict[int, frozenset[int]] = {}
        for i in dynamic:
            spec = specs[i]
            if spec.when is not None:
                guards[i] = spec.when
            if spec.routes is not None:
                routes[i] = _route_targets(name, spec, index, successors[i])
        graph = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(graph, "name", name)
        setattr_(graph, "stages", tuple(specs))
        setattr_(graph, "names", tuple(map(_name_of, specs)))
        setattr_(graph, "index", MappingProxyType(index))
        setattr_(graph, "successors", tuple(map(tuple, successors)))
        setattr_(graph, "in_degree", in_degree)
        setattr_(graph, "roots", tuple(i for i, d in enumerate(in_degree) if d == 0))
        setattr_(graph, "guards", MappingProxyType(guards))
        setattr_(graph, "routes", MappingProxyType(routes))
        return graph

    @property
    def predecessors(self) -> tuple[tuple[int, ...], ...]:
        """For each stage, the numbers of its dependencies, in declaration order.

        Computed on each access (a run only needs ``successors`` and ``in_degree``).
        """
        index = self.index
        return tuple(tuple(index[d] for d in spec.dependencies) for spec in self.stages)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"StageGraph is frozen; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"StageGraph is frozen; cannot delete {name!r}")

    def __len__(self) -> int:
        return len(self.stages)

    def __iter__(self) -> Iterator[StageSpec]:
        return iter(self.stages)

    def __contains__(self, name: object) -> bool:
        return name in self.index

    def __getitem__(self, name: str) -> StageSpec:
        """The spec of the stage called ``name`` (KeyError if there is none)."""
        return self.stages[self.index[name]]

    def spec_of(self, path: str) -> StageSpec | None:
        """The spec of the stage ``path`` names in a run, or None: a stage's name, a map's
        item (``score[3]``), a stage of a subgraph (``etl.fetch``) or of a loop's
        iteration (``refine[2].critique``), at any depth."""
        i = self.index.get(path)
        if i is not None:
            return self.stages[i]
        cut = min((k for k in (path.find("["), path.find(".")) if k > 0), default=-1)
        if cut < 0 or path[:cut] not in self.index:
            return None
        spec = self.stages[self.index[path[:cut]]]
        dynamic = spec.dynamic
        rest = path[cut:]
        if dynamic is None:
            return None
        body = getattr(dynamic, "body", None)
        if body is None:  # a map: anything in brackets is one of its items
            if isinstance(dynamic, InputSpec) and dynamic.map is None:
                return None  # one input, no items
            return spec if rest.startswith("[") and rest.endswith("]") else None
        if rest.startswith("["):  # a loop's iteration: [n].stage
            close = rest.find("].")
            if close < 0 or not rest[1:close].isdigit():
                return None
            rest = rest[close + 1 :]
        return body.spec_of(rest[1:]) if rest.startswith(".") else None

    def descendants(self, name: str) -> frozenset[str]:
        """The names of every stage that depends, directly or not, on ``name``."""
        seen: set[int] = set()
        stack = list(self.successors[self.index[name]])
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(self.successors[i])
        return frozenset(self.stages[i].name for i in seen)

    def to_mermaid(self) -> str:
        """The graph as a Mermaid flowchart.

        Optional dependencies are dotted. A ROUTE stage is a rhombus (``s1{"classify"}``)
        whose edges to its routes are labelled ``route``; the edges into a stage with
        ``when=`` are labelled ``when`` (a stage without dependencies says ``(when)``
        in its box); a map is a subroutine box (``s2[["score: map over split.items"]]``);
        a subgraph, or a loop's body, is a ``subgraph`` block of its stages, named as
        in a run (``etl.fetch``; ``refine.critique`` in a block titled
        ``refine: loop ≤5``), that the stage's edges start from and end at.
        """
        lines = ["flowchart TD"]
        _mermaid(self, "s", "", "    ", lines)
        return "\n".join(lines) + "\n"

    def to_dot(self) -> str:
        """The graph in Graphviz DOT.

        Optional dependencies are dashed. A ROUTE stage is a diamond whose edges to its
        routes are labelled ``route``; the edges into a stage with ``when=`` are
        labelled ``when`` (a stage without dependencies says ``(when)`` in its label);
        a map is a ``box3d`` labelled ``score: map over split.items``; a subgraph, or a
        loop's body, is a ``cluster_`` subgraph of its stages, named as in a run
        (``etl.fetch``; ``refine.critique`` in a cluster labelled ``refine: loop ≤5``),
        which the stage's edges start from (its output stage) and end at (its first
        stage) with ``compound=true``.
        """
        lines = [f'digraph "{self.name}" {{', "    rankdir=LR;", "    node [shape=box];"]
        if any(_body(spec) is not None for spec in self.stages):
            lines.insert(2, "    compound=true;")
        _dot(self, "", "    ", lines)
        lines.append("}")
        return "\n".join(lines) + "\n"

    async def run(
        self, data: Mapping[str, Any] | StageContext | None = None, **kwargs: Any
    ) -> RunResult:
        """Run this graph on a default :class:`~stageflow.Engine`: a convenience for
        scripts and notebooks, the same as ``await Engine().run(graph, data)``.

        ``kwargs`` go to :meth:`Engine.run` (``run_id``, ``timeout``, ``labels``).

        stageflow-core's ``graph.run(ctx)``, with a hand-built entry context, still
        runs (deprecated): its snapshot becomes the run's data (docs/migration.md).
        """
        if data is not None and not isinstance(data, Mapping):
            from ._legacy import entry_run

            data, kwargs = entry_run(data, kwargs)
        return await _DEFAULT_RUN[0](self, data, **kwargs)

    def __repr__(self) -> str:
        return f"<StageGraph {self.name!r} with {len(self.stages)} stages>"


def _route_targets(
    pipeline: str, spec: StageSpec, index: Mapping[str, int], successors: list[int]
) -> frozenset[int]:
    """The numbers of a ROUTE stage's routes, each checked to be a direct successor."""
    assert spec.routes is not None
    targets = []
    for target in spec.routes:
        j = index.get(target)
        if j is None or j not in successors:
            what = "no stage of pipeline " + repr(pipeline) if j is None else "not a successor"
            depends = [specs_name for specs_name, k in index.items() if k in successors]
            raise InvalidOptionError(
                f"stage {spec.name!r}: routes names {target!r}, which is {what}: a route must "
                f"be a stage that depends on {spec.name!r} (those that do: "
                f"{', '.join(map(repr, sorted(depends))) or 'none'})",
                stage=spec.name,
                option="routes",
                value=target,
            )
        targets.append(j)
    return frozenset(targets)


def _check_acyclic(
    specs: Sequence[StageSpec], successors: list[list[int]], in_degree: tuple[int, ...]
) -> None:
    """Kahn's algorithm; on a leftover, walk it to name one cycle."""
    remaining = list(in_degree)
    stack = [i for i, d in enumerate(remaining) if d == 0]
    seen = 0
    while stack:
        i = stack.pop()
        seen += 1
        for j in successors[i]:
            remaining[j] -= 1
            if remaining[j] == 0:
                stack.append(j)
    if seen == len(specs):
        return
    # Every leftover stage has a leftover dependency: following dependencies backwards
    # from any of them must revisit a stage, which closes a cycle.
    index = {spec.name: i for i, spec in enumerate(specs)}
    start = next(i for i, d in enumerate(remaining) if d > 0)
    path: list[int] = []
    position: dict[int, int] = {}
    i = start
    while i not in position:
        position[i] = len(path)
        path.append(i)
        i = next(index[d] for d in specs[i].dependencies if remaining[index[d]] > 0)
    cycle = path[position[i] :]
    # path follows dependencies (b depends on a => b, a); a cycle reads in data-flow order,
    # from the stage declared first, so that the message is the same however it was found.
    cycle.reverse()
    first = cycle.index(min(cycle))
    names = [specs[j].name for j in cycle[first:] + cycle[:first]]
    raise CycleError.of([*names, names[0]])


# ------------------------------------------------------------------ drawing


def _body(spec: StageSpec) -> StageGraph | None:
    """The graph a loop or subgraph stage runs, or None."""
    return getattr(spec.dynamic, "body", None)


def _title(spec: StageSpec, label: str) -> str:
    """What a stage's box (or block) says: its name, a map's ``over``, a loop's bound."""
    dynamic = spec.dynamic
    if dynamic is not None:
        body = getattr(dynamic, "body", None)
        if body is None:  # a map
            over = getattr(dynamic, "over", None)
            label += f": map over {over}" if isinstance(over, str) else ": map"
        elif getattr(dynamic, "until", None) is not None:
            label += f": loop ≤{getattr(dynamic, 'max_iterations', 1)}"
    if spec.when is not None and not spec.dependencies:
        label += " (when)"
    return label


def _marks(graph: StageGraph, j: int, i: int) -> list[str]:
    """The labels of the edge from stage ``j`` to its dependent ``i``."""
    marks = ["route"] if i in graph.routes.get(j, ()) else []
    if graph.stages[i].when is not None:
        marks.append("when")
    return marks


def _mermaid(graph: StageGraph, ids: str, names: str, indent: str, lines: list[str]) -> None:
    for i, spec in enumerate(graph.stages):
        node, label = f"{ids}{i}", _title(spec, names + spec.name)
        body = _body(spec)
        if body is not None:
            lines.append(f'{indent}subgraph {node}["{label}"]')
            _mermaid(body, f"{node}_", f"{names}{spec.name}.", indent + "    ", lines)
            lines.append(f"{indent}end")
        elif spec.dynamic is not None:
            lines.append(f'{indent}{node}[["{label}"]]')
        elif spec.routes is not None:
            lines.append(f'{indent}{node}{{"{label}"}}')
        else:
            lines.append(f'{indent}{node}["{label}"]')
    for i, spec in enumerate(graph.stages):
        for dep in spec.dependencies:
            j = graph.index[dep]
            arrow = "-.->" if dep in spec.optional else "-->"
            marks = _marks(graph, j, i)
            if marks:
                arrow += f"|{', '.join(marks)}|"
            lines.append(f"{indent}{ids}{j} {arrow} {ids}{i}")


def _dot(graph: StageGraph, names: str, indent: str, lines: list[str]) -> None:
    for spec in graph.stages:
        name = names + spec.name
        body = _body(spec)
        if body is not None:
            lines.append(f'{indent}subgraph "cluster_{name}" {{')
            lines.append(f'{indent}    label="{_title(spec, name)}";')
            _dot(body, f"{name}.", indent + "    ", lines)
            lines.append(f"{indent}}}")
            continue
        extra = ", shape=box3d" if spec.dynamic is not None else ""
        if spec.routes is not None:
            extra = ", shape=diamond"
        title = _title(spec, name)
        if title != name:
            extra += f', label="{title}"'
        lines.append(f'{indent}"{name}" [tooltip="{spec.kind.value}"{extra}];')
    for i, spec in enumerate(graph.stages):
        for dep in spec.dependencies:
            j = graph.index[dep]
            source, tail = _exit(graph.stages[j], names + dep)
            target, head = _entry(spec, names + spec.name)
            attrs = ["style=dashed"] if dep in spec.optional else []
            marks = _marks(graph, j, i)
            if marks:
                attrs.append(f'label="{", ".join(marks)}"')
            if tail:
                attrs.append(f'ltail="{tail}"')
            if head:
                attrs.append(f'lhead="{head}"')
            edge = f" [{', '.join(attrs)}]" if attrs else ""
            lines.append(f'{indent}"{source}" -> "{target}"{edge};')


def _exit(spec: StageSpec, name: str) -> tuple[str, str]:
    """The node an edge from stage ``spec`` starts at, and the cluster it leaves (or "")."""
    body = _body(spec)
    if body is None:
        return name, ""
    output = getattr(spec.dynamic, "output", body.names[-1])
    return _exit(body[output], f"{name}.{output}")[0], f"cluster_{name}"


def _entry(spec: StageSpec, name: str) -> tuple[str, str]:
    """The node an edge into stage ``spec`` ends at, and the cluster it enters (or "")."""
    body = _body(spec)
    if body is None:
        return name, ""
    first = body.stages[body.roots[0]]
    return _entry(first, f"{name}.{first.name}")[0], f"cluster_{name}"
