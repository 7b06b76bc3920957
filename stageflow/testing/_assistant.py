"""ScriptedAssistant: an LLMAssistant that answers from a script, for tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from .._assist import Diagnosis, Findings, Verdict

__all__ = ["ScriptedAssistant"]

_Answer = Any  # a result, or a callable (stage, sent) -> result


class ScriptedAssistant:
    """An :class:`~stageflow.ports.LLMAssistant` whose answers are given up front: a
    result for every stage, or a callable ``(stage, sent) -> result``. It keeps what
    it was sent (``calls``: mode, stage, and what it got), can take its time
    (``delay`` seconds: virtual time under :func:`run_virtual`) or raise ``error``.

    Example:
        >>> from stageflow import Verdict
        >>> assistant = ScriptedAssistant(verdict=Verdict(ok=False, text="empty input"))
    """

    def __init__(
        self,
        *,
        verdict: _Answer = None,
        findings: _Answer = None,
        diagnosis: _Answer = None,
        delay: float = 0.0,
        error: BaseException | None = None,
    ) -> None:
        self.verdict = Verdict(ok=True) if verdict is None else verdict
        self.findings = Findings() if findings is None else findings
        self.diagnosis = Diagnosis(cause="unknown") if diagnosis is None else diagnosis
        self.delay = delay
        self.error = error
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    async def pre_validate(self, stage: str, context: Mapping[str, Any], timeout: float) -> Any:
        """The scripted verdict."""
        return await self._answer("validate", stage, {"context": context}, self.verdict)

    async def analyze_output(self, stage: str, output: Mapping[str, Any],
                             context: Mapping[str, Any], timeout: float) -> Any:  # fmt: skip
        """The scripted findings."""
        sent = {"output": output, "context": context}
        return await self._answer("analyze", stage, sent, self.findings)

    async def diagnose_error(self, stage: str, error: Mapping[str, Any],
                             context: Mapping[str, Any], timeout: float) -> Any:  # fmt: skip
        """The scripted diagnosis."""
        sent = {"error": error, "context": context}
        return await self._answer("diagnose", stage, sent, self.diagnosis)

    async def _answer(self, mode: str, stage: str, sent: dict[str, Any], answer: _Answer) -> Any:
        self.calls.append((mode, stage, sent))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        if isinstance(answer, Callable) and not isinstance(answer, type):  # type: ignore[arg-type]
            return answer(stage, sent)
        return answer
