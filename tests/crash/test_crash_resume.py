"""A run SIGKILLed at random instants resumes to exactly the result of an uninterrupted run.

The harness, per backend: a child process drives a 200-stage graph of random shape (stages
sleep 0-5 ms and return a digest of their inputs, a tuple, a datetime and bytes); the parent
SIGKILLs it at a random instant, snapshots the store, resumes the run in a new child, and
so on until a child completes it; then it starts a new run, until it has killed
``STAGEFLOW_CRASH_KILLS`` drivers (default 50; ``make crash N=500`` for a soak).

What a completed run must show:

- the result equals the outputs of an uninterrupted run computed in this process;
- the store holds one completed record per stage whose output decodes to that same value;
- every record seen in the store after a kill is in the final store unchanged: a completed
  output is never lost, changed or written again; and the stages stored at a kill include
  all their dependencies (a completion is committed before any dependent starts);
- the completion log has exactly one line per stage from the driver that committed it, and
  lines from earlier drivers only (stages in flight when those were killed): no stage whose
  completion was committed ever runs again;
- the run is completed, without error, and its lease released;
- usage: every stage has between one stored usage report and one per completed attempt,
  reports stored before a kill are all in the final store unchanged, and the resumed run's
  ``result.usage`` equals everything its drivers stored: spent budget is restored on
  resume, not reset, not doubled.

A failure message names the seed of the soak: ``STAGEFLOW_CRASH_SEED`` reuses its graphs and
kill delays (not its exact timing, which the machine decides).
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import random
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stageflow import RunStatus, StageStatus
from stageflow._codec import loads

from ._child import EXIT_COMPLETED, STAGES, completions, reference, shape, tokens_of
from .conftest import Backend, Child, Snapshot

pytestmark = pytest.mark.slow  # real processes, real time: seconds to a minute each

KILLS = int(os.environ.get("STAGEFLOW_CRASH_KILLS", "50"))
SEED = int(os.environ.get("STAGEFLOW_CRASH_SEED", str(random.randrange(2**32))))
LEASE_TTL = 0.3  # a killed driver's lease: the next one waits this long at most
# Seconds after the child says "go": a whole run takes ~0.25 s on SQLite, ~0.4 s on PostgreSQL.
MAX_KILL_DELAY = {"sqlite": 0.3, "postgresql": 0.5}
MAX_DRIVERS_PER_RUN = 100


@dataclass
class Driver:
    """One child that drove (part of) a run, and the store right after it ended."""

    pid: int
    mode: str
    killed: bool
    after: Snapshot


@dataclass
class Soak:
    kills: int = 0
    mid_run_kills: int = 0  # kills that left some but not all stages stored
    runs: int = 0
    resumes: int = 0
    reexecuted: int = 0
    completed_by_resume: int = 0
    drivers: dict[str, list[Driver]] = field(default_factory=dict)


def supervise(child: Child, delay: float) -> int:
    """Let ``child`` drive until ``delay`` after its last ``go`` (then SIGKILL it), or the end.

    The clock stops while the child waits out another driver's lease (``wait``), so kills
    land while it works: opening the store, taking the lease, loading, running, finishing.
    Returns the exit code (``-SIGKILL`` when killed).
    """
    deadline: float | None = None
    while True:
        timeout = 60.0 if deadline is None else deadline - time.monotonic()
        try:
            at, line = child.next_line(timeout)
        except TimeoutError:
            if deadline is None:
                raise AssertionError(f"child {child.pid} hung{child}") from None
            child.signal(signal.SIGKILL)
            return child.wait(10)
        if line is None:
            return child.wait(30)
        if line == "go":
            deadline = at + delay
        elif line.startswith("wait"):
            deadline = None


class TestCrashResume:
    def test_runs_killed_at_random_instants_resume_to_an_uninterrupted_runs_result(
        self, backend: Backend, log_dir: Path, tmp_path: Path, children: list[Child]
    ):
        rng = random.Random(SEED)
        soak = Soak()
        started = time.monotonic()

        def spawn() -> Child:
            args = [backend.url, "-", "0", "stdin", "--log-dir", str(log_dir)]
            child = Child.start(
                [*args, "--ttl", str(LEASE_TTL)],
                tmp_path / f"child-{len(children)}.err",
                stdin=True,
            )
            children.append(child)
            return child

        with asyncio.Runner() as runner:
            pending = spawn()  # the next driver starts up while the current one runs
            while soak.kills < KILLS:
                soak.runs += 1
                run_id = f"crash-{soak.runs}"
                seed = rng.randrange(2**32)
                drivers: list[Driver] = []
                soak.drivers[run_id] = drivers
                mode = "run"
                while True:
                    assert len(drivers) < MAX_DRIVERS_PER_RUN, f"{run_id} never completed"
                    child, pending = pending, None
                    child.expect("ready")
                    pending = spawn()
                    child.send(f"{mode} {run_id} {seed}")
                    delay = rng.uniform(0, MAX_KILL_DELAY[backend.name])
                    code = supervise(child, delay)
                    after = runner.run(backend.snapshot(run_id))
                    killed = code == -signal.SIGKILL
                    drivers.append(Driver(child.pid, mode, killed, after))
                    soak.resumes += mode == "resume"
                    if not killed:
                        assert code == EXIT_COMPLETED, (
                            f"{run_id}: driver {child.pid} ({mode}) exited {code}"
                            f" (soak seed {SEED}){child}"
                        )
                        break
                    soak.kills += 1
                    soak.mid_run_kills += 0 < len(after.records) < STAGES
                    mode = "run" if after.run is None else "resume"
                soak.completed_by_resume += mode == "resume"
                soak.reexecuted += check_run(run_id, seed, drivers, log_dir)
            pending.ensure_dead()

        elapsed = time.monotonic() - started
        print(
            f"\ncrash soak on {backend.name}: {soak.kills} kills ({soak.mid_run_kills} mid-run), "
            f"{soak.runs} runs, "
            f"{soak.resumes} resumes ({soak.completed_by_resume} runs completed by a resume), "
            f"{soak.reexecuted} stages re-executed, {elapsed:.1f}s, seed {SEED}"
        )
        assert soak.kills >= KILLS


def check_run(run_id: str, seed: int, drivers: list[Driver], log_dir: Path) -> int:
    """Check a completed run against its history; return how many stages ran again."""
    where = f"{run_id} (seed {seed}; soak seed {SEED})"
    expected = reference(seed)
    final = drivers[-1].after

    result = pickle.loads((log_dir / f"{run_id}.pickle").read_bytes())
    assert result == expected, f"{where}: the result differs from an uninterrupted run's"

    assert final.run is not None
    assert final.run.status is RunStatus.COMPLETED, f"{where}: {final.run}"
    assert final.run.error is None, f"{where}: {final.run.error}"
    assert final.lease_owner is None, f"{where}: lease still held by {final.lease_owner}"
    assert set(final.records) == set(expected), f"{where}: not one record per stage"
    for name, record in final.records.items():
        assert record.status is StageStatus.COMPLETED, f"{where}: {record}"
        assert loads(record.output) == expected[name], f"{where}: stored output of {name}"

    dependencies = {name: deps for name, deps, _ in shape(seed)}
    for k, driver in enumerate(drivers[:-1]):
        for name, record in driver.after.records.items():
            missing = [d for d in dependencies[name] if d not in driver.after.records]
            assert not missing, (
                f"{where}: after kill {k + 1}, {name} was stored but not its dependencies "
                f"{missing}: a completion must be committed before any dependent starts"
            )
            assert final.records[name] == record, (
                f"{where}: the record of {name} stored before kill {k + 1} (driver "
                f"{driver.pid}) was changed: {record} -> {final.records[name]}"
            )

    order = {driver.pid: k for k, driver in enumerate(drivers)}
    assert len(order) == len(drivers), f"{where}: a pid was reused within one run"
    by_stage: dict[str, list[int]] = defaultdict(list)
    for stage, attempt, pid in completions(log_dir, run_id):
        assert pid in order, f"{where}: completion of {stage} by unknown pid {pid}"
        assert attempt == 1, f"{where}: {stage} retried ({attempt}) with no retry policy"
        by_stage[stage].append(order[pid])
    reexecuted = 0
    for name in expected:
        committed_by = next(k for k, d in enumerate(drivers) if name in d.after.records)
        ran_in = by_stage[name]
        assert len(set(ran_in)) == len(ran_in), f"{where}: {name} completed twice in one driver"
        assert ran_in, f"{where}: {name} was stored but never completed in any driver"
        assert max(ran_in) == committed_by, (
            f"{where}: {name} was committed by driver {committed_by} "
            f"(pid {drivers[committed_by].pid}) but completed in drivers {ran_in}: a stage "
            "whose completion was stored ran again"
        )
        reexecuted += len(ran_in) - 1
        # Usage: each stored report stands for an attempt that completed (the stage
        # reports right before it logs); the committing attempt's is always there.
        stored = [u for u in final.usage if u.stage == name]
        assert all(u.input_tokens == tokens_of(name) for u in stored), f"{where}: {stored}"
        assert 1 <= len(stored) <= len(ran_in), (
            f"{where}: {name} completed {len(ran_in)} time(s) but {len(stored)} usage "
            "reports are stored: usage was lost or counted twice"
        )
    for k, driver in enumerate(drivers[:-1]):
        kept = final.usage[: len(driver.after.usage)]
        assert kept == driver.after.usage, (
            f"{where}: usage stored before kill {k + 1} was lost or changed"
        )
    spent = json.loads((log_dir / f"{run_id}.usage.json").read_text())
    stored_by_stage: dict[str, int] = defaultdict(int)
    for u in final.usage:
        stored_by_stage[u.stage] += u.input_tokens
    assert spent == stored_by_stage, (
        f"{where}: the resumed run's result.usage is not what all its drivers stored: "
        "spent usage was reset or doubled on resume"
    )
    return reexecuted


@pytest.fixture(autouse=True)
def _announce_seed(request: pytest.FixtureRequest) -> None:
    request.node.user_properties.append(("crash_seed", SEED))
