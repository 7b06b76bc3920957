"""Dynamic graphs SIGKILLed in real processes resume to an uninterrupted run's result.

Each test drives one run of a dynamic graph of ``tests.crash._dynamic_child`` in child
processes, on SQLite and on PostgreSQL: a driver is SIGKILLed at a chosen point (or its run
fails), the parent snapshots the store, and a fresh driver resumes the run, until one
completes it. Every call of a stage, a map item, a loop body stage and of the loop's
``until`` is logged (``LABEL PID``, one line per call); the checks:

- the completed run's outputs (statuses, data, reasons, per item) equal those of an
  uninterrupted run in this process, and its stored records equal those of an
  uninterrupted durable run in the same store;
- everything called is what an uninterrupted run calls, and each is called once in
  total except what was in flight when a driver was killed or failed: nothing stored
  before a kill (an item, a route decision, a body stage, an ``until`` verdict, a subgraph
  stage) is ever called again, and every record stored before a kill is in the final
  store unchanged;
- the case's own: a map of 500 items killed midway (at most ``max_parallel`` items in
  flight at a kill), a ROUTE stage that raises then routes on resume (and is not asked
  again after a later kill), a loop killed in iteration 3 that goes on at iteration 3's
  second stage, a subgraph killed in its second stage.

``STAGEFLOW_CRASH_KILLS`` (``make crash N=...``) scales the map test: ``N // 50`` kills of
one run (one in ``make test``), at item counts drawn from ``STAGEFLOW_CRASH_SEED``.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import random
import signal
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from stageflow import Engine, RunStatus, StageStatus
from stageflow._codec import loads
from stageflow.adapters.sqlalchemy import SQLAlchemyStore

from ._child import EXIT_COMPLETED, EXIT_FAILED
from ._dynamic_child import (
    ITEMS,
    LOOP_DONE_AT,
    MAP_PARALLEL,
    Calls,
    build_graph,
    calls_of,
    reference,
)
from .conftest import Backend, Child, Snapshot

pytestmark = pytest.mark.slow  # real processes: a second or two each

MODULE = "tests.crash._dynamic_child"
KILLS = int(os.environ.get("STAGEFLOW_CRASH_KILLS", "50"))
SEED = int(os.environ.get("STAGEFLOW_CRASH_SEED", str(random.randrange(2**32))))
MAP_KILLS = max(1, KILLS // 50)
RUN_ID = "dyn-1"


@dataclass
class Driver:
    """One child that drove (part of) the run, and the store right after it ended."""

    pid: int
    mode: str
    killed: bool
    code: int
    said: list[str]
    after: Snapshot
    state: dict[str, Any]  # the stored state of the stages the test asked for


# Loop and subgraph stages: a store keeps their stages' outcomes, not one of their own.
NESTED = frozenset({"refine", "etl"})


@dataclass
class Harness:
    """Drives one run of ``case`` through children, one after another."""

    case: str
    backend: Backend
    log_dir: Path
    tmp_path: Path
    children: list[Child]
    runner: asyncio.Runner
    states: tuple[str, ...] = ()  # stages whose stored state each snapshot reads
    drivers: list[Driver] = field(default_factory=list)

    def drive(
        self,
        mode: str,
        *,
        kill_when: Callable[[str], bool] | None = None,
        block: str | None = None,
        broken: bool = False,
    ) -> Driver:
        """Run one driver; SIGKILL it at the first line ``kill_when`` holds for."""
        args = [self.backend.url, RUN_ID, self.case, mode, "--log-dir", str(self.log_dir)]
        if block is not None:
            args += ["--block", block]
        if broken:
            args.append("--broken")
        err = self.tmp_path / f"driver-{len(self.drivers)}.err"
        child = Child.start(args, err, module=MODULE)
        self.children.append(child)
        killed = False
        while True:
            _, line = child.next_line(60.0)
            if line is None:
                code = child.wait(30)
                break
            if kill_when is not None and kill_when(line):
                child.signal(signal.SIGKILL)
                code = child.wait(10)
                killed = True
                break
        assert killed == (kill_when is not None), (
            f"{self.where}: driver {len(self.drivers)} ({mode}) was to be killed but ended "
            f"first (exit {code}){child}"
        )
        after = self.runner.run(self.backend.snapshot(RUN_ID))
        state = self.runner.run(self._states())
        driver = Driver(child.pid, mode, killed, code, list(child.said), after, state)
        self.drivers.append(driver)
        return driver

    async def _states(self) -> dict[str, Any]:
        store = SQLAlchemyStore(self.backend.url)
        try:
            out = {}
            for stage in self.states:
                text = await store.load_state(RUN_ID, stage)
                out[stage] = None if text is None else loads(text)
            return out
        finally:
            await store.aclose()

    @property
    def where(self) -> str:
        return f"{self.case} on {self.backend.name} (seed {SEED})"

    def calls(self) -> dict[str, list[int]]:
        """label -> the drivers (by index) that called it, in call order."""
        order = {driver.pid: k for k, driver in enumerate(self.drivers)}
        assert len(order) == len(self.drivers), f"{self.where}: a pid was reused"
        by_label: dict[str, list[int]] = defaultdict(list)
        for label, pid in calls_of(self.log_dir / f"{RUN_ID}.calls"):
            assert pid in order, f"{self.where}: {label} called by unknown pid {pid}"
            by_label[label].append(order[pid])
        return by_label

    def first_call(self, k: int) -> str:
        """The first label driver ``k`` called."""
        pid = self.drivers[k].pid
        return next(label for label, p in calls_of(self.log_dir / f"{RUN_ID}.calls") if p == pid)

    def check(self, verdicts: Callable[[Driver], int] | None = None) -> dict[str, list[int]]:
        """The checks every case shares (see the module's docstring); returns :meth:`calls`.

        ``verdicts(driver)``: how many ``until`` verdicts the store held after it.
        """
        where = self.where
        final = self.drivers[-1]
        assert not final.killed, f"{where}: the last driver was killed"
        assert final.code == EXIT_COMPLETED, (
            f"{where}: the last driver exited {final.code}: {final.said[-3:]}"
        )
        ref_log = self.tmp_path / "reference.calls"
        expected = reference(self.case, ref_log)
        result = pickle.loads((self.log_dir / f"{RUN_ID}.pickle").read_bytes())
        assert result == expected, f"{where}: the result differs from an uninterrupted run's"

        run = final.after.run
        assert run is not None
        assert run.status is RunStatus.COMPLETED, f"{where}: {run}"
        assert run.error is None, f"{where}: {run.error}"
        assert final.after.lease_owner is None, f"{where}: lease held by {final.after.lease_owner}"
        records = final.after.records
        assert stored(records) == self.runner.run(uninterrupted_records(self.backend, self.case)), (
            f"{where}: the store holds other records than an uninterrupted durable run's"
        )
        for name, (status, data, _) in expected.items():
            if status == "completed" and name not in NESTED:
                assert records[name].status is StageStatus.COMPLETED, f"{where}: {records[name]}"
                assert loads(records[name].output) == data, f"{where}: stored output of {name}"
        for k, driver in enumerate(self.drivers[:-1]):
            for name, record in driver.after.records.items():
                assert records[name] == record, (
                    f"{where}: the record of {name} stored before driver {k + 1} was changed: "
                    f"{record} -> {records[name]}"
                )

        # Calls: what an uninterrupted run calls, each once, but what was in flight.
        ref_labels = [label for label, _ in calls_of(ref_log)]
        assert len(set(ref_labels)) == len(ref_labels), f"{where}: reference called twice"
        calls = self.calls()
        assert set(calls) == set(ref_labels), (
            f"{where}: called {sorted(set(calls) - set(ref_labels))} that an uninterrupted run "
            f"does not, and not {sorted(set(ref_labels) - set(calls))}"
        )
        for label, ran_in in calls.items():
            assert len(set(ran_in)) == len(ran_in), f"{where}: {label} called twice by one driver"
            kept_by = self.stored_by(label, verdicts)
            assert kept_by is not None, f"{where}: {label} was called but never stored"
            assert max(ran_in) == kept_by, (
                f"{where}: {label} was stored by driver {kept_by} but called by drivers "
                f"{ran_in}: what was stored ran again"
            )
            for k in ran_in[:-1]:
                assert self.drivers[k].killed or self.drivers[k].code == EXIT_FAILED, (
                    f"{where}: {label} was called by driver {k}, which ended normally, and again"
                )
        return calls

    def stored_by(self, label: str, verdicts: Callable[[Driver], int] | None) -> int | None:
        """The first driver after which the store held ``label`` (an outcome or a verdict)."""
        for k, driver in enumerate(self.drivers):
            if label.startswith("until["):
                assert verdicts is not None
                if verdicts(driver) >= int(label[len("until[") : -1]):
                    return k
            elif label in driver.after.records:
                return k
        return None


def stored(records: dict[str, Any]) -> dict[str, tuple[str, Any, str | None, int]]:
    """Each record as (status, decoded output, reason, attempts)."""
    return {
        name: (r.status.value, loads(r.output), r.reason, r.attempts) for name, r in records.items()
    }


async def uninterrupted_records(backend: Backend, case: str) -> dict[str, Any]:
    """The records an uninterrupted durable run of ``case`` leaves, in the same store."""
    store = SQLAlchemyStore(backend.url)
    try:
        result = await Engine(store=store).run(build_graph(case, Calls()), run_id="uninterrupted")
        assert result.ok, result.error
        return stored(await store.stage_records("uninterrupted"))
    finally:
        await store.aclose()


@pytest.fixture
def harness(
    request: pytest.FixtureRequest,
    backend: Backend,
    log_dir: Path,
    tmp_path: Path,
    children: list[Child],
) -> Iterator[Callable[..., Harness]]:
    request.node.user_properties.append(("crash_seed", SEED))
    with asyncio.Runner() as runner:

        def make(case: str, states: tuple[str, ...] = ()) -> Harness:
            return Harness(case, backend, log_dir, tmp_path, children, runner, states)

        yield make


def done_at_least(n: int) -> Callable[[str], bool]:
    """Kill once the driver says its ``n``-th map item returned."""
    return lambda line: line.startswith("done ") and int(line.split()[1]) >= n


def items_of(names: Iterable[str]) -> set[str]:
    """The map items among ``names`` (record names or call labels)."""
    return {name for name in names if name.startswith("score[")}


class TestMap:
    def test_a_map_of_500_items_killed_midway_resumes_with_only_its_unfinished_items(
        self, harness: Callable[..., Harness]
    ):
        h = harness("map", ("score",))
        rng = random.Random(SEED)
        first = rng.randint(200, 300)  # "some hundreds" of the 500
        later = (ITEMS - 300) // (MAP_KILLS + 1)  # then a few dozen per driver, if more kills
        h.drive("run", kill_when=done_at_least(first))
        for _ in range(MAP_KILLS - 1):
            h.drive("resume", kill_when=done_at_least(later))
        h.drive("resume")

        where = h.where
        stored_items = [items_of(d.after.records) for d in h.drivers]
        assert first - MAP_PARALLEL <= len(stored_items[0]) < ITEMS, (
            f"{where}: {len(stored_items[0])} items stored after the kill at {first} items done"
        )
        keys = [f"d{i:03d}" for i in range(ITEMS)]
        for k, driver in enumerate(h.drivers[:-1]):
            assert driver.state["score"] == {"keys": keys}, f"{where}: keys after kill {k + 1}"
            assert "score" not in driver.after.records, f"{where}: the map was stored"
            assert "total" not in driver.after.records, f"{where}: total was stored"
            assert stored_items[k + 1] > stored_items[k], f"{where}: driver {k + 1} stored none"
        assert len(stored_items[-1]) == ITEMS

        calls = h.check()
        assert calls["split"] == [0], f"{where}: split called by drivers {calls['split']}"
        assert calls["total"] == [len(h.drivers) - 1], f"{where}: total: {calls['total']}"
        for k in range(len(h.drivers) - 1):
            ran = {label for label, ran_in in calls.items() if k in ran_in}
            in_flight = items_of(ran) - stored_items[k]
            assert len(in_flight) <= MAP_PARALLEL, (
                f"{where}: {len(in_flight)} items called but not stored at kill {k + 1}, more "
                f"than max_parallel={MAP_PARALLEL}: {sorted(in_flight)}"
            )
            resumed = {label for label, ran_in in calls.items() if k + 1 in ran_in}
            assert items_of(resumed) <= {f"score[{key}]" for key in keys} - stored_items[k], (
                f"{where}: driver {k + 1} called items stored before it started"
            )
        again = sorted(label for label, ran_in in calls.items() if len(ran_in) > 1)
        assert len(again) <= MAP_PARALLEL * MAP_KILLS, f"{where}: ran again: {again}"
        print(
            f"\n{where}: {len(h.drivers) - 1} kills, items stored at each: "
            f"{[len(s) for s in stored_items]}, {len(again)} items called twice"
        )


class TestRoute:
    def test_a_route_stage_that_raises_fails_the_run_and_routes_on_resume_once(
        self, harness: Callable[..., Harness]
    ):
        h = harness("route")
        where = h.where
        failed = h.drive("run", broken=True)
        assert failed.code == EXIT_FAILED, f"{where}: {failed.said}"
        assert failed.after.run is not None
        assert failed.after.run.status is RunStatus.FAILED, failed.after.run
        assert "the classifier is down" in (failed.after.run.error or ""), failed.after.run
        assert "classify" not in failed.after.records, "a raising ROUTE stage was stored"
        assert "careful" not in failed.after.records
        assert "fast" not in failed.after.records
        assert failed.after.records["intake"].status is StageStatus.COMPLETED

        # The fixed router runs once more and routes; the chosen branch is killed.
        routed = h.drive(
            "resume", block="careful", kill_when=lambda line: line == "blocked careful"
        )
        record = routed.after.records["classify"]
        assert record.status is StageStatus.COMPLETED, record
        assert record.reason == "routed to careful", record
        assert "careful" not in routed.after.records
        assert "join" not in routed.after.records

        h.drive("resume")
        calls = h.check()
        assert calls["classify"] == [0, 1], f"{where}: the router ran in {calls['classify']}"
        assert calls["careful"] == [1, 2], f"{where}: careful called by {calls['careful']}"
        assert calls["join"] == [2], f"{where}: join called by {calls['join']}"
        assert calls["intake"] == [0], f"{where}: intake ran again: {calls['intake']}"
        assert "fast" not in calls, f"{where}: the branch not routed ran"
        assert h.first_call(2) == "careful", f"{where}: the last driver began elsewhere"


class TestLoop:
    def test_a_loop_killed_in_iteration_3_goes_on_at_iteration_3(
        self, harness: Callable[..., Harness]
    ):
        h = harness("loop", ("refine",))
        where = h.where
        blocked = "refine[3].critique"
        killed = h.drive("run", block=blocked, kill_when=lambda line: line == f"blocked {blocked}")
        done = {"seed", "refine[1].draft", "refine[1].critique", "refine[2].draft"}
        done |= {"refine[2].critique", "refine[3].draft"}
        assert set(killed.after.records) == done, f"{where}: {sorted(killed.after.records)}"
        assert killed.state["refine"] == {"until": [False, False]}, killed.state

        h.drive("resume")
        assert h.drivers[-1].state["refine"] == {"until": [False] * (LOOP_DONE_AT - 1) + [True]}
        calls = h.check(verdicts=lambda d: len((d.state["refine"] or {}).get("until", ())))
        assert h.first_call(1) == blocked, f"{where}: the resume began at {h.first_call(1)}"
        assert calls[blocked] == [0, 1]
        for label in done | {"until[1]", "until[2]"}:
            assert calls[label] == [0], f"{where}: {label} called by drivers {calls[label]}"
        for i in range(4, LOOP_DONE_AT + 1):
            for label in (f"refine[{i}].draft", f"refine[{i}].critique", f"until[{i}]"):
                assert calls[label] == [1], f"{where}: {label} called by drivers {calls[label]}"
        assert calls["until[3]"] == [1], f"{where}: until[3] called by {calls['until[3]']}"
        assert calls["publish"] == [1], f"{where}: publish called by {calls['publish']}"


class TestSubgraph:
    def test_a_subgraph_killed_in_its_second_stage_goes_on_there(
        self, harness: Callable[..., Harness]
    ):
        h = harness("subgraph")
        where = h.where
        killed = h.drive(
            "run", block="etl.transform", kill_when=lambda line: line == "blocked etl.transform"
        )
        assert set(killed.after.records) == {"prep", "etl.fetch"}, sorted(killed.after.records)

        h.drive("resume")
        calls = h.check()
        assert h.first_call(1) == "etl.transform", f"{where}: began at {h.first_call(1)}"
        assert calls["etl.transform"] == [0, 1]
        for label, ran_in in {
            "prep": [0],
            "etl.fetch": [0],
            "etl.load": [1],
            "report": [1],
        }.items():
            assert calls[label] == ran_in, f"{where}: {label} called by drivers {calls[label]}"
