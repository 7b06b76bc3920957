"""The SQLAlchemy adapter: SQLite (the embedded default) and PostgreSQL checkpoint stores.

Install with ``pip install 'stageflow[sqlite]'`` or ``'stageflow[postgres]'``.
"""

from ._store import SQLAlchemyStore

__all__ = ["SQLAlchemyStore"]
