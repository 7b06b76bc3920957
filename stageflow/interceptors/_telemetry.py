"""What the telemetry interceptors share: attribute names, and failures that stay theirs.

Telemetry never breaks a run: an exporter, processor or handler that raises is
logged once and counted in the interceptor's ``errors``; the run goes on.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

from .._context import StageContext
from .._dynamic import LoopSpec, MapSpec, WaitingForInput
from .._stage import StageOutput
from .._status import StageStatus
from ..ports import UsageRecord

if TYPE_CHECKING:
    from .._graph import StageGraph

RUN_ID: Final = "stageflow.run_id"
PIPELINE: Final = "stageflow.pipeline"
STAGE: Final = "stageflow.stage"
KIND: Final = "stageflow.stage.kind"
ATTEMPTS: Final = "stageflow.attempts"
OUTCOME: Final = "stageflow.outcome"
REASON: Final = "stageflow.reason"
RESUMED: Final = "stageflow.run.resumed"
STAGES: Final = "stageflow.run.stages"
ATTEMPT: Final = "stageflow.attempt"
ITEM_KEY: Final = "stageflow.item.key"
ITEM_INDEX: Final = "stageflow.item.index"

# Usage: the OpenTelemetry GenAI semantic conventions' names where they have one
# (gen_ai.usage.*, gen_ai.request.model, gen_ai.token.type), stageflow's where they
# have none (cost: GenAI has no cost attribute; the models of a stage that used several).
INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
MODEL: Final = "gen_ai.request.model"
TOKEN_TYPE: Final = "gen_ai.token.type"
COST: Final = "stageflow.usage.cost"
MODELS: Final = "stageflow.usage.models"
USAGE_REPORTED: Final = "stageflow.usage.reported"

COMPLETED: Final = StageStatus.COMPLETED.value
RESTORED: Final = "restored"  # an outcome that is no StageStatus: nothing ran
CANCELLED: Final = StageStatus.CANCELLED.value
WAITING: Final = StageStatus.WAITING.value
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
    """Whether the stage's output comes from the run's store (nothing inside runs).

    ``name`` is the stage's name in the run, ``ctx.stage``: an item's (``score[3]``) or
    a nested stage's (``refine[2].critique``) outcome is stored under its own.
    """
    durable = ctx.durable
    return durable is not None and name in durable.restored


_ITERATION: Final = re.compile(r"\[\d+\]\.")


def stage_path(name: str) -> str:
    """A nested stage's place in the graph, without the iterations of the loops it is
    in: ``refine[2].critique`` -> ``refine.critique``; ``etl.fetch`` stays. ``name`` is
    no item's (an item's key may hold anything): take its map's name first."""
    return _ITERATION.sub(".", name) if "[" in name else name


def maps_of(graph: StageGraph) -> tuple[bool, bool]:
    """Whether ``graph`` (its subgraphs and loops included) has a map stage, and one
    whose items may fail in a run that completes (``on_item_error`` skip or collect)."""
    found = tolerant = False
    graphs = [graph]
    while graphs:
        for spec in graphs.pop().stages:
            dynamic = spec.dynamic
            if isinstance(dynamic, MapSpec):
                found = True
                tolerant = tolerant or dynamic.on_item_error != "fail"
            elif isinstance(dynamic, LoopSpec):
                graphs.append(dynamic.body)
    return found, tolerant


def outcome_of_error(error: BaseException) -> str:
    """The outcome of a stage or run whose call raised ``error``.

    An :class:`Exception` is a failure; an input stage stopped because its run stopped
    to wait (:class:`~stageflow.WaitingForInput`) is waiting; anything else
    (``asyncio.CancelledError``, ``KeyboardInterrupt``, ...) means it did not fail but
    was stopped: cancelled.
    """
    if isinstance(error, Exception):
        return FAILED
    return WAITING if isinstance(error, WaitingForInput) else CANCELLED


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


def usage_attributes(reports: Sequence[UsageRecord]) -> dict[str, str | int | float | list[str]]:
    """A stage span's usage attributes, from the stage's reports (at least one): the
    tokens, the model when there was one only, every model, the cost when known."""
    input_tokens = output_tokens = 0
    cost: float | None = None
    models: list[str] = []
    for report in reports:
        input_tokens += report.input_tokens
        output_tokens += report.output_tokens
        if report.cost is not None:
            cost = report.cost if cost is None else cost + report.cost
        if report.model is not None and report.model not in models:
            models.append(report.model)
    attributes: dict[str, str | int | float | list[str]] = {
        INPUT_TOKENS: input_tokens,
        OUTPUT_TOKENS: output_tokens,
    }
    if len(models) == 1:
        attributes[MODEL] = models[0]
    if models:
        attributes[MODELS] = sorted(models)
    if cost is not None:
        attributes[COST] = cost
    return attributes


def report_attributes(report: UsageRecord) -> dict[str, str | int | float]:
    """The attributes of the span event of one usage report."""
    attributes: dict[str, str | int | float] = {
        INPUT_TOKENS: report.input_tokens,
        OUTPUT_TOKENS: report.output_tokens,
        ATTEMPT: report.attempt,
    }
    if report.model is not None:
        attributes[MODEL] = report.model
    if report.cost is not None:
        attributes[COST] = report.cost
    return attributes
