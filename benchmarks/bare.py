"""A minimal hand-written asyncio DAG scheduler: the reference floor for the benchmarks.

It does the least a correct DAG scheduler can do and nothing more: one dependency counter
per node, one ``asyncio.create_task`` per node once it becomes ready, successor lists to find
the nodes a completion unblocks, and a single Future resolved when every node is done. Each
node awaits its async function and stores the result, so data is available to dependents as
it is in stageflow. There is no validation, no event emission, no cancellation policy, no
timeouts and no per-stage context object beyond the shared results list.

For W5, ``run_bare_guarded`` is the same scheduler doing by hand what stageflow's ``timeout=``,
``retry=`` and ``circuit_breaker=`` options do: per stage, a breaker check,
``asyncio.timeout`` around the call and a retry loop entered only on failure. W5-otel's
reference, the same with a span and metrics per stage by hand, is ``run_bare_traced`` in
``telemetry.py`` (which imports OpenTelemetry, so that this module never does).

For the dynamic graphs of issue 13, nodes of this same scheduler do by hand what a map or
a loop stage does: ``gathered`` (W7) is one ``asyncio.gather`` of the item function's
coroutines, one per item of a dependency's list (one task each: unlimited parallelism,
like ``with_map(max_parallel=None)``); ``gathered_committed`` (W7-durable) has each of
those coroutines commit its output before it returns; ``looped`` (W9) is a plain ``for``
loop awaiting the body's function once per iteration and asking ``until`` after each,
inside the one task of its node.
"""

from __future__ import annotations

import asyncio
import graphlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
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


# --------------------------------------------------------------------------- W5: resilience by hand


@dataclass(frozen=True, slots=True)
class Resilience:
    """Per-stage options of W5, shared by both schedulers (stageflow gets them as policies).

    ``timeout``: seconds per attempt; ``attempts``: calls at most, the first included;
    ``base``: the first retry's backoff (doubling after that); ``failure_threshold``:
    consecutive failures that open a stage's breaker.
    """

    timeout: float = 30.0
    attempts: int = 3
    base: float = 0.1
    failure_threshold: int = 5


class CircuitOpen(Exception):
    """The bare breaker refused a call."""


class Breaker:
    """The least a consecutive-failures circuit breaker needs: a state and a counter.

    (Reopening after a recovery timeout never happens in W5; it would be a timestamp
    check on the refusing path, which a closed breaker never takes.)
    """

    __slots__ = ("closed", "failures", "key", "threshold")

    def __init__(self, key: str, threshold: int) -> None:
        self.key = key
        self.threshold = threshold
        self.closed = True
        self.failures = 0

    def failed(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.closed = False


class GuardedGraph(BareGraph):
    """A BareGraph whose every node has a timeout, a retry policy and its own breaker.

    The breakers live as long as the graph (like an engine's registry, shared by its runs);
    they are looked up by key once, here, not on every call.
    """

    __slots__ = ("breakers", "options")

    def __init__(self, spec: Sequence[StageSpec], options: Resilience) -> None:
        super().__init__(spec)
        self.options = options
        registry: dict[str, Breaker] = {}
        self.breakers: list[Breaker] = [
            registry.setdefault(name, Breaker(name, options.failure_threshold))
            for name in self.names
        ]


async def run_bare_guarded(graph: GuardedGraph) -> list[Any]:
    """``run_bare`` with, per node: breaker check, ``asyncio.timeout`` and a retry loop.

    The first attempt is straight-line code; the retry loop (backoff sleeps, further
    attempts, each checking the breaker and under its own timeout) is entered only when
    an attempt raises. Nesting as in stageflow: retry outside breaker outside timeout.
    """
    loop = asyncio.get_running_loop()
    funcs = graph.funcs
    breakers = graph.breakers
    successors = graph.successors
    opts = graph.options
    limit = opts.timeout
    attempts = opts.attempts
    waiting = graph.indegree.copy()
    results: list[Any] = [None] * len(funcs)
    running: dict[int, asyncio.Task[None]] = {}
    done: asyncio.Future[list[Any]] = loop.create_future()
    remaining = len(funcs)

    async def attempt(i: int) -> Any:
        breaker = breakers[i]
        if not breaker.closed:
            raise CircuitOpen(breaker.key)
        try:
            async with asyncio.timeout(limit):
                out = await funcs[i](results)
        except Exception:
            breaker.failed()
            raise
        breaker.failures = 0
        return out

    async def retry(i: int, error: Exception) -> Any:
        for n in range(1, attempts):
            if isinstance(error, CircuitOpen):
                raise error
            await asyncio.sleep(opts.base * 2 ** (n - 1))
            try:
                return await attempt(i)
            except Exception as again:
                error = again
        raise error

    async def node(i: int) -> None:
        nonlocal remaining
        try:
            # attempt() inlined: the path every successful stage takes
            breaker = breakers[i]
            try:
                if not breaker.closed:
                    raise CircuitOpen(breaker.key)
                try:
                    async with asyncio.timeout(limit):
                        out = await funcs[i](results)
                except Exception:
                    breaker.failed()
                    raise
                breaker.failures = 0
            except Exception as error:
                if attempts == 1:
                    raise
                out = await retry(i, error)
            results[i] = out
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


# --------------------------------------------------------------------------- W6: a commit per stage


async def run_bare_committed(
    graph: BareGraph, commit: Callable[[int, Any], Any], *, awaited: bool
) -> list[Any]:
    """``run_bare`` where each node's result is committed before its successors start.

    ``commit(i, result)`` stores node i's result durably: a plain call for SQLite (stdlib
    ``sqlite3`` on the loop's thread), awaited when ``awaited`` (asyncpg). It is called
    directly in the node, right after the stage function returns, so a dependent can only
    start once its inputs are on disk (or in the server).
    """
    loop = asyncio.get_running_loop()
    funcs = graph.funcs
    successors = graph.successors
    waiting = graph.indegree.copy()
    results: list[Any] = [None] * len(funcs)
    running: dict[int, asyncio.Task[None]] = {}
    done: asyncio.Future[list[Any]] = loop.create_future()
    remaining = len(funcs)

    async def node(i: int) -> None:
        nonlocal remaining
        try:
            out = await funcs[i](results)
            if awaited:
                await commit(i, out)
            else:
                commit(i, out)
            results[i] = out
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


# --------------------------------------------------------------------------- issue 13: map, loop


def gathered(fn: StageFn, source: int, field: str) -> StageFn:
    """A node mapping ``fn`` over ``results[source][field]``: one ``asyncio.gather``.

    ``gather`` wraps each coroutine in a task of its own, all at once (unlimited
    parallelism); the node's output is the items' outputs in item order.
    """

    async def mapped(results: list[Any]) -> dict[str, Any]:
        items = results[source][field]
        return {"results": await asyncio.gather(*[fn(results) for _ in items])}

    return mapped


def gathered_committed(
    fn: StageFn, source: int, field: str, commit: Callable[[int, Any], Awaitable[None]]
) -> StageFn:
    """``gathered`` where each item's coroutine awaits ``commit(index, output)`` before it
    returns: an item is done once its output is stored (W7-durable)."""

    async def mapped(results: list[Any]) -> dict[str, Any]:
        items = results[source][field]

        async def item(k: int) -> Any:
            out = await fn(results)
            await commit(k, out)
            return out

        return {"results": await asyncio.gather(*[item(k) for k in range(len(items))])}

    return mapped


def looped(fn: StageFn, until: Callable[[Any], bool], max_iterations: int) -> StageFn:
    """A node awaiting ``fn`` once per iteration in a plain ``for`` loop, ``until(output)``
    after each (true ends it), at most ``max_iterations`` times, all in the node's task.

    Its output is the last iteration's and how many ran (for the check, once per run).
    """

    async def loop(results: list[Any]) -> dict[str, Any]:
        out: Any = None
        iteration = 0
        for iteration in range(1, max_iterations + 1):  # noqa: B007 - read after the loop
            out = await fn(results)
            if until(out):
                break
        return {"iterations": iteration, "output": out}

    return loop
