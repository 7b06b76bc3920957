"""stageflow: run stage graphs fast, durably and observably.

Build a graph with :class:`Pipeline`, run it with an :class:`Engine`::

    graph = Pipeline("research").with_stage("fetch", fetch).build()
    result = await Engine().run(graph, data={"topic": "owls"})
"""

from ._engine import Engine
from ._events import Event, EventType
from ._graph import StageGraph
from ._pipeline import Pipeline
from ._policies import Backoff, CircuitBreakerPolicy, RetryPolicy
from ._result import RunResult, RunStatus
from ._sinks import BufferedSink, FanOutSink, JsonLinesSink, LoggingSink
from ._spec import StageSpec
from ._stage import (
    Stage,
    StageCall,
    StageContext,
    StageInputs,
    StageKind,
    StageOutput,
    StageResult,
    StageState,
    StageStatus,
)
from .errors import (
    CircuitOpenError,
    ConfigurationError,
    CycleError,
    DuplicateStageError,
    GraphError,
    GraphMismatchError,
    InvalidOptionError,
    InvalidOutputError,
    InvalidStageError,
    InvalidStageNameError,
    LeaseLostError,
    MissingInputError,
    RunCancelledError,
    RunError,
    RunExistsError,
    RunFailedError,
    RunLeasedError,
    RunTimeoutError,
    SchemaError,
    SelfDependencyError,
    StageCancelledError,
    StageError,
    StageFailedError,
    StageflowError,
    StageTimeoutError,
    StoreError,
    UnknownDependencyError,
    UnknownRunError,
)
from .interceptors import (
    BaseInterceptor,
    CircuitBreaker,
    CircuitBreakerInterceptor,
    CircuitBreakerRegistry,
    CircuitState,
    Interceptor,
    Priority,
    RetryInterceptor,
    TimeoutInterceptor,
)
from .ports import CheckpointStore, Clock, EventSink, Lease, LoopClock, RunRecord, StageRecord

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "BaseInterceptor",
    "BufferedSink",
    "CheckpointStore",
    "CircuitBreaker",
    "CircuitBreakerInterceptor",
    "CircuitBreakerPolicy",
    "CircuitBreakerRegistry",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "ConfigurationError",
    "CycleError",
    "DuplicateStageError",
    "Engine",
    "Event",
    "EventSink",
    "EventType",
    "FanOutSink",
    "GraphError",
    "GraphMismatchError",
    "Interceptor",
    "InvalidOptionError",
    "InvalidOutputError",
    "InvalidStageError",
    "InvalidStageNameError",
    "JsonLinesSink",
    "Lease",
    "LeaseLostError",
    "LoggingSink",
    "LoopClock",
    "MissingInputError",
    "Pipeline",
    "Priority",
    "RetryInterceptor",
    "RetryPolicy",
    "RunCancelledError",
    "RunError",
    "RunExistsError",
    "RunFailedError",
    "RunLeasedError",
    "RunRecord",
    "RunResult",
    "RunStatus",
    "RunTimeoutError",
    "SchemaError",
    "SelfDependencyError",
    "Stage",
    "StageCall",
    "StageCancelledError",
    "StageContext",
    "StageError",
    "StageFailedError",
    "StageGraph",
    "StageInputs",
    "StageKind",
    "StageOutput",
    "StageRecord",
    "StageResult",
    "StageSpec",
    "StageState",
    "StageStatus",
    "StageTimeoutError",
    "StageflowError",
    "StoreError",
    "TimeoutInterceptor",
    "UnknownDependencyError",
    "UnknownRunError",
    "__version__",
]
