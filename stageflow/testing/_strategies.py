"""The Hypothesis strategies of the testing kit; importing this module needs Hypothesis."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

try:
    from hypothesis import strategies as st
except ImportError as exc:
    raise ImportError(
        "the Hypothesis strategies of stageflow.testing (dag_shapes, dynamic_graphs,"
        " invalid_dag_shapes, pipelines) need Hypothesis, which is not installed:"
        " pip install 'stageflow[testing]'. The rest of stageflow.testing works without it.",
        name="hypothesis",
    ) from exc

from .._context import StageContext
from .._graph import StageGraph
from .._pipeline import Pipeline
from .._stage import StageOutput
from .._status import StageKind
from ..errors import (
    CycleError,
    DuplicateStageError,
    GraphError,
    InvalidStageNameError,
    SelfDependencyError,
    UnknownDependencyError,
)
from ._shapes import DagShape, InvalidDagShape, _noop


@st.composite
def dag_shapes(
    draw: st.DrawFn,
    min_stages: int = 1,
    max_stages: int = 12,
    max_dependencies: int = 3,
    shuffle: bool = True,
) -> DagShape:
    """Random valid DAG shapes: stage ``k`` depends on up to ``max_dependencies`` earlier ones.

    With ``shuffle`` the declaration order is permuted, so dependencies may be
    declared after the stages that use them (``build()`` accepts that).
    """
    n = draw(st.integers(min_stages, max_stages))
    names = [f"s{k}" for k in range(n)]
    stages = []
    for k, name in enumerate(names):
        deps: list[str] = (
            draw(st.lists(st.sampled_from(names[:k]), max_size=max_dependencies, unique=True))
            if k
            else []
        )
        stages.append((name, tuple(deps)))
    if shuffle:
        stages = draw(st.permutations(stages))
    return DagShape(tuple(stages))


def pipelines(stage: object = _noop, **shape: Any) -> st.SearchStrategy[Pipeline]:
    """Random valid pipelines, every stage being ``stage``; ``shape`` goes to dag_shapes."""
    return dag_shapes(**shape).map(lambda s: s.pipeline(stage))


@st.composite
def invalid_dag_shapes(draw: st.DrawFn, max_stages: int = 10) -> InvalidDagShape:
    """Random graph declarations with exactly one kind of defect, and the error expected."""
    base = draw(dag_shapes(min_stages=2, max_stages=max_stages, shuffle=False))
    stages: list[list[Any]] = [list(s) for s in base.stages]
    kind = draw(st.sampled_from(["cycle", "unknown", "duplicate", "self", "name"]))
    expected: type[GraphError]
    if kind == "cycle":
        # Make an ancestor of some stage depend on that stage: a cycle through every stage
        # on the path between them (of length 2 or more).
        with_ancestors = [name for name, _ in stages if base.dependencies(name)]
        if with_ancestors:
            k = draw(st.sampled_from(with_ancestors))
            a = draw(st.sampled_from(sorted(base.ancestors(k))))
        else:  # no edge at all: join two stages both ways
            k, a = stages[1][0], stages[0][0]
            stages[1][1] = (a,)
        for entry in stages:
            if entry[0] == a:
                entry[1] = (*entry[1], k)
        expected = CycleError
    elif kind == "unknown":
        k = draw(st.integers(0, len(stages) - 1))
        stages[k][1] = (*stages[k][1], "no_such_stage")
        expected = UnknownDependencyError
    elif kind == "duplicate":
        # A twin of an existing stage, anywhere: the only defect is the repeated name.
        twin = stages[draw(st.integers(0, len(stages) - 1))][0]
        stages.insert(draw(st.integers(0, len(stages))), [twin, ()])
        expected = DuplicateStageError
    elif kind == "self":
        k = draw(st.integers(0, len(stages) - 1))
        stages[k][1] = (*stages[k][1], stages[k][0])
        expected = SelfDependencyError
    else:
        k = draw(st.integers(0, len(stages) - 1))
        bad = draw(st.sampled_from(["", "has space", "1digit", "dot.ted", "x" * 200, "é"]))
        old = stages[k][0]
        for s in stages:
            s[1] = tuple(bad if d == old else d for d in s[1])
        stages[k][0] = bad
        expected = InvalidStageNameError
    if kind != "duplicate" and draw(st.booleans()):  # forward references too
        stages = draw(st.permutations(stages))
    return InvalidDagShape(tuple((n, tuple(d)) for n, d in stages), expected)


# --------------------------------------------------------------------------- dynamic graphs

ITEM_VALUES: Final = 8
"""The items of generated maps are ints in ``range(ITEM_VALUES)``."""

_LETTERS: Final = "stuvw"  # stage names by depth: s0 at the top, t0 in a body, u0 deeper
# Drawn uniformly, so mostly "ok"; "ok" first, so that examples shrink to it.
_STAGE_BEHAVIOURS: Final = ("ok", "ok", "ok", "ok", "ok", "skip", "raise")
_SAFE_BEHAVIOURS: Final = ("ok", "ok", "ok", "ok", "ok", "skip")
_ROUTE_BEHAVIOURS: Final = (*_STAGE_BEHAVIOURS, "none", "stray")
_ITEM_BEHAVIOURS: Final = _STAGE_BEHAVIOURS


class PlannedFailure(Exception):
    """What a generated stage (or map item) planned to fail raises; ``stage`` names it."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"{stage} failed as planned")
        self.stage = stage


@dataclass(frozen=True)
class DynamicStage:
    """The plan of one stage of a generated dynamic graph (see :func:`dynamic_graphs`).

    Every stage is deterministic: what it returns depends only on its plan, its
    name in the run (``ctx.stage``) and its inputs, so two runs of a graph, or a run
    and its resumes, give the same outputs.

    Attributes:
        name: the stage's name in its graph (``s0`` at the top, ``t0`` in a body).
        kind: ``"stage"``, ``"route"`` (a ``StageKind.ROUTE`` stage), ``"map"``,
            ``"loop"`` or ``"subgraph"``.
        dependencies: the stages it depends on, in its graph.
        when: its condition's answer (``when=`` a predicate returning it), or None
            for no condition.
        behaviour: of a stage or route stage: ``"ok"`` (completes), ``"skip"``
            (``StageOutput.skip``), ``"raise"`` (raises :class:`PlannedFailure`);
            of a route stage also ``"none"`` (chooses no route) and ``"stray"``
            (chooses a stage outside its routes), both a ``RouteError``.
        duration: seconds its call sleeps (``asyncio.sleep``: virtual time on
            :func:`~stageflow.testing.run_virtual`).
        items: of a stage or route stage, the ``"items"`` field of its output; of a
            map whose ``over`` is a callable, the items it returns.
        routes: of a route stage, the direct successors it chooses from.
        chosen: of a route stage, the routes it chooses.
        over: of a map, ``"<dependency>.items"``, or None for a callable ``over``.
        keyed: of a map, whether items have keys (``key=lambda item: f"k{item}"``)
            rather than their index.
        max_parallel: of a map, its ``max_parallel``.
        on_item_error: of a map, its ``on_item_error``.
        item_plan: of a map, ``(behaviour, duration)`` of its call for each item
            value (``"ok"``, ``"skip"`` or ``"raise"``), indexed by the item (empty:
            every item completes at once).
        body: of a loop or subgraph, the plan of its body graph.
        output_stage: of a loop or subgraph, the body stage whose output is its.
        max_iterations: of a loop, its ``max_iterations``.
        done_at: of a loop, the iteration whose output makes ``until`` true
            (``max_iterations + 1``: never).
        on_exhausted: of a loop, its ``on_exhausted``.
    """

    name: str
    kind: str = "stage"
    dependencies: tuple[str, ...] = ()
    when: bool | None = None
    behaviour: str = "ok"
    duration: float = 0.0
    items: tuple[int, ...] = ()
    routes: tuple[str, ...] = ()
    chosen: tuple[str, ...] = ()
    over: str | None = None
    keyed: bool = False
    max_parallel: int | None = None
    on_item_error: str = "fail"
    item_plan: tuple[tuple[str, float], ...] = ()
    body: tuple[DynamicStage, ...] = ()
    output_stage: str = ""
    max_iterations: int = 1
    done_at: int = 1
    on_exhausted: str = "complete"

    def __repr__(self) -> str:
        # Only what differs from the defaults, so that a failing example reads as a plan.
        shown = [repr(self.name)]
        for field in fields(self)[1:]:
            value = getattr(self, field.name)
            if field.name == "item_plan":
                odd = {v: p for v, p in enumerate(value) if p != ("ok", 0.0)}
                if odd:
                    shown.append(f"item_plan={odd!r}")
            elif value != field.default:
                shown.append(f"{field.name}={value!r}")
        return f"DynamicStage({', '.join(shown)})"


class DynamicGraph:
    """A generated dynamic graph, built, and the log of what its stages did.

    What :func:`dynamic_graphs` generates. Its stages append to :attr:`log` as they
    run, in every run of :attr:`graph` (a run and its resumes, or several runs):
    count calls to check what ran again. Names are the names in the run
    (``ctx.stage``): ``s2``, a map's item ``s3[1]`` (``s3[k4]`` when keyed), a loop's
    iteration ``s1[2].t0``, a subgraph's stage ``s4.t1``.

    Attributes:
        graph: the built :class:`~stageflow.StageGraph`, named ``"dynamic"``.
        stages: the plan of its stages (:class:`DynamicStage` values); its repr is
            how Hypothesis shows a failing example.
        log: ``(what, name)`` pairs, in the order they happened. ``what`` is
            ``"call"`` (a stage's or an item's call began), ``"done"`` (that call
            returned an outcome the engine keeps: completed, or skipped by itself),
            ``"fail"`` (it raised, or chose routes the engine refuses), ``"when"`` (a
            condition was asked, for the stage named) or ``"until"`` (a loop's
            ``until`` was asked; the name is the loop stage's, e.g. ``s1`` or
            ``s4.t0``). A loop or subgraph stage itself makes no call: its body's
            stages do.

    Example:
        >>> from stageflow import Engine
        >>> from stageflow.testing import run_virtual
        >>> spec = DynamicGraph(
        ...     (
        ...         DynamicStage("s0", items=(1, 2)),
        ...         DynamicStage("s1", "map", ("s0",), over="s0.items"),
        ...     )
        ... )
        >>> result = run_virtual(Engine().run(spec.graph))
        >>> [item.stage for item in result["s1"].items]
        ['s1[0]', 's1[1]']
        >>> sorted(spec.completed().elements())
        ['s0', 's1[0]', 's1[1]']
    """

    __slots__ = ("graph", "log", "stages")

    def __init__(self, stages: tuple[DynamicStage, ...]) -> None:
        self.stages = tuple(stages)
        self.log: list[tuple[str, str]] = []
        self.graph: StageGraph = _dynamic_pipeline(self.stages, self.log, "dynamic", "").build()

    def mark(self) -> int:
        """Where the log is now: pass it as ``since`` to count what happens next."""
        return len(self.log)

    def count(self, what: str, since: int = 0) -> Counter[str]:
        """How many ``(what, name)`` entries the log has per name, from ``since`` on."""
        return Counter(name for kind, name in self.log[since:] if kind == what)

    def calls(self, since: int = 0) -> Counter[str]:
        """Calls begun, by stage or item name (``count("call", since)``)."""
        return self.count("call", since)

    def completed(self, since: int = 0) -> Counter[str]:
        """Calls that returned an outcome the engine keeps, by name."""
        return self.count("done", since)

    def failed(self, since: int = 0) -> Counter[str]:
        """Calls that failed as planned, by name."""
        return self.count("fail", since)

    def conditions(self, since: int = 0) -> Counter[str]:
        """Conditions asked, by the name of the stage they guard."""
        return self.count("when", since)

    def verdicts(self, since: int = 0) -> Counter[str]:
        """Loops' ``until`` asked, by loop stage name."""
        return self.count("until", since)

    def clear(self) -> None:
        """Forget the log."""
        self.log.clear()

    def __repr__(self) -> str:
        return f"DynamicGraph({self.stages!r})"


def _dynamic_pipeline(
    plan: tuple[DynamicStage, ...], log: list[tuple[str, str]], name: str, path: str
) -> Pipeline:
    """The pipeline of ``plan``; ``path`` prefixes loop names in the log (``s4.``)."""
    p = Pipeline(name)
    for node in plan:
        options: dict[str, Any] = {"dependencies": node.dependencies}
        if node.when is not None:
            options["when"] = _condition(node.when, log)
        if node.kind == "stage":
            p = p.with_stage(node.name, _work(node, log), **options)
        elif node.kind == "route":
            p = p.with_stage(
                node.name, _work(node, log), StageKind.ROUTE, routes=node.routes, **options
            )
        elif node.kind == "map":
            p = p.with_map(
                node.name,
                _item(node, log),
                over=_over(node) if node.over is None else node.over,
                key=_key if node.keyed else None,
                max_parallel=node.max_parallel,
                on_item_error=node.on_item_error,
                **options,
            )
        else:
            inner = path + node.name
            body = _dynamic_pipeline(node.body, log, f"{name}-{node.name}", inner + ".")
            if node.kind == "subgraph":
                p = p.with_subgraph(
                    node.name, body.build(), output_stage=node.output_stage, **options
                )
            else:
                p = p.with_loop(
                    node.name,
                    body.build(),
                    until=_until(node, inner, log),
                    max_iterations=node.max_iterations,
                    on_exhausted=node.on_exhausted,
                    output_stage=node.output_stage,
                    **options,
                )
    return p


def _digest(stage: str, ctx: StageContext, *extra: Any) -> str:
    """A short, stable digest of what a call saw: its name, its inputs, ``extra``."""
    seen = [stage, {d: ctx.inputs[d] for d in ctx.inputs}, *extra]
    text = json.dumps(seen, sort_keys=True, default=_plain, separators=(",", ":"))
    return f"{stage}:{zlib.crc32(text.encode()):08x}"


def _plain(value: object) -> object:
    """What json.dumps makes of the read-only mappings a stage's inputs are."""
    if isinstance(value, Mapping):
        return dict(value)
    return repr(value)


def _condition(answer: bool, log: list[tuple[str, str]]) -> Callable[[StageContext], bool]:
    def when(ctx: StageContext) -> bool:
        log.append(("when", ctx.stage))
        return answer

    return when


def _work(node: DynamicStage, log: list[tuple[str, str]]) -> Callable[[StageContext], Any]:
    behaviour = node.behaviour

    async def work(ctx: StageContext) -> Any:
        stage = ctx.stage
        log.append(("call", stage))
        if node.duration:
            await asyncio.sleep(node.duration)
        if behaviour == "raise":
            log.append(("fail", stage))
            raise PlannedFailure(stage)
        if behaviour == "skip":
            log.append(("done", stage))
            return StageOutput.skip(f"{stage} skipped itself")
        loop = ctx.loop
        previous = None if loop is None else loop.previous
        data: dict[str, Any] = {"value": _digest(stage, ctx, previous), "items": list(node.items)}
        if loop is not None:
            data["iteration"] = loop.iteration
        if node.kind != "route":
            log.append(("done", stage))
            return data
        if behaviour == "none":
            log.append(("fail", stage))
            return StageOutput.route(**data)
        if behaviour == "stray":
            log.append(("fail", stage))
            return StageOutput.route(*node.chosen, "nowhere", **data)
        log.append(("done", stage))
        return StageOutput.route(*node.chosen, **data)

    work.__qualname__ = f"work_{node.name}"
    return work


def _item(node: DynamicStage, log: list[tuple[str, str]]) -> Callable[[StageContext], Any]:
    async def item(ctx: StageContext) -> Any:
        stage = ctx.stage
        log.append(("call", stage))
        planned = node.item_plan
        behaviour, duration = planned[ctx.item % ITEM_VALUES] if planned else ("ok", 0.0)
        if duration:
            await asyncio.sleep(duration)
        if behaviour == "raise":
            log.append(("fail", stage))
            raise PlannedFailure(stage)
        log.append(("done", stage))
        if behaviour == "skip":
            return StageOutput.skip(f"{stage} skipped itself")
        return {"value": _digest(stage, ctx, ctx.item, ctx.item_index, ctx.item_key)}

    item.__qualname__ = f"item_of_{node.name}"
    return item


def _over(node: DynamicStage) -> Callable[[StageContext], list[int]]:
    def over(ctx: StageContext) -> list[int]:
        return list(node.items)

    over.__qualname__ = f"items_of_{node.name}"
    return over


def _key(item: int) -> str:
    return f"k{item}"


def _until(
    node: DynamicStage, loop: str, log: list[tuple[str, str]]
) -> Callable[[Mapping[str, Any]], bool]:
    done_at = node.done_at

    def until(output: Mapping[str, Any]) -> bool:
        log.append(("until", loop))
        return bool(output.get("iteration", 0) >= done_at)

    return until


@st.composite
def _dynamic_plan(
    draw: st.DrawFn,
    *,
    depth: int,
    in_loop: bool,
    min_stages: int,
    max_stages: int,
    limits: Mapping[str, Any],
) -> tuple[DynamicStage, ...]:
    """The plan of one graph (the top one, or a body at ``depth`` > 0)."""
    failures: bool = limits["failures"]
    quarters = st.integers(0, round(limits["max_duration"] * 4)).map(lambda q: q / 4)
    item_lists = st.lists(
        st.integers(0, ITEM_VALUES - 1), max_size=limits["max_items"], unique=True
    )
    n = draw(st.integers(min_stages, max_stages))
    letter = _LETTERS[depth] if depth < len(_LETTERS) else f"d{depth}_"  # unique per depth
    names = [f"{letter}{k}" for k in range(n)]
    deps: list[tuple[str, ...]] = [
        tuple(
            draw(
                st.lists(
                    st.sampled_from(names[:k]), max_size=limits["max_dependencies"], unique=True
                )
            )
        )
        if k
        else ()
        for k in range(n)
    ]
    successors = {
        name: [m for m, d in zip(names, deps, strict=True) if name in d] for name in names
    }
    kinds_allowed = ["stage", "route", "map"]
    if depth < limits["max_depth"]:
        kinds_allowed.append("subgraph")
        if not in_loop:  # no loop inside a loop: each loop runs once per run
            kinds_allowed.append("loop")
    kinds = [draw(st.sampled_from(kinds_allowed), label=f"kind of {name}") for name in names]
    kinds = [
        "stage" if kind == "route" and not successors[name] else kind
        for kind, name in zip(kinds, names, strict=True)
    ]
    if in_loop and depth and not {"stage", "route"} & set(kinds):
        kinds[0] = "stage"  # a loop's body needs a stage whose output says its iteration
    has_items: dict[str, bool] = {}
    plan = []
    for name, kind, dependencies in zip(names, kinds, deps, strict=True):
        when = draw(st.sampled_from((None, None, None, True, False)), label=f"condition of {name}")
        node = DynamicStage(name, kind, dependencies, when)
        if kind in ("stage", "route"):
            behaviours = (
                (_ROUTE_BEHAVIOURS if kind == "route" else _STAGE_BEHAVIOURS)
                if failures
                else _SAFE_BEHAVIOURS
            )
            node = _replace(
                node,
                behaviour=draw(st.sampled_from(behaviours), label=f"behaviour of {name}"),
                duration=draw(quarters, label=f"duration of {name}"),
                items=tuple(draw(item_lists, label=f"items of {name}")),
            )
            if kind == "route":
                routes = draw(
                    st.lists(st.sampled_from(successors[name]), min_size=1, unique=True),
                    label=f"routes of {name}",
                )
                routes = [s for s in successors[name] if s in routes]
                chosen = draw(
                    st.lists(st.sampled_from(routes), min_size=1, unique=True),
                    label=f"routes {name} chooses",
                )
                node = _replace(
                    node, routes=tuple(routes), chosen=tuple(r for r in routes if r in chosen)
                )
            has_items[name] = True
        elif kind == "map":
            on_item_error = draw(st.sampled_from(("fail", "skip", "collect")))
            sources = [d for d in dependencies if has_items[d]]
            if not failures:  # a source not taken, another dependency taken: a MapError
                sources = [d for d in sources if dependencies == (d,)]
            over = None
            if sources:  # else a callable over, giving the map's own items
                source = draw(
                    st.one_of(st.none(), st.sampled_from(sources)), label=f"{name} maps over"
                )
                over = None if source is None else f"{source}.items"
            item_behaviours = (
                _ITEM_BEHAVIOURS if failures and on_item_error != "fail" else _SAFE_BEHAVIOURS
            )
            node = _replace(
                node,
                items=() if over else tuple(draw(item_lists, label=f"items of {name}")),
                over=over,
                keyed=draw(st.booleans(), label=f"{name} has keys"),
                max_parallel=draw(st.sampled_from((None, 1, 2))),
                on_item_error=on_item_error,
                item_plan=tuple(
                    (draw(st.sampled_from(item_behaviours)), draw(quarters))
                    for _ in range(ITEM_VALUES)
                ),
            )
            has_items[name] = False
        else:
            body = draw(
                _dynamic_plan(
                    depth=depth + 1,
                    in_loop=in_loop or kind == "loop",
                    min_stages=1,
                    max_stages=limits["max_body_stages"],
                    limits=limits,
                ),
                label=f"body of {name}",
            )
            if kind == "loop":
                candidates = [s.name for s in body if s.kind in ("stage", "route")]
                max_iterations = draw(st.integers(1, limits["max_iterations"]))
                node = _replace(
                    node,
                    body=body,
                    output_stage=draw(st.sampled_from(candidates)),
                    max_iterations=max_iterations,
                    done_at=draw(st.integers(1, max_iterations + 1)),
                    on_exhausted=draw(st.sampled_from(("complete", "fail")))
                    if failures
                    else "complete",
                )
            else:
                node = _replace(
                    node, body=body, output_stage=draw(st.sampled_from([s.name for s in body]))
                )
            # A loop's or subgraph's output may lack "items" (a skipped output stage):
            # mapping over it is a MapError, so only when failures are wanted.
            output = next(s for s in body if s.name == node.output_stage)
            has_items[name] = failures and output.kind in ("stage", "route")
        plan.append(node)
    return tuple(plan)


def _replace(node: DynamicStage, **changes: Any) -> DynamicStage:
    values = {f.name: getattr(node, f.name) for f in fields(node)}
    values.update(changes)
    return DynamicStage(**values)


def dynamic_graphs(
    *,
    min_stages: int = 1,
    max_stages: int = 6,
    max_body_stages: int = 3,
    max_dependencies: int = 2,
    max_items: int = 4,
    max_iterations: int = 3,
    max_depth: int = 2,
    max_duration: float = 1.0,
    failures: bool = True,
) -> st.SearchStrategy[DynamicGraph]:
    """Random dynamic graphs, built, with deterministic stages that log their calls.

    Each :class:`DynamicGraph` mixes plain stages, conditions (``when=``), ROUTE
    stages choosing among their successors, maps over generated item lists (a
    dependency's ``"items"`` output field, or a callable ``over``; keyed or not;
    with ``max_parallel`` and each ``on_item_error``), bounded loops whose
    ``until`` holds at a drawn iteration or never, and subgraphs; loop and
    subgraph bodies are generated graphs too, down to ``max_depth`` (no loop inside
    a loop). Every call is deterministic, so runs of one graph give the same
    result whatever the timing, if ``fail_fast=False`` (with fail-fast, which
    running stages a failure cancels depends on timing).

    Args:
        min_stages: at least this many stages at the top.
        max_stages: at most this many stages at the top.
        max_body_stages: at most this many stages in a loop's or subgraph's body.
        max_dependencies: at most this many dependencies per stage.
        max_items: at most this many items per map.
        max_iterations: a loop's ``max_iterations`` is at most this.
        max_depth: how deep bodies nest (0: no loop, no subgraph).
        max_duration: each call sleeps a multiple of 0.25 s up to this (0: never
            sleeps); use virtual time (:func:`~stageflow.testing.run_virtual`).
        failures: also plan failures: stages and items that raise, ROUTE stages
            choosing no route or a stray one, loops exhausted with
            ``on_exhausted="fail"``, maps whose ``over`` field is missing. Without
            them a run never has a failed stage.
    """
    limits = {
        "max_body_stages": max_body_stages,
        "max_dependencies": max_dependencies,
        "max_items": max_items,
        "max_iterations": max_iterations,
        "max_depth": max_depth,
        "max_duration": max_duration,
        "failures": failures,
    }
    plans = _dynamic_plan(
        depth=0, in_loop=False, min_stages=min_stages, max_stages=max_stages, limits=limits
    )
    return plans.map(DynamicGraph)
