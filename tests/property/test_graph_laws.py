"""Laws of building graphs: invalid declarations are refused precisely, valid ones are
built deterministically whatever the declaration order."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stageflow import (
    CycleError,
    DuplicateDependencyError,
    DuplicateStageError,
    GraphError,
    InvalidStageNameError,
    Pipeline,
    SelfDependencyError,
    StageGraph,
    UnknownDependencyError,
)
from stageflow.testing import DagShape, InvalidDagShape, dag_shapes, invalid_dag_shapes

from ._harness import ancestors, edges, permuted

_VALID_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,127}")


async def _stage(ctx: Any) -> None:
    return None


def _build(shape: DagShape) -> StageGraph:
    return shape.pipeline(_stage).build()


def _refusal(invalid: InvalidDagShape) -> GraphError:
    with pytest.raises(GraphError) as info:
        invalid.build()
    return info.value


def _assert_is_a_declared_cycle(
    cycle: tuple[str, ...], declared: dict[str, tuple[str, ...]]
) -> None:
    assert len(cycle) >= 3, cycle  # at least two stages: a self-loop is another error
    assert cycle[0] == cycle[-1], cycle
    assert len(set(cycle[:-1])) == len(cycle) - 1, cycle  # a simple cycle
    for upstream, downstream in itertools.pairwise(cycle):
        assert upstream in declared[downstream], (upstream, downstream, cycle)


@st.composite
def cyclic_shapes(draw: st.DrawFn) -> DagShape:
    """Valid shapes closed into a cycle of any length >= 2 along a chain of stages."""
    base = draw(dag_shapes(min_stages=2, shuffle=False))
    stages = {name: list(deps) for name, deps in base.stages}
    names = base.names
    chain = draw(
        st.lists(st.sampled_from(names), min_size=2, unique=True).map(
            lambda picked: sorted(picked, key=names.index)
        ),
        label="chain closed into a cycle",
    )
    for upstream, downstream in itertools.pairwise(chain):
        stages[downstream].append(upstream)
    stages[chain[0]].append(chain[-1])
    shape = DagShape(tuple((n, tuple(dict.fromkeys(stages[n]))) for n in names))
    return draw(permuted(shape))


class TestInvalidGraphsAreRejected:
    """Every invalid declaration is refused with the GraphError that names its defect."""

    @given(invalid=invalid_dag_shapes())
    def test_an_invalid_graph_is_refused_with_the_expected_graph_error(
        self, invalid: InvalidDagShape
    ) -> None:
        error = _refusal(invalid)
        assert type(error) is invalid.expected, error

    @given(invalid=invalid_dag_shapes())
    def test_a_refusal_names_the_offending_stages_and_a_cycle_error_a_declared_cycle(
        self, invalid: InvalidDagShape
    ) -> None:
        error = _refusal(invalid)
        names = [name for name, _ in invalid.stages]
        if isinstance(error, UnknownDependencyError):
            assert error.dependency == "no_such_stage"
            assert "no_such_stage" in dict(invalid.stages)[error.stage]
        elif isinstance(error, SelfDependencyError):
            assert error.stages == (error.stage,)
            assert error.stage in dict(invalid.stages)[error.stage]
        elif isinstance(error, DuplicateStageError):
            assert error.stages == (error.stage,)
            assert names.count(error.stage) > 1
        elif isinstance(error, InvalidStageNameError):
            assert error.name in names
        elif isinstance(error, CycleError):
            _assert_is_a_declared_cycle(error.cycle, dict(invalid.stages))
            assert error.stages == error.cycle[:-1]
        assert str(error)

    @given(shape=cyclic_shapes())
    def test_a_cycle_of_any_length_is_refused_and_named(self, shape: DagShape) -> None:
        with pytest.raises(CycleError) as info:
            _build(shape)
        _assert_is_a_declared_cycle(info.value.cycle, dict(shape.stages))


class TestInvalidDeclarationsHaveExactlyOneDefect:
    """``invalid_dag_shapes()`` promises exactly one kind of defect per declaration, so that
    the expected error does not hinge on the order in which ``build()`` checks things."""

    @given(invalid=invalid_dag_shapes())
    def test_every_dependency_names_a_declared_stage_unless_that_is_the_defect(
        self, invalid: InvalidDagShape
    ) -> None:
        names = {name for name, _ in invalid.stages}
        dangling = {dep for _, deps in invalid.stages for dep in deps} - names
        if invalid.expected is UnknownDependencyError:
            assert dangling == {"no_such_stage"}
        else:
            assert not dangling, f"{invalid.expected.__name__} declaration also has {dangling}"

    @given(invalid=invalid_dag_shapes())
    def test_names_are_unique_and_valid_and_no_stage_depends_on_itself_unless_that_is_the_defect(
        self, invalid: InvalidDagShape
    ) -> None:
        names = [name for name, _ in invalid.stages]
        duplicated = len(set(names)) < len(names)
        bad_names = [n for n in names if not _VALID_NAME.fullmatch(n)]
        self_dependent = [n for n, deps in invalid.stages if n in deps]
        assert duplicated == (invalid.expected is DuplicateStageError)
        assert bool(bad_names) == (invalid.expected is InvalidStageNameError)
        assert bool(self_dependent) == (invalid.expected is SelfDependencyError)

    @given(data=st.data(), invalid=invalid_dag_shapes())
    def test_the_refusal_does_not_depend_on_the_declaration_order(
        self, data: st.DataObject, invalid: InvalidDagShape
    ) -> None:
        order = data.draw(st.permutations(invalid.stages), label="declaration order")
        error = _refusal(InvalidDagShape(tuple(order), invalid.expected))
        assert type(error) is invalid.expected, error

    @given(data=st.data(), shape=dag_shapes(min_stages=2))
    def test_a_dependency_listed_twice_is_refused_naming_the_stage_and_the_dependency(
        self, data: st.DataObject, shape: DagShape
    ) -> None:
        declared = sorted(edges(shape))
        if declared:
            dep, dependent = data.draw(st.sampled_from(declared), label="edge listed twice")
        else:  # no edges at all: list a new one twice
            dep, dependent = shape.names[0], shape.names[1]
        listed_twice = (*(d for d in shape.dependencies(dependent) if d != dep), dep, dep)
        stages = tuple((n, listed_twice if n == dependent else deps) for n, deps in shape.stages)
        with pytest.raises(DuplicateDependencyError) as info:
            _build(DagShape(stages))
        assert (info.value.stage, info.value.dependency) == (dependent, dep)
        assert info.value.stages == (dependent, dep)


class TestBuildingIsDeterministic:
    """A graph depends on what is declared, not on the order it is declared in."""

    @given(shape=dag_shapes())
    def test_a_graph_holds_exactly_the_declared_dependencies(self, shape: DagShape) -> None:
        graph = _build(shape)
        assert graph.names == shape.names
        built = {
            (graph.stages[j].name, spec.name)
            for i, spec in enumerate(graph.stages)
            for j in graph.predecessors[i]
        }
        assert built == edges(shape)

    @given(shape=dag_shapes())
    def test_the_precomputed_indices_agree_with_each_other(self, shape: DagShape) -> None:
        graph = _build(shape)
        n = len(graph)
        assert dict(graph.index) == {name: i for i, name in enumerate(graph.names)}
        assert graph.in_degree == tuple(len(p) for p in graph.predecessors)
        assert graph.roots == tuple(i for i in range(n) if not graph.predecessors[i])
        assert {(i, j) for i in range(n) for j in graph.successors[i]} == {
            (j, i) for i in range(n) for j in graph.predecessors[i]
        }
        for name in shape.names:
            assert graph.descendants(name) == shape.descendants(name)
            assert name not in ancestors(shape, name)

    @given(data=st.data(), shape=dag_shapes())
    def test_permuting_the_declaration_order_keeps_the_dependency_relation(
        self, data: st.DataObject, shape: DagShape
    ) -> None:
        other = data.draw(permuted(shape))
        graph, other_graph = _build(shape), _build(other)
        assert set(graph.names) == set(other_graph.names)
        assert _relation(graph) == _relation(other_graph) == edges(shape)
        for name in shape.names:
            assert graph.descendants(name) == other_graph.descendants(name)
            assert graph[name].dependencies == other_graph[name].dependencies

    @given(shape=dag_shapes())
    def test_building_the_same_pipeline_twice_gives_equal_graphs(self, shape: DagShape) -> None:
        pipeline: Pipeline = shape.pipeline(_stage)
        first, second = pipeline.build(), pipeline.build()
        assert first is not second
        assert _structure(first) == _structure(second)
        assert first.to_dot() == second.to_dot()
        assert first.to_mermaid() == second.to_mermaid()


def _relation(graph: StageGraph) -> frozenset[tuple[str, str]]:
    return frozenset(
        (graph.stages[j].name, spec.name)
        for i, spec in enumerate(graph.stages)
        for j in graph.predecessors[i]
    )


def _structure(graph: StageGraph) -> tuple[object, ...]:
    return (
        graph.name,
        graph.stages,
        dict(graph.index),
        graph.successors,
        graph.predecessors,
        graph.in_degree,
        graph.roots,
    )
