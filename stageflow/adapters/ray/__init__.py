"""Stages on Ray (extra ``ray``: ``pip install 'stageflow[ray]'``).

``RayRunner`` is a :class:`~stageflow.ports.StageRunner`: a stage given
``runner="ray"`` (and ``resources={"num_cpus": 2, ...}``) runs its call as a Ray task,
while the engine's scheduler, interceptors and store stay in the driver. Ray is
imported when a runner first binds a stage. See docs/distributed.md.
"""

from ._runner import RayRunner

__all__ = ["RayRunner"]
