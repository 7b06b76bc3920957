"""LLM assistance of stages (``with_stage(assist=...)``, ``AssistanceInterceptor``) with
the scripted fake assistant: each mode, each policy of a pre-validation, the assistant's
timeout (virtual time) and errors never breaking a stage, what is sent (redacted, cut),
its usage on the ledger under ``assist:<stage>``, its events, and bad input."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from stageflow import (
    AssistanceBlockedError,
    AssistanceConfig,
    AssistanceInterceptor,
    AssistUsage,
    Budget,
    BudgetExceededError,
    ConfigurationError,
    Diagnosis,
    Engine,
    Findings,
    InvalidOptionError,
    Pipeline,
    RetryPolicy,
    RunResult,
    StageOutput,
    StageStatus,
    Verdict,
    known_secret,
)
from stageflow._redact import SECRETS
from stageflow.testing import RecordingSink, ScriptedAssistant, run_virtual

CALLED: list[str] = []


@pytest.fixture(autouse=True)
def _clean() -> Any:
    CALLED.clear()
    SECRETS.forget()
    yield
    SECRETS.forget()


async def work(ctx: Any) -> dict[str, Any]:
    CALLED.append(ctx.stage)
    return {"summary": f"{ctx.data.get('text', '')[:10]}", "n": 3}


async def broken(ctx: Any) -> dict[str, Any]:
    CALLED.append(ctx.stage)
    raise ValueError(f"bad row {ctx.attempt}")


def run(assistant: ScriptedAssistant, stage: Any = work, data: Any = None,
        **options: Any) -> tuple[RunResult, RecordingSink, AssistanceInterceptor]:  # fmt: skip
    sink = RecordingSink()
    interceptor = AssistanceInterceptor(assistant, max_chars=options.pop("max_chars", 8000))
    engine = Engine(sink=sink, interceptors=[interceptor], budget=options.pop("budget", None))
    graph = Pipeline("p").with_stage("s", stage, **options).build()
    return run_virtual(engine.run(graph, data or {"text": "hello world"})), sink, interceptor


def told(sink: RecordingSink, kind: str) -> list[dict[str, Any]]:
    return [dict(e.data) for e in sink.events if e.type == kind]


def test_a_stage_without_assist_is_not_wrapped() -> None:
    interceptor = AssistanceInterceptor(ScriptedAssistant())
    spec = Pipeline("p").with_stage("s", work).build().stages[0]
    assert interceptor.wrap(spec, spec.call) is spec.call


def test_a_pre_validation_that_says_ok_lets_the_stage_run_and_is_told() -> None:
    assistant = ScriptedAssistant(verdict=Verdict(ok=True, confidence=0.9, text="fine"))
    result, sink, _ = run(assistant, assist="validate")
    assert result.ok
    assert CALLED == ["s"]
    assert told(sink, "assist.validated") == [{"ok": True, "confidence": 0.9, "text": "fine"}]
    ((mode, stage, sent),) = assistant.calls
    assert (mode, stage) == ("validate", "s")
    assert sent["context"]["data"] == {"text": "hello world"}
    assert sent["context"]["pipeline"] == "p"


def test_a_pre_validation_that_says_no_blocks_warns_or_only_records(
    caplog: pytest.LogCaptureFixture,
) -> None:
    no = Verdict(ok=False, confidence=0.8, text="the text is empty")
    result, _, _ = run(ScriptedAssistant(verdict=no), assist=[AssistanceConfig(
        "validate", policy="block")])  # fmt: skip
    error = result["s"].error
    assert isinstance(error, AssistanceBlockedError)
    assert (error.text, error.confidence) == ("the text is empty", 0.8)
    assert "blocked by its pre-validation" in str(error)
    assert CALLED == []  # not run
    with caplog.at_level(logging.WARNING, "stageflow.assist"):
        warned, _, _ = run(ScriptedAssistant(verdict=no), assist=[AssistanceConfig(
            "validate", policy="warn")])  # fmt: skip
    assert warned.ok
    assert "not fit" in caplog.text
    recorded, sink, _ = run(ScriptedAssistant(verdict=no), assist="validate")
    assert recorded.ok
    assert CALLED == ["s", "s"]
    assert told(sink, "assist.validated")[0]["ok"] is False


def test_an_analysis_of_a_completed_output_is_told() -> None:
    findings = Findings(findings=("n is small",), confidence=0.7, text="looks fine")
    assistant = ScriptedAssistant(findings=findings)
    result, sink, _ = run(assistant, assist="analyze")
    assert result.ok
    assert told(sink, "assist.analyzed") == [
        {"findings": ["n is small"], "confidence": 0.7, "text": "looks fine"}]  # fmt: skip
    ((mode, _, sent),) = assistant.calls
    assert mode == "analyze"
    assert sent["output"] == {"summary": "hello worl", "n": 3}


def test_no_analysis_of_a_skipped_stage() -> None:
    async def skips(ctx: Any) -> StageOutput:
        return StageOutput.skip("nothing")

    assistant = ScriptedAssistant()
    result, _, _ = run(assistant, stage=skips, assist="analyze")
    assert result["s"].status is StageStatus.SKIPPED
    assert assistant.calls == []


def test_a_diagnosis_comes_after_the_last_attempt_and_the_error_stands() -> None:
    diagnosis = Diagnosis(cause="a malformed row", fix="skip it", retryable=False,
                          confidence=0.6)  # fmt: skip
    assistant = ScriptedAssistant(diagnosis=diagnosis)
    result, sink, _ = run(assistant, stage=broken, assist="diagnose",
                          retry=RetryPolicy(attempts=3, base=1.0))  # fmt: skip
    error = result["s"].error
    assert isinstance(error, ValueError)
    assert str(error) == "bad row 3"
    assert CALLED == ["s", "s", "s"]
    ((mode, _, sent),) = assistant.calls  # once, after the last attempt
    assert mode == "diagnose"
    assert sent["error"]["type"] == "builtins.ValueError"
    assert sent["error"]["message"] == "bad row 3"
    assert "Traceback" in sent["error"]["traceback"]
    (event,) = told(sink, "assist.diagnosed")
    assert (event["cause"], event["fix"], event["retryable"]) == ("a malformed row", "skip it",
                                                                  False)  # fmt: skip


def test_an_assistant_out_of_time_neither_breaks_nor_stalls_the_stage() -> None:
    assistant = ScriptedAssistant(delay=3600.0)  # an hour, on virtual time
    configs = [AssistanceConfig("validate", timeout=2.0), AssistanceConfig("analyze", timeout=3)]
    result, sink, interceptor = run(assistant, assist=configs)
    assert result.ok
    assert CALLED == ["s"]
    assert result.duration == pytest.approx(5.0)  # its two timeouts, not an hour
    assert interceptor.failures == 2
    assert [e["mode"] for e in told(sink, "assist.failed")] == ["validate", "analyze"]
    assert "timed out after 2s" in told(sink, "assist.failed")[0]["reason"]


@pytest.mark.parametrize("answer", ["not a verdict", None], ids=["wrong-type", "none"])
def test_an_assistant_that_raises_or_answers_nonsense_changes_nothing(
    answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    raising = ScriptedAssistant(error=RuntimeError("the LLM is down"))
    with caplog.at_level(logging.WARNING, "stageflow.assist"):
        result, sink, interceptor = run(raising, stage=broken, assist=("validate", "diagnose"))
    assert isinstance(result["s"].error, ValueError)  # the stage's own outcome
    assert interceptor.failures == 2
    assert "the LLM is down" in caplog.text
    odd = ScriptedAssistant(verdict=lambda stage, sent: answer)
    result, sink, interceptor = run(odd, assist="validate")
    assert result.ok
    assert interceptor.failures == 1
    assert "not a Verdict" in told(sink, "assist.failed")[0]["reason"]


def test_what_is_sent_is_redacted_and_cut() -> None:
    known_secret("sk-assist-Pq7Zr2Lm")
    data = {"text": "key sk-assist-Pq7Zr2Lm here", "Password": "hunter2", "nested":
            {"api-key": "x", "ok": [1, 2]}}  # fmt: skip
    assistant = ScriptedAssistant()
    run(assistant, data=data, assist="validate")
    sent = assistant.calls[0][2]["context"]["data"]
    assert sent == {"text": "key *** here", "Password": "***",
                    "nested": {"api-key": "***", "ok": [1, 2]}}  # fmt: skip
    big = ScriptedAssistant()
    run(big, data={"text": "x" * 50_000}, assist="validate", max_chars=1000)
    context = big.calls[0][2]["context"]
    assert set(context) == {"pipeline", "run_id", "stage", "attempt", "truncated"}
    assert len(context["truncated"]) == 1000


def test_its_usage_is_reported_as_its_own_stage_and_counts_against_the_budget() -> None:
    spent = AssistUsage(model="m", input_tokens=300, output_tokens=50)
    assistant = ScriptedAssistant(verdict=Verdict(ok=True, usage=spent),
                                  findings=Findings(usage=spent))  # fmt: skip
    result, _, _ = run(assistant, assist=("validate", "analyze"))
    assert result.usage.by_stage["assist:s"].tokens == 700
    assert "s" not in result.usage.by_stage
    over, sink, _ = run(ScriptedAssistant(verdict=Verdict(ok=True, usage=spent)),
                        assist="validate", budget=Budget(max_tokens=100))  # fmt: skip
    # What the pre-validation spent is counted (it was spent) and spends the run's budget:
    # the stage it validated is then refused by the budget, as any stage would be.
    assert over.usage.tokens == 350
    assert isinstance(over["s"].error, BudgetExceededError)
    assert CALLED == ["s"]  # the first run's; the second's stage never ran
    assert told(sink, "budget.exceeded")


@pytest.mark.parametrize(
    ("assist", "words"),
    [
        ("nope", "assist= takes modes"),
        ([], "at least one"),
        (("validate", "validate"), "each mode at most once"),
        (3, "at least one"),
    ],
    ids=["unknown-mode", "empty", "twice", "not-a-mode"],
)
def test_a_bad_assist_option_is_refused_naming_the_stage(assist: Any, words: str) -> None:
    with pytest.raises(InvalidOptionError, match=words) as caught:
        Pipeline("p").with_stage("s", work, assist=assist)
    assert caught.value.stage == "s"
    assert caught.value.option == "assist"


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: AssistanceConfig("guess"), "mode"),
        (lambda: AssistanceConfig("validate", timeout=0), "timeout"),
        (lambda: AssistanceConfig("validate", policy="maybe"), "policy"),
        (lambda: AssistanceConfig("analyze", policy="block"), "policy"),
        (lambda: AssistanceInterceptor(object()), "assistant"),  # type: ignore[arg-type]
        (lambda: AssistanceInterceptor(ScriptedAssistant(), max_chars=5), "max_chars"),
        (lambda: AssistanceInterceptor(ScriptedAssistant(), hidden="password"), "hidden"),
    ],
    ids=["mode", "timeout", "policy", "policy-of-analyze", "assistant", "max-chars", "hidden"],
)
def test_bad_assistance_settings_are_refused_naming_the_field(make: Any, field: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        make()
    assert caught.value.field == field
