"""Fixtures of the SQL integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path: Path) -> tuple[str, str]:
    """(url, how to reach the database without stageflow: a file path or a DSN)."""
    if request.param == "sqlite":
        path = tmp_path / "runs.db"
        return f"sqlite:///{path}", str(path)
    database = request.getfixturevalue("postgres_database")
    return database.url, database.dsn
