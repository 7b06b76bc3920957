"""Laws of DagShape's relations: ancestors and descendants mirror each other and the graph."""

from __future__ import annotations

from hypothesis import given

from stageflow.testing import DagShape, dag_shapes


def _closure(shape: DagShape) -> dict[str, set[str]]:
    """Each stage's ancestors, by fixpoint over the declared dependencies (an oracle)."""
    above = {name: set(shape.dependencies(name)) for name in shape.names}
    changed = True
    while changed:
        changed = False
        for name in shape.names:
            more = set().union(*(above[d] for d in above[name])) - above[name]
            if more:
                above[name] |= more
                changed = True
    return above


class TestAncestorsAndDescendants:
    @given(shape=dag_shapes())
    def test_a_is_an_ancestor_of_b_exactly_when_b_is_a_descendant_of_a(self, shape: DagShape):
        for a in shape.names:
            for b in shape.names:
                assert (a in shape.ancestors(b)) == (b in shape.descendants(a)), (a, b)

    @given(shape=dag_shapes())
    def test_ancestors_are_the_transitive_closure_of_the_dependencies(self, shape: DagShape):
        closure = _closure(shape)
        for name in shape.names:
            assert shape.ancestors(name) == closure[name]
            assert set(shape.dependencies(name)) <= shape.ancestors(name)

    @given(shape=dag_shapes())
    def test_in_a_dag_no_stage_is_above_or_below_itself(self, shape: DagShape):
        for name in shape.names:
            assert name not in shape.ancestors(name) | shape.descendants(name)
            assert not shape.ancestors(name) & shape.descendants(name)

    @given(shape=dag_shapes())
    def test_the_built_graph_agrees(self, shape: DagShape):
        graph = shape.pipeline().build()
        for name in shape.names:
            assert shape.descendants(name) == graph.descendants(name)
            assert shape.ancestors(name) == {a for a in graph.names if name in graph.descendants(a)}
