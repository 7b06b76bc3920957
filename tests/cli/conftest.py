"""Fixtures shared by the CLI tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test in its own folder, whatever the environment says (use it with
    ``pytestmark = pytest.mark.usefixtures("isolated")``)."""
    monkeypatch.chdir(tmp_path)
    for name in ("STAGEFLOW_STORE", "STAGEFLOW_LEASE_TTL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TTY_COMPATIBLE", "0")  # plain lines, whatever runs the tests


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A SQLite store in the test's folder."""
    return f"sqlite:///{tmp_path}/runs.db"
