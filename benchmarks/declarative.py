"""Issue 16's LOAD row and the per-evaluation cost of a CEL condition (``run.py`` runs both).

- LOAD: W3's graph (``workloads.layered``: 20 layers x 50 stages) as a 1 000-stage pipeline
  file (block YAML: ``dependencies:``, a ``with:`` argument and a ``when:`` on every stage,
  handlers by registered name), loaded by ``loads_pipeline(text, handlers=...)``, against the
  same graph built in Python with ``Pipeline().with_stage(...)...build()``: the same handler
  bound to the same argument (a closure per stage, as the loader makes) and ``when=`` a Python
  function doing the same test. The text, the handlers mapping and the spec are made once,
  untimed. Both graphs are then run once (untimed) and must give the same outputs.
- CEL-eval: one ``when:`` of a loaded file, ``$<dep>.v >= 0``, evaluated with a fresh value
  each time (the memo never answers: the miss path of W3-CEL-DEP), against the compiled CEL
  program alone (``program.eval(data=...)`` and ``plain_value()``, the calls the loader makes):
  the library's own cost, and what the loader adds around it.

The W3-CEL and W3-CEL-DEP rows are ``conditions.py``'s sides; W3-CEL-DEP runs them on
:func:`counting_spec`, whose stages return a new value on every call: each stage's
``Expression`` keeps its own memo, so with W3's constant outputs every run after the warm-up
would be answered by it (the hit path) instead of reaching the CEL library.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bare import StageFn, StageSpec
from workloads import Spec, layered, noop_stage

DATA = {"enabled": True}


# --------------------------------------------------------------------------- W3-CEL-DEP


def counting_stage(i: int) -> StageFn:
    """A no-op stage returning ``{"v": n}``, ``n`` new on every call (``i * 10**9``, + 1, ...):
    no two evaluations of a dependent's ``$<this>.v >= 0`` see the same value."""
    count = itertools.count(i * 10**9)

    async def stage(ctx: Any) -> dict[str, int]:
        return {"v": next(count)}

    return stage


def counting_spec() -> Spec:
    """W3 (``workloads.layered``) with :func:`counting_stage` functions."""
    return [(name, counting_stage(i), deps) for i, (name, _, deps) in enumerate(layered())]


# --------------------------------------------------------------------------- LOAD


def arg_stage(i: int) -> StageFn:
    """A no-op handler taking ``ctx`` and one ``with:`` argument ``n``; returns
    ``{"v": n, "i": i}`` (so a run shows both that the argument arrived and whose it was)."""

    async def stage(ctx: Any, n: int) -> dict[str, int]:
        return {"v": n, "i": i}

    return stage


def load_spec() -> Spec:
    """W3's names and dependencies, each stage's function an :func:`arg_stage`."""
    return [(name, arg_stage(i), deps) for i, (name, _, deps) in enumerate(layered())]


def _when(deps: Sequence[str]) -> str:
    # Not W3-CEL's texts, so that the first load in a process compiles its own programs.
    return f"${deps[0]}.v > -1" if deps else "$inputs.enabled == true"


def load_text(name: str, spec: Sequence[StageSpec]) -> str:
    """``spec`` as a block-YAML pipeline file: per stage ``id``, ``handler`` (its registered
    name: the stage's), ``dependencies``, ``with: {n: <its index>}`` and a ``when:``."""
    lines = [f"name: {name}", "inputs:", "  enabled: boolean", "stages:"]
    for i, (stage, _, deps) in enumerate(spec):
        lines += [f"  - id: {stage}", f"    handler: {stage}"]
        if deps:
            lines.append(f"    dependencies: [{', '.join(deps)}]")
        lines += ["    with:", f"      n: {i}", f'    when: "{_when(deps)}"']
    return "\n".join(lines) + "\n"


def handlers_of(spec: Sequence[StageSpec]) -> dict[str, StageFn]:
    """The ``handlers=`` mapping: each stage's function under its stage's name."""
    return {stage: fn for stage, fn, _ in spec}


def enabled(ctx: Any) -> bool:
    return ctx.data["enabled"] is True


def above(dep: str) -> Callable[[Any], bool]:
    """The Python twin of ``$<dep>.v > -1``."""

    def condition(ctx: Any) -> bool:
        return ctx.inputs.get_from(dep, "v") > -1  # type: ignore[no-any-return]

    return condition


def bind(fn: Callable[..., Any], n: int) -> StageFn:
    """``fn`` with its argument: a new stage function, as the loader makes one per stage
    that has ``with:`` (a ``functools.partial`` would cost ``with_stage`` an
    ``inspect.signature`` per stage, about 25 µs)."""

    async def stage(ctx: Any) -> Any:
        return await fn(ctx, n=n)

    return stage


def python_build(name: str, spec: Sequence[StageSpec]) -> Any:
    """The file's graph written in Python: what the loader's output is compared with."""
    from stageflow import Pipeline

    pipeline = Pipeline(name)
    for i, (stage, fn, deps) in enumerate(spec):
        when = above(deps[0]) if deps else enabled
        pipeline = pipeline.with_stage(stage, bind(fn, i), dependencies=deps, when=when)
    return pipeline.build()


def file_load(text: str, handlers: Mapping[str, StageFn]) -> Any:
    from stageflow.adapters.declarative import loads_pipeline

    return loads_pipeline(text, handlers=handlers)


def check_same(file_graph: Any, python_graph: Any, n: int) -> None:
    """Run both graphs once: every one of the ``n`` stages completes with the same output."""
    from stageflow import Engine

    async def both() -> tuple[Any, Any]:
        engine = Engine(max_parallel=None)
        return await engine.run(file_graph, data=DATA), await engine.run(python_graph, data=DATA)

    file_result, python_result = asyncio.run(both())
    for label, result in (("the file's", file_result), ("the Python", python_result)):
        done = len(result.with_status("completed"))
        if result.status != "completed" or done != n:
            raise RuntimeError(f"{label} graph: {result.status}, {done} of {n} stages completed")
    outputs = {name: dict(r.data) for name, r in file_result.stages.items()}
    if outputs != {name: dict(r.data) for name, r in python_result.stages.items()}:
        raise RuntimeError("the file's graph and the Python one give different outputs")


def first_load_ms(text: str, handlers: Mapping[str, StageFn]) -> float:
    """The first load's ms (this row's CEL programs compiled, unless cached by an earlier load
    in the same process)."""
    start = time.perf_counter()
    file_load(text, handlers)
    return (time.perf_counter() - start) * 1e3


# --------------------------------------------------------------------------- CEL-eval

EVAL_TEXT = "$a.v >= 0"


class _Outputs:
    """What a condition reads: the run data and the dependencies' outputs (the shape of
    the loader's own ``_ResultView``), one dependency's value replaced per evaluation."""

    __slots__ = ("data", "inputs")

    def __init__(self) -> None:
        self.data: dict[str, Any] = dict(DATA)
        self.inputs: dict[str, dict[str, int]] = {"a": {"v": 0}}


def loaded_condition() -> Any:
    """The ``when:`` of stage ``b`` of a two-stage file: the loader's condition object."""
    text = (
        "name: eval\nstages:\n  - {id: a, handler: a}\n"
        f'  - {{id: b, handler: b, dependencies: [a], when: "{EVAL_TEXT}"}}\n'
    )
    noop = noop_stage(0)
    graph = file_load(text, {"a": noop, "b": noop}).graph
    return graph.stages[graph.index["b"]].when


def _best(call: Callable[[int], Any], n: int, passes: int = 3) -> float:
    """µs per call of ``call(i)``, i = 0 .. n-1, best of ``passes``."""
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for i in range(n):
            call(i)
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def cel_evaluation(n: int = 100_000) -> dict[str, float]:
    """µs per evaluation of ``$a.v >= 0`` with ``n`` distinct values, each part on its own.

    - ``library``: the compiled program alone, ``program.eval(data={"_r0": i})`` and
      ``plain_value()``, the program and calls the loader uses;
    - ``expression``: ``Expression.evaluate`` (reference resolution, memo lookup that
      misses, the library, the memo insert);
    - ``condition``: the loader's ``when:`` object as the engine calls it (the above and
      the bool check);
    - ``hit``: the same object with one value over and over (the memo answers: W3-CEL);
    - ``resolve``: the reference's getter alone.

    Each is the best of three passes minus the loop's own cost (a call that updates the
    value), so the parts compare.
    """
    condition = loaded_condition()
    expression = condition.expression
    program, (getter,), (variable,) = expression._program, expression._getters, expression._names
    outputs = _Outputs()
    dep = outputs.inputs["a"]

    def library(i: int) -> Any:
        return program.eval(data={variable: i}).plain_value()

    def fresh(call: Callable[[Any], Any]) -> Callable[[int], Any]:
        def step(i: int) -> Any:
            dep["v"] = i
            return call(outputs)

        return step

    def baseline(i: int) -> Any:  # the loop and the value's update alone, subtracted
        dep["v"] = i
        return outputs

    for i in range(1000):  # the library's figure first, and every part checked once
        if not (library(i) is True and condition(outputs) is True):
            raise RuntimeError(f"{EVAL_TEXT} did not hold for {i}")
    figures = {
        "library": _best(library, n),
        "expression": _best(fresh(expression.evaluate), n),
        "condition": _best(fresh(condition), n),
        "hit": _best(lambda i: condition(outputs), n),
        "resolve": _best(fresh(lambda ctx: getter(ctx, None)), n),
    }
    loop = _best(baseline, n)  # subtracted: each figure is the part's own cost
    return {k: max(v - loop, 0.0) for k, v in figures.items()}
