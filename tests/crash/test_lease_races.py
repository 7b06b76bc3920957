"""Leases between real processes: one driver per run, kept by heartbeat, fenced after a stall.

Every driver here is a ``tests.crash._child`` process; the proof of who drove a run is its
completion log (``stage attempt pid`` per completed stage) and the store itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import random
import signal
import time
from pathlib import Path

import pytest

from stageflow import Engine, RunStatus
from stageflow._codec import loads
from stageflow.adapters.sqlalchemy import SQLAlchemyStore

from ._child import (
    EXIT_COMPLETED,
    EXIT_LEASE_LOST,
    EXIT_LEASED,
    STAGES,
    build_graph,
    completions,
    reference,
)
from .conftest import Backend, Child, Snapshot

pytestmark = pytest.mark.slow  # real processes, real time: seconds to a minute each

ROUNDS = 100
SEED = 20240611


def assert_completed_as_reference(final: Snapshot, expected: dict, where: str) -> None:
    assert final.run is not None, where
    assert final.run.status is RunStatus.COMPLETED, f"{where}: {final.run}"
    assert final.lease_owner is None, f"{where}: lease still held by {final.lease_owner}"
    assert set(final.records) == set(expected), f"{where}: not one record per stage"
    for name, record in final.records.items():
        assert loads(record.output) == expected[name], f"{where}: stored output of {name}"


def drove(owner: str, pid: int) -> bool:
    """Whether a lease owner (``host:pid:uuid``) is the engine of process ``pid``."""
    return owner.split(":")[-2] == str(pid)


def wait_for_lines(log: Path, count: int, child: Child, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not log.exists() or len(log.read_text().splitlines()) < count:
        assert child.process.poll() is None, f"driver ended before {count} stages{child}"
        assert time.monotonic() < deadline, f"fewer than {count} stages in {timeout}s{child}"
        time.sleep(0.005)


class TestTwoResumersAtOnce:
    def test_exactly_one_of_two_processes_drives_an_interrupted_run_every_time(
        self, backend: Backend, log_dir: Path, tmp_path: Path, children: list[Child]
    ):
        rng = random.Random(SEED)
        expected = reference(SEED)
        run_ids = [f"race-{k}" for k in range(ROUNDS)]

        store = SQLAlchemyStore(backend.url)  # the parent's look at the runs

        async def interrupt_all() -> dict[str, Snapshot]:
            # Runs that stopped part-way, each left with the expired lease of a dead driver:
            # what a SIGKILL leaves behind, made here in bulk.
            graph = build_graph(SEED, log_dir=log_dir)
            engine = Engine(store=store, lease_ttl=5.0)
            for batch in range(0, ROUNDS, 10):
                results = await asyncio.gather(
                    *(
                        engine.run(graph, run_id=run_id, timeout=rng.uniform(0.1, 0.3))
                        for run_id in run_ids[batch : batch + 10]
                    )
                )
                assert all(r.status is RunStatus.CANCELLED for r in results)
                for run_id in run_ids[batch : batch + 10]:
                    await store.acquire_lease(run_id, "dead-host:1:dead", 0.001)
            return {r: await backend.snapshot(r, settle=False, store=store) for r in run_ids}

        with asyncio.Runner() as runner:
            before = runner.run(interrupt_all())
            time.sleep(0.01)  # the dead drivers' leases expire
            racers = []
            for k in range(2):
                args = [backend.url, "-", str(SEED), "serve", "--log-dir", str(log_dir)]
                racers.append(Child.start(args, tmp_path / f"racer-{k}.err", stdin=True))
            children.extend(racers)
            for racer in racers:
                racer.expect("ready")

            wins = {racer.pid: 0 for racer in racers}
            worst = (0.0, float("inf"))  # (largest start skew, smallest time left to the loser)
            for k, run_id in enumerate(run_ids):
                where = f"round {k} ({run_id}, {backend.name})"
                assert len(before[run_id].records) < STAGES, f"{where}: nothing to drive"
                order = racers if k % 2 == 0 else racers[::-1]  # neither always goes first
                for racer in order:
                    racer.send(f"resume {run_id}")
                replies = {}
                for racer in racers:
                    racer.expect("{", timeout=30)
                    replies[racer.pid] = json.loads(racer.said[-1])
                winners = [p for p, r in replies.items() if r["outcome"] == "completed"]
                losers = [p for p, r in replies.items() if r["outcome"] == "leased"]
                assert len(winners) == 1, f"{where}: not exactly one driver: {replies}"
                assert len(losers) == 1, f"{where}: the other was not refused: {replies}"
                (winner,), (loser,) = winners, losers
                assert drove(replies[loser]["owner"], winner), f"{where}: {replies}"
                wins[winner] += 1
                skew = abs(replies[winner]["read_at"] - replies[loser]["read_at"])
                margin = replies[winner]["ended_at"] - replies[loser]["ended_at"]
                worst = (max(worst[0], skew), min(worst[1], margin))

                drivers = {pid for _, _, pid in completions(log_dir, run_id)} - {os.getpid()}
                assert drivers == {winner}, f"{where}: stages completed by {drivers}"
                ran = {s for s, _, pid in completions(log_dir, run_id) if pid == winner}
                assert not ran & set(before[run_id].records), f"{where}: stored stages ran again"
                final = runner.run(backend.snapshot(run_id, settle=False, store=store))
                assert_completed_as_reference(final, expected, where)
                for name, record in before[run_id].records.items():
                    assert final.records[name] == record, f"{where}: {name} was rewritten"
            for racer in racers:
                racer.send("")
                assert racer.wait(30) == EXIT_COMPLETED, str(racer)
            runner.run(store.aclose())
        print(
            f"\nlease race on {backend.name}: {ROUNDS} rounds, wins per process {wins}, "
            f"largest skew {worst[0] * 1e3:.1f} ms, smallest margin {worst[1] * 1e3:.0f} ms"
        )


class TestHeartbeat:
    TTL = 0.4

    def test_a_run_that_outlives_its_lease_ttl_keeps_its_lease(
        self, backend: Backend, log_dir: Path, tmp_path: Path, children: list[Child]
    ):
        run_id = "long"
        ttl = str(self.TTL)
        common = ["--log-dir", str(log_dir), "--ttl", ttl, "--max-ms", "80"]  # a ~2.7 s run
        driver = Child.start([backend.url, run_id, str(SEED), "run", *common], tmp_path / "a")
        children.append(driver)
        go_at, _ = driver.next_line(30)
        wait_for_lines(log_dir / f"{run_id}.log", 1, driver)  # the run exists and is driven
        probe = Child.start(
            [backend.url, run_id, str(SEED), "probe", *common, "--tries", "4", "--every", "0.3"],
            tmp_path / "b",
        )
        children.append(probe)

        assert probe.wait(30) == EXIT_LEASED, f"the probe was let in{probe}"
        refusals = [json.loads(line) for line in probe.said if line.startswith("{")]
        assert driver.wait(30) == EXIT_COMPLETED, str(driver)
        ended_at = time.monotonic()

        assert len(refusals) == 4
        assert all(r["outcome"] == "leased" and drove(r["owner"], driver.pid) for r in refusals)
        expiries = [r["expires_at"] for r in refusals]
        assert expiries == sorted(set(expiries)), f"not renewed between probes: {expiries}"
        assert expiries[-1] > expiries[0] + self.TTL, f"the lease lived no longer: {expiries}"
        assert ended_at - go_at > 4 * self.TTL, "the run did not outlive its lease_ttl"
        pids = {pid for _, _, pid in completions(log_dir, run_id)}
        assert pids == {driver.pid}
        assert len(completions(log_dir, run_id)) == STAGES
        expected = reference(SEED)
        assert pickle.loads((log_dir / f"{run_id}.pickle").read_bytes()) == expected
        final = asyncio.run(backend.snapshot(run_id))
        assert_completed_as_reference(final, expected, backend.name)


class TestStalledDriver:
    TTL = 0.4

    @pytest.mark.parametrize("stop_after", [10, 120], ids=["early", "late"])
    def test_a_driver_stopped_past_its_lease_and_taken_over_writes_nothing_when_continued(
        self,
        backend: Backend,
        log_dir: Path,
        tmp_path: Path,
        children: list[Child],
        stop_after: int,
    ):
        run_id = "stalled"
        log = log_dir / f"{run_id}.log"
        common = ["--log-dir", str(log_dir), "--ttl", str(self.TTL), "--max-ms", "50"]
        first = Child.start([backend.url, run_id, str(SEED), "run", *common], tmp_path / "a")
        children.append(first)
        wait_for_lines(log, stop_after, first)
        first.stop(backend)
        try:
            time.sleep(self.TTL + 0.3)  # its lease expires, unrenewed
            at_stop = asyncio.run(backend.snapshot(run_id, settle=False))
            second = Child.start(
                [backend.url, run_id, str(SEED), "resume", *common, "--lease-tries", "5"],
                tmp_path / "b",
            )
            children.append(second)
            assert second.wait(60) == EXIT_COMPLETED, str(second)
            taken_over = asyncio.run(backend.snapshot(run_id, settle=False))
        finally:
            first.signal(signal.SIGCONT)
        code = first.wait(30)
        ended = first.last_json()
        final = asyncio.run(backend.snapshot(run_id))

        assert code == EXIT_LEASE_LOST, f"the stalled driver exited {code}: {ended}{first}"
        assert ended["error"] == "LeaseLostError", ended
        assert final == taken_over, "the stalled driver wrote to the store after the takeover"
        expected = reference(SEED)
        assert_completed_as_reference(final, expected, backend.name)
        assert final.run is not None
        assert final.run.error is None
        assert at_stop.records, "the first driver stored nothing before it was stopped"
        for name, record in at_stop.records.items():
            assert final.records[name] == record, f"{name}, stored before the stop, changed"
        by_second = {s for s, _, pid in completions(log_dir, run_id) if pid == second.pid}
        assert by_second == set(expected) - set(at_stop.records), (
            "the second driver must run exactly the stages not stored before the stop"
        )
        assert pickle.loads((log_dir / f"{run_id}.pickle").read_bytes()) == expected
