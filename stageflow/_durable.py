"""Durable runs: a run's record, lease and heartbeat in its store.

The engine drives a durable run through a :class:`DurableRun`: it creates or
loads the run, holds its lease (renewed by a heartbeat on the engine's clock while
the run goes on, released the moment it ends, cancelled included). Interceptors
reach it as ``ctx.durable``: the outcomes of stages an earlier driver of the run
stored, and fenced writes of outcomes, usage and state.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import _codec
from ._budget import Budget, ModelChain
from ._check import number
from ._dynamic import InputSpec, LoopSpec, MapSpec
from ._graph import StageGraph
from ._redact import redacted
from ._spec import StageSpec
from ._stage import StageOutput
from ._status import RunStatus, StageStatus, routed_reason, routes_of
from .errors import ConfigurationError, GraphMismatchError, LeaseLostError, StoreError
from .ports import Clock, InputRecord, Lease, RunRecord, RunStore, StageRecord, UsageRecord

if TYPE_CHECKING:
    from ._context import StageContext
    from ._prices import PriceTable

logger = logging.getLogger("stageflow")


def structure(graph: StageGraph) -> dict[str, Any]:
    """What a resume must find unchanged, stage by stage (JSON data).

    A stage without ``when``, ``routes``, a map, a loop or a subgraph is its sorted
    dependencies, as before dynamic stages existed (so the fingerprints of runs stored
    by older versions still match). A dynamic stage is a dict: ``"dependencies"``, plus
    ``"when": true`` (a condition), ``"routes"`` (sorted), ``"map"`` (``over`` when it
    names ``stage.field``, else None; whether ``key=`` is given; ``on_item_error``;
    ``max_parallel``), ``"loop"`` (``max_iterations``, ``on_exhausted``,
    ``output_stage`` and the body's structure) or ``"subgraph"`` (``output_stage``
    and the body's structure).
    """
    return {spec.name: _stage_shape(spec) for spec in graph.stages}


def _stage_shape(spec: StageSpec) -> list[str] | dict[str, Any]:
    dependencies = sorted(spec.dependencies)
    if spec.when is None and spec.routes is None and spec.dynamic is None:
        return dependencies
    shape: dict[str, Any] = {"dependencies": dependencies}
    if spec.when is not None:
        shape["when"] = True
    if spec.routes is not None:
        shape["routes"] = sorted(spec.routes)
    dynamic = spec.dynamic
    if isinstance(dynamic, InputSpec):  # an input (per item: with the items' shape)
        shape["input"] = True if dynamic.map is None else _map_shape(dynamic.map)
    elif isinstance(dynamic, MapSpec):
        shape["map"] = _map_shape(dynamic)
    elif isinstance(dynamic, LoopSpec):
        nested = {"output_stage": dynamic.output, "body": structure(dynamic.body)}
        if dynamic.is_loop:
            shape["loop"] = {"max_iterations": dynamic.max_iterations,
                             "on_exhausted": dynamic.on_exhausted, **nested}  # fmt: skip
        else:
            shape["subgraph"] = nested
    return shape


def _map_shape(dynamic: MapSpec) -> dict[str, Any]:
    return {
        "over": dynamic.over if isinstance(dynamic.over, str) else None,
        "key": dynamic.key is not None,
        "on_item_error": dynamic.on_item_error,
        "max_parallel": dynamic.max_parallel,
    }


def fingerprint(shape: Mapping[str, Any]) -> str:
    text = json.dumps(shape, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What differs between two structures (see :func:`structure`), in words.

    The stages of a subgraph are named ``etl.fetch``, those of a loop's body
    ``refine[*].critique`` (any iteration).
    """
    return _changes(before, after, "")


def _changes(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str) -> list[str]:
    said = [f"stage {prefix + n!r} added" for n in after if n not in before]
    said += [f"stage {prefix + n!r} removed" for n in before if n not in after]
    for n in after:
        if n in before and after[n] != before[n]:
            said += _stage_changes(prefix + n, _declared(before[n]), _declared(after[n]))
    return said


_KINDS = ("map", "loop", "subgraph")


def _declared(shape: object) -> Mapping[str, Any]:
    """A stage's shape as a dict (a plain stage's is its dependencies)."""
    return shape if isinstance(shape, Mapping) else {"dependencies": shape}


def _kind(shape: Mapping[str, Any]) -> str | None:
    return next((kind for kind in _KINDS if isinstance(shape.get(kind), Mapping)), None)


def _stage_changes(name: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    said: list[str] = []
    if after.get("dependencies") != before.get("dependencies"):
        said.append(f"stage {name!r} now depends on {after.get('dependencies')} instead of "
                    f"{before.get('dependencies')}")  # fmt: skip
    if bool(after.get("when")) != bool(before.get("when")):
        said.append(f"stage {name!r} now has a condition (when=)" if after.get("when")
                    else f"stage {name!r} no longer has a condition (when=)")  # fmt: skip
    mine, theirs = after.get("routes"), before.get("routes")
    if mine != theirs:
        if theirs is None:
            said.append(f"stage {name!r} now routes to {mine} (it was no ROUTE stage)")
        elif mine is None:
            said.append(f"stage {name!r} no longer routes (it routed to {theirs})")
        else:
            said.append(f"stage {name!r} now routes to {mine} instead of {theirs}")
    kind, was = _kind(after), _kind(before)
    if kind != was:
        said.append(f"stage {name!r} is now a {kind} instead of a {was}" if kind and was
                    else f"stage {name!r} is now a {kind}" if kind
                    else f"stage {name!r} is no longer a {was}")  # fmt: skip
    elif kind is not None:
        mine, theirs = after[kind], before[kind]
        for field in ("over", "key", "on_item_error", "max_parallel", "max_iterations",
                      "on_exhausted", "output_stage"):  # fmt: skip
            if mine.get(field) != theirs.get(field):
                said.append(f"{kind} {name!r} {_option(field, mine.get(field), theirs.get(field))}")
        if kind != "map":
            inner = f"{name}[*]." if kind == "loop" else f"{name}."
            said += _changes(_body_of(theirs), _body_of(mine), inner)
    return said


def _body_of(shape: Mapping[str, Any]) -> Mapping[str, Any]:
    body = shape.get("body")
    return body if isinstance(body, Mapping) else {}


def _option(field: str, mine: Any, theirs: Any) -> str:
    if field == "over":
        over = ["a callable" if v is None else repr(v) for v in (mine, theirs)]
        return f"now maps over {over[0]} instead of {over[1]}"
    if field == "key":
        keyed = ["with key=" if v else "by index" for v in (mine, theirs)]
        return f"now keys its items {keyed[0]} instead of {keyed[1]}"
    return f"{field} {mine!r} instead of {theirs!r}"


# ------------------------------------------------------------------ governing configuration

CONFIG_VERSION = 1
MONEY = ("budget", "prices", "model_chains", "stages")
"""The settings a resume may not change silently (``Engine.resume(override=True)``)."""


def budget_json(budget: Budget | None) -> dict[str, Any] | None:
    if budget is None:
        return None
    return {"max_tokens": budget.max_tokens, "max_cost": budget.max_cost,
            "warn_at": budget.warn_at, "policy": budget.policy.value}  # fmt: skip


def budget_of(data: Mapping[str, Any] | None) -> Budget | None:
    return None if data is None else Budget(**data)


def governing(
    graph: StageGraph,
    *,
    budget: Budget | None,
    prices: PriceTable | None,
    model_chains: Sequence[ModelChain],
    timeout: float | None,
    max_parallel: int | None,
    fail_fast: bool,
) -> dict[str, Any]:
    """A run's governing configuration as plain JSON data (what ``RunRecord.config`` holds)."""
    stages = {
        spec.name: {
            "budget": budget_json(spec.budget),
            "estimate": None if spec.estimate is None
            else {"tokens": spec.estimate.tokens, "cost": spec.estimate.cost},
        }
        for spec in graph.stages
        if spec.budget is not None or spec.estimate is not None
    }  # fmt: skip
    return {
        "version": CONFIG_VERSION,
        "budget": budget_json(budget),
        "prices": None if prices is None else prices.model_dump(mode="json"),
        "model_chains": [list(chain.models) for chain in model_chains],
        "stages": stages,
        "timeout": timeout,
        "max_parallel": max_parallel,
        "fail_fast": fail_fast,
    }


def config_text(config: Mapping[str, Any]) -> str:
    return _codec.dumps(dict(config), "the run's configuration")


def config_of(record: RunRecord) -> dict[str, Any] | None:
    """The configuration stored with the run, or None (a run recorded without one)."""
    if not record.config:
        return None
    config = _codec.loads(record.config)
    if not isinstance(config, dict) or config.get("version") != CONFIG_VERSION:
        raise StoreError(
            f"run {record.run_id!r} has a stored configuration this stageflow cannot read "
            f"(version {config.get('version') if isinstance(config, dict) else '?'!r})"
        )
    return config


def config_changes(
    stored: Mapping[str, Any], given: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """How a resume's configuration meets the stored one.

    Returns the stored values to use where ``given`` leaves a setting unset (None, no
    model chains, ``fail_fast`` True), and, in words, the money settings ``given``
    sets to something else than the stored value (a conflict unless overridden).
    """
    unset: dict[str, object] = {"model_chains": [], "fail_fast": True}
    restore: dict[str, Any] = {}
    differ: list[str] = []
    # The timeout is not compared here: a resume that gives none gets the stored one, one
    # that gives its own drives with it (see Engine._resuming).
    for key in ("budget", "prices", "model_chains", "max_parallel", "fail_fast"):
        mine, theirs = given.get(key), stored.get(key, unset.get(key))
        if mine == theirs:
            continue
        if mine == unset.get(key):  # not set on this resume: the stored value holds
            restore[key] = theirs
        elif key in MONEY:
            differ.append(f"{key} {_said(key, mine)} instead of the stored {_said(key, theirs)}")
    mine_stages, theirs_stages = given.get("stages", {}), stored.get("stages", {})
    for name in sorted(set(mine_stages) | set(theirs_stages)):
        mine, theirs = mine_stages.get(name), theirs_stages.get(name)
        if mine != theirs:
            differ.append(
                f"stage {name!r} declares {_said('stage', mine)} instead of the stored "
                f"{_said('stage', theirs)}"
            )
    return restore, differ


def _said(key: str, value: Any) -> str:
    if value is None:
        return "none"
    if key == "budget":
        return repr(budget_of(value))
    if key == "stage":
        parts = [f"budget={budget_of(value['budget'])!r}"] if value.get("budget") else []
        if value.get("estimate"):
            parts.append(f"estimate={value['estimate']['tokens']} tokens, "
                         f"{value['estimate']['cost']:g} cost")  # fmt: skip
        return ", ".join(parts) or "nothing"
    if key == "model_chains":
        return "[" + ", ".join(" > ".join(chain) for chain in value) + "]" if value else "none"
    if key == "prices":
        return f"prices of {sorted(value.get('models', {}))}"
    return repr(value)


_TAKEN_OVER = "the run's lease was taken over by another driver"


def new_record(
    graph: StageGraph,
    run_id: str,
    data: Mapping[str, Any],
    status: RunStatus,
    clock: Clock,
    labels: Mapping[str, str] | None,
    config: str,
) -> RunRecord:
    """The record of a new run of ``graph``, created now."""
    shape = structure(graph)
    now = clock.wall()
    return RunRecord(
        run_id,
        graph.name,
        fingerprint(shape),
        _codec.dumps(dict(data), "the run's data"),
        status,
        now,
        now,
        structure=json.dumps(shape, separators=(",", ":")),
        labels=dict(labels or {}),
        config=config,
    )


def check_graph_of(record: RunRecord, graph: StageGraph) -> None:
    """Raise GraphMismatchError, saying what changed, unless the run started with ``graph``."""
    shape = structure(graph)
    if record.fingerprint != fingerprint(shape):
        before = json.loads(record.structure) if record.structure else {}
        said = changes(before, shape) or ["its structure differs"]
        raise GraphMismatchError.of(record.run_id, said, graph)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class DurableRun:
    """One durable run's link to its store: what ``ctx.durable`` is.

    Every write is fenced by the run's lease: should another driver have taken the
    run over, the write raises :class:`~stageflow.errors.LeaseLostError` and this
    run stops (its stages are cancelled), so two drivers never both write.

    Attributes:
        store: the run's store.
        restored: the outcomes that earlier drivers of this run stored, by stage.
    """

    __slots__ = (
        "_heartbeat",
        "_on_lost",
        "clock",
        "lease",
        "requeue",
        "restored",
        "status",
        "store",
        "ttl",
        "usage",
    )

    def __init__(
        self,
        store: RunStore,
        lease: Lease,
        ttl: float,
        restored: dict[str, StageRecord],
        clock: Clock,
        status: RunStatus = RunStatus.RUNNING,
    ) -> None:
        self.status = status  # as stored
        self.store = store
        self.lease = lease
        self.ttl = ttl
        self.restored = restored
        self.clock = clock
        self.usage: list[UsageRecord] = []  # what earlier drivers of the run spent
        # Cancelled, the run goes back to its queue (a worker stopping) instead of ending.
        self.requeue = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._on_lost: Callable[[str], None] | None = None

    @classmethod
    async def start(
        cls,
        store: RunStore,
        graph: StageGraph,
        run_id: str,
        data: Mapping[str, Any],
        *,
        owner: str,
        ttl: float,
        clock: Clock,
        labels: Mapping[str, str] | None = None,
        config: str = "",
        inputs: Sequence[InputRecord] = (),
    ) -> DurableRun:
        """Create the run in the store (with its governing ``config``), take its lease and
        declare its ``inputs`` (so that a value sent before its stage waits is kept)."""
        record = new_record(graph, run_id, data, RunStatus.RUNNING, clock, labels, config)
        await store.create_run(record)
        lease = await store.acquire_lease(run_id, owner, ttl)
        if inputs:
            await store.declare_inputs(lease, inputs)  # type: ignore[attr-defined]
        return cls(store, lease, ttl, {}, clock)

    @classmethod
    async def resume(
        cls,
        store: RunStore,
        graph: StageGraph,
        run_id: str,
        *,
        owner: str,
        ttl: float,
        clock: Clock,
        record: RunRecord | None = None,
        take_over: bool = False,
        lease: Lease | None = None,
    ) -> tuple[DurableRun, RunRecord, dict[str, Any]]:
        """Check the graph against the run's, take the lease, load what was done.

        ``record``: the run's record as :meth:`checked_record` returned it (default: read
        and checked here). ``take_over``: take the lease even from a driver whose lease
        has not expired (known dead; if it is not, its next fenced write raises
        ``LeaseLostError`` and it stops its run). ``lease``: the run's lease, held already
        (a worker claimed the run with it). Returns the durable run, the run's
        record as it was before the resume, and its data.
        """
        if record is None:
            record = await cls.checked_record(store, graph, run_id)
        if lease is not None:  # taken already (a worker's claim)
            pass
        elif take_over:
            check_take_over(store)
            lease = await store.acquire_lease(run_id, owner, ttl, take_over=True)
        else:  # the call of stores that predate take_over
            lease = await store.acquire_lease(run_id, owner, ttl)
        try:
            done = await store.stage_records(run_id)
            usage = await store.load_usage(run_id)
            data = _codec.loads(record.data)
            # A completed run is only read back: its record stays as it was.
            if record.status not in (RunStatus.RUNNING, RunStatus.COMPLETED):
                await store.set_status(lease, RunStatus.RUNNING)
        except BaseException:
            await store.release_lease(lease)
            raise
        durable = cls(store, lease, ttl, done, clock, record.status)
        durable.usage = usage
        return durable, record, data

    @staticmethod
    async def checked_record(store: RunStore, graph: StageGraph, run_id: str) -> RunRecord:
        """The run's record, once ``graph`` is found to be the graph it started with."""
        record = await store.get_run(run_id)
        check_graph_of(record, graph)
        return record

    # ------------------------------------------------------------ what interceptors use

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.lease.run_id

    def restore(self, stage: str) -> StageOutput | None:
        """The outcome an earlier driver stored for ``stage`` (completed or skipped by
        itself), or None: then the stage has to run."""
        done = self.restored.get(stage)
        if done is None:
            return None
        if done.status is StageStatus.SKIPPED:
            return StageOutput.skip(done.reason or "skipped")
        return StageOutput(
            StageStatus.COMPLETED, _codec.loads(done.output), None, routes_of(done.reason)
        )

    async def save(self, ctx: StageContext, output: StageOutput) -> None:
        """Store the outcome of ``ctx``'s stage, completed or skipped by itself (fenced).

        Raises:
            CodecError: the output cannot be stored faithfully (naming the stage and
                where in the output).
            LeaseLostError: the run was taken over; this run stops.
        """
        try:  # _fenced, inline: one coroutine less
            await self.store.record_stage(self.lease, self.record(ctx, output))
        except LeaseLostError:
            self.lost()
            raise

    def record(self, ctx: StageContext, output: StageOutput) -> StageRecord:
        """The record :meth:`save` stores for ``ctx``'s stage ending with ``output``: the
        output as stageflow's JSON text, the attempts, when it started and ended.

        An interceptor on every stage's path may write it itself (``store.record_stage``)
        rather than await ``save``, which is one coroutine more per stage; should that raise
        ``LeaseLostError``, it calls :meth:`lost`, as ``save`` does.

        Raises:
            CodecError: the output cannot be stored faithfully (naming the stage and
                where in the output).
        """
        run_started = ctx.run_started
        name = ctx.stage
        data = output.data  # a dict, but for a StageOutput made of another mapping
        return StageRecord(
            self.lease.run_id,
            name,
            output.status,
            _codec.dumps(
                data if type(data) is dict else dict(data),
                f"the output of stage {name!r}",
                stage=name,
            ),
            ctx.attempts,
            ctx.started - run_started,
            ctx.clock.monotonic() - run_started,
            output.reason if output.routes is None else routed_reason(output.routes),
        )

    async def save_usage(self, records: Sequence[UsageRecord]) -> None:
        """Store usage reports (e.g. ``ctx.ledger.unstored(stage)``), all or none (fenced).

        Raises:
            LeaseLostError: the run was taken over; this run stops.
        """
        if records:
            await self._fenced(self.store.record_usage(self.lease, records))

    async def save_state(self, stage: str, value: Any) -> None:
        """Keep ``value`` as ``stage``'s intra-stage state, replacing the last (fenced).

        Raises:
            CodecError: ``value`` cannot be stored faithfully.
            LeaseLostError: the run was taken over; this run stops.
        """
        text = _codec.dumps(value, f"the state of stage {stage!r}", stage=stage)
        await self._fenced(self.store.save_state(self.lease, stage, text))

    async def load_state(self, stage: str, default: Any = None) -> Any:
        """``stage``'s last saved state in this run (by any driver), or ``default``."""
        text = await self.store.load_state(self.lease.run_id, stage)
        return default if text is None else _codec.loads(text)

    async def wait_input(self, record: InputRecord) -> InputRecord:
        """Mark an input waiting; its row as it is now, with the value if one was given
        (fenced: ``InputStore.wait_input``)."""
        try:
            row: InputRecord = await self.store.wait_input(self.lease, record)  # type: ignore[attr-defined]
        except LeaseLostError:
            self.lost()
            raise
        return row

    async def load_inputs(self) -> dict[str, InputRecord]:
        """The run's input rows, by name."""
        rows: dict[str, InputRecord] = await self.store.load_inputs(self.lease.run_id)  # type: ignore[attr-defined]
        return rows

    async def _fenced(self, write: Awaitable[None]) -> None:
        try:
            await write
        except LeaseLostError:
            self.lost()
            raise

    # ------------------------------------------------------------ what the engine uses

    def keep_alive(self, on_lost: Callable[[str], None]) -> None:
        """Renew the lease every third of its life; ``on_lost`` stops the run if it is lost."""
        self._on_lost = on_lost
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def _beat(self) -> None:
        while True:
            await self.clock.sleep(self.ttl / 3)
            try:
                self.lease = await self.store.renew_lease(self.lease, self.ttl)
            except LeaseLostError:
                self.lost()
                return
            except StoreError:
                logger.warning("renewing the lease of run %s failed", self.lease.run_id)

    def lost(self, why: str = _TAKEN_OVER) -> None:
        """The lease is gone (``why``: by default, another driver took the run over): stop
        the run (its writes would be refused anyway)."""
        if self._on_lost is not None:
            self._on_lost(why)

    async def finish(
        self,
        status: RunStatus,
        error: BaseException | None,
        usage: Sequence[UsageRecord] = (),
    ) -> None:
        """Record how the run ended (and usage not stored yet); release the lease at once,
        whatever happens meanwhile (a cancel included)."""
        try:
            if self._heartbeat is not None:
                self._heartbeat.cancel()
                await asyncio.gather(self._heartbeat, return_exceptions=True)
            if usage:  # reported by stages that were cancelled or stopped before storing it
                await self.store.record_usage(self.lease, usage)
            if status is not self.status or status is not RunStatus.COMPLETED:
                text = None if error is None else redacted(f"{type(error).__name__}: {error}")
                await self.store.set_status(self.lease, status, text)
        except LeaseLostError:
            logger.warning("run %s ended after its lease was lost", self.lease.run_id)
        finally:
            await self.store.release_lease(self.lease)


def check_take_over(store: RunStore) -> None:
    """Refuse a take-over on a store whose ``acquire_lease`` has no ``take_over`` option."""
    try:
        params = inspect.signature(store.acquire_lease).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let the call tell
        return
    if not any(p.name == "take_over" or p.kind is p.VAR_KEYWORD for p in params):
        raise ConfigurationError(
            f"{type(store).__name__}.acquire_lease has no take_over option: this store "
            "cannot take a run over from another driver",
            field="take_over",
            value=True,
        )


def check_ttl(ttl: object) -> float:
    return number(ttl, "lease_ttl", "a number of seconds in (0, 3600]", gt=0, le=3600)
