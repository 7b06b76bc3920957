"""Input stages between real processes: a value is given once, and used exactly once.

Every racer is a ``tests.crash._input_child`` process serving commands; for each round both
get their command, open their engine and say ``ready``, and the parent then says ``go`` to
both (in turns, which first): what each did is its JSON reply, the calls its stages logged
(``STAGE PID``) and the store itself.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from stageflow import Engine, RunStatus
from stageflow._codec import loads
from stageflow.adapters.sqlalchemy import SQLAlchemyStore

from ._child import EXIT_COMPLETED
from ._input_child import build_graph, calls_of
from .conftest import Backend, Child

pytestmark = pytest.mark.slow  # real processes, real time: a few seconds each

MODULE = "tests.crash._input_child"
ROUNDS = 20
# Seconds over which a sender's value is given after a resume starts (~ a resume's time).
SPREAD = {"sqlite": 0.004, "postgresql": 0.01}


def start_racers(
    backend: Backend, log_dir: Path, tmp_path: Path, children: list[Child]
) -> list[Child]:
    """Two serving children, ready for their first command."""
    racers = []
    for k in range(2):
        args = [backend.url, "serve", "--log-dir", str(log_dir)]
        racer = Child.start(args, tmp_path / f"racer-{k}.err", stdin=True, module=MODULE)
        children.append(racer)
        racers.append(racer)
    for racer in racers:
        racer.expect("ready")
    return racers


def race(racers: list[Child], commands: list[str], first: int) -> list[dict[str, Any]]:
    """Give each racer its command; once both are ready, say go to both, ``first``'s first."""
    for racer, command in zip(racers, commands, strict=True):
        racer.send(command)
    for racer in racers:
        racer.expect("ready")
    for racer in (racers[first], racers[1 - first]):
        racer.send("go")
    replies = []
    for racer in racers:
        racer.expect("{")
        replies.append(json.loads(racer.said[-1]))
    return replies


def stop(racers: list[Child]) -> None:
    for racer in racers:
        racer.send("")
        assert racer.wait(30) == EXIT_COMPLETED, str(racer)


async def waiting_runs(backend: Backend, graph: Any, run_ids: list[str]) -> None:
    """Start each run: it stops to wait for ``approval``, its draft done (by this process)."""
    store = SQLAlchemyStore(backend.url)
    try:
        for run_id in run_ids:
            result = await Engine(store=store).run(graph, run_id=run_id)
            assert result.status is RunStatus.WAITING, result.error
    finally:
        await store.aclose()


class TestTwoSendersAtOnce:
    def test_exactly_one_of_two_processes_giving_one_input_at_once_is_accepted(
        self, backend: Backend, log_dir: Path, tmp_path: Path, children: list[Child]
    ):
        graph = build_graph(log_dir)
        run_ids = [f"send-{k}" for k in range(ROUNDS)]
        asyncio.run(waiting_runs(backend, graph, run_ids))
        racers = start_racers(backend, log_dir, tmp_path, children)
        wins: Counter[int] = Counter()
        accepted: dict[str, str] = {}
        overlapped = 0  # rounds in which the two sends were under way at once
        for k, run_id in enumerate(run_ids):
            where = f"round {k} ({run_id}, {backend.name})"
            notes = [f"from-{racer.pid}" for racer in racers]
            replies = race(racers, [f"send {run_id} {note} 0" for note in notes], k % 2)
            outcomes = sorted(r["outcome"] for r in replies)
            assert outcomes == ["accepted", "refused"], f"{where}: {replies}"
            (winner,) = [r for r in replies if r["outcome"] == "accepted"]
            (loser,) = [r for r in replies if r["outcome"] == "refused"]
            assert loser["error"] == "InputAlreadyGivenError", f"{where}: {replies}"
            wins[winner["pid"]] += 1
            overlapped += loser["began"] < winner["ended"] and winner["began"] < loser["ended"]
            accepted[run_id] = f"from-{winner['pid']}"
        stop(racers)

        async def resume_all() -> dict[str, Any]:
            store = SQLAlchemyStore(backend.url)
            try:
                out = {}
                for run_id in run_ids:
                    stored = (await store.load_inputs(run_id))["approval"]
                    result = await Engine(store=store).resume(run_id, graph)
                    out[run_id] = (stored, result)
                return out
            finally:
                await store.aclose()

        for run_id, (stored, result) in asyncio.run(resume_all()).items():
            where = f"{run_id} ({backend.name})"
            assert stored.value is not None, f"{where}: no value stored"
            assert loads(stored.value) == {"approved": True, "note": accepted[run_id]}, where
            assert result.status is RunStatus.COMPLETED, f"{where}: {result.error}"
            assert result["publish"].data == {"approved": True, "note": accepted[run_id]}, where
            calls = Counter(stage for stage, _ in calls_of(log_dir, run_id))
            assert calls == {"draft": 1, "publish": 1}, f"{where}: {calls}"
        print(
            f"\ninput send race on {backend.name}: {ROUNDS} rounds, wins per process {dict(wins)}, "
            f"the sends overlapped in {overlapped}"
        )


class TestASenderAndADriverAtOnce:
    def test_a_value_given_while_a_driver_resumes_is_used_exactly_once(
        self, backend: Backend, log_dir: Path, tmp_path: Path, children: list[Child]
    ):
        graph = build_graph(log_dir)
        run_ids = [f"drive-{k}" for k in range(ROUNDS)]
        asyncio.run(waiting_runs(backend, graph, run_ids))
        racers = start_racers(backend, log_dir, tmp_path, children)
        driver = racers[1]
        drives: dict[str, dict[str, Any]] = {}
        took: list[float] = []
        for k, run_id in enumerate(run_ids):
            where = f"round {k} ({run_id}, {backend.name})"
            # The send lands at instants spread over the resume's: before it reads the
            # input, while it marks it waiting, after it stopped to wait.
            delay = SPREAD[backend.name] * (k * 7 % ROUNDS) / ROUNDS
            commands = [f"send {run_id} note-{k} {delay:.4f}", f"resume {run_id}"]
            sent, drove = race(racers, commands, k % 2)
            assert sent["outcome"] == "accepted", f"{where}: {sent}"
            assert drove["outcome"] in {"completed", "waiting"}, f"{where}: {drove}"
            if drove["outcome"] == "completed":  # it found the value
                assert drove["publish"] == {"approved": True, "note": f"note-{k}"}, where
            else:  # it missed it: it waits for it still, having run nothing
                assert drove["waiting_for"] == ["approval"], f"{where}: {drove}"
            drives[run_id] = drove
            took.append(drove["ended"] - drove["began"])
        stop(racers)

        async def finish_all() -> dict[str, Any]:
            # A second resume of each run that waited; then the store as it is at the end.
            store = SQLAlchemyStore(backend.url)
            try:
                out = {}
                for run_id in run_ids:
                    again = await Engine(store=store).resume(run_id, graph)
                    records = await store.stage_records(run_id)
                    run = await store.get_run(run_id)
                    out[run_id] = (again, run, records, await backend.lease_owner(run_id))
                return out
            finally:
                await store.aclose()

        caught = 0
        for k, (run_id, (again, run, records, owner)) in enumerate(
            asyncio.run(finish_all()).items()
        ):
            where = f"{run_id} ({backend.name}): first drive {drives[run_id]['outcome']}"
            caught += drives[run_id]["outcome"] == "completed"
            assert again.status is RunStatus.COMPLETED, f"{where}: {again.error}"
            assert run.status is RunStatus.COMPLETED, where
            assert owner is None, f"{where}: lease held by {owner}"
            assert loads(records["publish"].output) == {"approved": True, "note": f"note-{k}"}
            assert again["publish"].data == {"approved": True, "note": f"note-{k}"}, where
            calls = calls_of(log_dir, run_id)
            assert Counter(stage for stage, _ in calls) == {"draft": 1, "publish": 1}, (
                f"{where}: calls {calls}: the value was used other than once"
            )
            (by,) = [pid for stage, pid in calls if stage == "publish"]
            if drives[run_id]["outcome"] == "completed":
                assert by == driver.pid, f"{where}: publish ran in {by}"
            else:
                assert by != driver.pid, f"{where}: the driver that waited ran publish"
        print(
            f"\ninput send/resume race on {backend.name}: {ROUNDS} rounds, the racing driver "
            f"found the value in {caught}, a later resume in {ROUNDS - caught}; "
            f"resumes took {min(took) * 1e3:.0f}-{max(took) * 1e3:.0f} ms"
        )
