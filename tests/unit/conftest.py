"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from stageflow.adapters.memory import MemoryStore
from stageflow.adapters.sqlalchemy import SQLAlchemyStore

from ._helpers import StoreOpener


@pytest.fixture(params=["memory", "sqlite"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreOpener:
    """Opens the store of a durable test: a MemoryStore, or a SQLite file under tmp_path."""

    def make() -> MemoryStore | SQLAlchemyStore:
        if request.param == "memory":
            return MemoryStore()
        return SQLAlchemyStore(f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}")

    return make
