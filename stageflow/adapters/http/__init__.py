"""The HTTP API of a :class:`~stageflow.RunService` (FastAPI; the ``server`` extra).

``stageflow serve`` runs it with uvicorn; to embed it in your own process::

    from stageflow import Engine, RunService
    from stageflow.adapters.http import create_app, load_tokens
    from stageflow.adapters.sqlalchemy import SQLAlchemyStore

    store = SQLAlchemyStore("sqlite:///runs.db")
    service = RunService(Engine(store=store, event_log=store), catalog)
    app = create_app(service, tokens=load_tokens("tokens.txt"))

See ``docs/service.md`` for the routes, the tokens and deployment.
"""

from ._app import SCOPE, GiveInput, StartRun, create_app
from ._auth import SCOPES, TOKENS_ENV, Token, load_tokens, new_token, parse_tokens

# Sorted as sorted() sorts, as stageflow's other __all__ lists are.
__all__ = [  # noqa: RUF022
    "GiveInput",
    "SCOPE",
    "SCOPES",
    "StartRun",
    "TOKENS_ENV",
    "Token",
    "create_app",
    "load_tokens",
    "new_token",
    "parse_tokens",
]
