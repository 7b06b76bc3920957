"""``ctx.usage.report_response(response)``: an LLM SDK response's usage reported in one
call, read from recorded response shapes — as decoded JSON (dicts) and as objects with
attributes, as the SDKs' pydantic models give them."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from stageflow import Budget, BudgetExceededError, ConfigurationError, Engine, Pipeline
from stageflow.testing import run_virtual

# Recorded shapes (ids and texts shortened): what the APIs return.
OPENAI_CHAT = """{"id": "chatcmpl-9x", "object": "chat.completion", "created": 1733000000,
 "model": "gpt-4o-mini-2024-07-18", "choices": [{"index": 0, "message": {"role": "assistant",
 "content": "Hello!"}, "logprobs": null, "finish_reason": "stop"}], "usage": {"prompt_tokens": 19,
 "completion_tokens": 10, "total_tokens": 29, "prompt_tokens_details": {"cached_tokens": 0,
 "audio_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}},
 "system_fingerprint": "fp_0ba0d124f1"}"""
OPENAI_RESPONSES = """{"id": "resp_67cc", "object": "response", "created_at": 1741476542,
 "status": "completed", "model": "gpt-4.1-2025-04-14", "output": [{"type": "message",
 "id": "msg_67cc", "status": "completed", "role": "assistant", "content": [{"type":
 "output_text", "text": "In a peaceful grove...", "annotations": []}]}], "usage":
 {"input_tokens": 36, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 87,
 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 123}}"""
OPENAI_EMBEDDING = """{"object": "list", "data": [{"object": "embedding", "index": 0,
 "embedding": [0.0023, -0.0093]}], "model": "text-embedding-3-small", "usage":
 {"prompt_tokens": 8, "total_tokens": 8}}"""
ANTHROPIC_MESSAGE = """{"id": "msg_013Zva", "type": "message", "role": "assistant",
 "model": "claude-sonnet-4-20250514", "content": [{"type": "text", "text": "Hi!"}],
 "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 12,
 "cache_creation_input_tokens": 100, "cache_read_input_tokens": 50, "output_tokens": 6,
 "service_tier": "standard"}}"""

CASES = [
    (OPENAI_CHAT, "gpt-4o-mini-2024-07-18", 19, 10),
    (OPENAI_RESPONSES, "gpt-4.1-2025-04-14", 36, 87),
    (OPENAI_EMBEDDING, "text-embedding-3-small", 8, 0),
    (ANTHROPIC_MESSAGE, "claude-sonnet-4-20250514", 12 + 100 + 50, 6),
]
IDS = ["openai-chat", "openai-responses", "openai-embedding", "anthropic-message"]


def as_object(value: Any) -> Any:
    """The JSON as the SDKs give it: objects with attributes."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: as_object(v) for k, v in value.items()})
    if isinstance(value, list):
        return [as_object(v) for v in value]
    return value


def reported(response: Any, **options: Any) -> Any:
    async def calls_a_model(ctx: Any) -> dict[str, Any]:
        ctx.usage.report_response(response, **options)
        return {}

    graph = Pipeline("p").with_stage("llm", calls_a_model).build()
    return run_virtual(Engine().run(graph))


@pytest.mark.parametrize(("recorded", "model", "tokens_in", "tokens_out"), CASES, ids=IDS)
@pytest.mark.parametrize("shape", ["json", "object"])
def test_a_response_s_usage_is_reported_in_one_call(
    recorded: str, model: str, tokens_in: int, tokens_out: int, shape: str
) -> None:
    data = json.loads(recorded)
    result = reported(data if shape == "json" else as_object(data))
    usage = result.usage
    assert (usage.input_tokens, usage.output_tokens) == (tokens_in, tokens_out)
    assert list(usage.by_model) == [model]


def test_the_model_to_price_it_as_and_the_cost_can_be_given() -> None:
    result = reported(json.loads(OPENAI_CHAT), model="gpt-4o-mini", cost=0.25)
    assert list(result.usage.by_model) == ["gpt-4o-mini"]
    assert result.usage.cost == 0.25


def test_it_counts_against_budgets_as_a_report_does() -> None:
    async def calls_a_model(ctx: Any) -> dict[str, Any]:
        ctx.usage.report_response(json.loads(OPENAI_RESPONSES))
        return {}

    graph = Pipeline("p").with_stage("llm", calls_a_model).build()
    result = run_virtual(Engine(budget=Budget(max_tokens=100)).run(graph))
    assert isinstance(result["llm"].error, BudgetExceededError)
    assert result.usage.tokens == 123  # recorded all the same: it was spent


@pytest.mark.parametrize(
    ("response", "field"),
    [
        ({"id": "x"}, "response"),
        ("a text", "response"),
        ({"usage": {"total_tokens": 3}}, "response.usage"),
    ],
    ids=["no-usage", "no-response", "unknown-usage"],
)
def test_what_is_no_response_with_usage_is_refused_naming_it(response: Any, field: str) -> None:
    result = reported(response)
    error = result["llm"].error
    assert isinstance(error, ConfigurationError)
    assert error.field == field


def test_a_remote_stage_reports_a_response_the_same_way() -> None:
    from stageflow import DetachedContext, InputsSnapshot, run_detached

    def calls_a_model(ctx: Any) -> dict[str, Any]:
        ctx.usage.report_response(as_object(json.loads(ANTHROPIC_MESSAGE)))
        return {}

    ctx = DetachedContext(
        run_id="r", pipeline="p", stage="llm", attempt=1, data={},
        inputs=InputsSnapshot("llm", {}, ()), item=None, loop=None, idempotency_key="r/llm",
        state=(False, None), trace={},
    )  # fmt: skip
    (report,) = run_detached(calls_a_model, ctx).reports
    assert (report.model, report.input_tokens, report.output_tokens) == (
        "claude-sonnet-4-20250514", 162, 6)  # fmt: skip
