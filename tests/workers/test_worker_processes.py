"""Queued runs driven by real ``stageflow worker`` processes, two of them SIGKILLed midway.

Per backend (a SQLite file, a fresh PostgreSQL database): 200 runs of a three-stage chain
are submitted over two queues, ``default`` (no limit) and ``small`` (a global limit of 2,
which every worker is given), with varied priorities. Four worker processes drive them;
once some runs completed, two workers that hold runs are SIGKILLed. The survivors must
finish everything: a dead worker's run keeps its lease until ``--lease-ttl`` runs out, then
another worker takes it over with a greater fencing token and resumes it.

What the store, the calls file (``tests/workers/flows.py``) and the workers' JSON journal
(``--log-json`` on stderr) must show afterwards:

- every run completed, each stage stored as completed;
- no stage called twice but for take-overs: per (run, stage), at most one call by the
  workers that lived, and at most one more per killed worker that called it; and no stage
  called again once its dependent had started (completed stages are restored, not re-run);
- no run driven by two workers at once: a run's claims come in token order, and each drive
  ends (released, or its worker killed) before the next claim of that run;
- never more than 2 runs of queue ``small`` driven at once, across all workers;
- the killed workers held runs when they died, and those runs were taken over;
- the survivors stop on SIGTERM with exit code 0, and say so in their journal.

Journal times (``at``) and call times are ``time.time()`` in the workers' processes, all on
this machine: one clock.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stageflow import Engine, RunStatus, StageStatus
from stageflow.adapters.sqlalchemy import SQLAlchemyStore

from .flows import CALLS_ENV, CHAIN, SMALL, STAGES, Call, catalog, read_calls

pytestmark = [
    pytest.mark.slow,  # real processes, real time: ~10-30 s per backend
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests.workers.flows:catalog"
QUEUES = ("default", "small")
RUNS = 200
SMALL_EVERY = 4  # every fourth run goes to queue "small": 50 of them
SMALL_LIMIT = 2
WORKERS = 4
CONCURRENCY = 4
KILLED = 2
LEASE_TTL = 2.0
POLL = 0.05
KILL_AFTER = 30  # completed runs before the kill: the workers are busy, the queues full
START_TIMEOUT = 30.0  # for the workers to say worker.started
FINISH_TIMEOUT = 120.0  # for all runs to complete after the kill
STOP_TIMEOUT = 45.0  # SIGTERM -> exit; above the default --grace of 30 s
# A worker logs worker.released right after its drive gave the lease back, so another
# worker's claim of the freed slot may be logged a moment before it: the journal's check of
# the queue limit forgives an overlap this short (a real excess lasts a whole drive, 90 ms+).
LOG_SKEW = 0.02
KNOWN_EVENTS = frozenset({"worker.started", "worker.claimed", "worker.released", "worker.stopped"})


# --------------------------------------------------------------------------- processes


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store the workers share: a SQLite file, or an empty PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runs.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def _stageflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "stageflow.cli", *args]


def _env(calls: Path) -> dict[str, str]:
    """Ours without STAGEFLOW_* settings (they would configure the CLI), plus the calls file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env["TTY_COMPATIBLE"] = "0"
    env[CALLS_ENV] = str(calls)
    return env


@dataclass
class WorkerProcess:
    """One ``stageflow worker``: its process, its stderr (the journal), when we killed it."""

    process: subprocess.Popen[bytes]
    log: Path
    killed_at: float | None = None  # time.time() once it was SIGKILLed and reaped

    @property
    def pid(self) -> int:
        return self.process.pid

    def journal(self) -> list[dict[str, Any]]:
        """The worker's known journal records, in the order it wrote them."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("event") in KNOWN_EVENTS:
                out.append(record)
        return out

    def open_claims(self) -> set[tuple[str, int]]:
        """``(run_id, token)`` of the runs it claimed and has not said it released."""
        held: set[tuple[str, int]] = set()
        for record in self.journal():
            key = (record.get("run_id"), record.get("token"))
            if record["event"] == "worker.claimed":
                held.add(key)  # type: ignore[arg-type]
            elif record["event"] == "worker.released":
                held.discard(key)  # type: ignore[arg-type]
        return held

    def __str__(self) -> str:
        code = self.process.poll()
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        return f"worker pid {self.pid} (exit {code}), stderr tail:\n{tail}"


@pytest.fixture
def spawned() -> Iterator[list[WorkerProcess]]:
    """Workers a test starts are put here, and killed at its end if still alive."""
    workers: list[WorkerProcess] = []
    yield workers
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait(10)


def start_worker(url: str, folder: Path, index: int, calls: Path) -> WorkerProcess:
    log = folder / f"worker-{index}.err"
    queues = [arg for queue in QUEUES for arg in ("--queue", queue)]
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            _stageflow(
                "worker", "--store", url, "--pipelines", TARGET, *queues,
                "--concurrency", str(CONCURRENCY), "--limit", f"small={SMALL_LIMIT}",
                "--lease-ttl", str(LEASE_TTL), "--poll", str(POLL), "--log-json",
            ),
            cwd=ROOT,
            env=_env(calls),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )  # fmt: skip
    return WorkerProcess(process, log)


def listed_workers(url: str, calls: Path) -> list[dict[str, Any]]:
    """What ``stageflow workers --json`` says is live."""
    done = subprocess.run(
        _stageflow("workers", "--store", url, "--json"),
        cwd=ROOT,
        env=_env(calls),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"stageflow workers exited {done.returncode}: {done.stderr}"
    listed: list[dict[str, Any]] = json.loads(done.stdout)
    return listed


def assert_alive(workers: list[WorkerProcess]) -> None:
    for worker in workers:
        if worker.killed_at is None:
            assert worker.process.poll() is None, f"a worker ended on its own: {worker}"


# --------------------------------------------------------------------------- the journal


@dataclass(frozen=True)
class Drive:
    """One claim of a run by one worker, until its release (or the worker's death)."""

    run_id: str
    token: int
    owner: str
    pid: int
    queue: str
    start: float  # the claim's "at"
    end: float  # the release's "at", or when the worker was killed
    status: str | None  # what the release said (None: the worker was killed holding it)


def drives_of(workers: list[WorkerProcess]) -> tuple[list[Drive], list[str]]:
    """Every drive in the journals, and what is inconsistent in them."""
    drives: list[Drive] = []
    problems: list[str] = []
    for worker in workers:
        journal = worker.journal()
        started = [r for r in journal if r["event"] == "worker.started"]
        if len(started) != 1:
            problems.append(f"pid {worker.pid}: {len(started)} worker.started records")
            continue
        owner = started[0]["owner"]
        claims: dict[tuple[str, int], dict[str, Any]] = {}
        for record in journal:
            if record["event"] not in ("worker.claimed", "worker.released"):
                continue
            if record.get("owner") != owner:
                problems.append(f"pid {worker.pid} ({owner}) logged another owner: {record}")
            key: tuple[str, int] = (record["run_id"], record["token"])
            if record["event"] == "worker.claimed":
                if key in claims:
                    problems.append(f"pid {worker.pid}: {key} claimed twice: {record}")
                claims[key] = record
                continue
            claim = claims.pop(key, None)
            if claim is None:
                problems.append(f"pid {worker.pid}: released {key} it never claimed: {record}")
                continue
            drives.append(
                Drive(key[0], key[1], owner, worker.pid, claim["queue"], claim["at"],
                      record["at"], record["status"])
            )  # fmt: skip
        for key, claim in claims.items():
            if worker.killed_at is None:
                problems.append(f"pid {worker.pid} lived but never released {key}: {claim}")
                continue
            drives.append(
                Drive(key[0], key[1], owner, worker.pid, claim["queue"], claim["at"],
                      worker.killed_at, None)
            )  # fmt: skip
    return drives, problems


def most_at_once(intervals: list[tuple[float, float, str]]) -> tuple[int, float, list[str]]:
    """The most intervals open at one instant, that instant, and which ones.

    An interval is ``[start, end)``: one ending when another starts is not an overlap.
    """
    moments = sorted(
        [(start, 1, name) for start, _, name in intervals]
        + [(end, -1, name) for _, end, name in intervals]
    )  # at one instant, ends (-1) sort before starts (+1)
    best, when, open_now = 0, 0.0, set()
    best_open: list[str] = []
    for at, delta, name in moments:
        if delta < 0:
            open_now.discard(name)
            continue
        open_now.add(name)
        if len(open_now) > best:
            best, when, best_open = len(open_now), at, sorted(open_now)
    return best, when, best_open


def report(problems: list[str], what: str) -> str:
    shown = "\n  ".join(problems[:15])
    more = f"\n  ... and {len(problems) - 15} more" if len(problems) > 15 else ""
    return f"{len(problems)} {what}:\n  {shown}{more}"


# --------------------------------------------------------------------------- the test


class TestWorkerProcesses:
    def test_killed_workers_runs_are_taken_over_and_every_run_completes_once_within_limits(
        self, store_url: str, tmp_path: Path, spawned: list[WorkerProcess]
    ) -> None:
        calls_path = tmp_path / "calls.jsonl"
        with asyncio.Runner() as runner:
            store = SQLAlchemyStore(store_url)
            try:
                runner.run(store.list_runs(limit=1))  # creates the tables before the workers
                self._scenario(runner, store, store_url, tmp_path, calls_path, spawned)
            finally:
                runner.run(store.aclose())

    def _scenario(
        self,
        runner: asyncio.Runner,
        store: SQLAlchemyStore,
        url: str,
        folder: Path,
        calls_path: Path,
        workers: list[WorkerProcess],
    ) -> None:
        for index in range(WORKERS):
            workers.append(start_worker(url, folder, index, calls_path))
        self._wait_started(workers, url, calls_path)

        queue_of = runner.run(self._submit(store))

        victims = self._kill_busy(runner, store, workers)
        self._wait_completed(runner, store, workers)

        survivors = [w for w in workers if w.killed_at is None]
        for worker in survivors:
            worker.process.send_signal(signal.SIGTERM)
        for worker in survivors:
            try:
                code = worker.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"no exit {STOP_TIMEOUT}s after SIGTERM: {worker}") from None
            assert code == 0, f"exit code {code} after SIGTERM: {worker}"
            stopped = [r for r in worker.journal() if r["event"] == "worker.stopped"]
            assert len(stopped) == 1, f"{len(stopped)} worker.stopped records: {worker}"

        self._check_store(runner, store, queue_of)
        calls = read_calls(calls_path)
        drives = self._check_journal(workers, queue_of)
        most = self._check_limit(drives, calls, queue_of)
        held, taken_over = self._check_takeovers(drives, victims, calls)
        again = self._check_calls(calls, workers, queue_of)
        print(
            f"\n{RUNS} runs on {url.partition(':')[0]}: {len(drives)} claims, killed pids "
            f"{[v.pid for v in victims]} holding {held} runs, {taken_over} taken over, "
            f"{again} stage calls made again, at most {most} 'small' runs at once"
        )

    # ------------------------------------------------------------------ phases

    def _wait_started(self, workers: list[WorkerProcess], url: str, calls: Path) -> None:
        """All workers said worker.started, and ``stageflow workers`` lists them as live."""
        deadline = time.monotonic() + START_TIMEOUT
        while not all(any(r["event"] == "worker.started" for r in w.journal()) for w in workers):
            assert_alive(workers)
            assert time.monotonic() < deadline, "workers did not start:\n" + "\n".join(
                map(str, workers)
            )
            time.sleep(0.05)
        owners = {}
        for worker in workers:
            started = next(r for r in worker.journal() if r["event"] == "worker.started")
            assert str(worker.pid) in started["owner"].split(":"), (
                f"owner {started['owner']!r} does not name pid {worker.pid}"
            )
            assert sorted(started["queues"]) == sorted(QUEUES), started
            owners[started["owner"]] = worker.pid
        assert len(owners) == WORKERS, f"owners are not unique per process: {owners}"

        while True:  # registration may trail the log line: poll, with a deadline
            listed = {entry["owner"]: entry for entry in listed_workers(url, calls)}
            if set(owners) <= set(listed):
                break
            assert time.monotonic() < deadline, (
                f"stageflow workers lists {sorted(listed)}, not all of {sorted(owners)}"
            )
            time.sleep(0.1)
        for owner, pid in owners.items():
            entry = listed[owner]
            assert entry["pid"] == pid, entry
            assert sorted(entry["queues"]) == sorted(QUEUES), entry
            assert entry["concurrency"] == CONCURRENCY, entry
            assert entry["runs"] == [], f"a worker holds runs before any was submitted: {entry}"

    async def _submit(self, store: SQLAlchemyStore) -> dict[str, str]:
        """Submit the runs (run id -> queue); ``submit`` only records them as queued."""
        engine = Engine(store=store)
        queue_of: dict[str, str] = {}
        for i in range(RUNS):
            queue = "small" if i % SMALL_EVERY == SMALL_EVERY - 1 else "default"
            graph = catalog[SMALL if queue == "small" else CHAIN].graph
            run_id = await engine.submit(
                graph, queue=queue, priority=(i * 7) % 5 - 2, run_id=f"w{i:03d}"
            )
            assert run_id == f"w{i:03d}", f"submit returned {run_id!r} for run_id=w{i:03d}"
            queue_of[run_id] = queue
        return queue_of

    def _kill_busy(
        self, runner: asyncio.Runner, store: SQLAlchemyStore, workers: list[WorkerProcess]
    ) -> list[WorkerProcess]:
        """SIGKILL the two workers holding the most runs, once ``KILL_AFTER`` completed."""
        deadline = time.monotonic() + FINISH_TIMEOUT
        while True:
            assert_alive(workers)
            completed = len(runner.run(store.list_runs(status=RunStatus.COMPLETED)))
            holding = {w.pid: len(w.open_claims()) for w in workers}
            busy = sorted(workers, key=lambda w: -holding[w.pid])
            if completed >= KILL_AFTER and all(holding[w.pid] for w in busy[:KILLED]):
                break
            failed = runner.run(store.list_runs(status=RunStatus.FAILED))
            assert not failed, report([f"{r.run_id}: {r.error}" for r in failed], "runs failed")
            assert completed < RUNS, (
                f"all {RUNS} runs completed before {KILLED} workers held runs at once: "
                "nothing was killed midway"
            )
            assert time.monotonic() < deadline, (
                f"{completed} runs completed in {FINISH_TIMEOUT}s, waiting for {KILL_AFTER} "
                "and two busy workers:\n" + "\n".join(map(str, workers))
            )
            time.sleep(0.05)
        victims = busy[:KILLED]
        for victim in victims:
            os.kill(victim.pid, signal.SIGKILL)
        for victim in victims:
            victim.process.wait(10)
            # Taken once it is reaped: no drive of it can end later than this.
            victim.killed_at = time.time()
        return victims

    def _wait_completed(
        self, runner: asyncio.Runner, store: SQLAlchemyStore, workers: list[WorkerProcess]
    ) -> None:
        deadline = time.monotonic() + FINISH_TIMEOUT
        while True:
            assert_alive(workers)
            completed = len(runner.run(store.list_runs(status=RunStatus.COMPLETED)))
            if completed == RUNS:
                return
            failed = runner.run(store.list_runs(status=RunStatus.FAILED))
            assert not failed, report([f"{r.run_id}: {r.error}" for r in failed], "runs failed")
            if time.monotonic() > deadline:
                counts = Counter(r.status.value for r in runner.run(store.list_runs()))
                raise AssertionError(
                    f"{completed}/{RUNS} runs completed {FINISH_TIMEOUT}s after the kill "
                    f"(by status: {dict(counts)}):\n" + "\n".join(map(str, workers))
                )
            time.sleep(0.1)

    # ------------------------------------------------------------------ checks

    def _check_store(
        self, runner: asyncio.Runner, store: SQLAlchemyStore, queue_of: dict[str, str]
    ) -> None:
        runs = {run.run_id: run for run in runner.run(store.list_runs())}
        assert set(runs) == set(queue_of), (
            f"the store holds other runs than those submitted: "
            f"missing {sorted(set(queue_of) - set(runs))[:10]}, "
            f"extra {sorted(set(runs) - set(queue_of))[:10]}"
        )
        problems = []
        for run_id, run in sorted(runs.items()):
            if run.status is not RunStatus.COMPLETED:
                problems.append(f"{run_id}: {run.status.value} ({run.error})")
            records = runner.run(store.stage_records(run_id))
            if set(records) != set(STAGES):
                problems.append(f"{run_id}: stage records {sorted(records)}, not {STAGES}")
            bad = {
                name: record.status.value
                for name, record in records.items()
                if record.status is not StageStatus.COMPLETED
            }
            if bad:
                problems.append(f"{run_id}: stages not completed: {bad}")
        assert not problems, report(problems, "runs not completed in the store")

    def _check_journal(self, workers: list[WorkerProcess], queue_of: dict[str, str]) -> list[Drive]:
        """One driver at a time per run, in token order; the small queue's limit held."""
        drives, problems = drives_of(workers)
        assert not problems, report(problems, "inconsistencies in the workers' journals")

        by_run: dict[str, list[Drive]] = defaultdict(list)
        for drive in drives:
            by_run[drive.run_id].append(drive)
        missing = sorted(set(queue_of) - set(by_run))
        assert not missing, f"runs completed but never claimed in any journal: {missing[:10]}"
        unknown = sorted(set(by_run) - set(queue_of))
        assert not unknown, f"runs claimed that were never submitted: {unknown[:10]}"

        problems = []
        for run_id, run_drives in sorted(by_run.items()):
            run_drives.sort(key=lambda d: (d.start, d.token))
            for drive in run_drives:
                if drive.queue != queue_of[run_id]:
                    problems.append(f"{run_id} ({queue_of[run_id]}) claimed from {drive.queue}")
            for before, after in itertools.pairwise(run_drives):
                if after.token <= before.token:
                    problems.append(
                        f"{run_id}: token {after.token} (pid {after.pid}, at {after.start:.3f}) "
                        f"claimed after token {before.token} (pid {before.pid}, "
                        f"at {before.start:.3f}): tokens must grow with every claim"
                    )
                if after.start < before.end:
                    problems.append(
                        f"{run_id}: claimed by pid {after.pid} (token {after.token}) at "
                        f"{after.start:.3f}, {before.end - after.start:.3f}s before pid "
                        f"{before.pid}'s drive (token {before.token}) ended: two drivers at once"
                    )
            last = run_drives[-1]
            # A worker killed holding the run (status None) may have completed it just before
            # the kill, between the store's last write and its journal's release line: the
            # store's records (every run and stage completed, checked above) say so then.
            if last.status is not None and last.status != "completed":
                problems.append(f"{run_id}: its last drive (pid {last.pid}) ended {last.status}")
        assert not problems, report(problems, "problems in the runs' claims")

        return drives

    def _check_limit(self, drives: list[Drive], calls: list[Call], queue_of: dict[str, str]) -> int:
        """Never more than ``SMALL_LIMIT`` runs of queue ``small`` driven at once.

        Seen two ways. The journal: each drive from its claim to its release, or to its
        worker's death (its lease lives on until it expires, which only makes the store
        stricter than this check). And the calls: each drive's stage calls, from the first
        one's start to the last one's end, which happen under its lease by construction.
        """
        small = [
            (d.start, d.end if d.status is None else d.end - LOG_SKEW, f"{d.run_id}#{d.token}")
            for d in drives
            if d.queue == "small"
        ]
        most, when, which = most_at_once(small)
        assert most <= SMALL_LIMIT, (
            f"the journals show {most} runs of queue 'small' driven at once at {when:.3f} "
            f"(limit {SMALL_LIMIT}): {which}"
        )
        assert most >= 1, "no run of queue 'small' was ever claimed"

        spans: dict[tuple[str, int], list[float]] = {}
        for call in calls:
            if queue_of.get(call.run_id) != "small":
                continue
            span = spans.setdefault((call.run_id, call.pid), [call.start, call.end])
            span[0], span[1] = min(span[0], call.start), max(span[1], call.end)
        executing = [(a, b, f"{run}@{pid}") for (run, pid), (a, b) in spans.items()]
        most, when, which = most_at_once(executing)
        assert most <= SMALL_LIMIT, (
            f"the stage calls show {most} runs of queue 'small' executing at once at "
            f"{when:.3f} (limit {SMALL_LIMIT}): {which}"
        )
        return most

    def _check_takeovers(
        self, drives: list[Drive], victims: list[WorkerProcess], calls: list[Call]
    ) -> tuple[int, int]:
        """The killed workers held runs when they died, and those runs were taken over.

        Returns how many runs they held, and how many of those were taken over.
        """
        killed_pids = {v.pid for v in victims}
        held = [d for d in drives if d.pid in killed_pids and d.status is None]
        assert held, (
            f"the {KILLED} killed workers (pids {sorted(killed_pids)}) held no run when they "
            "were killed: the test proved nothing about take-overs"
        )
        later: dict[str, list[Drive]] = defaultdict(list)
        for drive in drives:
            later[drive.run_id].append(drive)
        stages_by: dict[tuple[str, int], set[str]] = defaultdict(set)
        for call in calls:
            stages_by[call.run_id, call.pid].add(call.stage)
        taken_over, problems = 0, []
        for dead in held:
            successors = [d for d in later[dead.run_id] if d.start >= dead.end]
            if successors:
                taken_over += 1
                first = min(successors, key=lambda d: d.start)
                if first.pid in killed_pids or first.token <= dead.token:
                    problems.append(f"{dead.run_id}: taken over by {first} after {dead}")
            elif stages_by[dead.run_id, dead.pid] != set(STAGES):
                # The only way not to be claimed again: the killed worker finished the run and
                # released it, and died before it could log the release.
                problems.append(
                    f"{dead.run_id}: held by killed pid {dead.pid} (token {dead.token}), "
                    "never claimed again, yet that worker did not call all its stages"
                )
        assert not problems, report(problems, "runs of killed workers not taken over properly")
        assert taken_over >= 1, (
            f"none of the {len(held)} runs the killed workers held was claimed again: "
            f"{[d.run_id for d in held]}"
        )
        return len(held), taken_over

    def _check_calls(
        self, calls: list[Call], workers: list[WorkerProcess], queue_of: dict[str, str]
    ) -> int:
        """Each stage called once, but for the call a killed worker did not get recorded.

        Returns how many calls were made again (on take-overs).
        """
        killed = {w.pid for w in workers if w.killed_at is not None}
        ours = {w.pid for w in workers}
        strangers = sorted({c.pid for c in calls} - ours)
        assert not strangers, f"stages called by processes that are no worker: {strangers}"

        by_stage: dict[tuple[str, str], list[Call]] = defaultdict(list)
        for call in calls:
            by_stage[call.run_id, call.stage].append(call)
        problems = []
        for run_id in sorted(queue_of):
            for stage in STAGES:
                stage_calls = by_stage[run_id, stage]
                pids = [c.pid for c in stage_calls]
                by_survivors = [p for p in pids if p not in killed]
                killed_callers = {p for p in pids if p in killed}
                if not stage_calls:
                    problems.append(f"{run_id}.{stage}: stored completed but never called")
                if len(by_survivors) > 1:
                    problems.append(
                        f"{run_id}.{stage}: called {len(by_survivors)} times by workers that "
                        f"lived (pids {by_survivors})"
                    )
                if len(pids) > 1 + len(killed_callers):
                    problems.append(
                        f"{run_id}.{stage}: called {len(pids)} times (pids {pids}), "
                        f"{len(killed_callers)} of the callers killed"
                    )
            for stage, dependent in itertools.pairwise(STAGES):
                if not by_stage[run_id, dependent]:
                    continue
                dependent_started = min(c.start for c in by_stage[run_id, dependent])
                again = [c for c in by_stage[run_id, stage] if c.start > dependent_started]
                if again:
                    problems.append(
                        f"{run_id}.{stage}: called again (pids {[c.pid for c in again]}) after "
                        f"{dependent} had started: a completed stage must be restored, not re-run"
                    )
        assert not problems, report(problems, "stages called more often than allowed")
        return sum(len(stage_calls) - 1 for stage_calls in by_stage.values())
