"""The expression sandbox: what a pipeline file's CEL cannot do.

Each probe is refused when the file loads (a PipelineFileError) or bounded when it runs
(the stage fails with ExpressionError or MissingInputError); none reaches Python. Every
input is small enough that a probe finishes at once even if its bound did not hold
(no timing asserts: a broken bound shows as a wrong outcome, not a hang).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stageflow import Engine, ExpressionError, MissingInputError, StageStatus
from stageflow.adapters.declarative import (
    MAX_COST,
    MAX_DEPTH,
    MAX_EXPRESSION,
    MAX_NESTED_MACROS,
    loads_pipeline,
)
from stageflow.errors import PipelineFileError

H = "tests.unit.declarative.handlers"
INPUTS = "{n: integer, s: string, xs: array, m: object}"
DATA: dict[str, Any] = {"n": 1, "s": "abc", "xs": [1, 2], "m": {"a": 1}}


def pipeline(expression: str, *, where: str = "with") -> str:
    """A one-stage pipeline evaluating ``expression`` in ``with: {v: ...}`` or ``when:``."""
    quoted = expression.replace("\\", "\\\\").replace('"', '\\"')
    text = f"name: p\ninputs: {INPUTS}\nstages:\n  - id: b\n    handler: {H}.echo\n"
    if where == "when":
        return text + f'    with: {{v: 1}}\n    when: "{quoted}"\n'
    return text + f'    with:\n      v: "${{{{ {quoted} }}}}"\n'


def refused(expression: str, *, where: str = "with") -> PipelineFileError:
    with pytest.raises(PipelineFileError) as caught:
        loads_pipeline(pipeline(expression, where=where), name="p.yaml")
    error = caught.value
    assert error.field == ("stages[0].when" if where == "when" else "stages[0].with.v")
    assert "\n" not in str(error)
    return error


def run(expression: str, data: dict[str, Any] | None = None, *, where: str = "with") -> Any:
    graph = loads_pipeline(pipeline(expression, where=where), name="p.yaml").graph
    return asyncio.run(Engine().run(graph, data={**DATA, **(data or {})}))["b"]


def failed(expression: str, data: dict[str, Any] | None = None, *, where: str = "with") -> Any:
    """The error of the stage that evaluated ``expression``, checked to name it."""
    result = run(expression, data, where=where)
    assert result.status == StageStatus.FAILED
    error = result.error
    assert isinstance(error, ExpressionError | MissingInputError)
    assert error.stage == "b"
    if isinstance(error, ExpressionError):
        assert error.field == ("when" if where == "when" else "with.v")
        assert error.expression == expression
        assert str(error).startswith(f"stage 'b': {error.field}: {expression!r}")
    return error


def value(expression: str, data: dict[str, Any] | None = None) -> Any:
    result = run(expression, data)
    assert result.status == StageStatus.COMPLETED, result.error
    return result.data["v"]


class TestPythonInternals:
    def test_import_is_no_function(self) -> None:
        assert "undeclared reference to '__import__'" in str(refused("__import__('os')"))

    def test_getattr_is_no_function(self) -> None:
        assert "undeclared reference to 'getattr'" in str(refused("getattr($inputs.s, 'x')"))

    @pytest.mark.parametrize("name", ["eval", "exec", "open", "globals", "locals"])
    def test_no_python_builtin_is_a_function(self, name: str) -> None:
        assert f"undeclared reference to '{name}'" in str(refused(f"{name}('1')"))

    def test_a_type_has_no_attributes(self) -> None:
        error = refused("type($inputs.s).__bases__")
        assert "cannot be the operand of a select" in str(error)

    def test_a_type_compares_as_a_cel_type(self) -> None:
        assert value("type($inputs.s) == string") is True
        assert value("type($inputs.n) == string") is False

    def test_a_type_given_to_a_handler_is_plain_data(self) -> None:
        result = run("type($inputs.s)")
        assert result.data["v"] == "string"  # its name: a CEL type object never leaves
        assert run("[type(1), type($inputs.s)]").data["v"] == ["int", "string"]

    @pytest.mark.parametrize("dunder", ["__class__", "__globals__", "__dict__", "__init__"])
    def test_a_reference_to_a_dunder_of_a_string_is_missing(self, dunder: str) -> None:
        error = failed(f"$inputs.s.{dunder}")
        assert isinstance(error, MissingInputError)
        assert f"$inputs.s has no '{dunder}'" in str(error)

    def test_a_reference_to_a_dunder_of_a_mapping_reads_only_its_keys(self) -> None:
        assert isinstance(failed("$inputs.m.__class__"), MissingInputError)
        assert value("$inputs.m.__class__", {"m": {"__class__": 5}}) == 5  # a key, no more

    def test_a_dunder_of_a_declared_output_model_is_refused_at_load(self) -> None:
        text = (
            f"name: p\nstages:\n  - {{id: a, handler: {H}.summarize, output: {H}.Report, "
            f"with: {{text: x}}}}\n  - {{id: b, handler: {H}.echo, with: {{v: $a.__class__}}}}\n"
        )
        with pytest.raises(PipelineFileError) as caught:
            loads_pipeline(text)
        assert "(Report) has no field '__class__'" in str(caught.value)

    def test_a_dunder_of_a_model_output_at_run_time_is_missing(self) -> None:
        # no output: declared, so not checked at load; the model's attributes stay closed
        text = (
            f"name: p\nstages:\n  - {{id: a, handler: {H}.summarize, with: {{text: x}}}}\n"
            f"  - {{id: b, handler: {H}.echo, with: {{v: $a.__dict__}}}}\n"
        )
        result = asyncio.run(Engine().run(loads_pipeline(text).graph))["b"]
        assert result.status == StageStatus.FAILED
        assert isinstance(result.error, MissingInputError)
        assert result.error.key == "__dict__"

    def test_a_dunder_inside_cel_is_a_missing_key(self) -> None:
        error = failed("dyn($inputs.m).__class__")
        assert isinstance(error, ExpressionError)
        assert "__class__" in str(error)
        assert isinstance(failed("$inputs.xs.map(x, x.__class__)"), ExpressionError)


class TestStaticLimits:
    def test_a_huge_string_literal_is_refused_by_length(self) -> None:
        error = refused("'" + "a" * MAX_EXPRESSION + "'")
        assert f"characters long, more than {MAX_EXPRESSION}" in str(error)

    def test_an_expression_of_the_longest_length_loads(self) -> None:
        literal = "'" + "a" * (MAX_EXPRESSION - 2) + "'"
        assert len(value(literal)) == MAX_EXPRESSION - 2

    def test_a_list_literal_of_100000_elements_is_refused_by_length(self) -> None:
        error = refused("[" + ",".join(["1"] * 100_000) + "].size()")
        assert "more than 4096" in str(error)
        assert error.value.startswith("${{ [1,1,")  # the value, as the file says it

    def test_1000_nested_parentheses_are_refused_before_parsing(self) -> None:
        error = refused("(" * 1000 + "1" + ")" * 1000 + " == 1")
        assert f"nests 1000 brackets deep, more than {MAX_DEPTH}" in str(error)

    def test_nesting_up_to_the_limit_parses(self) -> None:
        assert value("(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH) == 1
        assert "nests 33 brackets" in str(refused("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)))

    def test_brackets_inside_a_string_do_not_count(self) -> None:
        assert value("'" + "(" * 100 + "'") == "(" * 100

    @pytest.mark.parametrize(
        "expression",
        [
            "$inputs.xs.map(a, $inputs.xs.map(b, $inputs.xs.map(c, 1)))",
            "$inputs.xs.exists(a, $inputs.xs.all(b, $inputs.xs.filter(c, true).size() > 0))",
            "[1].map(a, [2].map(b, [3].exists_one(c, c == 3)))",
        ],
    )
    def test_comprehensions_nested_3_deep_are_refused(self, expression: str) -> None:
        error = refused(expression)
        assert f"nests comprehensions 3 deep, more than {MAX_NESTED_MACROS}" in str(error)

    def test_comprehensions_side_by_side_are_not_nested(self) -> None:
        expression = "[1].map(a, a).size() + [2].map(b, b).size() + [3].map(c, c).size()"
        assert value(expression) == 3


class TestCostBound:
    NESTED = "$inputs.xs.map(a, $inputs.xs.map(b, a * b)).size()"

    def test_2_deep_over_10000_elements_is_refused_before_evaluating(self) -> None:
        error = failed(self.NESTED, {"xs": list(range(10_000))})
        assert isinstance(error, ExpressionError)
        assert "hold 10000 elements" in str(error)
        assert f"more than {MAX_COST} steps" in str(error)

    def test_2_deep_over_a_few_elements_is_allowed(self) -> None:
        assert value(self.NESTED, {"xs": list(range(30))}) == 30

    def test_the_bound_is_cel_s_own_budget(self) -> None:
        """2 deep over 99 elements is 99 + 99**2 = 9 900 steps: allowed; over 100 it is
        10 100, more than CEL's budget: refused before evaluating, in our words."""
        assert MAX_COST == 10_000
        assert value(self.NESTED, {"xs": list(range(99))}) == 99
        error = failed(self.NESTED, {"xs": list(range(100))})
        assert "hold 100 elements" in str(error)
        assert f"more than {MAX_COST} steps" in str(error)

    def test_cel_s_budget_met_inside_an_expression_is_said_plainly(self) -> None:
        """A list made inside the expression is not seen before evaluating: CEL's own
        budget stops it, and the error says so without CEL's internals."""
        big = "[" + ", ".join(["0"] * 120) + "]"
        error = failed(f"{big}.exists(a, {big}.exists(b, b == 1 && $inputs.n == a))",
                       {"n": 5})  # fmt: skip
        assert f"its comprehensions took more than {MAX_COST} steps" in str(error)
        assert "INTERNAL" not in str(error)

    def test_elements_of_nested_values_count(self) -> None:
        nested = [list(range(100)) for _ in range(100)]  # 10100 elements in all
        error = failed("$inputs.xs.exists(a, a.exists(b, b < 0))", {"xs": nested})
        assert "hold 10100 elements" in str(error)

    def test_a_value_read_twice_counts_each_time(self) -> None:
        error = failed(
            "$inputs.xs.exists(a, $inputs.m.exists(k, k == 'z'))",
            {"xs": list(range(600)), "m": {str(i): i for i in range(600)}},
        )
        assert "hold 1200 elements" in str(error)


class TestStringGrowth:
    def test_a_string_cannot_be_multiplied(self) -> None:
        assert "no matching overload for '_*_'" in str(refused("'ab' * 1000000"))
        assert "no matching overload for '_*_'" in str(refused("$inputs.s * 1000"))

    @pytest.mark.parametrize("call", ["$inputs.s.repeat(1000)", "[$inputs.s, 'x'].join()"])
    def test_no_repeat_or_join(self, call: str) -> None:
        assert "undeclared reference" in str(refused(call))

    def test_concatenation_grows_with_the_expression_only(self) -> None:
        # without a loop or a binding a string grows by one operand per +: at most
        # MAX_EXPRESSION / len("$inputs.s+") times its input
        assert value("$inputs.s + $inputs.s + $inputs.s", {"s": "ab"}) == "ababab"

    def test_nested_comprehensions_over_a_long_string_are_refused(self) -> None:
        # a string counts len / 100 elements: 10 + 10000
        error = failed(
            "$inputs.xs.map(a, $inputs.xs.map(b, $inputs.s + $inputs.s)).size()",
            {"xs": list(range(10)), "s": "w" * 1_000_000},
        )
        assert "hold 10010 elements" in str(error)

    def test_nested_comprehensions_over_long_strings_in_a_list_are_refused(self) -> None:
        words = ["w" * 100_000] * 10  # should count 10 + 10 * 1000 elements
        error = failed("$inputs.xs.map(a, $inputs.xs.map(b, a + b)).size()", {"xs": words})
        assert "hold 10010 elements" in str(error)


class TestArithmetic:
    @pytest.mark.parametrize(
        ("expression", "n"),
        [
            ("$inputs.n * 9223372036854775807", 2),
            ("$inputs.n + 9223372036854775807", 1),
            ("-9223372036854775807 - $inputs.n - 1", 1),
            ("9223372036854775807 + 1", 1),
        ],
    )
    def test_int_overflow_is_an_error_not_a_wrap(self, expression: str, n: int) -> None:
        error = failed(expression, {"n": n})
        assert isinstance(error, ExpressionError)
        assert "integer overflow" in str(error)

    def test_an_input_beyond_int64_is_an_error(self) -> None:
        error = failed("$inputs.n + 0", {"n": 2**70})
        assert isinstance(error, ExpressionError)
        assert "too big" in str(error)

    @pytest.mark.parametrize(
        ("expression", "message"),
        [("$inputs.n / 0", "divide by zero"), ("$inputs.n % 0", "modulus by zero")],
    )
    def test_division_by_zero_names_the_stage_and_field(
        self, expression: str, message: str
    ) -> None:
        error = failed(expression)
        assert isinstance(error, ExpressionError)
        assert message in str(error)

    def test_division_by_zero_in_a_condition(self) -> None:
        error = failed("1 / ($inputs.n - 1) > 0", where="when")
        assert isinstance(error, ExpressionError)
        assert error.field == "when"
        assert "divide by zero" in str(error)

    def test_the_same_expression_with_a_safe_value_runs(self) -> None:
        assert value("10 / $inputs.n", {"n": 5}) == 2
