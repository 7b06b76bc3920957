"""Issue 16's benchmarks: CEL conditions from a pipeline file against Python conditions.

- W3-CEL: W3 where every stage has ``when: "$inputs.enabled"`` (the file, loaded by
  ``loads_pipeline``) against the same graph with ``when=`` a Python function reading the
  run data (both sides are stageflow). The run data is the same for every stage, so after
  the first stage the loader's memo answers (CEL is pure: the same values, the same result).
- W3-CEL-DEP: every stage of layer > 0 reads its first dependency's output,
  ``$<dep>.v >= 0``, each value distinct: the memo never answers and every evaluation goes
  to the CEL library (the miss path, no target: reported).

``python benchmarks/conditions.py`` prints the per-evaluation cost of both CEL libraries and how
many of a table of cases each gets right (the choice of docs/declarative.md).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bare import Resilience
from workloads import Impl, StageSpec, _completed

DATA = {"enabled": True}


def _condition_text(kind: str, deps: Sequence[str]) -> str:
    return f"${deps[0]}.v >= 0" if kind == "dep" and deps else "$inputs.enabled"


def file_text(name: str, spec: Sequence[StageSpec], kind: str) -> str:
    """The W3 graph as a pipeline file: handlers by registered name, a ``when:`` each."""
    lines = [f"name: {name}", "inputs: {enabled: boolean}", "stages:"]
    for stage, _, deps in spec:
        when = _condition_text(kind, deps)
        lines.append(f"  - {{id: {stage}, handler: {stage}, dependencies: [{', '.join(deps)}], "
                     f"when: \"{when}\"}}")  # fmt: skip
    return "\n".join(lines) + "\n"


def enabled(ctx: Any) -> bool:
    return ctx.data["enabled"] is True


def first_dependency(dep: str) -> Callable[[Any], bool]:
    def condition(ctx: Any) -> bool:
        return ctx.inputs.get_from(dep, "v") >= 0  # type: ignore[no-any-return]

    return condition


def python_build(name: str, spec: Sequence[StageSpec], kind: str) -> Any:
    from stageflow import Pipeline

    pipeline = Pipeline(name)
    for stage, fn, deps in spec:
        when = first_dependency(deps[0]) if kind == "dep" and deps else enabled
        pipeline = pipeline.with_stage(stage, fn, dependencies=deps, when=when)
    return pipeline.build()


def file_build(name: str, spec: Sequence[StageSpec], kind: str) -> Any:
    from stageflow.adapters.declarative import loads_pipeline

    handlers = {stage: fn for stage, fn, _ in spec}
    return loads_pipeline(file_text(name, spec, kind), handlers=handlers).graph


def cel_impls(kind: str) -> Callable[[bool], list[Impl]]:
    """The two sides: Python conditions ("bare") and the file's CEL conditions."""

    def sides(with_stageflow: bool) -> list[Impl]:
        from stageflow import Engine

        def runner(prepared: tuple[Any, Any]) -> Callable[[], Any]:
            engine, graph = prepared
            return lambda: engine.run(graph, data=DATA)

        def python_prepare(name: str, spec: Sequence[StageSpec], _: Resilience | None) -> Any:
            return Engine(max_parallel=None), python_build(name, spec, kind)

        def file_prepare(name: str, spec: Sequence[StageSpec], _: Resilience | None) -> Any:
            return Engine(max_parallel=None), file_build(name, spec, kind)

        return [Impl("bare", python_prepare, runner, _completed),
                Impl("stageflow", file_prepare, runner, _completed)]  # fmt: skip

    return sides


# --------------------------------------------------------------------------- the libraries

CASES: list[tuple[str, dict[str, Any], Any]] = [
    ("1 + 2 * 3", {}, 7),
    ("7 / 2", {}, 3),
    ("-7 / 2", {}, -3),
    ("7 % 3", {}, 1),
    ("1.5 + 2.0", {}, 3.5),
    ("x > 0.5 && y == 'a'", {"x": 0.7, "y": "a"}, True),
    ("x > 0.5 || y", {"x": 0.1, "y": False}, False),
    ("'ab' + 'cd'", {}, "abcd"),
    ("size('hello')", {}, 5),
    ("size([1, 2, 3])", {}, 3),
    ("'hello'.startsWith('he')", {}, True),
    ("'hello'.endsWith('lo')", {}, True),
    ("'hello'.contains('ell')", {}, True),
    ("'abc123'.matches('^[a-z]+[0-9]+$')", {}, True),
    ("2 in [1, 2, 3]", {}, True),
    ("'k' in {'k': 1}", {}, True),
    ("m.a.b", {"m": {"a": {"b": 4}}}, 4),
    ("l[1]", {"l": [10, 20]}, 20),
    ("x > 1 ? 'big' : 'small'", {"x": 2}, "big"),
    ("has(m.a)", {"m": {"a": 1}}, True),
    ("has(m.z)", {"m": {"a": 1}}, False),
    ("[1, 2, 3].all(v, v > 0)", {}, True),
    ("[1, 2, 3].exists(v, v > 2)", {}, True),
    ("[1, 2, 3].exists_one(v, v > 1)", {}, False),
    ("[1, 2, 3].map(v, v * 2)", {}, [2, 4, 6]),
    ("[1, 2, 3].filter(v, v % 2 == 1)", {}, [1, 3]),
    ("int('42') + 1", {}, 43),
    ("double(1) / 2.0", {}, 0.5),
    ("string(12)", {}, "12"),
    ("null == null", {}, True),
    ("x == null", {"x": None}, True),
    ("1 == 1.0", {}, True),  # heterogeneous numeric equality (cel-spec since 2022)
    ("1 / 0", {}, ZeroDivisionError),
    ("9223372036854775807 + 1", {}, OverflowError),
    ("m.missing", {"m": {}}, KeyError),
    ("1 + 'a'", {}, TypeError),
]


def _google() -> Callable[[str, dict[str, Any]], Any]:
    from cel_expr_python import cel  # type: ignore[import-untyped]

    def evaluate(text: str, data: dict[str, Any]) -> Any:
        env = cel.NewEnv(variables=dict.fromkeys(data, cel.Type.DYN))
        value = env.compile(text).eval(data=data)
        if value.type() == cel.Type.ERROR:
            raise ArithmeticError(str(value.value()))
        return value.plain_value()

    return evaluate


def _rust() -> Callable[[str, dict[str, Any]], Any]:
    import cel  # type: ignore[import-untyped]

    return lambda text, data: cel.compile(text).execute(data)


def conformance(evaluate: Callable[[str, dict[str, Any]], Any]) -> tuple[int, list[str]]:
    """How many cases ``evaluate`` gets right (an error case: any exception), and the misses."""
    right, missed = 0, []
    for text, data, expected in CASES:
        try:
            got = evaluate(text, data)
        except Exception as error:
            ok = isinstance(expected, type)
            got = f"{type(error).__name__}"
        else:
            ok = not isinstance(expected, type) and got == expected and type(got) is type(expected)
        right += ok
        if not ok:
            missed.append(f"{text} -> {got!r} (spec: {getattr(expected, '__name__', expected)!r})")
    return right, missed


def per_evaluation(n: int = 100_000) -> dict[str, float]:
    """µs per evaluation of ``x > 0.5 && y == 'a'``, compiled once, fresh data each time."""
    import cel as rust
    from cel_expr_python import cel as google

    env = google.NewEnv(variables={"x": google.Type.DOUBLE, "y": google.Type.STRING})
    g = env.compile("x > 0.5 && y == 'a'")
    r = rust.compile("x > 0.5 && y == 'a'")
    figures = {}
    calls: list[tuple[str, Callable[[int], Any]]] = [
        ("cel-expr-python (Google, C++)", lambda i: g.eval(data={"x": i * 1e-6, "y": "a"})),
        ("common-expression-language (Rust)", lambda i: r.execute({"x": i * 1e-6, "y": "a"})),
    ]
    for label, call in calls:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for i in range(n):
                call(i)
            best = min(best, (time.perf_counter() - start) / n * 1e6)
        figures[label] = best
    return figures


def load_times(repeats: int = 5) -> tuple[float, float]:
    """ms to load W3 as a 1 000-stage file (a ``when:`` each), and to build it in Python."""
    from workloads import layered

    spec = layered()
    text = file_text("w3", spec, "input")
    handlers = {stage: fn for stage, fn, _ in spec}
    from stageflow.adapters.declarative import loads_pipeline

    def best(call: Callable[[], Any]) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return min(times) * 1e3

    return best(lambda: loads_pipeline(text, handlers=handlers)), best(
        lambda: python_build("w3", spec, "input")
    )


def main() -> None:
    file_ms, code_ms = load_times()
    print(f"{'a 1 000-stage file (W3, when: on each)':36} {file_ms:6.0f} ms to load "
          f"(the same graph in Python: {code_ms:.1f} ms)")  # fmt: skip
    for label, us in per_evaluation().items():
        print(f"{label:36} {us:6.2f} µs per evaluation")
    for label, make in (("cel-expr-python", _google), ("common-expression-language", _rust)):
        right, missed = conformance(make())
        print(f"{label:36} {right}/{len(CASES)} cases as the spec says")
        for miss in missed:
            print(f"    {miss}")


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    main()
