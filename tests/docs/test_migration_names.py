"""docs/migration.md lists every public name of stageflow-core, and what replaces it.

The names are checked in below, as stageflow-core published them; the page's section
"Every stageflow-core name" must list each of them once, say for each what to use in
stageflow (a name that exists, and a link to the section that documents it) or that there
is no equivalent, and link only to sections that exist.
"""

from __future__ import annotations

import builtins
import importlib
import re
import warnings
from pathlib import Path

import pytest

import stageflow

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MIGRATION = DOCS / "migration.md"
SECTION = "## Every stageflow-core name"

# The `__all__` of each public module of stageflow-core 1.2.0, its latest release: repository
# Antonio7098/stageflow, tag v1.2.0 (commit 33842588ecffb527712bcc7f43357b2ad8ee2f38,
# pyproject.toml version "1.2.0"), read from the files named by the keys, in their order.
# fmt: off
CORE_NAMES: dict[str, tuple[str, ...]] = {
    "stageflow/__init__.py": (
        "Stage", "StageKind", "StageStatus", "StageOutput", "StageReturn", "StageContext",
        "StageCancellationRequested", "StageArtifact", "StageEvent", "StageError", "StageResult",
        "StagePayloadResult", "create_stage_context", "PipelineTimer", "Pipeline",
        "PipelineBuilder", "LinearPipeline", "UnifiedStageSpec", "PipelineResults", "stage",
        "stage_metadata", "run_stage", "StageExecutionError", "UnifiedStageExecutionError",
        "StageGraph", "UnifiedStageGraph", "StageSpec", "PipelineRegistry", "pipeline_registry",
        "PipelineContext", "cancel_output", "fail_output", "ok_output", "payload_from_inputs",
        "payload_from_results", "summary_from_output", "create_test_snapshot",
        "create_test_stage_context", "extract_service", "BaseInterceptor", "InterceptorResult",
        "InterceptorContext", "ErrorAction", "LoggingInterceptor", "MetricsInterceptor",
        "ChildTrackerMetricsInterceptor", "TracingInterceptor", "CircuitBreakerInterceptor",
        "TimeoutInterceptor", "get_default_interceptors", "run_with_interceptors", "EventSink",
        "NoOpEventSink", "LoggingEventSink", "BackpressureAwareEventSink", "get_event_sink",
        "set_event_sink", "clear_event_sink", "RunStore", "ConfigProvider", "CorrelationIds",
        "CircuitBreaker", "CircuitBreakerOpenError", "PipelineRunLogger", "ProviderCallLogger",
        "summarize_pipeline_error", "error_summary_to_string", "error_summary_to_stages_patch",
        "get_circuit_breaker", "ExtensionRegistry", "ExtensionHelper", "TypedExtension",
        "StageInputs", "create_stage_inputs", "CorePorts", "LLMPorts", "AudioPorts",
        "create_core_ports", "create_llm_ports", "create_audio_ports", "CycleDetectedError",
        "PipelineValidationError", "SubpipelineSpawner", "SubpipelineResult", "ChildRunTracker",
        "MaxDepthExceededError", "get_child_tracker", "get_subpipeline_spawner", "DependencyIssue",
        "DependencyLintResult", "IssueSeverity", "lint_pipeline", "lint_pipeline_file",
        "WSMessageProjector", "ProjectorService", "WSMetadata", "WSOutboundMessage",
        "WSStatusUpdatePayload", "_coerce_uuid_str", "create_test_context",
        "create_test_pipeline_context", "WideEventEmitter", "emit_stage_wide_event",
        "emit_pipeline_wide_event",
    ),
    "stageflow/agent/__init__.py": (
        "Agent", "AgentConfig", "AgentLoopError", "AgentRunResult", "AgentStage", "AgentToolCall",
        "AgentToolResult", "AgentTurn", "AgentTurnLimitError", "ContextSnapshot",
        "DocumentEnrichment", "LLMOutputValidationError", "MemoryEnrichment", "Message",
        "ProfileEnrichment", "PromptLibrary", "PromptRenderError", "PromptSecurityError",
        "PromptSecurityPolicy", "PromptSecurityReport", "PromptTemplate", "RenderedPrompt",
        "RoutingDecision", "TypedLLMOutput", "TypedLLMResult",
    ),
    "stageflow/auth/__init__.py": (
        "AuthContext", "AuthenticationError", "AuthFailureEvent", "AuthInterceptor",
        "AuthLoginEvent", "CrossTenantAccessError", "InvalidTokenError", "JwtValidator",
        "MissingClaimsError", "MockJwtValidator", "OrgContext", "OrgEnforcementInterceptor",
        "TenantAccessDeniedEvent", "TenantAwareLogger", "TenantContext", "TenantIsolationError",
        "TenantIsolationValidator", "TokenExpiredError", "clear_current_tenant",
        "get_current_tenant", "require_tenant", "set_current_tenant",
    ),
    "stageflow/cli/__init__.py": (
        "DependencyIssue", "DependencyLintResult", "lint_pipeline", "lint_pipeline_file",
    ),
    "stageflow/compression/__init__.py": (
        "CompressionMetrics", "apply_delta", "compute_delta", "compress",
    ),
    "stageflow/context/__init__.py": (
        "ContextSnapshot", "RunIdentity", "Enrichments", "Conversation", "DocumentEnrichment",
        "MemoryEnrichment", "ProfileEnrichment", "Message", "RoutingDecision", "ExtensionBundle",
        "OutputBag", "OutputEntry", "OutputConflictError", "ContextBag", "DataConflictError",
        "ContextUtilization", "TruncationEvent", "TruncationTracker", "VersionMetadata",
        "ConflictDetector", "ConflictResolution",
    ),
    "stageflow/contracts/__init__.py": (
        "ContractCompatibilityReport", "ContractErrorInfo", "ContractMetadata", "ContractRegistry",
        "ContractSuggestion", "TypedStageOutput", "get_contract_suggestion", "register_suggestion",
        "registry",
    ),
    "stageflow/core/__init__.py": (
        "Stage", "StageKind", "StageStatus", "StageOutput", "StageReturn", "StageContext",
        "StageCancellationRequested", "StageArtifact", "StageEvent", "PipelineTimer",
        "stage_metadata", "create_stage_context",
    ),
    "stageflow/events/__init__.py": (
        "BackpressureAwareEventSink", "BackpressureMetrics", "EventSink", "LoggingEventSink",
        "NoOpEventSink", "clear_event_sink", "get_event_sink", "set_event_sink",
        "wait_for_event_sink_tasks", "emit_event", "register_event_sink",
    ),
    "stageflow/helpers/__init__.py": (
        "MemoryConfig", "MemoryEntry", "MemoryFetchStage", "MemoryStore", "MemoryWriteStage",
        "InMemoryStore", "GuardrailConfig", "GuardrailResult", "GuardrailStage", "PIIDetector",
        "InjectionDetector", "ContentFilter", "PolicyViolation", "ViolationType", "GuardrailCheck",
        "ContentLengthCheck", "ChunkQueue", "RealtimeStageBus", "StreamingBuffer",
        "BackpressureMonitor", "AudioChunk", "AudioFormat", "StreamConfig",
        "create_realtime_stage_context", "encode_audio_for_logging", "AnalyticsEvent",
        "AnalyticsExporter", "AnalyticsSink", "JSONFileExporter", "ConsoleExporter",
        "BufferedExporter", "MockLLMProvider", "MockSTTProvider", "MockTTSProvider",
        "MockAuthProvider", "MockToolExecutor", "ObservableEventSink", "PipelineRunner",
        "RunResult", "run_simple_pipeline", "setup_logging", "LLMResponse", "STTResponse",
        "TTSResponse", "parse_timestamp", "detect_unix_precision", "normalize_to_utc",
        "UuidCollisionMonitor", "UuidEvent", "UuidEventListener", "ClockSkewDetector",
        "generate_uuid7", "MemoryTracker", "MemorySample", "track_memory",
    ),
    "stageflow/observability/__init__.py": (
        "CircuitBreaker", "CircuitBreakerOpenError", "NoOpPipelineRunLogger",
        "NoOpProviderCallLogger", "NoOpSpan", "OTEL_AVAILABLE", "PipelineRunLogger",
        "ProviderCallLogger", "StageflowTracer", "TraceContext", "WideEventEmitter",
        "clear_correlation_id", "emit_pipeline_wide_event", "emit_stage_wide_event",
        "ensure_correlation_id", "error_summary_to_stages_patch", "error_summary_to_string",
        "get_circuit_breaker", "get_correlation_id", "get_span_id", "get_trace_context_dict",
        "get_trace_id", "pipeline_run_logger", "provider_call_logger", "set_correlation_id",
        "summarize_pipeline_error",
    ),
    "stageflow/pipeline/__init__.py": (
        "Pipeline", "PipelineBuilder", "PipelineSpec", "PipelineValidationError",
        "CycleDetectedError", "PipelineRegistry", "pipeline_registry", "PipelineContext", "Stage",
        "StageError", "StageResult", "StageGraph", "StageRunner", "StageSpec",
        "StageExecutionError", "UnifiedStageGraph", "UnifiedStageExecutionError",
        "UnifiedStageSpec", "PipelineResults", "GuardRetryPolicy", "GuardRetryStrategy",
        "hash_retry_payload", "stage", "run_stage", "DEFAULT_MAX_SUBPIPELINE_DEPTH",
        "MaxDepthExceededError", "SubpipelineResult", "SubpipelineSpawner", "ChildRunTracker",
        "PipelineSpawnedChildEvent", "PipelineChildCompletedEvent", "PipelineChildFailedEvent",
        "PipelineCanceledEvent", "get_child_tracker", "set_child_tracker", "clear_child_tracker",
        "get_subpipeline_spawner", "set_subpipeline_spawner", "clear_subpipeline_spawner",
        "FailureMode", "FailureRecord", "FailureSummary", "FailureCollector", "BackpressureConfig",
        "BackpressureMonitor", "ConditionalDependency", "RetryInterceptor", "BackoffStrategy",
        "JitterStrategy", "TransientError", "RateLimitError", "ServiceUnavailableError",
        "FluentPipelineBuilder", "with_linear_chain", "with_parallel_stages", "with_fan_out_fan_in",
        "with_conditional_branch",
    ),
    "stageflow/projector/__init__.py": (
        "ProjectorService", "WSMetadata", "WSMessageProjector", "WSOutboundMessage",
        "WSStatusUpdatePayload",
    ),
    "stageflow/route/__init__.py": (
        "EscalationPatternMatcher", "EscalationSignals", "SemanticLoopDetector",
        "ConfidenceRouterStage",
    ),
    "stageflow/stages/__init__.py": (
        "PipelineContext", "StageError", "StageInputs", "StageResult", "UndeclaredDependencyError",
        "CorePorts", "LLMPorts", "AudioPorts", "StagePayloadResult", "cancel_output", "fail_output",
        "ok_output", "payload_from_inputs", "payload_from_results", "summary_from_output",
        "create_stage_inputs", "create_core_ports", "create_llm_ports", "create_audio_ports",
    ),
    "stageflow/tools/__init__.py": (
        "Tool", "BaseTool", "Action", "ToolDefinition", "ToolInput", "ToolOutput", "ToolHandler",
        "UndoHandler", "UndoMetadata", "DiffType", "DiffLine", "DiffResult", "diff_text",
        "diff_json", "diff_structured", "ToolError", "ToolNotFoundError", "ToolDeniedError",
        "ToolApprovalDeniedError", "ToolApprovalTimeoutError", "ToolUndoError",
        "ToolExecutionError", "ToolEventBase", "ToolInvokedEvent", "ToolStartedEvent",
        "ToolCompletedEvent", "ToolFailedEvent", "ToolDeniedEvent", "ToolUndoneEvent",
        "ToolUndoFailedEvent", "ApprovalRequestedEvent", "ApprovalDecidedEvent", "ResolvedToolCall",
        "ToolRegistry", "UnresolvedToolCall", "clear_tool_registry", "get_tool_registry",
        "register_tool", "tool", "ToolExecutor", "AdvancedToolExecutor", "ToolExecutorConfig",
        "ExecutionResult", "UndoStore", "get_undo_store", "set_undo_store", "clear_undo_store",
        "ApprovalStatus", "ApprovalRequest", "ApprovalDecision", "ApprovalService",
        "get_approval_service", "set_approval_service", "clear_approval_service",
        "DictContextAdapter", "adapt_context",
    ),
    "stageflow/utils/__init__.py": (
        "FrozenDict", "FrozenList",
    ),
    "stageflow/websearch/__init__.py": (
        "WebSearchClient", "WebSearchConfig", "create_mock_client", "FetcherProtocol",
        "ContentExtractorProtocol", "NavigatorProtocol", "Fetcher", "HttpFetcher", "FetchConfig",
        "FetchResult", "ContentExtractor", "DefaultContentExtractor", "ExtractionConfig",
        "Navigator", "PageNavigator", "NavigationConfig", "NavigationResult", "WebPage",
        "PageMetadata", "PaginationInfo", "ExtractedLink", "NavigationAction", "FetchProgress",
        "SearchResult", "SiteMap", "fetch_page", "fetch_pages", "fetch_with_retry",
        "search_and_extract", "map_site", "extract_all_links", "shutdown_extraction_pool",
    ),
    "stageflow/advanced.py": (
        "BaseInterceptor", "ChildTrackerMetricsInterceptor", "CircuitBreakerInterceptor",
        "ContextSizeInterceptor", "ContextSnapshot", "Conversation", "CycleDetectedError",
        "ErrorAction", "Enrichments", "ExtensionBundle", "get_default_interceptors",
        "GuardRetryPolicy", "GuardRetryStrategy", "hash_retry_payload", "ImmutabilityInterceptor",
        "InterceptorContext", "InterceptorResult", "LoggingInterceptor", "MetricsInterceptor",
        "Pipeline", "PipelineBuilder", "PipelineContext", "PipelineResults",
        "PipelineValidationError", "StagePayloadResult", "run_stage", "run_with_interceptors",
        "RunIdentity", "cancel_output", "fail_output", "ok_output", "payload_from_inputs",
        "payload_from_results", "summary_from_output", "stage", "Stage", "stage_metadata",
        "StageContext", "StageCancellationRequested", "StageError", "StageExecutionError",
        "StageGraph", "StageKind", "StageOutput", "StageReturn", "StageResult", "StageSpec",
        "StageStatus", "TimeoutInterceptor", "TracingInterceptor", "UnifiedStageExecutionError",
        "UnifiedStageGraph", "UnifiedStageSpec", "WideEventEmitter", "emit_pipeline_wide_event",
        "emit_stage_wide_event",
    ),
    "stageflow/api.py": (
        "Pipeline", "PipelineContext", "PipelineResults", "Stage", "StageArtifact",
        "StageCancellationRequested", "StageContext", "StageEvent", "StageKind", "StageOutput",
        "StageReturn", "StageStatus", "StagePayloadResult", "cancel_output", "fail_output",
        "ok_output", "payload_from_inputs", "payload_from_results", "summary_from_output", "stage",
        "run_stage", "stage_metadata",
    ),
    "stageflow/extensions.py": (
        "ExtensionRegistry", "ExtensionHelper", "TypedExtension", "create_skills_extension",
    ),
    "stageflow/protocols.py": (
        "ExecutionContext", "EventSink", "RunStore", "ConfigProvider", "CorrelationIds",
    ),
    "stageflow/testing.py": (
        "create_test_snapshot", "create_test_stage_context", "create_test_pipeline_context",
        "SnapshotValidationError", "SnapshotValidationResult", "validate_snapshot",
        "validate_snapshot_strict", "snapshot_from_dict_strict",
    ),
}
# fmt: on

ALL_CORE_NAMES = frozenset(name for names in CORE_NAMES.values() for name in names)

# Where an upper-case name that the page offers as a replacement must exist.
_PUBLIC_MODULES = (
    "stageflow", "stageflow.errors", "stageflow.interceptors", "stageflow.ports",
    "stageflow.testing", "stageflow.adapters.memory",
)  # fmt: skip
# What a lower-case `ctx.x` / `result.x` in the page is an attribute of.
_RECEIVERS = {
    "ctx": stageflow.StageContext,
    "result": stageflow.RunResult,
    "graph": stageflow.StageGraph,
    "pipeline": stageflow.Pipeline,
}

_CODE = re.compile(r"`([^`]+)`")
_NAME = re.compile(r"[A-Za-z_]\w*$")
_LINK = re.compile(r"\]\((?P<page>[\w-]+\.md)?(?:#(?P<anchor>[\w-]+))?\)")


def section(page: str) -> str:
    """The text of the page's "Every stageflow-core name" section, up to the next ## heading."""
    start = page.index(SECTION)
    end = page.find("\n## ", start + len(SECTION))
    return page[start : None if end == -1 else end]


def rows(text: str) -> list[tuple[str, str]]:
    """The (stageflow-core, in stageflow) cells of the section's table rows."""
    found = []
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and len(cells) == 2 and cells != ["stageflow-core", "in stageflow"]:
            found.append((cells[0], cells[1]))
    return found


def listed(text: str) -> list[str]:
    """The stageflow-core names the rows list, in order, repeats included."""
    return [name for old, _ in rows(text) for name in _CODE.findall(old) if _NAME.match(name)]


def slug(heading: str) -> str:
    """The anchor MkDocs gives a heading (Python-Markdown's toc slugify)."""
    text = re.sub(r"[^\w\s-]", "", heading.replace("`", "")).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return {slug(m[1]) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def _resolves(reference: str) -> bool:
    """Whether the leading dotted name of a code span in the page exists in stageflow."""
    match = re.match(r"[A-Za-z_][\w.]*", reference)
    dotted = match[0].rstrip(".").split(".") if match else []
    if not dotted:
        return True
    head, *rest = dotted
    if head in {"None", "True", "False"}:
        return not rest
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the compat names warn
        if head == "stageflow":
            module, i = importlib.import_module("stageflow"), 1
            while i < len(dotted) and not hasattr(module, dotted[i]):
                try:
                    module = importlib.import_module(".".join(dotted[: i + 1]))
                except ModuleNotFoundError:
                    return False
                i += 1
            obj, rest = module, dotted[i:]
        elif head in _RECEIVERS:
            obj, rest = _RECEIVERS[head], rest[:1]  # one attribute deep: properties don't chain
        elif head[0].isupper():
            owners = [importlib.import_module(m) for m in _PUBLIC_MODULES] + [builtins]
            obj = next((getattr(o, head) for o in owners if hasattr(o, head)), None)
            if obj is None:
                return False
        else:
            return True  # a call, a keyword, a shell command: prose, not a name
        for attribute in rest:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
    return True


def _page() -> str:
    return MIGRATION.read_text(encoding="utf-8")


def test_the_checked_in_list_is_what_it_says() -> None:
    assert len(CORE_NAMES) == 23
    for names in CORE_NAMES.values():
        assert len(names) == len(set(names))
    assert len(CORE_NAMES["stageflow/__init__.py"]) == 104
    assert {"ContextSnapshot", "RunIdentity", "StageInputs", "PipelineTimer"} <= ALL_CORE_NAMES
    assert len(ALL_CORE_NAMES) == 388


def test_every_stageflow_core_name_is_listed_once() -> None:
    names = listed(section(_page()))
    repeated = sorted({name for name in names if names.count(name) > 1})
    assert repeated == []
    assert sorted(ALL_CORE_NAMES - set(names)) == []  # dropped from the page
    assert sorted(set(names) - ALL_CORE_NAMES) == []  # not a stageflow-core name


def test_a_dropped_name_fails_the_check() -> None:
    text = section(_page()).replace(", `UnifiedStageGraph`", "")
    assert ALL_CORE_NAMES - set(listed(text)) == {"UnifiedStageGraph"}


def test_each_row_names_a_replacement_with_its_section_or_says_there_is_none() -> None:
    for old, new in rows(section(_page())):
        if new.startswith("no equivalent"):
            assert len(new) > len("no equivalent: ") + 10, old  # why, and what to do instead
        else:
            assert _CODE.search(new), old  # a stageflow name
            assert _LINK.search(new), old  # and where it is documented


@pytest.mark.parametrize(
    ("reference", "exists"),
    [
        ("Pipeline.with_stage(..., output=Model)", True),
        ("stageflow.testing.RecordingSink", True),
        ("stageflow.context.ContextSnapshot", True),
        ("ctx.usage.report(...)", True),
        ("EventType.RUN_CANCELLED", True),
        ("CycleDetectedError", False),
        ("StageOutput.cancel(reason)", False),
        ("ctx.snapshot_of", False),
        ("stageflow.helpers.RunResult", False),
    ],
)
def test_a_reference_resolves_only_when_stageflow_has_it(reference: str, exists: bool) -> None:
    assert _resolves(reference) is exists


def test_every_name_offered_in_stageflow_exists() -> None:
    for old, new in rows(section(_page())):
        for reference in _CODE.findall(new):
            assert _resolves(reference), (old, reference)


def test_every_link_points_at_an_existing_section() -> None:
    for old, new in rows(section(_page())):
        for link in _LINK.finditer(new):
            page = DOCS / (link["page"] or MIGRATION.name)
            assert page.is_file(), (old, link[0])
            if link["anchor"]:
                assert link["anchor"] in anchors(page), (old, link[0])


def test_the_count_of_replacements() -> None:
    names = {"replaced": 0, "none": 0}
    for old, new in rows(section(_page())):
        count = sum(1 for name in _CODE.findall(old) if _NAME.match(name))
        names["none" if new.startswith("no equivalent") else "replaced"] += count
    assert names["replaced"] + names["none"] == len(ALL_CORE_NAMES)
    assert names["replaced"] > 100  # what stageflow does have is not hidden among the kits
