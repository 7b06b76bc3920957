"""stageflow-core's ``stageflow.stages`` (deprecated): kept so that its code runs.

``StageInputs(snapshot=...)`` makes the inputs of a hand-built entry context;
it warns, once per use, naming what replaces it: stageflow makes every context,
and a stage reads its dependencies' outputs from ``ctx.inputs``
(:class:`stageflow.StageInputs`). See docs/migration.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import _legacy

if TYPE_CHECKING:
    from ._legacy import EntryInputs as StageInputs

__all__ = ["StageInputs"]

_REPLACED = {
    "StageInputs": "the engine makes every context; a stage reads its dependencies' "
    "outputs from ctx.inputs (stageflow.StageInputs)",
}
_OBJECTS = {"StageInputs": "EntryInputs"}


def __getattr__(name: str) -> object:
    if name in _REPLACED:
        _legacy.deprecated(f"stageflow.stages.{name}", _REPLACED[name])
        return getattr(_legacy, _OBJECTS[name])
    raise AttributeError(f"module 'stageflow.stages' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
