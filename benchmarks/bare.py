"""A minimal hand-written asyncio DAG scheduler: the reference floor for the benchmarks.

It does the least a correct DAG scheduler can do and nothing more: one dependency counter
per node, one ``asyncio.create_task`` per node once it becomes ready, successor lists to find
the nodes a completion unblocks, and a single Future resolved when every node is done. Each
node awaits its async function and stores the result, so data is available to dependents as
it is in stageflow. There is no validation, no event emission, no cancellation policy, no
timeouts and no per-stage context object beyond the shared results list.
"""

from __future__ import annotations

import asyncio
import graphlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

StageFn = Callable[[Any], Awaitable[Any]]
"""A stage: an async function of one context argument returning its output."""

StageSpec = tuple[str, StageFn, tuple[str, ...]]
"""``(name, function, dependency names)``: one node of a workload, shared by both schedulers."""


class BareGraph:
    """The static, index-based structure of a DAG (the bare analogue of a built StageGraph)."""

    __slots__ = ("funcs", "indegree", "names", "roots", "successors")

    def __init__(self, spec: Sequence[StageSpec]) -> None:
        index = {name: i for i, (name, _, _) in enumerate(spec)}
        self.names: list[str] = [name for name, _, _ in spec]
        self.funcs: list[StageFn] = [fn for _, fn, _ in spec]
        self.indegree: list[int] = [len(deps) for _, _, deps in spec]
        self.successors: list[list[int]] = [[] for _ in spec]
        for i, (_, _, deps) in enumerate(spec):
            for dep in deps:
                self.successors[index[dep]].append(i)
        self.roots: list[int] = [i for i, n in enumerate(self.indegree) if n == 0]

    def __len__(self) -> int:
        return len(self.funcs)


async def run_bare(graph: BareGraph) -> list[Any]:
    """Run every node of ``graph`` as soon as its dependencies are done; return all results.

    The context handed to each function is the shared results list (indexed like
    ``graph.names``), which is how a dependent would read its inputs.
    """
    loop = asyncio.get_running_loop()
    funcs = graph.funcs
    successors = graph.successors
    waiting = graph.indegree.copy()
    results: list[Any] = [None] * len(funcs)
    # Strong references to unfinished tasks (the loop only keeps weak ones); a task drops its
    # own entry when it finishes, so finished tasks are freed rather than kept until the end.
    running: dict[int, asyncio.Task[None]] = {}
    done: asyncio.Future[list[Any]] = loop.create_future()
    remaining = len(funcs)

    async def node(i: int) -> None:
        nonlocal remaining
        try:
            results[i] = await funcs[i](results)
        except Exception as exc:
            if not done.done():
                done.set_exception(exc)
            return
        finally:
            del running[i]
        for j in successors[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                running[j] = loop.create_task(node(j))
        remaining -= 1
        if remaining == 0:
            done.set_result(results)

    if remaining == 0:
        return results
    for i in graph.roots:
        running[i] = loop.create_task(node(i))
    return await done


def bare_build(spec: Sequence[StageSpec]) -> list[str]:
    """The bare "build": a name -> dependencies dict, validated and ordered by graphlib."""
    deps = {name: names for name, _, names in spec}
    return list(graphlib.TopologicalSorter(deps).static_order())
