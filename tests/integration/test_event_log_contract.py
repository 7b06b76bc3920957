"""SQLAlchemyStore keeps the EventLog contract on a real SQLite file and a real PostgreSQL
server."""

from __future__ import annotations

import asyncio

import pytest

from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.ports import EventLog
from stageflow.testing import EVENT_LOG_CHECKS, ManualClock


class TestContract:
    @pytest.mark.parametrize("check", EVENT_LOG_CHECKS, ids=lambda c: c.__name__)
    def test_it_keeps_the_event_log_contract(self, backend, check):
        url, _ = backend

        async def factory(clock: ManualClock) -> SQLAlchemyStore:
            return SQLAlchemyStore(url, clock=clock)

        asyncio.run(check(factory))

    def test_it_is_an_event_log(self, backend):
        url, _ = backend

        assert isinstance(SQLAlchemyStore(url), EventLog)
