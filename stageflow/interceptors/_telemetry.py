"""What the telemetry interceptors share: attribute names, and failures that stay theirs.

Telemetry never breaks a run: an exporter, processor or handler that raises is
logged once and counted in the interceptor's ``errors``; the run goes on.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Final

from .._context import StageContext
from .._stage import StageOutput
from .._status import StageStatus

RUN_ID: Final = "stageflow.run_id"
PIPELINE: Final = "stageflow.pipeline"
STAGE: Final = "stageflow.stage"
KIND: Final = "stageflow.stage.kind"
ATTEMPTS: Final = "stageflow.attempts"
OUTCOME: Final = "stageflow.outcome"
REASON: Final = "stageflow.reason"
RESUMED: Final = "stageflow.run.resumed"
STAGES: Final = "stageflow.run.stages"

COMPLETED: Final = StageStatus.COMPLETED.value
RESTORED: Final = "restored"  # an outcome that is no StageStatus: nothing ran
CANCELLED: Final = StageStatus.CANCELLED.value
FAILED: Final = StageStatus.FAILED.value


class TelemetryErrors:
    """Counts (and logs the first of) the errors raised by telemetry backends."""

    name: str
    errors: int = 0

    def failed(self, error: BaseException, doing: str) -> None:
        """Count an error telemetry raised while ``doing`` something; log the first."""
        self.errors += 1
        if self.errors == 1:
            # A broken logging setup must not break the run either: the count remains.
            with contextlib.suppress(Exception):
                logging.getLogger("stageflow").error(
                    "%s failed while %s; the run goes on, further errors are counted in %s.errors",
                    self.name,
                    doing,
                    type(self).__name__,
                    exc_info=error,
                )


def restored(ctx: StageContext, name: str) -> bool:
    """Whether the stage's output comes from the run's store (nothing inside runs)."""
    durable = ctx.durable
    return durable is not None and name in durable.restored


def outcome_of_error(error: BaseException) -> str:
    """The outcome of a stage or run whose call raised ``error``.

    An :class:`Exception` is a failure; anything else (``asyncio.CancelledError``,
    ``KeyboardInterrupt``, ...) means it did not fail but was stopped: cancelled.
    """
    return FAILED if isinstance(error, Exception) else CANCELLED


def outcome_of(output: object) -> tuple[str, str | None]:
    """The outcome and reason of a stage whose chain returned ``output``.

    The telemetry interceptors are ``transparent``: what they get is the stage's raw
    result (a dict, None, a StageOutput) unless an interceptor inside them normalized
    it. What the engine will refuse (see ``normalize_output``) counts as failed.
    """
    if output is None or type(output) is dict:
        return COMPLETED, None
    if isinstance(output, StageOutput):
        return output.status.value, output.reason
    if isinstance(output, Mapping):
        return COMPLETED, None
    return FAILED, f"returned {type(output).__name__}, which is no stage output"
