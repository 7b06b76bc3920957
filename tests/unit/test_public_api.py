"""The public API: pinned names, each documented."""

from __future__ import annotations

import ast
import enum
import inspect
import itertools
import re
from pathlib import Path
from types import ModuleType

import pytest

import stageflow
import stageflow.interceptors
import stageflow.patterns
import stageflow.ports
import stageflow.testing
import stageflow.testing.strategies

PUBLIC: dict[ModuleType, list[str]] = {
    stageflow: [
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
    ],
    stageflow.testing: [
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
    ],
    stageflow.testing.strategies: [
        "DynamicGraph",
        "DynamicStage",
        "PlannedFailure",
        "dag_shapes",
        "dynamic_graphs",
        "invalid_dag_shapes",
        "pipelines",
    ],
    stageflow.interceptors: [
        "AssistanceInterceptor",
        "BaseInterceptor",
        "BudgetInterceptor",
        "CheckpointInterceptor",
        "CircuitBreaker",
        "CircuitBreakerInterceptor",
        "CircuitBreakerRegistry",
        "CircuitState",
        "Interceptor",
        "JsonFormatter",
        "LoggingInterceptor",
        "MetricsInterceptor",
        "Priority",
        "RetryInterceptor",
        "RunInterceptor",
        "SelectiveInterceptor",
        "TimeoutInterceptor",
        "TracingInterceptor",
        "TransparentInterceptor",
    ],
    stageflow.ports: [
        "CheckpointStore",
        "Clock",
        "EventLog",
        "EventSink",
        "InputRecord",
        "InputStore",
        "LLMAssistant",
        "Lease",
        "PressureSink",
        "RunCatalog",
        "RunQueue",
        "RunRecord",
        "RunStore",
        "SecretResolver",
        "StageRecord",
        "StageRunner",
        "Timer",
        "UsageRecord",
        "WorkerRecord",
    ],
    stageflow.patterns: ["conditional", "fan_out_fan_in", "with_retry"],
}

_PACKAGE = Path(stageflow.__file__).parent
_MODULES = pytest.mark.parametrize("module", list(PUBLIC), ids=lambda m: m.__name__)


def _public_names() -> list[tuple[ModuleType, str]]:
    return [(m, n) for m, names in PUBLIC.items() for n in names if not n.startswith("__")]


def _has_attribute_docstring(name: str) -> bool:
    """True if a top-level ``name = ...`` of some stageflow module is followed by a string."""
    for path in sorted(_PACKAGE.rglob("*.py")):
        body = ast.parse(path.read_text(encoding="utf-8")).body
        for statement, following in itertools.pairwise(body):
            targets = (
                [statement.target]
                if isinstance(statement, ast.AnnAssign)
                else getattr(statement, "targets", [])
            )
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return (
                    isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                    and isinstance(following.value.value, str)
                    and bool(following.value.value.strip())
                )
    return False


class TestPublicApi:
    @_MODULES
    def test_all_is_pinned(self, module):
        assert module.__all__ == PUBLIC[module]

    @_MODULES
    def test_all_is_sorted(self, module):
        assert module.__all__ == sorted(module.__all__)

    @_MODULES
    def test_every_name_in_all_exists(self, module):
        missing = [name for name in module.__all__ if not hasattr(module, name)]

        assert missing == []

    def test_subpackages_reexport_the_same_objects(self):
        for module in (stageflow.interceptors, stageflow.ports):
            for name in module.__all__:
                assert getattr(stageflow, name) is getattr(module, name)

    def test_star_import_gives_exactly_all(self):
        namespace: dict[str, object] = {}
        exec("from stageflow import *", namespace)

        assert sorted(k for k in namespace if k != "__builtins__") == sorted(stageflow.__all__)

    def test_version_is_a_pep440_release(self):
        assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*", stageflow.__version__)

    @pytest.mark.parametrize(
        ("module", "name"), _public_names(), ids=[f"{m.__name__}.{n}" for m, n in _public_names()]
    )
    def test_every_public_name_has_a_docstring(self, module, name):
        obj = getattr(module, name)
        if inspect.isclass(obj):
            doc = obj.__dict__.get("__doc__")  # its own, not inherited
        elif inspect.isfunction(obj):
            doc = obj.__doc__
        else:  # a type alias: documented by a string literal right after its assignment
            assert _has_attribute_docstring(name), f"{module.__name__}.{name} has no docstring"
            return
        assert doc, f"{module.__name__}.{name} has no docstring of its own"
        assert doc.strip()

    @pytest.mark.parametrize(
        ("module", "name"), _public_names(), ids=[f"{m.__name__}.{n}" for m, n in _public_names()]
    )
    def test_every_public_method_and_property_has_a_docstring(self, module, name):
        cls = getattr(module, name)
        if not inspect.isclass(cls) or issubclass(cls, BaseException | enum.Enum):
            return  # exceptions and enums document themselves in the class docstring
        undocumented = [
            attr
            for attr, value in vars(cls).items()
            if not attr.startswith("_")
            and (inspect.isfunction(value) or isinstance(value, property | classmethod))
            and not inspect.getdoc(getattr(cls, attr))
        ]
        assert undocumented == [], f"{cls.__qualname__}: {undocumented} have no docstring"
