"""Helpers for testing pipelines, interceptors and sinks — yours and ours.

- :class:`RecordingSink` keeps every event for assertions.
- :func:`run_virtual` runs a coroutine on :class:`VirtualTimeLoop`, where
  ``asyncio.sleep``, timeouts and stageflow's clock all run on virtual time: a
  pipeline that sleeps for an hour finishes in milliseconds, deterministically.
- :func:`check_checkpoint_store` (and :data:`CHECKPOINT_STORE_CHECKS`): the
  contract every CheckpointStore adapter must pass, with :class:`ManualClock`.
- Hypothesis strategies (:func:`dag_shapes`, :func:`pipelines`,
  :func:`invalid_dag_shapes`) generate valid and invalid graphs for property
  tests. They need the ``testing`` extra (``pip install stageflow[testing]``).
"""

from ._sink import RecordingSink
from ._store_contract import (
    CHECKPOINT_STORE_CHECKS,
    ManualClock,
    StoreFactory,
    check_checkpoint_store,
)
from ._strategies import DagShape, InvalidDagShape, dag_shapes, invalid_dag_shapes, pipelines
from ._time import VirtualTimeLoop, run_virtual

__all__ = [
    "CHECKPOINT_STORE_CHECKS",
    "DagShape",
    "InvalidDagShape",
    "ManualClock",
    "RecordingSink",
    "StoreFactory",
    "VirtualTimeLoop",
    "check_checkpoint_store",
    "dag_shapes",
    "invalid_dag_shapes",
    "pipelines",
    "run_virtual",
]
