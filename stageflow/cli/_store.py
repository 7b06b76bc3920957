"""Which store the command uses (it keeps the runs, and their events in its event log)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from ._errors import CliError

if TYPE_CHECKING:
    from ..ports import CheckpointStore, RunCatalog, RunStore

STORE_ENV = "STAGEFLOW_STORE"
DEFAULT_STORE = "sqlite:///./.stageflow/runs.db"


def store_url(option: str | None) -> str:
    """``--store``, else ``$STAGEFLOW_STORE``, else the default SQLite file."""
    return option or os.environ.get(STORE_ENV) or DEFAULT_STORE


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for another backend (or what is not a URL)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def open_store(url: str, *, lease_ttl: float | None = None) -> RunStore:
    """The store at ``url``, to drive runs in (``run``, ``resume``).

    Raises:
        CliError: the URL is not one of a store, or the store's driver is not installed.
    """
    return _open(url, lease_ttl)


def open_catalog(url: str) -> RunCatalog:
    """The store at ``url``, to list and show its runs (``runs``, ``show``, ``events``).

    Raises:
        CliError: the URL is not one of a store, or the store's driver is not installed.
    """
    return _open(url, None)


def _open(url: str, lease_ttl: float | None) -> CheckpointStore:
    try:
        from ..adapters.sqlalchemy import SQLAlchemyStore
    except ImportError as error:  # pragma: no cover - the dev extra installs the drivers
        raise CliError(
            f"the store needs SQLAlchemy and a driver (pip install 'stageflow[sqlite]' or "
            f"'stageflow[postgres]'): {error}"
        ) from None
    try:
        if lease_ttl is None:
            return SQLAlchemyStore(url)
        return SQLAlchemyStore(url, lease_ttl=lease_ttl)
    except ConfigurationError as error:
        raise CliError(f"bad store URL: {error}") from None


def exists(url: str) -> bool:
    """False only for a SQLite file that does not exist (nothing ever ran there)."""
    path = sqlite_path(url)
    return path is None or path.exists()


def shown(url: str) -> str:
    """The URL as messages show it (without a password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return url
