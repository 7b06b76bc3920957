"""A module the export tests publish generated functions in, so that they have dotted paths.

``publish(graph)`` binds every function of a graph (stages, conditions, item lists, keys,
``until``) to a fresh module-level name here, as a user's module-level functions are.
"""

from __future__ import annotations

import itertools
from typing import Any

from stageflow import StageGraph
from stageflow._dynamic import InputSpec, LoopSpec, MapSpec

_names = itertools.count()


def publish(graph: StageGraph) -> StageGraph:
    """Give each function of ``graph`` (nested bodies too) a name in this module."""
    for spec in graph.stages:
        dynamic = spec.dynamic
        _bind(spec.when)
        if dynamic is None or isinstance(dynamic, MapSpec):
            _bind(spec.stage)
        if isinstance(dynamic, InputSpec):
            dynamic = dynamic.map
        if isinstance(dynamic, MapSpec):
            _bind(dynamic.key)
            if not isinstance(dynamic.over, str):
                _bind(dynamic.over)
        elif isinstance(dynamic, LoopSpec):
            _bind(dynamic.until)
            publish(dynamic.body)
    return graph


def _bind(fn: Any) -> None:
    if fn is None or getattr(fn, "__module__", None) == __name__:
        return
    name = f"fn{next(_names)}"
    fn.__module__ = __name__
    fn.__qualname__ = name
    globals()[name] = fn


class Greeter:
    """A stage class; ``greeter`` its module-level instance (a stage object with no qualname)."""

    async def __call__(self, ctx: Any) -> dict[str, Any]:
        return {"greeting": f"hello from {ctx.stage}"}


greeter = Greeter()
