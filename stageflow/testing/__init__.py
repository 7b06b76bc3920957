"""Helpers for testing pipelines, interceptors and sinks — yours and ours.

- :class:`RecordingSink` keeps every event for assertions.
- :func:`run_virtual` runs a coroutine on :class:`VirtualTimeLoop`, where
  ``asyncio.sleep``, timeouts and stageflow's clock all run on virtual time: a
  pipeline that sleeps for an hour finishes in milliseconds, deterministically.
- :func:`check_run_store` and :func:`check_run_catalog` (and their checks,
  :data:`RUN_STORE_CHECKS` and :data:`RUN_CATALOG_CHECKS`): the contracts of the
  two store ports; :func:`check_checkpoint_store`
  (:data:`CHECKPOINT_STORE_CHECKS`) runs both, for a store that is both.
- :class:`ManualClock` moves only when a test moves it: give it to an engine
  (``Engine(clock=...)``) and a store, and every timeout, backoff, breaker,
  lease renewal and duration follows it.
- Hypothesis strategies (:func:`dag_shapes`, :func:`pipelines`,
  :func:`invalid_dag_shapes`) generate valid and invalid graphs for property
  tests. They need the ``testing`` extra (``pip install stageflow[testing]``).
"""

from ._clock import ManualClock
from ._sink import RecordingSink
from ._store_contract import (
    CHECKPOINT_STORE_CHECKS,
    RUN_CATALOG_CHECKS,
    RUN_STORE_CHECKS,
    RunStoreFactory,
    StoreFactory,
    check_checkpoint_store,
    check_run_catalog,
    check_run_store,
)
from ._strategies import DagShape, InvalidDagShape, dag_shapes, invalid_dag_shapes, pipelines
from ._time import VirtualTimeLoop, run_virtual

# Sorted as sorted() sorts (tests/unit/test_public_api.py), not as RUF022 would.
__all__ = [  # noqa: RUF022
    "CHECKPOINT_STORE_CHECKS",
    "DagShape",
    "InvalidDagShape",
    "ManualClock",
    "RUN_CATALOG_CHECKS",
    "RUN_STORE_CHECKS",
    "RecordingSink",
    "RunStoreFactory",
    "StoreFactory",
    "VirtualTimeLoop",
    "check_checkpoint_store",
    "check_run_catalog",
    "check_run_store",
    "dag_shapes",
    "invalid_dag_shapes",
    "pipelines",
    "run_virtual",
]
