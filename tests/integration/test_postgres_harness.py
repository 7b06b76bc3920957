"""The throwaway PostgreSQL server the tests start: reachable, isolated, never run as root."""

from __future__ import annotations

import asyncio
import os
import pwd
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from .._postgres import PG_BIN_ENV, REQUIRE_ENV, PostgresUnavailable, find_bin_dir

REPO = Path(__file__).resolve().parents[2]


async def fetch(dsn: str, query: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetch(query)
    finally:
        await connection.close()


class TestPostgresHarness:
    def test_a_fresh_database_takes_a_table_an_insert_and_a_select(self, postgres_database):
        async def scenario():
            connection = await asyncpg.connect(postgres_database.dsn)
            try:
                await connection.execute("CREATE TABLE runs (id int PRIMARY KEY, name text)")
                await connection.executemany(
                    "INSERT INTO runs VALUES ($1, $2)", [(1, "ingest"), (2, "report")]
                )
                return await connection.fetch("SELECT id, name FROM runs ORDER BY id")
            finally:
                await connection.close()

        rows = asyncio.run(scenario())

        assert [tuple(row) for row in rows] == [(1, "ingest"), (2, "report")]

    def test_each_test_gets_an_empty_database_of_its_own(self, postgres_database):
        tables = asyncio.run(
            fetch(
                postgres_database.dsn,
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
            )
        )
        (name,) = asyncio.run(fetch(postgres_database.dsn, "SELECT current_database()"))

        assert tables == []
        assert name[0] == postgres_database.name

    def test_the_url_reaches_the_same_database_through_sqlalchemy(
        self, postgres_url, postgres_database
    ):
        async def scenario():
            engine = create_async_engine(postgres_url)
            try:
                async with engine.connect() as connection:
                    return (await connection.execute(text("SELECT current_database()"))).scalar()
            finally:
                await engine.dispose()

        assert postgres_url.startswith("postgresql+asyncpg://postgres@127.0.0.1:")
        assert asyncio.run(scenario()) == postgres_database.name

    def test_two_databases_do_not_see_each_others_tables(self, postgres_cluster):
        first = postgres_cluster.create_database()
        second = postgres_cluster.create_database()
        try:

            async def scenario():
                await fetch(first.dsn, "CREATE TABLE only_here (x int)")
                return (
                    await fetch(first.dsn, "SELECT to_regclass('only_here') IS NOT NULL"),
                    await fetch(second.dsn, "SELECT to_regclass('only_here') IS NOT NULL"),
                )

            in_first, in_second = asyncio.run(scenario())
        finally:
            postgres_cluster.drop_database(first)
            postgres_cluster.drop_database(second)

        assert first.name != second.name
        assert in_first[0][0] is True
        assert in_second[0][0] is False

    def test_the_server_runs_as_the_postgres_user_and_never_as_root(self, postgres_cluster):
        server_uid = os.stat(f"/proc/{postgres_cluster.process.pid}").st_uid
        (row,) = asyncio.run(
            fetch(
                f"postgresql://postgres@127.0.0.1:{postgres_cluster.port}/postgres",
                "SELECT current_setting('port')::int",
            )
        )

        assert server_uid != 0
        if os.geteuid() == 0:
            assert pwd.getpwuid(server_uid).pw_name == "postgres"
        assert row[0] == postgres_cluster.port

    def test_missing_binaries_are_named_with_where_they_were_looked_for(self, monkeypatch):
        monkeypatch.setenv(PG_BIN_ENV, "/nonexistent")

        with pytest.raises(PostgresUnavailable, match=r"not found under /nonexistent"):
            find_bin_dir()


def run_smoke_test_without_binaries(**env: str) -> subprocess.CompletedProcess[str]:
    node = (
        "tests/integration/test_postgres_harness.py::TestPostgresHarness"
        "::test_a_fresh_database_takes_a_table_an_insert_and_a_select"
    )
    environ = {key: value for key, value in os.environ.items() if key != REQUIRE_ENV}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
        cwd=REPO,
        env={**environ, PG_BIN_ENV: "/nonexistent", **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.slow
class TestWithoutPostgres:
    def test_postgres_tests_are_skipped_with_the_reason(self):
        result = run_smoke_test_without_binaries()

        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 skipped" in result.stdout
        assert "PostgreSQL server binaries not found under /nonexistent" in result.stdout
        assert "install the postgresql package" in result.stdout

    def test_postgres_tests_fail_when_postgres_is_required(self):
        result = run_smoke_test_without_binaries(**{REQUIRE_ENV: "1"})

        assert result.returncode == 1, result.stdout + result.stderr
        assert "1 error" in result.stdout
        assert "PostgreSQL server binaries not found under /nonexistent" in result.stdout
