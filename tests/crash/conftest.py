"""Fixtures of the crash and lease tests: a store on each backend, and how to drive children.

The PostgreSQL fixtures are those of ``tests/conftest.py`` (a throwaway server
the tests start themselves; skipped, or failed under ``STAGEFLOW_REQUIRE_POSTGRES=1``, when
the binaries are missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.errors import UnknownRunError
from stageflow.ports import RunRecord, StageRecord, UsageRecord

ROOT = Path(__file__).resolve().parents[2]
CHILD = "tests.crash._child"


@dataclass(frozen=True)
class Snapshot:
    """What the store holds of one run at one moment (``run`` None: no such run yet)."""

    run: RunRecord | None
    records: dict[str, StageRecord]
    lease_owner: str | None
    usage: tuple[UsageRecord, ...] = ()  # the run's usage reports, in recorded order


@dataclass
class Backend:
    """One database the children share: its URL, and a look at it from the outside."""

    name: str
    url: str
    sqlite_path: Path | None = None
    dsn: str | None = None

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until no client is connected to the database but us.

        A SIGKILLed client's last statement may still be running in the PostgreSQL server
        (and commit); only when its backend is gone is the store's state final. A SQLite
        client's writes end with its process.
        """
        if self.dsn is None:
            return
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            deadline = time.monotonic() + timeout
            while True:
                others = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                if others == 0:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{others} clients still connected to {self.url}")
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    def write_locked(self) -> bool:
        """Whether some process holds the SQLite file's write lock right now."""
        if self.sqlite_path is None:
            return False
        conn = sqlite3.connect(self.sqlite_path, timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        except sqlite3.OperationalError:
            return True
        finally:
            conn.close()
        return False

    async def lease_owner(self, run_id: str) -> str | None:
        """Who holds the run's lease (None: released), read past the store's API."""
        query = "SELECT lease_owner FROM stageflow_runs WHERE run_id = "
        if self.dsn is not None:
            import asyncpg

            conn = await asyncpg.connect(self.dsn)
            try:
                return await conn.fetchval(query + "$1", run_id)  # type: ignore[no-any-return]
            finally:
                await conn.close()
        assert self.sqlite_path is not None
        with sqlite3.connect(self.sqlite_path) as conn:
            row = conn.execute(query + "?", (run_id,)).fetchone()
        return None if row is None else row[0]

    async def snapshot(
        self, run_id: str, *, settle: bool = True, store: SQLAlchemyStore | None = None
    ) -> Snapshot:
        """The run as the store has it (with ``settle``: once killed clients' writes landed).

        Through ``store`` if given, else through a store of its own, closed at once (so
        that it leaves no client behind to wait for at the next ``settle``).
        """
        if settle:
            await self.settle()
        own = store is None
        reader = SQLAlchemyStore(self.url) if store is None else store
        try:
            try:
                run = await reader.get_run(run_id)
            except UnknownRunError:
                return Snapshot(None, {}, None)
            records = await reader.stage_records(run_id)
            usage = tuple(await reader.load_usage(run_id))
        finally:
            if own:
                await reader.aclose()
        return Snapshot(run, records, await self.lease_owner(run_id), usage)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A fresh store on SQLite (a file) and on PostgreSQL (a fresh database)."""
    if request.param == "sqlite":
        path = tmp_path / "runs.db"
        return Backend("sqlite", f"sqlite:///{path}", sqlite_path=path)
    database = request.getfixturevalue("postgres_database")
    return Backend("postgresql", database.url, dsn=database.dsn)


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Where the children log their completed stages, one file per run."""
    path = tmp_path / "logs"
    path.mkdir()
    return path


# --------------------------------------------------------------------------- children


@dataclass
class Child:
    """A running ``tests.crash._child``, its stdout read line by line in a thread.

    Every wait has a timeout: a child that hangs fails the test instead of blocking it.
    """

    process: subprocess.Popen[str]
    stderr_path: Path
    lines: queue.Queue[tuple[float, str | None]] = field(default_factory=queue.Queue)
    said: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    @classmethod
    def start(
        cls, args: list[str], stderr_path: Path, *, stdin: bool = False, module: str = CHILD
    ) -> Child:
        """Run ``python -m module *args`` (default: :data:`CHILD`) from the repo root."""
        stderr = stderr_path.open("w")
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                cwd=ROOT,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                bufsize=1,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            stderr.close()
        child = cls(process, stderr_path)
        child.reader = threading.Thread(target=child._read, args=(process.stdout,), daemon=True)
        child.reader.start()
        return child

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put((time.monotonic(), line.rstrip("\n")))
        self.lines.put((time.monotonic(), None))

    @property
    def pid(self) -> int:
        return self.process.pid

    def next_line(self, timeout: float) -> tuple[float, str | None]:
        """The next line and when it came (None: stdout closed); TimeoutError if none."""
        try:
            at, line = self.lines.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise TimeoutError(f"child {self.pid} said nothing for {timeout:.1f}s") from None
        if line is not None:
            self.said.append(line)
        return at, line

    def expect(self, wanted: str, timeout: float = 30.0) -> None:
        """Wait for a line starting with ``wanted``."""
        deadline = time.monotonic() + timeout
        while True:
            _, line = self.next_line(deadline - time.monotonic())
            if line is None:
                raise AssertionError(f"child {self.pid} ended before saying {wanted!r}{self}")
            if line.startswith(wanted):
                return

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def signal(self, sig: signal.Signals) -> None:
        os.kill(self.pid, sig)

    def stop(self, backend: Backend, timeout: float = 10.0) -> None:
        """SIGSTOP the child, at an instant when it holds no SQLite write lock.

        A process stopped inside a SQLite write blocks every other writer of the file
        until it goes on: no lease can help with that, and it is not what we test here.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.signal(signal.SIGSTOP)
            while self.state() != "T":  # the signal is delivered asynchronously
                assert time.monotonic() < deadline, f"child {self.pid} did not stop"
                time.sleep(0.001)
            if not backend.write_locked():
                return
            self.signal(signal.SIGCONT)
            assert time.monotonic() < deadline, f"child {self.pid} always holds the lock"
            time.sleep(0.001)

    def state(self) -> str:
        """The process state letter in /proc (``T``: stopped)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        return stat[stat.rindex(")") + 2]

    def wait(self, timeout: float = 30.0) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.ensure_dead()
            raise AssertionError(f"child {self.pid} did not end within {timeout}s{self}") from None
        self._close()
        return code

    def _close(self) -> None:
        """Close our ends of the pipes once the child is gone and its stdout was read."""
        if self.process.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        if self.reader is not None:
            self.reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        while not self.lines.empty():  # keep what it said last, for the checks
            _, line = self.lines.get_nowait()
            if line is not None:
                self.said.append(line)

    def last_json(self) -> dict[str, Any]:
        """The last JSON object the child printed (call after :meth:`wait`)."""
        for line in reversed(self.said):
            if line.startswith("{"):
                return json.loads(line)  # type: ignore[no-any-return]
        raise AssertionError(f"child {self.pid} printed no JSON{self}")

    def ensure_dead(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self._close()

    def __str__(self) -> str:
        err = self.stderr_path.read_text()[-3000:] if self.stderr_path.exists() else ""
        return f"\nstdout: {self.said[-10:]}\nstderr: {err}"


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Children a test starts are put here, and killed at its end if still alive."""
    started: list[Child] = []
    yield started
    for child in started:
        child.ensure_dead()
