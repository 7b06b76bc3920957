"""Durable runs: a run's record, lease and heartbeat in a CheckpointStore.

The engine drives a durable run through a :class:`Checkpointing`: it creates or
loads the run, holds its lease (renewed by a heartbeat while the run goes on,
released the moment it ends, cancelled included) and gives the checkpoint
interceptor what it needs: the store, the lease, and the outcomes of stages a
previous attempt at the run already completed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _codec
from ._graph import StageGraph
from ._status import RunStatus
from .errors import ConfigurationError, GraphMismatchError, LeaseLostError, StoreError
from .ports import CheckpointStore, Clock, Lease, RunRecord, StageRecord, UsageRecord

logger = logging.getLogger("stageflow")


def structure(graph: StageGraph) -> dict[str, list[str]]:
    """What a resume must find unchanged: each stage's name and dependencies."""
    return {spec.name: sorted(spec.dependencies) for spec in graph.stages}


def fingerprint(shape: Mapping[str, list[str]]) -> str:
    text = json.dumps(shape, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def changes(before: Mapping[str, list[str]], after: Mapping[str, list[str]]) -> list[str]:
    """What differs between two structures, in words."""
    said = [f"stage {n!r} added" for n in after if n not in before]
    said += [f"stage {n!r} removed" for n in before if n not in after]
    said += [
        f"stage {n!r} now depends on {after[n]} instead of {before[n]}"
        for n in after
        if n in before and after[n] != before[n]
    ]
    return said


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Checkpointing:
    """One durable run's link to its store."""

    __slots__ = (
        "_heartbeat",
        "_on_lost",
        "clock",
        "lease",
        "restored",
        "status",
        "store",
        "ttl",
        "usage",
    )

    def __init__(
        self,
        store: CheckpointStore,
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
        self._heartbeat: asyncio.Task[None] | None = None
        self._on_lost: Callable[[str], None] | None = None

    @classmethod
    async def start(
        cls,
        store: CheckpointStore,
        graph: StageGraph,
        run_id: str,
        data: Mapping[str, Any],
        *,
        owner: str,
        ttl: float,
        clock: Clock,
        labels: Mapping[str, str] | None = None,
    ) -> Checkpointing:
        """Create the run in the store and take its lease."""
        shape = structure(graph)
        now = clock.wall()
        record = RunRecord(
            run_id,
            graph.name,
            fingerprint(shape),
            _codec.dumps(dict(data), "the run's data"),
            RunStatus.RUNNING,
            now,
            now,
            structure=json.dumps(shape, separators=(",", ":")),
            labels=dict(labels or {}),
        )
        await store.create_run(record)
        lease = await store.acquire_lease(run_id, owner, ttl)
        return cls(store, lease, ttl, {}, clock)

    @classmethod
    async def resume(
        cls,
        store: CheckpointStore,
        graph: StageGraph,
        run_id: str,
        *,
        owner: str,
        ttl: float,
        clock: Clock,
    ) -> tuple[Checkpointing, RunRecord, dict[str, Any]]:
        """Check the graph against the run's, take the lease, load what was done.

        Returns the checkpointing, the run's record as it was before the resume, and
        its data.
        """
        record = await store.get_run(run_id)
        shape = structure(graph)
        if record.fingerprint != fingerprint(shape):
            before = json.loads(record.structure) if record.structure else {}
            said = changes(before, shape) or ["its structure differs"]
            raise GraphMismatchError(run_id, said, graph)
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
        checkpointing = cls(store, lease, ttl, done, clock, record.status)
        checkpointing.usage = usage
        return checkpointing, record, data

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
                self.lost("the run's lease was taken over by another driver")
                return
            except StoreError:
                logger.warning("renewing the lease of run %s failed", self.lease.run_id)

    def lost(self, why: str) -> None:
        """The lease is gone: stop the run (its writes would be refused anyway)."""
        if self._on_lost is not None:
            self._on_lost(why)

    async def finish(
        self,
        status: RunStatus,
        error: BaseException | None,
        usage: Sequence[UsageRecord] = (),
    ) -> None:
        """Record how the run ended (and usage not stored yet); release the lease at once."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        try:
            if usage:  # reported by stages that were cancelled or stopped before storing it
                await self.store.record_usage(self.lease, usage)
            if status is not self.status or status is not RunStatus.COMPLETED:
                text = None if error is None else f"{type(error).__name__}: {error}"
                await self.store.set_status(self.lease, status, text)
        except LeaseLostError:
            logger.warning("run %s ended after its lease was lost", self.lease.run_id)
        finally:
            await self.store.release_lease(self.lease)


def check_ttl(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= 3600:
        raise ConfigurationError(
            f"lease_ttl must be a number of seconds in (0, 3600], not {ttl!r}", "lease_ttl", ttl
        )
    return float(ttl)
