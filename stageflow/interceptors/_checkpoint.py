"""CheckpointInterceptor: a stage's completion is stored before its dependents start."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from .. import _codec
from .._context import StageCall, StageContext
from .._dynamic import LoopSpec
from .._events import EventType
from .._outputref import OutputRef
from .._spec import OutputModel, StageSpec
from .._stage import StageOutput
from .._status import StageStatus
from ..errors import LeaseLostError
from ._base import Priority

if TYPE_CHECKING:
    from .._graph import StageGraph

_KEPT = (StageStatus.COMPLETED, StageStatus.SKIPPED)
_STORABLE: weakref.WeakSet[StageGraph] = weakref.WeakSet()  # graphs already checked


def check_storable(graph: StageGraph) -> None:
    """Refuse a graph for durable runs if a declared output model cannot be stored.

    Each field of each stage's ``output=`` model (the stages of subgraphs and loop
    bodies included, at any depth) must have a type the codec can store faithfully
    (see ``_codec.check_type``). Checked once per graph, before a durable run of it
    starts, so that it fails at once rather than when the stage ends.

    Raises:
        CodecError: naming the stage, the field and its type.
    """
    if graph in _STORABLE:
        return
    _check_outputs(graph, "")
    _STORABLE.add(graph)


def _check_outputs(graph: StageGraph, prefix: str) -> None:
    """Check the ``output=`` models of ``graph``'s stages and, at any depth, of the stages
    of its subgraphs (named ``etl.fetch``) and loop bodies (``refine[*].critique``)."""
    for spec in graph.stages:
        name = prefix + spec.name
        model = spec.output
        if model is not None:
            hints = _codec.field_types(model)
            where = f"the output of stage {name!r}"
            for field in OutputModel.of(model).fields:
                tp = hints.get(field, Any)
                _codec.check_type(tp, f"{where}[{field!r}]", stage=name)
        body = getattr(spec.dynamic, "body", None)
        if body is not None:
            loop = getattr(spec.dynamic, "until", None) is not None
            _check_outputs(body, f"{name}[*]." if loop else f"{name}.")


class CheckpointInterceptor:
    """Stores each stage's outcome in the run's store; restores it on resume.

    A stage already completed in this run (or that skipped itself) returns its
    stored output and nothing inside runs: no retry, no breaker, no call, a
    ``stage.restored`` event; its result reports the attempts and times stored with
    it (``ctx.report_restored``). A fresh completion is written, fenced by the run's
    lease, before the call returns, so before any dependent starts; then a
    ``checkpoint.saved`` event carrying the attempt that completed. A failed stage
    is not stored: a resume runs it again. The usage a stage reported
    (``ctx.usage.report``) is stored when it ends, failed or not, before its
    outcome: a resume counts it once. An output that cannot be stored faithfully
    fails its stage, in every durable run, naming the stage and the type (a
    declared ``output=`` model is checked before the run starts: ``check_storable``).

    The engine adds it when it has a store; it applies to every stage. It uses only
    the run's public services (``ctx.durable``, ``ctx.ledger``, ``ctx.event``).
    """

    name = "checkpoint"

    def __init__(self, *, priority: int = Priority.CHECKPOINT) -> None:
        self.priority = priority

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        """Restore or store the stage's outcome around its call.

        A loop or subgraph stage is left to its body's stages, each checkpointed on its
        own: a resume goes through its iterations again, every stage restored, so that
        its result reports them as an uninterrupted run's does.
        """
        if isinstance(spec.dynamic, LoopSpec):
            return call

        async def checkpointed(ctx: StageContext) -> Any:
            durable = ctx.durable
            if durable is None:  # a run without a store
                return await call(ctx)
            name = ctx.stage  # an item's or an iteration's own (score[3], refine[2].critique)
            stored = durable.restore(name)
            if stored is not None:
                record = durable.restored[name]
                ctx.report_restored(record.attempts, record.started, record.ended)
                ctx.event(EventType.STAGE_RESTORED, attempts=record.attempts)
                return stored
            try:
                output: StageOutput = await call(ctx)
            except Exception:
                await durable.save_usage(ctx.ledger.unstored(name))  # a failure's spend counts
                raise
            spent = ctx.ledger.unstored(name)
            if spent:  # most stages report nothing: no write, no await
                await durable.save_usage(spent)
            # Not kept while the outcome is written: a map's items wait for their group's
            # commit in thousands, the garbage collector going through all they hold.
            del spent
            if output.status in _KEPT:
                data = output.data
                if type(data) is not dict and isinstance(data, OutputRef):
                    await data.fetch()  # left where a runner ran the call
                # durable.save, inline: a coroutine less on every stage's path, where a map's
                # items wait for their group's commit in thousands.
                try:
                    await durable.store.record_stage(durable.lease, durable.record(ctx, output))
                except LeaseLostError:
                    durable.lost()
                    raise
                ctx.event(EventType.CHECKPOINT_SAVED, attempt=ctx.attempts)
            return output

        return checkpointed

    def __repr__(self) -> str:
        return f"<CheckpointInterceptor priority={self.priority}>"
