"""Helpers for testing pipelines, interceptors and sinks — yours and ours.

- :class:`RecordingSink` keeps every event for assertions.
- :class:`ScriptedAssistant` is an LLM assistant answering from a script (for
  :class:`~stageflow.AssistanceInterceptor`).
- :func:`run_virtual` runs a coroutine on :class:`VirtualTimeLoop`, where
  ``asyncio.sleep``, timeouts and stageflow's clock all run on virtual time: a
  pipeline that sleeps for an hour finishes in milliseconds, deterministically.
- :func:`check_run_store` and :func:`check_run_catalog` (and their checks,
  :data:`RUN_STORE_CHECKS` and :data:`RUN_CATALOG_CHECKS`): the contracts of the
  two store ports; :func:`check_checkpoint_store`
  (:data:`CHECKPOINT_STORE_CHECKS`) runs both, for a store that is both.
- :func:`check_input_store` (:data:`INPUT_STORE_CHECKS`): the contract of
  :class:`~stageflow.ports.InputStore`, where the inputs of runs that wait for a person
  are kept, for a store that is a CheckpointStore too (:data:`InputStoreFactory`).
- :func:`check_event_log` (:data:`EVENT_LOG_CHECKS`): the contract of
  :class:`~stageflow.ports.EventLog`, where the events of runs are kept for reading
  later, for a store that is a CheckpointStore too (:data:`EventLogFactory`).
- :class:`ManualClock` moves only when a test moves it: give it to an engine
  (``Engine(clock=...)``) and a store, and every timeout, backoff, breaker,
  lease renewal and duration follows it.
- :class:`DagShape` and :class:`InvalidDagShape`: graph shapes (names, dependencies,
  ancestors and descendants) that build pipelines.
- Hypothesis strategies (:func:`~stageflow.testing.strategies.dag_shapes`,
  :func:`~stageflow.testing.strategies.pipelines`,
  :func:`~stageflow.testing.strategies.invalid_dag_shapes`) generate valid and invalid
  graphs for property tests, and :func:`~stageflow.testing.strategies.dynamic_graphs`
  dynamic ones (conditions, routes, maps, loops, subgraphs) whose stages log their
  calls. They live in :mod:`stageflow.testing.strategies` and need the ``testing``
  extra (``pip install 'stageflow[testing]'``); everything else here works on a base
  install. ``from stageflow.testing import dag_shapes`` works too: the names of
  :mod:`~stageflow.testing.strategies` are imported on first use, so that a missing
  Hypothesis raises its ImportError there, not on ``import stageflow.testing``. They
  are not in ``__all__`` (a star import never needs Hypothesis).
"""

from typing import TYPE_CHECKING

from ._assistant import ScriptedAssistant
from ._clock import ManualClock
from ._event_contract import EVENT_LOG_CHECKS, EventLogFactory, check_event_log
from ._input_contract import INPUT_STORE_CHECKS, InputStoreFactory, check_input_store
from ._shapes import DagShape, InvalidDagShape
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
from ._time import VirtualTimeLoop, run_virtual

if TYPE_CHECKING:
    from .strategies import DynamicGraph as DynamicGraph
    from .strategies import DynamicStage as DynamicStage
    from .strategies import PlannedFailure as PlannedFailure
    from .strategies import dag_shapes as dag_shapes
    from .strategies import dynamic_graphs as dynamic_graphs
    from .strategies import invalid_dag_shapes as invalid_dag_shapes
    from .strategies import pipelines as pipelines

_STRATEGIES = frozenset(
    {
        "DynamicGraph",
        "DynamicStage",
        "PlannedFailure",
        "dag_shapes",
        "dynamic_graphs",
        "invalid_dag_shapes",
        "pipelines",
    }
)

# Sorted as sorted() sorts (tests/unit/test_public_api.py), not as RUF022 would.
__all__ = [  # noqa: RUF022
    "CHECKPOINT_STORE_CHECKS",
    "DagShape",
    "EVENT_LOG_CHECKS",
    "EventLogFactory",
    "INPUT_STORE_CHECKS",
    "InputStoreFactory",
    "InvalidDagShape",
    "ManualClock",
    "RUN_CATALOG_CHECKS",
    "RUN_STORE_CHECKS",
    "RecordingSink",
    "RunStoreFactory",
    "ScriptedAssistant",
    "StoreFactory",
    "VirtualTimeLoop",
    "check_checkpoint_store",
    "check_event_log",
    "check_input_store",
    "check_run_catalog",
    "check_run_store",
    "run_virtual",
]


def __getattr__(name: str) -> object:
    """The Hypothesis strategies, imported on first use (they need the ``testing`` extra)."""
    if name in _STRATEGIES:
        from . import strategies  # ImportError naming the extra without Hypothesis

        return getattr(strategies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_STRATEGIES})
