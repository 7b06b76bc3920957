"""Raw SQL behind the store's back, for the SQL integration tests."""

from __future__ import annotations

import sqlite3

import asyncpg  # type: ignore[import-untyped]

VERSION = "SELECT value FROM stageflow_meta WHERE key = 'schema_version'"


async def raw(where: str, *statements: str) -> list[tuple[object, ...]]:
    """Run statements on the database behind stageflow's back; the last one's rows."""
    if where.startswith("postgresql://"):
        connection = await asyncpg.connect(where)
        try:
            rows: list[tuple[object, ...]] = []
            for statement in statements:
                rows = [tuple(r) for r in await connection.fetch(statement)]
            return rows
        finally:
            await connection.close()
    with sqlite3.connect(where) as conn:
        for statement in statements:
            rows = conn.execute(statement).fetchall()
    conn.close()
    return rows
