"""AssistanceInterceptor: LLM assistance for the stages that ask for it."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import Awaitable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final

from .._assist import AssistanceConfig, AssistUsage, Diagnosis, Findings, Verdict
from .._check import integer, refuse
from .._events import EventType
from .._outputref import OutputRef
from .._redact import MASK, is_secret_value, redacted
from .._stage import StageOutput
from .._status import StageStatus
from ..errors import AssistanceBlockedError, BudgetExceededError, ConfigurationError
from ._base import Priority

if TYPE_CHECKING:
    from .._context import StageCall, StageContext
    from .._spec import StageSpec
    from ..ports import LLMAssistant

__all__ = ["HIDDEN_FIELDS", "AssistanceInterceptor"]

HIDDEN_FIELDS: Final = frozenset(
    {"password", "passwd", "secret", "token", "api_key", "apikey", "authorization", "cookie"}
)
"""Keys whose values the assistant never sees (compared lowercased, ``-`` as ``_``)."""

logger = logging.getLogger("stageflow.assist")


class AssistanceInterceptor:
    """LLM assistance for the stages that ask for it: ``with_stage(..., assist=(
    "validate", "analyze", "diagnose"))``, an :class:`~stageflow.ports.LLMAssistant`
    doing it.

    - ``validate``: before the stage runs (once, not per retry), ``pre_validate`` on
      its input; a verdict "not ok" blocks it (``AssistanceBlockedError``), warns, or is
      only recorded, as its :class:`~stageflow.AssistanceConfig` ``policy`` says;
    - ``analyze``: after it completed, ``analyze_output`` on its output;
    - ``diagnose``: after it failed (its retries spent), ``diagnose_error`` on its error,
      which is then raised as it was.

    Assistance never breaks or stalls a stage by itself: each call has its own timeout,
    and an assistant that raises or runs out of time is logged (``stageflow.assist``)
    and counted (:attr:`failures`, an ``assist.failed`` event); the stage's outcome is
    unchanged unless a ``block`` policy says so. What the assistant is sent is redacted —
    known secrets masked, values of ``hidden`` keys replaced by ``***`` — and cut to
    ``max_chars`` characters of JSON. What it spent (its results' ``usage``) is reported
    to the run's ledger as the stage ``assist:<stage>``, and counts against the run's
    budget. Each result is an event: ``assist.validated``, ``assist.analyzed``,
    ``assist.diagnosed``.

    A stage without ``assist=`` is not wrapped: it costs nothing.

    Args:
        assistant: the :class:`~stageflow.ports.LLMAssistant`.
        hidden: keys whose values are never sent (default :data:`HIDDEN_FIELDS`).
        max_chars: the most characters of JSON sent for a context, an output, an error.
        priority: its place in the chain (default ``Priority.ASSISTANCE``: inside the
            checkpoint, outside retry).
    """

    name = "assistance"

    def __init__(
        self,
        assistant: LLMAssistant,
        *,
        hidden: Iterable[str] = HIDDEN_FIELDS,
        max_chars: int = 8000,
        priority: int = Priority.ASSISTANCE,
    ) -> None:
        for method in ("pre_validate", "analyze_output", "diagnose_error"):
            if not asyncio.iscoroutinefunction(getattr(assistant, method, None)):
                raise ConfigurationError(
                    f"assistant must be an LLMAssistant (async pre_validate, analyze_output "
                    f"and diagnose_error): {type(assistant).__qualname__} has no async "
                    f"{method}",
                    field="assistant",
                    value=type(assistant).__qualname__,
                )
        if isinstance(hidden, str) or not all(isinstance(k, str) for k in hidden):
            refuse("hidden", "an iterable of key names (str)", hidden)
        self.assistant = assistant
        self.hidden = frozenset(_key(k) for k in hidden)
        self.max_chars = integer(max_chars, "max_chars", "a number of characters >= 100",
                                 ge=100)  # fmt: skip
        self.priority = priority
        self.failures = 0  # assistance calls that raised or ran out of time

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        """The stage's call, assisted as its ``assist=`` says; itself without one."""
        configs = spec.assist
        if not configs:
            return call
        modes = {config.mode: config for config in configs}
        validate, analyze, diagnose = (modes.get(m) for m in ("validate", "analyze", "diagnose"))
        name = spec.name
        assistant = self.assistant

        async def assisted(ctx: StageContext) -> Any:
            # Made once, when first needed: a stage that asks only for a diagnosis and
            # succeeds builds none.
            context = self._context(ctx) if validate is not None else None
            if validate is not None:
                assert context is not None
                verdict = await self._ask(
                    ctx, validate, Verdict, assistant.pre_validate(name, context, validate.timeout)
                )
                if verdict is not None:
                    ctx.event(EventType.ASSIST_VALIDATED, ok=verdict.ok,
                              confidence=verdict.confidence, text=verdict.text)  # fmt: skip
                    if not verdict.ok:
                        self._refused(ctx, validate, verdict)
            try:
                out = await call(ctx)
            except Exception as error:
                if diagnose is not None:
                    context = context or self._context(ctx)
                    sent = self._bounded(_error_of(error))
                    asked = assistant.diagnose_error(name, sent, context, diagnose.timeout)
                    diagnosis = await self._ask(ctx, diagnose, Diagnosis, asked)
                    if diagnosis is not None:
                        ctx.event(EventType.ASSIST_DIAGNOSED, cause=diagnosis.cause,
                                  fix=diagnosis.fix, retryable=diagnosis.retryable,
                                  confidence=diagnosis.confidence, text=diagnosis.text)  # fmt: skip
                raise
            if analyze is not None and _completed(out):
                context = context or self._context(ctx)
                data = out.data if isinstance(out, StageOutput) else out or {}
                if isinstance(data, OutputRef):  # left where a runner ran the call
                    data = await data.fetch()
                findings = await self._ask(ctx, analyze, Findings, assistant.analyze_output(
                    name, self._bounded(dict(data)), context, analyze.timeout))  # fmt: skip
                if findings is not None:
                    ctx.event(EventType.ASSIST_ANALYZED, findings=list(findings.findings),
                              confidence=findings.confidence, text=findings.text)  # fmt: skip
            return out

        assisted.__qualname__ = f"assisted({name})"
        return assisted

    # ------------------------------------------------------------------ the calls

    async def _ask(
        self, ctx: StageContext, config: AssistanceConfig, kind: type, asked: Awaitable[Any]
    ) -> Any:
        """What the assistant answered, within its timeout; None if it raised, ran out of
        time or gave no ``kind`` (logged, counted, an ``assist.failed`` event)."""
        try:
            answer = await asyncio.wait_for(asked, config.timeout)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - assistance never fails a stage
            timed_out = isinstance(error, TimeoutError)
            why = f"timed out after {config.timeout:g}s" if timed_out else (
                f"{type(error).__name__}: {error}")  # fmt: skip
            return self._failed(ctx, config, why)
        if not isinstance(answer, kind):
            return self._failed(ctx, config, f"gave {type(answer).__qualname__}, not a "
                                f"{kind.__name__}")  # fmt: skip
        usage = getattr(answer, "usage", None)
        if isinstance(usage, AssistUsage):
            label = f"assist:{ctx.stage}"
            try:
                ctx.ledger.report(ctx, None, usage.model, usage.input_tokens,
                                  usage.output_tokens, usage.cost, label=label)  # fmt: skip
            except BudgetExceededError as error:  # recorded: it was spent
                logger.warning("assistance of stage %r went over the budget: %s", ctx.stage,
                               error)  # fmt: skip
            except Exception as error:  # noqa: BLE001 - a bad usage is the assistant's fault
                self._failed(ctx, config, f"its usage was refused: {error}")
        return answer

    def _failed(self, ctx: StageContext, config: AssistanceConfig, why: str) -> None:
        self.failures += 1
        why = redacted(why)
        logger.warning("assistance %r of stage %r failed: %s; the stage goes on without it",
                       config.mode, ctx.stage, why)  # fmt: skip
        ctx.event(EventType.ASSIST_FAILED, mode=config.mode, reason=why)

    def _refused(self, ctx: StageContext, config: AssistanceConfig, verdict: Verdict) -> None:
        text = redacted(verdict.text)
        if config.policy == "block":
            raise AssistanceBlockedError.of(ctx.stage, text, verdict.confidence)
        if config.policy == "warn":
            logger.warning("stage %r: its pre-validation says its input is not fit "
                           "(confidence %g): %s", ctx.stage, verdict.confidence, text)  # fmt: skip

    # ------------------------------------------------------------------ what is sent

    def _context(self, ctx: StageContext) -> Mapping[str, Any]:
        inputs = {d: dict(ctx.inputs[d]) for d in ctx.inputs}
        return {"pipeline": ctx.pipeline, "run_id": ctx.run_id, "stage": ctx.stage,
                "attempt": ctx.attempt, **self._bounded({"data": dict(ctx.data),
                                                         "inputs": inputs})}  # fmt: skip

    def _bounded(self, value: Mapping[str, Any]) -> dict[str, Any]:
        """``value`` as JSON-able data, redacted, and cut to ``max_chars`` of JSON (then
        ``{"truncated": <the start of its JSON>}``)."""
        masked = _masked(value, self.hidden)
        text = json.dumps(masked, ensure_ascii=False, default=lambda o: redacted(repr(o)))
        text = redacted(text)
        if len(text) <= self.max_chars:
            loaded: dict[str, Any] = json.loads(text)
            return loaded
        return {"truncated": text[: self.max_chars]}

    def __repr__(self) -> str:
        return f"<AssistanceInterceptor {self.assistant!r} priority={self.priority}>"


def _key(name: str) -> str:
    return name.lower().replace("-", "_")


def _masked(value: Any, hidden: frozenset[str]) -> Any:
    if isinstance(value, Mapping):
        return {str(k): MASK if _key(str(k)) in hidden else _masked(v, hidden)
                for k, v in value.items()}  # fmt: skip
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(v, hidden) for v in value]
    if is_secret_value(value):
        return MASK
    return value


def _error_of(error: BaseException) -> dict[str, Any]:
    kind = type(error)
    return {"type": f"{kind.__module__}.{kind.__qualname__}", "message": str(error),
            "traceback": "".join(traceback.format_exception(error))}  # fmt: skip


def _completed(out: object) -> bool:
    return not isinstance(out, StageOutput) or out.status is StageStatus.COMPLETED
