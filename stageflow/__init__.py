"""stageflow: run stage graphs fast, durably and observably.

Build a graph with :class:`Pipeline`, run it with an :class:`Engine`::

    graph = Pipeline("research").with_stage("fetch", fetch).build()
    result = await Engine().run(graph, data={"topic": "owls"})
"""

from typing import TYPE_CHECKING

from ._assist import AssistanceConfig, AssistUsage, Diagnosis, Findings, Verdict
from ._budget import Budget, CostPolicy, Estimate, ModelChain
from ._catalog import Catalog, CatalogEntry
from ._clock import LoopClock
from ._context import (
    InputsSnapshot,
    LoopInfo,
    StageCall,
    StageContext,
    StageFunction,
    StageInputs,
    StageLike,
    StageState,
    SyncStageFunction,
)
from ._detached import (
    DetachedContext,
    DetachedResult,
    attach,
    attach_error,
    detach,
    run_detached,
)
from ._durable import DurableRun
from ._dynamic import InputSchema, InputSpec, LoopSpec, MapSpec, WaitingForInput
from ._engine import Engine
from ._eventlog import EventLogSink, follow_events
from ._events import Event, EventType
from ._graph import StageGraph
from ._ledger import StageUsage, UsageLedger
from ._outputref import OutputRef
from ._pipeline import Pipeline
from ._policies import Backoff, CircuitBreakerPolicy, RetryPolicy
from ._redact import known_secret
from ._result import PendingInput, RunResult, StageResult
from ._run import RunCall, RunContext
from ._secrets import SecretRef
from ._service import RunService
from ._sinks import BufferedSink, FanOutSink, JsonLinesSink, LegacyEventSink, LoggingSink
from ._spec import Placement, StageSpec
from ._stage import Stage, StageKind, StageOutput, StageReturn
from ._status import RunStatus, StageStatus
from ._usage import Usage, UsageSummary
from ._worker import Worker
from .errors import (
    AssistanceBlockedError,
    BudgetExceededError,
    CircuitOpenError,
    CodecError,
    ConfigurationError,
    CycleError,
    DuplicateDependencyError,
    DuplicateStageError,
    EmptyPipelineError,
    ExpressionError,
    GraphError,
    GraphMismatchError,
    InputAlreadyGivenError,
    InputError,
    InputTimeoutError,
    InputTypeError,
    InputValidationError,
    InvalidOptionError,
    InvalidOutputError,
    InvalidStageError,
    InvalidStageNameError,
    LeaseLostError,
    LoopExhaustedError,
    MapError,
    MapItemError,
    MissingInputError,
    MissingOutputError,
    PipelineFileError,
    RemoteError,
    RouteError,
    RunCancelledError,
    RunError,
    RunExistsError,
    RunFailedError,
    RunLeasedError,
    RunNotRetryableError,
    RunTimeoutError,
    RunWaitingError,
    SchemaError,
    SelfDependencyError,
    StageCancelledError,
    StageError,
    StageFailedError,
    StageflowError,
    StageTimeoutError,
    StoreError,
    SubgraphFailedError,
    UnknownDependencyError,
    UnknownInputError,
    UnknownModelError,
    UnknownPipelineError,
    UnknownRunError,
    WorkerLostError,
)
from .interceptors import (
    AssistanceInterceptor,
    BaseInterceptor,
    BudgetInterceptor,
    CheckpointInterceptor,
    CircuitBreaker,
    CircuitBreakerInterceptor,
    CircuitBreakerRegistry,
    CircuitState,
    Interceptor,
    JsonFormatter,
    LoggingInterceptor,
    MetricsInterceptor,
    Priority,
    RetryInterceptor,
    RunInterceptor,
    SelectiveInterceptor,
    TimeoutInterceptor,
    TracingInterceptor,
    TransparentInterceptor,
)
from .ports import (
    CheckpointStore,
    Clock,
    EventLog,
    EventSink,
    InputRecord,
    InputStore,
    Lease,
    LLMAssistant,
    PressureSink,
    RunCatalog,
    RunQueue,
    RunRecord,
    RunStore,
    SecretResolver,
    StageRecord,
    StageRunner,
    Timer,
    UsageRecord,
    WorkerRecord,
)

if TYPE_CHECKING:
    from ._legacy import PipelineTimer as PipelineTimer  # stageflow-core's, deprecated
    from ._prices import ModelPrice, PriceTable

from ._version import __version__

__all__ = [
    "AssistUsage",
    "AssistanceBlockedError",
    "AssistanceConfig",
    "AssistanceInterceptor",
    "Backoff",
    "BaseInterceptor",
    "Budget",
    "BudgetExceededError",
    "BudgetInterceptor",
    "BufferedSink",
    "Catalog",
    "CatalogEntry",
    "CheckpointInterceptor",
    "CheckpointStore",
    "CircuitBreaker",
    "CircuitBreakerInterceptor",
    "CircuitBreakerPolicy",
    "CircuitBreakerRegistry",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "CodecError",
    "ConfigurationError",
    "CostPolicy",
    "CycleError",
    "DetachedContext",
    "DetachedResult",
    "Diagnosis",
    "DuplicateDependencyError",
    "DuplicateStageError",
    "DurableRun",
    "EmptyPipelineError",
    "Engine",
    "Estimate",
    "Event",
    "EventLog",
    "EventLogSink",
    "EventSink",
    "EventType",
    "ExpressionError",
    "FanOutSink",
    "Findings",
    "GraphError",
    "GraphMismatchError",
    "InputAlreadyGivenError",
    "InputError",
    "InputRecord",
    "InputSchema",
    "InputSpec",
    "InputStore",
    "InputTimeoutError",
    "InputTypeError",
    "InputValidationError",
    "InputsSnapshot",
    "Interceptor",
    "InvalidOptionError",
    "InvalidOutputError",
    "InvalidStageError",
    "InvalidStageNameError",
    "JsonFormatter",
    "JsonLinesSink",
    "LLMAssistant",
    "Lease",
    "LeaseLostError",
    "LegacyEventSink",
    "LoggingInterceptor",
    "LoggingSink",
    "LoopClock",
    "LoopExhaustedError",
    "LoopInfo",
    "LoopSpec",
    "MapError",
    "MapItemError",
    "MapSpec",
    "MetricsInterceptor",
    "MissingInputError",
    "MissingOutputError",
    "ModelChain",
    "ModelPrice",
    "OutputRef",
    "PendingInput",
    "Pipeline",
    "PipelineFileError",
    "Placement",
    "PressureSink",
    "PriceTable",
    "Priority",
    "RemoteError",
    "RetryInterceptor",
    "RetryPolicy",
    "RouteError",
    "RunCall",
    "RunCancelledError",
    "RunCatalog",
    "RunContext",
    "RunError",
    "RunExistsError",
    "RunFailedError",
    "RunInterceptor",
    "RunLeasedError",
    "RunNotRetryableError",
    "RunQueue",
    "RunRecord",
    "RunResult",
    "RunService",
    "RunStatus",
    "RunStore",
    "RunTimeoutError",
    "RunWaitingError",
    "SchemaError",
    "SecretRef",
    "SecretResolver",
    "SelectiveInterceptor",
    "SelfDependencyError",
    "Stage",
    "StageCall",
    "StageCancelledError",
    "StageContext",
    "StageError",
    "StageFailedError",
    "StageFunction",
    "StageGraph",
    "StageInputs",
    "StageKind",
    "StageLike",
    "StageOutput",
    "StageRecord",
    "StageResult",
    "StageReturn",
    "StageRunner",
    "StageSpec",
    "StageState",
    "StageStatus",
    "StageTimeoutError",
    "StageUsage",
    "StageflowError",
    "StoreError",
    "SubgraphFailedError",
    "SyncStageFunction",
    "TimeoutInterceptor",
    "Timer",
    "TracingInterceptor",
    "TransparentInterceptor",
    "UnknownDependencyError",
    "UnknownInputError",
    "UnknownModelError",
    "UnknownPipelineError",
    "UnknownRunError",
    "Usage",
    "UsageLedger",
    "UsageRecord",
    "UsageSummary",
    "Verdict",
    "WaitingForInput",
    "Worker",
    "WorkerLostError",
    "WorkerRecord",
    "__version__",
    "attach",
    "attach_error",
    "detach",
    "follow_events",
    "known_secret",
    "run_detached",
]


def __getattr__(name: str) -> object:
    # PriceTable is a pydantic model: imported on first use, not with stageflow.
    if name in ("PriceTable", "ModelPrice"):
        from . import _prices

        return getattr(_prices, name)
    if name == "PipelineTimer":  # stageflow-core's: not in __all__; making one warns
        from . import _legacy

        return _legacy.PipelineTimer
    raise AttributeError(f"module 'stageflow' has no attribute {name!r}")
