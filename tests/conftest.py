"""Fixtures for tests against a real PostgreSQL server, started by the tests themselves.

One throwaway cluster serves the whole session (see ``tests/_postgres.py``); each test that
asks for ``postgres_url`` gets a fresh, empty database in it, dropped afterwards.

Without the server binaries these tests are skipped, and ``-ra`` says why. CI sets
``STAGEFLOW_REQUIRE_POSTGRES=1``, which turns that skip into a failure: there, PostgreSQL
tests that did not run are a broken build, not a footnote.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._postgres import (
    REQUIRE_ENV,
    PostgresCluster,
    PostgresDatabase,
    PostgresStartError,
    PostgresUnavailable,
    postgres_required,
)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's throwaway PostgreSQL cluster, stopped and deleted at the end."""
    # Skip or fail outside the except blocks, so the report is the reason and no traceback.
    unavailable = failed = None
    try:
        cluster = PostgresCluster.start()
    except PostgresUnavailable as error:
        unavailable = str(error)
    except PostgresStartError as error:
        failed = str(error)
    if unavailable and postgres_required():
        pytest.fail(f"{unavailable} ({REQUIRE_ENV}=1: PostgreSQL tests must run)", pytrace=False)
    if unavailable:
        pytest.skip(unavailable)
    if failed:
        pytest.fail(f"could not start the throwaway PostgreSQL server: {failed}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_database(postgres_cluster: PostgresCluster) -> Iterator[PostgresDatabase]:
    """A fresh, empty database for one test, with its SQLAlchemy ``url`` and plain ``dsn``."""
    database = postgres_cluster.create_database()
    yield database
    postgres_cluster.drop_database(database)


@pytest.fixture
def postgres_url(postgres_database: PostgresDatabase) -> str:
    """``postgresql+asyncpg://postgres@127.0.0.1:PORT/NAME`` of a fresh, empty database."""
    return postgres_database.url
