"""Hypothesis strategies that generate valid and invalid graphs, for property tests.

This module needs Hypothesis, the ``testing`` extra (``pip install 'stageflow[testing]'``);
without it, importing it raises an :class:`ImportError` that says so. The rest of
:mod:`stageflow.testing` works on a base install.

- :func:`dag_shapes`: random valid :class:`~stageflow.testing.DagShape` values.
- :func:`pipelines`: random valid pipelines of those shapes.
- :func:`invalid_dag_shapes`: random :class:`~stageflow.testing.InvalidDagShape` values,
  declarations with exactly one defect and the error they must raise.
- :func:`dynamic_graphs`: random built dynamic graphs (conditions, ROUTE stages, maps
  over generated item lists, bounded loops, subgraphs) as :class:`DynamicGraph` values,
  whose deterministic stages log their calls (:class:`DynamicStage` is the plan of one
  stage, :class:`PlannedFailure` what a stage planned to fail raises).

``from stageflow.testing import dag_shapes`` gives the same objects.
"""

from ._strategies import (
    DynamicGraph,
    DynamicStage,
    PlannedFailure,
    dag_shapes,
    dynamic_graphs,
    invalid_dag_shapes,
    pipelines,
)

__all__ = [
    "DynamicGraph",
    "DynamicStage",
    "PlannedFailure",
    "dag_shapes",
    "dynamic_graphs",
    "invalid_dag_shapes",
    "pipelines",
]
