"""The tables of the SQLAlchemy store, and the SQL it runs (the same text on both backends)."""

from __future__ import annotations

from typing import Final

from sqlalchemy import (
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

SCHEMA_VERSION: Final = 1

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
    Index("stageflow_runs_listing", "status", "pipeline", "created_at"),
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

RUN_COLUMNS: Final = (
    "run_id, pipeline, fingerprint, data, status, created_at, updated_at, error, structure"
)
HELD: Final = "run_id = :run_id AND lease_token = :token AND lease_owner IS NOT NULL"

INSERT_RUN: Final = f"""
INSERT INTO stageflow_runs ({RUN_COLUMNS}, lease_token)
VALUES (:run_id, :pipeline, :fingerprint, :data, :status, :created_at, :updated_at, :error,
        :structure, 0)
ON CONFLICT (run_id) DO NOTHING
RETURNING run_id"""

GET_RUN: Final = f"SELECT {RUN_COLUMNS} FROM stageflow_runs WHERE run_id = :run_id"

ACQUIRE: Final = """
UPDATE stageflow_runs
SET lease_owner = :owner, lease_token = lease_token + 1, lease_expires = :expires
WHERE run_id = :run_id
  AND (lease_owner IS NULL OR lease_expires <= :now OR lease_owner = :owner)
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

STAGE_RECORDS: Final = """
SELECT run_id, stage, status, output, attempts, started, ended, reason
FROM stageflow_stages WHERE run_id = :run_id"""

SET_STATUS: Final = f"""
UPDATE stageflow_runs SET status = :status, error = :error, updated_at = :now
WHERE {HELD} RETURNING run_id"""

SAVE_STATE: Final = f"""
INSERT INTO stageflow_states (run_id, stage, state)
SELECT CAST(:run_id AS TEXT), CAST(:stage AS TEXT), CAST(:state AS TEXT)
WHERE EXISTS (SELECT 1 FROM stageflow_runs WHERE {HELD})
ON CONFLICT (run_id, stage) DO UPDATE SET state = excluded.state
RETURNING stage"""

LOAD_STATE: Final = "SELECT state FROM stageflow_states WHERE run_id = :run_id AND stage = :stage"

DELETE_RUN: Final = """
DELETE FROM stageflow_runs
WHERE run_id = :run_id AND (lease_owner IS NULL OR lease_expires <= :now)
RETURNING run_id"""

PRUNE: Final = """
DELETE FROM stageflow_runs
WHERE status IN ('completed', 'failed', 'cancelled') AND updated_at < :before
RETURNING run_id"""

GET_VERSION: Final = "SELECT value FROM stageflow_meta WHERE key = 'schema_version'"
SET_VERSION: Final = """
INSERT INTO stageflow_meta (key, value) VALUES ('schema_version', :version)
ON CONFLICT (key) DO NOTHING"""
