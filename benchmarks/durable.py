"""W6: runs whose every stage completion is committed before its dependents start.

Each side of a W6 comparison is a ``Side``: set up once per workload (``start``: a
connection, a store, an engine), then per repetition ``prepare`` (untimed: a fresh SQLite
file with its schema, the store opened, a new run id) returns the coroutine function that is
timed, ``check`` verifies the run and what it stored (untimed) and ``cleanup`` closes what
the repetition opened. ``close`` ends the workload.

* ``SQLiteBare``: the floor. ``bare.run_bare_committed`` with, per stage, one INSERT of the
  stage's output as JSON through stdlib ``sqlite3`` (WAL, ``synchronous=NORMAL``), committed
  as its own transaction, called directly on the loop's thread.
* ``SQLiteStageflow``: ``Engine(store=SQLAlchemyStore("sqlite:///<tmp>/<rep>.db"))``; the
  store is opened (``list_runs()``) and the engine's stage calls composed before timing, so
  the timed region is ``engine.run(graph, run_id=...)``: creating the run, taking and
  releasing its lease and setting its status (four statements per run) included.
* ``PostgresBare``: per stage one ``await stmt.fetch(...)`` of an asyncpg prepared INSERT,
  autocommit, one round trip.
* ``PostgresStageflow``: the same engine on ``SQLAlchemyStore("postgresql+asyncpg://...")``,
  one store and engine for all repetitions (runs have distinct ids), as an application would.
* ``SQLiteMapBare`` (W7-durable): ``bare.gathered_committed``, W7's gather where each item
  writes its row through ``GroupCommit``, the store's group commit by hand: the first write
  of a loop iteration is committed at once, the others of that iteration wait for one
  transaction that commits them all at the next iteration.
* ``SQLiteMapStageflow`` (W7-durable): W7's ``with_map`` graph on
  ``SQLAlchemyStore("sqlite+aiosqlite:///<tmp>/<rep>.db")``, set up as ``SQLiteStageflow``.

The database files of one workload live in one temporary directory removed at its end (the
store runs WAL checkpoints in a worker thread that may still be busy with a file when its
repetition is over).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from bare import BareGraph, StageSpec, gathered_committed, run_bare, run_bare_committed
from workloads import map_build, stageflow_build

Go = Callable[[], Awaitable[Any]]

BARE_TABLE = """
CREATE TABLE IF NOT EXISTS bench_stages (
    run_id TEXT NOT NULL, stage TEXT NOT NULL, output TEXT NOT NULL,
    PRIMARY KEY (run_id, stage)
)"""


def _run_prefix() -> str:
    """Run ids unique to this process, so a shared database never sees one twice."""
    return f"w6-{uuid.uuid4().hex[:8]}"


class Side(Protocol):
    name: str

    async def start(self) -> None: ...
    async def prepare(self, tag: str) -> Go: ...
    async def check(self, result: Any, n: int) -> None: ...
    async def cleanup(self) -> None: ...
    async def close(self) -> None: ...


# --------------------------------------------------------------------------- SQLite


class SQLiteBare:
    """stdlib sqlite3, WAL, synchronous=NORMAL, one INSERT + COMMIT per stage."""

    name = "bare"

    def __init__(self, spec: list[StageSpec], directory: Path) -> None:
        self.graph = BareGraph(spec)
        self.directory = directory
        self.prefix = _run_prefix()
        self.conn: sqlite3.Connection | None = None
        self.run_id = ""

    async def start(self) -> None:
        pass

    async def prepare(self, tag: str) -> Go:
        conn = sqlite3.connect(self.directory / f"bare-{tag}.db")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(BARE_TABLE)
        conn.commit()
        self.conn = conn
        self.run_id = run_id = f"{self.prefix}-{tag}"
        names = self.graph.names
        execute = conn.execute
        commit_ = conn.commit
        dumps = json.dumps
        insert = "INSERT INTO bench_stages (run_id, stage, output) VALUES (?, ?, ?)"

        def commit(i: int, out: Any) -> None:
            execute(insert, (run_id, names[i], dumps(out)))  # implicit BEGIN
            commit_()

        graph = self.graph
        return lambda: run_bare_committed(graph, commit, awaited=False)

    async def check(self, result: Any, n: int) -> None:
        assert self.conn is not None
        (count,) = self.conn.execute(
            "SELECT count(*) FROM bench_stages WHERE run_id = ?", (self.run_id,)
        ).fetchone()
        if len(result) != n or count != n:
            raise RuntimeError(f"bare: {len(result)} results, {count} rows stored, not {n}")

    async def cleanup(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    async def close(self) -> None:
        await self.cleanup()


class SQLiteStageflow:
    """Engine(store=SQLAlchemyStore("sqlite:///...")), a fresh file per repetition."""

    name = "stageflow"
    scheme = "sqlite"  # of the store's URL

    def __init__(self, spec: list[StageSpec], directory: Path) -> None:
        self.graph = stageflow_build("w6", spec)
        self.directory = directory
        self.prefix = _run_prefix()
        self.store: Any = None
        self.run_id = ""

    async def start(self) -> None:
        pass

    async def prepare(self, tag: str) -> Go:
        from stageflow import Engine
        from stageflow.adapters.sqlalchemy import SQLAlchemyStore

        path = self.directory / f"sf-{tag}.db"
        self.store = store = SQLAlchemyStore(f"{self.scheme}:///{path}")
        await store.list_runs()  # the store opens lazily: schema and connection, untimed
        engine = Engine(store=store, max_parallel=None)
        engine.calls(self.graph)  # compose the stage calls once, as a long-lived engine has
        self.run_id = run_id = f"{self.prefix}-{tag}"
        graph = self.graph
        return lambda: engine.run(graph, run_id=run_id)

    async def check(self, result: Any, n: int) -> None:
        if result.status != "completed":
            raise RuntimeError(f"stageflow run ended with status {result.status!r}")
        stored = await self.store.stage_records(self.run_id)
        if len(stored) != n:
            raise RuntimeError(f"stageflow stored {len(stored)} stage records, not {n}")

    async def cleanup(self) -> None:
        if self.store is not None:
            await self.store.aclose()
            self.store = None

    async def close(self) -> None:
        await self.cleanup()


class SQLiteReference(SQLiteStageflow):
    """W10's reference: W6's stageflow side (a durable run without an event log)."""

    name = "bare"


class SQLiteEventLogged(SQLiteStageflow):
    """W10: W6's stageflow side with ``Engine(event_log=store)``: every event stored too."""

    async def prepare(self, tag: str) -> Go:
        from stageflow import Engine
        from stageflow.adapters.sqlalchemy import SQLAlchemyStore

        path = self.directory / f"sf-log-{tag}.db"
        self.store = store = SQLAlchemyStore(f"{self.scheme}:///{path}")
        await store.list_runs()
        engine = Engine(store=store, event_log=store, max_parallel=None)
        engine.calls(self.graph)
        self.run_id = run_id = f"{self.prefix}-log-{tag}"
        graph = self.graph
        return lambda: engine.run(graph, run_id=run_id)

    async def check(self, result: Any, n: int) -> None:
        await super().check(result, n)
        events = await self.store.read_events(self.run_id)
        # run.started, then per stage started / checkpoint.saved / completed, run.completed
        if len(events) != 3 * n + 2 or events[-1].type != "run.completed":
            raise RuntimeError(f"stageflow stored {len(events)} events, not {3 * n + 2}")


# --------------------------------------------------------------------------- W7-durable: a map


def compact(data: Any) -> str:
    """JSON as the store writes an output: no spaces (``{"v":1}``)."""
    return json.dumps(data, separators=(",", ":"))


class GroupCommit:
    """Writes of one statement that commit in groups, as the SQLite store's do.

    The same rule as ``_SQLite.run(..., group=True)`` in
    ``stageflow/adapters/sqlalchemy/_store.py``: a write that comes alone is committed at
    once (autocommit); once one was made in this loop iteration, the next ones wait for
    one ``BEGIN IMMEDIATE`` ... ``COMMIT`` of them all, run at the next iteration
    (``call_soon``). ``groups`` lists the size of each commit, for the check.
    """

    __slots__ = ("batch", "burst", "conn", "groups", "statement")

    def __init__(self, conn: sqlite3.Connection, statement: str) -> None:
        self.conn = conn  # isolation_level=None: autocommit unless a BEGIN
        self.statement = statement
        self.burst = False  # a write was committed in this loop iteration
        self.batch: list[tuple[tuple[Any, ...], asyncio.Future[None]]] | None = None
        self.groups: list[int] = []

    async def write(self, params: tuple[Any, ...]) -> None:
        if self.batch is None:
            loop = asyncio.get_running_loop()
            if not self.burst:  # alone so far: commit at once
                self.burst = True
                loop.call_soon(self._end_burst)
                self.conn.execute(self.statement, params)
                self.groups.append(1)
                return
            self.batch = []  # a second write in this iteration: gather the rest
            loop.call_soon(self._flush)
        done = asyncio.get_running_loop().create_future()
        self.batch.append((params, done))
        await done

    def _end_burst(self) -> None:
        self.burst = False

    def _flush(self) -> None:
        batch, self.batch = self.batch or [], None
        conn, statement = self.conn, self.statement
        conn.execute("BEGIN IMMEDIATE")
        for params, _ in batch:
            conn.execute(statement, params)
        conn.execute("COMMIT")
        self.groups.append(len(batch))
        for _, done in batch:
            done.set_result(None)


class SQLiteMapBare:
    """W7's gather in a bare node, each item's row written through a GroupCommit."""

    name = "bare"

    def __init__(self, spec: list[StageSpec], directory: Path) -> None:
        self.spec = spec
        self.directory = directory
        self.prefix = _run_prefix()
        self.conn: sqlite3.Connection | None = None
        self.group: GroupCommit | None = None
        self.run_id = ""
        self.payload = ""

    async def start(self) -> None:
        self.payload = compact(await self.spec[1][1](None))  # one item's output as stored

    async def prepare(self, tag: str) -> Go:
        conn = sqlite3.connect(self.directory / f"bare-{tag}.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(BARE_TABLE)
        self.conn = conn
        self.group = group = GroupCommit(
            conn, "INSERT INTO bench_stages (run_id, stage, output) VALUES (?, ?, ?)"
        )
        self.run_id = run_id = f"{self.prefix}-{tag}"
        (source, source_fn, _), (map_name, fn, deps) = self.spec
        write = group.write
        dumps = compact

        async def commit(k: int, out: Any) -> None:
            await write((run_id, f"{map_name}[{k}]", dumps(out)))

        graph = BareGraph(
            [(source, source_fn, ()), (map_name, gathered_committed(fn, 0, "items", commit), deps)]
        )
        return lambda: run_bare(graph)

    async def check(self, result: Any, n: int) -> None:
        assert self.conn is not None
        assert self.group is not None
        (count,) = self.conn.execute(
            "SELECT count(*) FROM bench_stages WHERE run_id = ?", (self.run_id,)
        ).fetchone()
        (stored,) = self.conn.execute(
            "SELECT output FROM bench_stages WHERE run_id = ? LIMIT 1", (self.run_id,)
        ).fetchone()
        if len(result[1]["results"]) != n or count != n or sum(self.group.groups) != n:
            raise RuntimeError(f"bare: {len(result[1]['results'])} results, {count} rows, not {n}")
        if stored != self.payload:
            raise RuntimeError(f"bare stored {stored!r}, not {self.payload!r}")

    async def cleanup(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    async def close(self) -> None:
        await self.cleanup()


class SQLiteMapStageflow(SQLiteStageflow):
    """W7's ``with_map`` graph on SQLAlchemyStore("sqlite+aiosqlite:///..."), per repetition
    a fresh file, opened and its calls composed untimed (see SQLiteStageflow)."""

    scheme = "sqlite+aiosqlite"

    def __init__(self, spec: list[StageSpec], directory: Path) -> None:
        self.spec = spec
        self.graph = map_build("w7", spec)
        self.directory = directory
        self.prefix = _run_prefix()
        self.store = None
        self.run_id = ""
        self.payload = ""

    async def start(self) -> None:
        self.payload = compact(await self.spec[1][1](None))

    async def check(self, result: Any, n: int) -> None:
        if result.status != "completed":
            raise RuntimeError(f"stageflow run ended with status {result.status!r}")
        stored = await self.store.stage_records(self.run_id)
        if len(stored) != n + 2:  # split, the map and its n items
            raise RuntimeError(f"stageflow stored {len(stored)} stage records, not {n + 2}")
        item = stored[f"{self.spec[1][0]}[0]"].output
        if item != self.payload:
            raise RuntimeError(f"stageflow stored {item!r} for an item, not {self.payload!r}")


# --------------------------------------------------------------------------- PostgreSQL


class PostgresBare:
    """asyncpg, one prepared INSERT per stage (autocommit: one round trip each)."""

    name = "bare"

    def __init__(self, spec: list[StageSpec], dsn: str) -> None:
        self.graph = BareGraph(spec)
        self.dsn = dsn
        self.prefix = _run_prefix()
        self.conn: Any = None
        self.stmt: Any = None
        self.run_id = ""

    async def start(self) -> None:
        import asyncpg

        self.conn = await asyncpg.connect(self.dsn)
        await self.conn.execute(BARE_TABLE)
        self.stmt = await self.conn.prepare(
            "INSERT INTO bench_stages (run_id, stage, output) VALUES ($1, $2, $3)"
        )

    async def prepare(self, tag: str) -> Go:
        self.run_id = run_id = f"{self.prefix}-{tag}"
        names = self.graph.names
        fetch = self.stmt.fetch
        dumps = json.dumps

        async def commit(i: int, out: Any) -> None:
            await fetch(run_id, names[i], dumps(out))

        graph = self.graph
        return lambda: run_bare_committed(graph, commit, awaited=True)

    async def check(self, result: Any, n: int) -> None:
        count = await self.conn.fetchval(
            "SELECT count(*) FROM bench_stages WHERE run_id = $1", self.run_id
        )
        if len(result) != n or count != n:
            raise RuntimeError(f"bare: {len(result)} results, {count} rows stored, not {n}")

    async def cleanup(self) -> None:
        pass

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None


class PostgresStageflow:
    """Engine(store=SQLAlchemyStore("postgresql+asyncpg://...")), shared by all repetitions."""

    name = "stageflow"

    def __init__(self, spec: list[StageSpec], url: str) -> None:
        self.graph = stageflow_build("w6pg", spec)
        self.url = url
        self.prefix = _run_prefix()
        self.store: Any = None
        self.engine: Any = None
        self.run_id = ""

    async def start(self) -> None:
        from stageflow import Engine
        from stageflow.adapters.sqlalchemy import SQLAlchemyStore

        self.store = SQLAlchemyStore(self.url)
        await self.store.list_runs()  # schema, engine and a pooled connection, untimed
        self.engine = Engine(store=self.store, max_parallel=None)
        self.engine.calls(self.graph)

    async def prepare(self, tag: str) -> Go:
        self.run_id = run_id = f"{self.prefix}-{tag}"
        engine, graph = self.engine, self.graph
        return lambda: engine.run(graph, run_id=run_id)

    async def check(self, result: Any, n: int) -> None:
        await SQLiteStageflow.check(self, result, n)  # type: ignore[arg-type]

    async def cleanup(self) -> None:
        pass

    async def close(self) -> None:
        if self.store is not None:
            await self.store.aclose()
            self.store = None
