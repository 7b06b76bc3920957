"""The Hypothesis strategies of the testing kit; importing this module needs Hypothesis."""

from __future__ import annotations

from typing import Any

try:
    from hypothesis import strategies as st
except ImportError as exc:
    raise ImportError(
        "the Hypothesis strategies of stageflow.testing (dag_shapes, invalid_dag_shapes,"
        " pipelines) need Hypothesis, which is not installed: pip install 'stageflow[testing]'."
        " The rest of stageflow.testing works without it.",
        name="hypothesis",
    ) from exc

from .._pipeline import Pipeline
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
