"""stageflow-core's ``stageflow.context`` (deprecated): kept so that its code runs.

Each name warns, once per use, naming what replaces it: a run's data
(``Engine().run(graph, data)``, ``ctx.data``) stands for ``ContextSnapshot``, and a
run's one ``run_id`` for ``RunIdentity``. See docs/migration.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _legacy

if TYPE_CHECKING:
    from ._legacy import ContextSnapshot, RunIdentity

__all__ = ["ContextSnapshot", "RunIdentity"]

_REPLACED = {
    "ContextSnapshot": "pass the run's data to graph.run(data) or Engine().run(graph, data) "
    "and read it in a stage as ctx.data",
    "RunIdentity": "a run has one id: Engine().run(graph, data, run_id=...), ctx.run_id",
}


def __getattr__(name: str) -> object:
    if name in _REPLACED:
        _legacy.deprecated(f"stageflow.context.{name}", _REPLACED[name])
        return getattr(_legacy, name)
    raise AttributeError(f"module 'stageflow.context' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
