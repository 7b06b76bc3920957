"""The secret leak test, on SQLite and PostgreSQL, through the CLI: stages that get a
secret through a SecretRef put it in an output and in ``ctx.state`` by mistake, log it,
emit it and fail with it in their message. Afterwards the secret is in none of the
store's bytes (the SQLite file and its WAL; every row of every PostgreSQL table), none
of what the CLI printed (``run --verbose`` with the traceback, ``show``, ``events``),
and every refused write failed its stage with a clear error.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stageflow._redact import SECRETS
from stageflow.cli import EXIT_FAILED, app

SECRET = "sk-leak-Zq81xWv3Lm5T"

FLOW = """
import logging

from stageflow import Pipeline, SecretRef

KEY = SecretRef.env("STAGEFLOW_LEAK_KEY")


async def output(ctx):
    key = await ctx.secret(KEY)
    return {"header": f"Bearer {key.get_secret_value()}"}


async def state(ctx):
    key = await ctx.secret(KEY)
    await ctx.state.save({"token": key.get_secret_value()})
    return {}


async def fails(ctx):
    key = await ctx.secret(KEY)
    logging.getLogger("stageflow.leak").warning("calling with %s", key.get_secret_value())
    ctx.emit("progress", note=f"calling with {key.get_secret_value()}")
    raise RuntimeError(f"auth failed with key {key.get_secret_value()}")


leaky = (
    Pipeline("leaky")
    .with_stage("output", output)
    .with_stage("state", state)
    .with_stage("fails", fails)
)
"""


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("STAGEFLOW_LEAK_KEY", SECRET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STAGEFLOW_STORE", raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    SECRETS.forget()
    yield
    SECRETS.forget()


def postgres_rows(url: str) -> str:
    """Every row of every table of the database, as text."""
    import asyncpg

    async def dump() -> str:
        dsn = url.replace("postgresql+asyncpg://", "postgresql://")
        connection = await asyncpg.connect(dsn)
        try:
            tables = await connection.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
            assert tables
            rows = []
            for table in tables:
                name = table["table_name"]
                rows += [repr(dict(r)) for r in await connection.fetch(f'SELECT * FROM "{name}"')]
            return "\n".join(rows)
        finally:
            await connection.close()

    return asyncio.run(dump())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_secret_leaked_everywhere_is_found_nowhere(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    (tmp_path / "leaky.py").write_text(FLOW)
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    runner = CliRunner()
    printed = []

    def cli(*args: str) -> str:
        result = runner.invoke(app, list(args), catch_exceptions=False)
        printed.append(result.output)
        return result.output

    ran = runner.invoke(app, ["run", "leaky.py:leaky", "--store", url, "--run-id", "leak-1",
                              "--no-fail-fast", "--verbose"], catch_exceptions=False)  # fmt: skip
    printed.append(ran.output)
    assert ran.exit_code == EXIT_FAILED, ran.output
    # Each refused write failed its stage, saying where the secret was.
    assert "fails: RuntimeError: auth failed with key ***" in ran.output
    assert "output: CodecError: the output of stage 'output'['header'] is a secret" in ran.output
    assert "state: CodecError: the state of stage 'state'['token'] is a secret" in ran.output
    shown = json.loads(cli("show", "leak-1", "--store", url, "--json"))
    assert shown["status"] == "failed"
    assert "is a secret" in shown["error"] or shown["error"].endswith("with key ***")
    cli("show", "leak-1", "--store", url)
    events = cli("events", "leak-1", "--store", url, "--json")
    assert '"custom.progress"' in events
    # Nowhere: what the CLI printed, the store.
    for text in printed:
        assert SECRET not in text
    if backend == "sqlite":
        stored = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("runs.db*")))
        assert b"leak-1" in stored
        assert SECRET.encode() not in stored
        assert base64.b64encode(SECRET.encode()) not in stored
    else:
        rows = postgres_rows(url)
        assert "leak-1" in rows
        assert SECRET not in rows
