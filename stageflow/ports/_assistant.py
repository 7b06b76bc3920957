from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .._assist import Diagnosis, Findings, Verdict


@runtime_checkable
class LLMAssistant(Protocol):
    """An LLM that helps with stages: pre-validates their input, analyses their output,
    diagnoses their errors (:class:`~stageflow.AssistanceInterceptor` calls it).

    Each method gets the stage's name and a ``context`` of plain, JSON-able values —
    ``pipeline``, ``run_id``, ``stage``, ``attempt``, ``data`` and ``inputs`` (the run's
    data and the stage's inputs) — already redacted (known secrets and hidden fields
    masked) and cut to a size; ``timeout`` is the seconds it has (the interceptor stops
    waiting then). What it spent goes in its result's ``usage``. An exception it raises
    is logged and counted; the stage goes on as if it had not been asked.
    """

    async def pre_validate(self, stage: str, context: Mapping[str, Any], timeout: float) -> Verdict:
        """Whether the stage's input looks fit to run it on."""
        ...

    async def analyze_output(
        self, stage: str, output: Mapping[str, Any], context: Mapping[str, Any], timeout: float
    ) -> Findings:
        """What is remarkable in the stage's output (``output``, redacted and cut too)."""
        ...

    async def diagnose_error(
        self, stage: str, error: Mapping[str, Any], context: Mapping[str, Any], timeout: float
    ) -> Diagnosis:
        """Why the stage failed: ``error`` has its ``type``, ``message`` and ``traceback``
        (redacted and cut)."""
        ...
