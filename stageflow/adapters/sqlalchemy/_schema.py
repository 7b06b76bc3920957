"""The tables of the SQLAlchemy store, and the SQL it runs (the same text on both backends)."""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

SCHEMA_VERSION: Final = 7
"""1: runs, stages, states. 2: usage (the table stageflow_usage). 3: run labels (the column
stageflow_runs.labels). 4: the runs' governing configuration (the column stageflow_runs.config).
5: the inputs of runs that wait for a person (the table stageflow_inputs). 6: the events of
runs (the table stageflow_events). 7: queued runs (the columns stageflow_runs.queue, priority,
ready_at and given_count) and workers (the table stageflow_workers)."""

metadata = MetaData()

meta = Table(
    "stageflow_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

runs = Table(
    "stageflow_runs",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("pipeline", String(128), nullable=False),
    Column("fingerprint", String(80), nullable=False),
    Column("structure", Text, nullable=False),
    Column("data", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("error", Text),
    Column("lease_owner", String(256)),
    Column("lease_token", Integer, nullable=False, server_default="0"),
    Column("lease_expires", Float),
    # The run's labels, a JSON object of str to str (version 3).
    Column("labels", Text, nullable=False, server_default="{}"),
    # The run's governing configuration, stageflow's JSON text ("": none recorded; version 4).
    Column("config", Text, nullable=False, server_default=""),
    # A submitted run's queue (NULL: a run not submitted), its priority (higher first), when
    # it is claimable from (see CLAIM), and how many of its inputs had a value when it was
    # last claimed: more later, and a waiting run is claimable again (version 7).
    Column("queue", String(128)),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("ready_at", Float),
    Column("given_count", Integer, nullable=False, server_default="0"),
    Index("stageflow_runs_listing", "status", "pipeline", "created_at"),
)
# A claim's order (CLAIM_FOR): a queue's runs by priority, highest first, then readiness.
Index("stageflow_runs_queue", runs.c.queue, runs.c.priority.desc(), runs.c.ready_at)

# One row per worker (stageflow worker), refreshed by its heartbeat (version 7).
workers = Table(
    "stageflow_workers",
    metadata,
    Column("owner", String(256), primary_key=True),
    Column("host", String(256), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("queues", Text, nullable=False),  # a JSON array of str
    Column("concurrency", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("seen_at", Float, nullable=False),
)

stages = Table(
    "stageflow_stages",
    metadata,
    Column("run_id", String(128), ForeignKey(runs.c.run_id, ondelete="CASCADE"), nullable=False),
    Column("stage", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("output", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("started", Float),
    Column("ended", Float),
    Column("reason", Text),
    PrimaryKeyConstraint("run_id", "stage"),
)

states = Table(
    "stageflow_states",
    metadata,
    Column("run_id", String(128), ForeignKey(runs.c.run_id, ondelete="CASCADE"), nullable=False),
    Column("stage", String(128), nullable=False),
    Column("state", Text, nullable=False),
    PrimaryKeyConstraint("run_id", "stage"),
)

# One row per usage report; ``id`` orders a run's reports as they were recorded (an
# INTEGER PRIMARY KEY on SQLite is the rowid, which only grows while a greater one exists).
usage = Table(
    "stageflow_usage",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("run_id", String(128), ForeignKey(runs.c.run_id, ondelete="CASCADE"), nullable=False),
    Column("stage", String(128), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("model", Text),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cost", Float),
    Column("at", Float, nullable=False),
    Index("stageflow_usage_run", "run_id"),
    Index("stageflow_usage_at", "at"),
)

# One row per input of a run (``with_input``): declared when the run starts, marked waiting
# when its stage waits, given once (version 5). An item's name, ``stage[key]``, is longer
# than a stage's.
inputs = Table(
    "stageflow_inputs",
    metadata,
    Column("run_id", String(128), ForeignKey(runs.c.run_id, ondelete="CASCADE"), nullable=False),
    Column("name", String(512), nullable=False),
    Column("schema", Text, nullable=False),
    Column("prompt", Text),
    Column("deadline", Float),
    Column("waiting_since", Float),
    Column("value", Text),
    Column("given_at", Float),
    PrimaryKeyConstraint("run_id", "name"),
)

ADD_LABELS: Final = "ALTER TABLE stageflow_runs ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'"
ADD_CONFIG: Final = "ALTER TABLE stageflow_runs ADD COLUMN config TEXT NOT NULL DEFAULT ''"
ADD_QUEUE: Final = (
    "ALTER TABLE stageflow_runs ADD COLUMN queue VARCHAR(128)",
    "ALTER TABLE stageflow_runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE stageflow_runs ADD COLUMN ready_at FLOAT",
    "ALTER TABLE stageflow_runs ADD COLUMN given_count INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS stageflow_runs_queue ON stageflow_runs "
    "(queue, priority DESC, ready_at)",
)

UPGRADES: Final[dict[int, tuple[str, ...]]] = {
    # 1 -> 2: the table stageflow_usage, which create_all (run on every open) has made.
    1: (),
    # 2 -> 3: the runs' labels (create_all makes no column in a table that exists).
    2: (ADD_LABELS,),
    # 3 -> 4: the runs' governing configuration (older runs get "": none recorded).
    3: (ADD_CONFIG,),
    # 4 -> 5: the table stageflow_inputs, which create_all has made.
    4: (),
    # 5 -> 6: the table stageflow_events, which create_all has made.
    5: (),
    # 6 -> 7: the queue's columns and index (stageflow_workers: create_all has made it).
    6: ADD_QUEUE,
}
"""The statements that take a database from a version to the next, after create_all.

Stores opening one database at once may both run them: they must be idempotent. An
``ADD COLUMN`` of a column the table has (another store added it first) counts as done:
the store ignores that error (SQLite has no ``ADD COLUMN IF NOT EXISTS``).
"""

# PostgreSQL: held while creating the schema, until the transaction ends (the key,
# b"stagef" as a big-endian integer, is arbitrary but must never change).
LOCK_SCHEMA: Final = "SELECT pg_advisory_xact_lock(126943687566694)"

RUN_COLUMNS: Final = (
    "run_id, pipeline, fingerprint, data, status, created_at, updated_at, error, structure, "
    "labels, config"
)
HELD: Final = "run_id = :run_id AND lease_token = :token AND lease_owner IS NOT NULL"

INSERT_RUN: Final = f"""
INSERT INTO stageflow_runs ({RUN_COLUMNS}, lease_token)
VALUES (:run_id, :pipeline, :fingerprint, :data, :status, :created_at, :updated_at, :error,
        :structure, :labels, :config, 0)
ON CONFLICT (run_id) DO NOTHING
RETURNING run_id"""

GET_RUN: Final = f"SELECT {RUN_COLUMNS} FROM stageflow_runs WHERE run_id = :run_id"

ACQUIRE: Final = """
UPDATE stageflow_runs
SET lease_owner = :owner, lease_token = lease_token + 1, lease_expires = :expires
WHERE run_id = :run_id
  AND (lease_owner IS NULL OR lease_expires <= :now OR lease_owner = :owner)
RETURNING lease_token"""

# ACQUIRE whoever holds the lease (its owner known dead): the same row update, so fenced
# writes are ordered against it as against ACQUIRE.
TAKE_OVER: Final = """
UPDATE stageflow_runs
SET lease_owner = :owner, lease_token = lease_token + 1, lease_expires = :expires
WHERE run_id = :run_id
RETURNING lease_token"""

LEASE_OF: Final = "SELECT lease_owner, lease_expires FROM stageflow_runs WHERE run_id = :run_id"

RENEW: Final = f"UPDATE stageflow_runs SET lease_expires = :expires WHERE {HELD} RETURNING run_id"

RELEASE: Final = f"UPDATE stageflow_runs SET lease_owner = NULL, lease_expires = NULL WHERE {HELD}"

# One statement, one round trip: the lease check and the write are atomic together.
RECORD_STAGE: Final = f"""
INSERT INTO stageflow_stages (run_id, stage, status, output, attempts, started, ended, reason)
SELECT CAST(:run_id AS TEXT), CAST(:stage AS TEXT), CAST(:status AS TEXT),
       CAST(:output AS TEXT), CAST(:attempts AS INTEGER), CAST(:started AS DOUBLE PRECISION),
       CAST(:ended AS DOUBLE PRECISION), CAST(:reason AS TEXT)
WHERE EXISTS (SELECT 1 FROM stageflow_runs WHERE {HELD})
ON CONFLICT (run_id, stage) DO UPDATE SET
  status = excluded.status, output = excluded.output, attempts = excluded.attempts,
  started = excluded.started, ended = excluded.ended, reason = excluded.reason
RETURNING stage"""

# PostgreSQL holds the run's row FOR SHARE until the write commits. Under READ COMMITTED a
# plain EXISTS reads the row as the statement's snapshot has it: a write whose snapshot came
# just before a take-over could still commit after it, over the new driver's record. With
# the row shared, the take-over waits for the write, or the write waits for the take-over
# and, seeing the new token, writes nothing. (SQLite runs one write at a time: no lock.)
_CHECK: Final = f"WHERE EXISTS (SELECT 1 FROM stageflow_runs WHERE {HELD}"
_SHARED: Final = (f"{_CHECK})", f"{_CHECK} FOR SHARE)")
RECORD_STAGE_FOR: Final = {
    "sqlite": RECORD_STAGE,
    "postgresql": RECORD_STAGE.replace(*_SHARED),
}

# SQLite binds a tuple faster than a dict (no look-up by name per parameter): there a stage's
# record is a row of STAGE_COLUMNS' values, ?1 to ?8, and the lease token, ?9.
STAGE_COLUMNS: Final = (
    "run_id", "stage", "status", "output", "attempts", "started", "ended", "reason",
)  # fmt: skip


def _by_position(statement: str) -> str:
    """``statement`` with ``:run_id`` ... ``:reason`` as ``?1`` ... ``?8``, ``:token`` as ``?9``."""
    for i, name in enumerate((*STAGE_COLUMNS, "token"), 1):
        statement = statement.replace(f":{name}", f"?{i}")  # no name begins another
    return statement


RECORD_STAGE_ROW: Final = _by_position(RECORD_STAGE)

# SQLite's group commit: RECORD_STAGE without the fence (a row, ?1 to ?8), once FENCE held
# for the group's run in the same write transaction (see _store._execute_all).
UPSERT_STAGE: Final = """
INSERT INTO stageflow_stages (run_id, stage, status, output, attempts, started, ended, reason)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
ON CONFLICT (run_id, stage) DO UPDATE SET
  status = excluded.status, output = excluded.output, attempts = excluded.attempts,
  started = excluded.started, ended = excluded.ended, reason = excluded.reason"""

# The run's row joined to its stages': no row, no run; a row of NULLs, a run without stages.
STAGE_RECORDS: Final = """
SELECT r.run_id, s.stage, s.status, s.output, s.attempts, s.started, s.ended, s.reason
FROM stageflow_runs AS r LEFT JOIN stageflow_stages AS s ON s.run_id = r.run_id
WHERE r.run_id = :run_id"""

# A run set back to queued (a worker stopped before finishing it) is claimable at once; one
# stopped to wait, once its earliest deadline still ahead passes (one passed already is an
# input that timed out) or an input is given (CLAIM).
SET_STATUS: Final = f"""
UPDATE stageflow_runs
SET status = CAST(:status AS VARCHAR(16)), error = :error,
  updated_at = CAST(:now AS DOUBLE PRECISION), ready_at = CASE CAST(:status AS VARCHAR(16))
    WHEN 'queued' THEN CAST(:now AS DOUBLE PRECISION)
    WHEN 'waiting' THEN (
      SELECT MIN(i.deadline) FROM stageflow_inputs AS i
      WHERE i.run_id = stageflow_runs.run_id AND i.value IS NULL
        AND i.deadline > CAST(:now AS DOUBLE PRECISION))
    ELSE ready_at END
WHERE {HELD} RETURNING run_id"""

SAVE_STATE: Final = f"""
INSERT INTO stageflow_states (run_id, stage, state)
SELECT CAST(:run_id AS TEXT), CAST(:stage AS TEXT), CAST(:state AS TEXT)
WHERE EXISTS (SELECT 1 FROM stageflow_runs WHERE {HELD})
ON CONFLICT (run_id, stage) DO UPDATE SET state = excluded.state
RETURNING stage"""
SAVE_STATE_FOR: Final = {"sqlite": SAVE_STATE, "postgresql": SAVE_STATE.replace(*_SHARED)}

# As STAGE_RECORDS: no row, no run; a NULL state, a stage that saved none.
LOAD_STATE: Final = """
SELECT s.state
FROM stageflow_runs AS r
LEFT JOIN stageflow_states AS s ON s.run_id = r.run_id AND s.stage = :stage
WHERE r.run_id = :run_id"""

DELETE_RUN: Final = """
DELETE FROM stageflow_runs
WHERE run_id = :run_id AND (lease_owner IS NULL OR lease_expires <= :now)
RETURNING run_id"""

PRUNE: Final = """
DELETE FROM stageflow_runs
WHERE status IN ('completed', 'failed', 'cancelled') AND updated_at < :before
  AND (lease_owner IS NULL OR lease_expires <= :now)
RETURNING run_id"""

GET_VERSION: Final = "SELECT value FROM stageflow_meta WHERE key = 'schema_version'"
SET_VERSION: Final = """
INSERT INTO stageflow_meta (key, value) VALUES ('schema_version', :version)
ON CONFLICT (key) DO NOTHING"""
# From one version to the next only: of processes upgrading at once, one moves it.
UPGRADE_VERSION: Final = """
UPDATE stageflow_meta SET value = :new WHERE key = 'schema_version' AND value = :old"""

# --------------------------------------------------------------------------- usage

USAGE_COLUMNS: Final = "run_id, stage, attempt, model, input_tokens, output_tokens, cost, at"

# The lease check of a write that takes more than one statement, in its transaction.
FENCE: Final = f"SELECT run_id FROM stageflow_runs WHERE {HELD}"

# SQLite: FENCE, then this for each record, in one BEGIN IMMEDIATE transaction.
INSERT_USAGE: Final = f"""
INSERT INTO stageflow_usage ({USAGE_COLUMNS})
VALUES (:run_id, :stage, :attempt, :model, :input_tokens, :output_tokens, :cost, :at)"""

# PostgreSQL: one statement, the records as a JSON array of objects (a text parameter:
# array parameters would cost a type introspection per connection, ~10 ms). json, not
# jsonb, keeps each number's text, so a float comes back exactly. FOR SHARE holds the
# run's row: a takeover waits for this write, or this write sees it and inserts nothing.
RECORD_USAGE: Final = f"""
INSERT INTO stageflow_usage ({USAGE_COLUMNS})
SELECT CAST(:run_id AS TEXT), u.stage, u.attempt, u.model, u.input_tokens, u.output_tokens,
       u.cost, u.at
FROM ROWS FROM (
  json_to_recordset(CAST(:records AS JSON)) AS (
    stage TEXT, attempt INTEGER, model TEXT, input_tokens BIGINT, output_tokens BIGINT,
    cost DOUBLE PRECISION, at DOUBLE PRECISION)
) WITH ORDINALITY AS u (stage, attempt, model, input_tokens, output_tokens, cost, at, n)
WHERE EXISTS (SELECT 1 FROM stageflow_runs WHERE {HELD} FOR SHARE)
ORDER BY u.n
RETURNING id"""

# As STAGE_RECORDS: no row, no run; a row of NULLs, a run without usage.
LOAD_USAGE: Final = """
SELECT u.run_id, u.stage, u.attempt, u.model, u.input_tokens, u.output_tokens, u.cost, u.at
FROM stageflow_runs AS r LEFT JOIN stageflow_usage AS u ON u.run_id = r.run_id
WHERE r.run_id = :run_id ORDER BY u.id"""

# Filters (AND-ed into a WHERE) and the GROUP BY are added by the store.
USAGE_SUMS: Final = """
SELECT r.pipeline, u.stage, u.model, CAST(SUM(u.input_tokens) AS BIGINT),
       CAST(SUM(u.output_tokens) AS BIGINT), SUM(u.cost)
FROM stageflow_usage AS u JOIN stageflow_runs AS r ON r.run_id = u.run_id"""
USAGE_FILTERS: Final = {
    "pipeline": "r.pipeline = :pipeline",
    "stage": "u.stage = :stage",
    "model": "COALESCE(u.model, '') = :model",
    "since": "u.at >= :since",
    "until": "u.at < :until",
}
USAGE_GROUPS: Final = " GROUP BY r.pipeline, u.stage, u.model"

# --------------------------------------------------------------------------- inputs

INPUT_COLUMNS: Final = "run_id, name, schema, prompt, deadline, waiting_since, value, given_at"

# SQLite: FENCE, then this for each record, in one BEGIN IMMEDIATE transaction.
DECLARE_INPUT: Final = f"""
INSERT INTO stageflow_inputs ({INPUT_COLUMNS})
VALUES (:run_id, :name, :schema, :prompt, :deadline, :waiting_since, :value, :given_at)
ON CONFLICT (run_id, name) DO NOTHING"""

# PostgreSQL: one statement, the records as a JSON array of objects (as RECORD_USAGE). Its
# rows are the lease's: none, the lease is lost and nothing was written.
DECLARE_INPUTS: Final = f"""
WITH held AS (SELECT run_id FROM stageflow_runs WHERE {HELD} FOR SHARE),
added AS (
  INSERT INTO stageflow_inputs ({INPUT_COLUMNS})
  SELECT held.run_id, i.name, i.schema, i.prompt, i.deadline, i.waiting_since, i.value,
         i.given_at
  FROM held, json_to_recordset(CAST(:records AS JSON)) AS i (
    name TEXT, schema TEXT, prompt TEXT, deadline DOUBLE PRECISION,
    waiting_since DOUBLE PRECISION, value TEXT, given_at DOUBLE PRECISION)
  ON CONFLICT (run_id, name) DO NOTHING
)
SELECT run_id FROM held"""


def _wait_input(fence: str) -> str:
    return f"""
INSERT INTO stageflow_inputs (run_id, name, schema, prompt, deadline, waiting_since)
SELECT CAST(:run_id AS TEXT), CAST(:name AS TEXT), CAST(:schema AS TEXT),
       CAST(:prompt AS TEXT), CAST(:deadline AS DOUBLE PRECISION),
       CAST(:waiting_since AS DOUBLE PRECISION)
WHERE EXISTS ({fence})
ON CONFLICT (run_id, name) DO UPDATE SET
  schema = excluded.schema, prompt = excluded.prompt, deadline = excluded.deadline,
  waiting_since = excluded.waiting_since
WHERE stageflow_inputs.waiting_since IS NULL
RETURNING {INPUT_COLUMNS}"""


# Insert the input, or merge a row that never waited; a row that waited is left as it is (no
# row returned: then WAITED_INPUT reads it). One statement, the lease check in it. On
# PostgreSQL FOR SHARE holds the run's row until the write commits: a take-over waits for it,
# or the write, re-reading the row it locks, sees the take-over and writes nothing. SQLite has
# no FOR SHARE and needs none: its writes run one at a time, each on the newest data.
WAIT_INPUT_FOR: Final = {
    "sqlite": _wait_input(f"SELECT 1 FROM stageflow_runs WHERE {HELD}"),
    "postgresql": _wait_input(f"SELECT 1 FROM stageflow_runs WHERE {HELD} FOR SHARE"),
}

# The input's row while the lease holds (no row: the lease is lost, as an input's row, once
# written, goes only with its run).
WAITED_INPUT: Final = """
SELECT i.run_id, i.name, i.schema, i.prompt, i.deadline, i.waiting_since, i.value, i.given_at
FROM stageflow_runs AS r JOIN stageflow_inputs AS i ON i.run_id = r.run_id AND i.name = :name
WHERE r.run_id = :run_id AND r.lease_token = :token AND r.lease_owner IS NOT NULL"""

# A run that has not ended (FINISHED: completed, failed, cancelled; see PRUNE).
_NOT_ENDED: Final = """EXISTS (
    SELECT 1 FROM stageflow_runs AS r
    WHERE r.run_id = :run_id AND r.status NOT IN ('completed', 'failed', 'cancelled'))"""

# Give the value, if the input has none, its deadline has not passed and the run has not
# ended. Of senders racing, one updates the row: the others find its value (PostgreSQL
# re-checks the WHERE on the row the winner committed; SQLite writes one at a time).
GIVE_INPUT: Final = f"""
UPDATE stageflow_inputs SET value = :value, given_at = :at
WHERE run_id = :run_id AND name = :name AND value IS NULL
  AND (deadline IS NULL OR deadline > :at) AND {_NOT_ENDED}
RETURNING {INPUT_COLUMNS}"""

# An item ``stage[key]`` without a row: its row, with the value and its stage's schema, if the
# run declares the stage and has not ended. Of senders racing, one inserts it.
GIVE_ITEM: Final = f"""
INSERT INTO stageflow_inputs (run_id, name, schema, value, given_at)
SELECT s.run_id, CAST(:name AS TEXT), s.schema, CAST(:value AS TEXT),
       CAST(:at AS DOUBLE PRECISION)
FROM stageflow_inputs AS s
WHERE s.run_id = :run_id AND s.name = :stage AND {_NOT_ENDED}
ON CONFLICT (run_id, name) DO NOTHING
RETURNING {INPUT_COLUMNS}"""

# The run's status joined to its inputs' rows: no row, no run; a row of NULLs after the
# status, a run without inputs.
LOAD_INPUTS: Final = """
SELECT r.status, i.run_id, i.name, i.schema, i.prompt, i.deadline, i.waiting_since, i.value,
       i.given_at
FROM stageflow_runs AS r LEFT JOIN stageflow_inputs AS i ON i.run_id = r.run_id
WHERE r.run_id = :run_id"""

# --------------------------------------------------------------------------- events

# One row per event of a run (version 6), the EventLog. No foreign key to stageflow_runs: the
# events of a run may be written before its row (or without one); deleting a run deletes its
# events in the same transaction (DELETE_RUN_FOR, PRUNE_FOR). The primary key is the index
# reads use (run_id = ... AND seq > ... ORDER BY seq). ``type`` and ``stage`` are TEXT: an
# item's stage, ``approve[doc-17]``, is longer than a stage's name, and a length must never
# refuse an event.
events = Table(
    "stageflow_events",
    metadata,
    Column("run_id", String(128), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("type", Text, nullable=False),
    Column("pipeline", String(128), nullable=False),
    Column("stage", Text),
    Column("ts", Float, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("data", Text, nullable=False),  # JSON text of an object
    PrimaryKeyConstraint("run_id", "seq"),
)

EVENT_COLUMNS: Final = "run_id, seq, type, pipeline, stage, ts, attempt, data"

# SQLite: this for each event (positional: tuples bind a third faster than dicts, and a batch
# may be thousands of rows), all in one transaction. A (run_id, seq) stored already, also by
# an earlier row of the batch, is left as it is: the first write wins.
INSERT_EVENT: Final = f"""
INSERT INTO stageflow_events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, seq) DO NOTHING"""

# PostgreSQL: one statement, the events as a JSON array of objects (as RECORD_USAGE; json
# keeps each number's text, so ts comes back exactly). The rows go in by (run_id, seq), and
# in the batch's order among equal keys (the first wins): writers of overlapping batches then
# take the keys' locks in one order, and cannot deadlock.
APPEND_EVENTS: Final = f"""
INSERT INTO stageflow_events ({EVENT_COLUMNS})
SELECT e.run_id, e.seq, e.type, e.pipeline, e.stage, e.ts, e.attempt, e.data
FROM ROWS FROM (
  json_to_recordset(CAST(:events AS JSON)) AS (
    run_id TEXT, seq BIGINT, type TEXT, pipeline TEXT, stage TEXT, ts DOUBLE PRECISION,
    attempt INTEGER, data TEXT)
) WITH ORDINALITY AS e (run_id, seq, type, pipeline, stage, ts, attempt, data, n)
ORDER BY e.run_id, e.seq, e.n
ON CONFLICT (run_id, seq) DO NOTHING"""

READ_EVENTS: Final = f"""
SELECT {EVENT_COLUMNS} FROM stageflow_events
WHERE run_id = :run_id AND seq > :after ORDER BY seq"""
READ_EVENTS_LIMIT: Final = READ_EVENTS + " LIMIT :limit"

LAST_EVENT_SEQ: Final = "SELECT COALESCE(MAX(seq), 0) FROM stageflow_events WHERE run_id = :run_id"

# SQLite: after DELETE_RUN or PRUNE, for each run it deleted, in the same transaction.
DELETE_EVENTS: Final = "DELETE FROM stageflow_events WHERE run_id = :run_id"


def _and_events(delete: str) -> str:
    """A DELETE of runs (RETURNING run_id) that deletes their events too, in one statement."""
    return f"""
WITH gone AS ({delete}),
events AS (DELETE FROM stageflow_events WHERE run_id IN (SELECT run_id FROM gone))
SELECT run_id FROM gone"""


# Delete runs (RETURNING their ids) and their events, atomically: on PostgreSQL in one
# statement; on SQLite (whose WITH takes no DELETE) the store runs DELETE_EVENTS after it,
# in the same transaction.
DELETE_RUN_FOR: Final = {"sqlite": DELETE_RUN, "postgresql": _and_events(DELETE_RUN)}
PRUNE_FOR: Final = {"sqlite": PRUNE, "postgresql": _and_events(PRUNE)}

# --------------------------------------------------------------------------- queue

# A submitted run: created queued, claimable at once (ready_at = created_at).
ENQUEUE_RUN: Final = f"""
INSERT INTO stageflow_runs ({RUN_COLUMNS}, lease_token, queue, priority, ready_at)
VALUES (:run_id, :pipeline, :fingerprint, :data, :status, :created_at, :updated_at, :error,
        :structure, :labels, :config, 0, :queue, :priority, :created_at)
ON CONFLICT (run_id) DO NOTHING
RETURNING run_id"""

# PostgreSQL: the run and its inputs in one statement (the inputs as RECORD_USAGE's records);
# SQLite runs ENQUEUE_RUN, then DECLARE_INPUT for each, in one transaction.
ENQUEUE_WITH_INPUTS: Final = f"""
WITH run AS ({ENQUEUE_RUN}),
added AS (
  INSERT INTO stageflow_inputs ({INPUT_COLUMNS})
  SELECT run.run_id, i.name, i.schema, i.prompt, i.deadline, i.waiting_since, i.value,
         i.given_at
  FROM run, json_to_recordset(CAST(:records AS JSON)) AS i (
    name TEXT, schema TEXT, prompt TEXT, deadline DOUBLE PRECISION,
    waiting_since DOUBLE PRECISION, value TEXT, given_at DOUBLE PRECISION)
)
SELECT run_id FROM run"""

_GIVEN: Final = """(
  SELECT COUNT(*) FROM stageflow_inputs AS i
  WHERE i.run_id = {run}.run_id AND i.value IS NOT NULL)"""

# The claimable runs of a queue, best first: queued (or set back to queued) and ready, running
# with its lease expired or released (its driver died: a take-over), or waiting with a
# deadline passed or more inputs given than when it was last claimed (values are given once
# and never taken back, so a count that grew is an input the last drive may not have seen).
_CANDIDATE: Final = f"""
SELECT c.run_id FROM stageflow_runs AS c
WHERE c.queue = :queue AND (c.lease_owner IS NULL OR c.lease_expires <= :now)
  AND ((c.status IN ('queued', 'running') AND c.ready_at <= :now)
       OR (c.status = 'waiting'
           AND (c.ready_at <= :now OR {_GIVEN.format(run="c")} > c.given_count)))
ORDER BY c.priority DESC, c.ready_at, c.run_id
LIMIT 1"""

# With a limit, no claim while that many runs of the queue are leased (unexpired).
_UNDER_LIMIT: Final = """
  AND (SELECT COUNT(*) FROM stageflow_runs AS l
       WHERE l.queue = :queue AND l.lease_owner IS NOT NULL AND l.lease_expires > :now) < :limit"""


def _claim(candidate: str, limited: bool) -> str:
    return f"""
UPDATE stageflow_runs
SET lease_owner = :owner, lease_token = lease_token + 1, lease_expires = :expires,
    ready_at = :now, given_count = {_GIVEN.format(run="stageflow_runs")}
WHERE run_id = ({candidate}){_UNDER_LIMIT if limited else ""}
RETURNING lease_token, lease_expires, {RUN_COLUMNS}"""


# Take the best candidate's lease: SQLite runs one write at a time, each on the newest data;
# PostgreSQL skips the candidates other claims hold locked (FOR UPDATE SKIP LOCKED: workers
# claiming at once each take another run) and, with a limit, claims under the queue's
# advisory lock (CLAIM_LOCK, in the same transaction), so that the count is of every claim
# committed before.
CLAIM_FOR: Final = {
    ("sqlite", False): _claim(_CANDIDATE, False),
    ("sqlite", True): _claim(_CANDIDATE, True),
    ("postgresql", False): _claim(_CANDIDATE + " FOR UPDATE SKIP LOCKED", False),
    ("postgresql", True): _claim(_CANDIDATE + " FOR UPDATE SKIP LOCKED", True),
}
# (Two int keys: a space apart from LOCK_SCHEMA's one bigint key.)
CLAIM_LOCK: Final = "SELECT pg_advisory_xact_lock(1937006439, hashtext(:queue))"

WORKER_COLUMNS: Final = "owner, host, pid, queues, concurrency, started_at, seen_at"

BEAT_WORKER: Final = f"""
INSERT INTO stageflow_workers ({WORKER_COLUMNS})
VALUES (:owner, :host, :pid, :queues, :concurrency, :started_at, :seen_at)
ON CONFLICT (owner) DO UPDATE SET
  queues = excluded.queues, concurrency = excluded.concurrency, seen_at = excluded.seen_at"""

# Each worker seen since :after, with a row per run it holds (a row of NULL: none).
LIST_WORKERS: Final = """
SELECT w.owner, w.host, w.pid, w.queues, w.concurrency, w.started_at, w.seen_at, r.run_id
FROM stageflow_workers AS w
LEFT JOIN stageflow_runs AS r ON r.lease_owner = w.owner AND r.lease_expires > :now
WHERE w.seen_at >= :after
ORDER BY w.started_at, w.owner, r.run_id"""

FORGET_WORKER: Final = "DELETE FROM stageflow_workers WHERE owner = :owner"
