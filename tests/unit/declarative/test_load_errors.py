"""Every load error of a pipeline file names its file, line, column, field and value.

Each text below has exactly one mistake. The expected column is computed from the text
(``column_of``) so that a test states *what* it points at, not a magic number.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from stageflow import Engine
from stageflow.adapters.declarative import load_pipeline, loads_pipeline
from stageflow.errors import ConfigurationError, PipelineFileError
from stageflow.testing import run_virtual

H = "tests.unit.declarative.handlers"
START = f"{H}.start"


def column_of(text: str, line: int, needle: str) -> int:
    """The 1-based column of ``needle`` on ``line`` of ``text``."""
    found = text.splitlines()[line - 1].find(needle)
    assert found >= 0, f"{needle!r} is not on line {line}"
    return found + 1


def plain_message(error: BaseException) -> str:
    """The message, checked to be one line and no Python internals."""
    message = str(error)
    assert "\n" not in message, message
    assert "Traceback" not in message
    assert not re.search(r"<[\w.]+ object at 0x", message), message
    assert 'File "' not in message
    return message


def load_error(text: str, **options: Any) -> PipelineFileError:
    with pytest.raises(PipelineFileError) as caught:
        loads_pipeline(text, name="p.yaml", **options)
    error = caught.value
    plain_message(error)
    assert error.file == "p.yaml"
    assert str(error).startswith(f"p.yaml:{error.line}:{error.column}: ")
    return error


def file_error(path: Path, **options: Any) -> PipelineFileError:
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline(path, **options)
    error = caught.value
    plain_message(error)
    assert error.file == str(path)
    return error


def at(error: PipelineFileError, line: int, column: int, field: str) -> None:
    assert (error.line, error.column, error.field) == (line, column, field), str(error)


class TestFileSyntax:
    def test_yaml_that_does_not_parse(self) -> None:
        text = "name: p\nstages:\n  - id: a\n    handler: x: y\n"
        error = load_error(text)
        at(error, 4, column_of(text, 4, ": y"), "")
        assert "not valid YAML" in str(error)
        assert "mapping values" in str(error)

    def test_a_key_given_twice(self) -> None:
        text = f"name: p\nstages:\n  - {{id: a, handler: {START}}}\nname: q\n"
        error = load_error(text)
        assert (error.line, error.column) == (4, 1)
        assert error.value == "name"
        assert "the key 'name' appears twice" in str(error)

    def test_a_key_given_twice_names_its_field(self) -> None:
        text = f"name: p\nstages:\n  - {{id: a, handler: {START}}}\nname: q\n"
        assert load_error(text).field == "name"
        nested = f"name: p\nstages:\n  - {{id: a, handler: {START}, id: b}}\n"
        error = load_error(nested)
        assert (error.field, error.line) == ("stages[0].id", 3)

    def test_the_top_level_is_not_a_mapping(self) -> None:
        error = load_error("- a\n- b\n")
        at(error, 1, 1, "")
        assert error.value == ["a", "b"]
        assert "a pipeline file is a mapping" in str(error)
        assert "not list" in str(error)

    def test_an_empty_text(self) -> None:
        error = load_error("")
        at(error, 1, 1, "")
        assert "a pipeline file is a mapping" in str(error)

    def test_a_json_file(self, tmp_path: Path) -> None:
        path = tmp_path / "p.json"
        text = (
            '{\n  "name": "j",\n  "stages": [\n'
            f'    {{"id": "a", "handler": "{START}", "retry": "lots"}}\n  ]\n}}\n'
        )
        path.write_text(text)
        error = file_error(path)
        at(error, 4, column_of(text, 4, '"lots"'), "stages[0].retry")
        assert error.value == "lots"
        assert "valid integer" in str(error)

    def test_json_that_does_not_parse(self, tmp_path: Path) -> None:
        path = tmp_path / "p.json"
        path.write_text('{\n  "name": "j",\n  "stages": [,]\n}\n')
        error = file_error(path)
        at(error, 3, 14, "")
        assert "not valid JSON" in str(error)

    def test_a_toml_file(self, tmp_path: Path) -> None:
        path = tmp_path / "p.toml"
        text = (
            f'name = "t"\n\n[[stages]]\nid = "a"\nhandler = "{START}"\n\n'
            f'[[stages]]\nid = "b"\nhandler = "{H}.strat"\n'
        )
        path.write_text(text)
        error = file_error(path)
        at(error, 9, 1, "stages[1].handler")
        assert error.value == f"{H}.strat"
        assert "no attribute 'strat'" in str(error)
        assert "did you mean 'start'?" in str(error)

    def test_a_file_that_does_not_exist(self, tmp_path: Path) -> None:
        error = file_error(tmp_path / "none.yaml")
        at(error, 1, 1, "")
        assert "cannot read the file" in str(error)


class TestSchema:
    def test_an_unknown_field_says_what_was_meant(self) -> None:
        text = f"name: p\nstages:\n  - id: a\n    handler: {START}\n    dependecies: [x]\n"
        error = load_error(text)
        at(error, 5, 5, "stages[0].dependecies")
        assert error.value == ["x"]
        assert "unknown field 'dependecies' (did you mean 'dependencies'?)" in str(error)

    def test_a_value_of_the_wrong_type(self) -> None:
        text = f"name: p\nstages:\n  - id: a\n    handler: {START}\n    retry: lots\n"
        error = load_error(text)
        at(error, 5, column_of(text, 5, "lots"), "stages[0].retry")
        assert error.value == "lots"
        assert "valid integer" in str(error)
        assert "(given 'lots')" in str(error)

    def test_the_pipeline_name_is_required(self) -> None:
        error = load_error(f"stages:\n  - id: a\n    handler: {START}\n")
        at(error, 1, 1, "name")
        assert "'name' is required" in str(error)

    def test_a_stage_id_is_required(self) -> None:
        text = f"name: p\nstages:\n  - handler: {START}\n"
        error = load_error(text)
        at(error, 3, column_of(text, 3, "handler"), "stages[0].id")
        assert "'id' is required" in str(error)

    def test_stages_may_not_be_empty(self) -> None:
        text = "name: p\nstages: []\n"
        error = load_error(text)
        at(error, 2, column_of(text, 2, "[]"), "stages")
        assert error.value == []
        assert "at least 1 item" in str(error)

    def test_an_invalid_stage_id(self) -> None:
        text = f"name: p\nstages:\n  - id: 'a b'\n    handler: {START}\n"
        error = load_error(text)
        at(error, 3, column_of(text, 3, "'a b'"), "stages[0].id")
        assert error.value == "a b"
        assert "letters, digits" in str(error)

    @pytest.mark.parametrize("root", ["inputs", "item", "loop", "output", "params"])
    def test_a_reserved_id(self, root: str) -> None:
        text = f"name: p\nstages:\n  - id: {root}\n    handler: {START}\n"
        error = load_error(text)
        at(error, 3, column_of(text, 3, root), "stages[0].id")
        assert error.value == root
        assert f"is a reference root (${root})" in str(error)

    def test_a_loop_needs_max_iterations(self) -> None:
        text = (
            f"name: p\nstages:\n  - id: l\n    loop:\n      body: {{stages: [{{id: a, "
            f'handler: {START}}}]}}\n      until: "$output.count > 1"\n'
        )
        error = load_error(text)
        at(error, 4, column_of(text, 4, "loop"), "stages[0].loop.max_iterations")
        assert "'max_iterations' is required" in str(error)

    def test_an_unknown_on_item_error(self) -> None:
        text = (
            f"name: p\nstages:\n  - {{id: n, handler: {H}.numbers, with: {{n: 3}}}}\n"
            f"  - id: m\n    handler: {H}.echo\n    over: $n.values\n    with: {{v: $item}}\n"
            "    on_item_error: ignore\n"
        )
        error = load_error(text)
        at(error, 8, column_of(text, 8, "ignore"), "stages[1].on_item_error")
        assert error.value == "ignore"
        assert "'fail', 'skip' or 'collect'" in str(error)

    @pytest.mark.parametrize(
        ("text", "line", "needle", "field"),
        [
            ("name: p\ninputs:\n  who: strng\nstages:\n  - {id: a, handler: START}\n",
             3, "strng", "inputs.who"),
            ("name: p\nstages:\n  - id: ok\n    input:\n      schema: {approved: bool}\n",
             5, "bool", "stages[0].input.schema.approved"),
        ],
        ids=["input", "input-schema"],
    )  # fmt: skip
    def test_an_unknown_type_name(self, text: str, line: int, needle: str, field: str) -> None:
        error = load_error(text.replace("START", START))
        at(error, line, column_of(text, line, needle), field)
        assert "'string', 'integer'" in str(error)


class TestHandlers:
    def test_an_unknown_module(self) -> None:
        text = "name: p\nstages:\n  - id: a\n    handler: jsonn.dumps\n"
        error = load_error(text)
        at(error, 4, column_of(text, 4, "jsonn"), "stages[0].handler")
        assert error.value == "jsonn.dumps"
        assert "no module named 'jsonn' (did you mean 'json'?)" in str(error)

    def test_an_unknown_submodule_says_what_was_meant(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        package = f"pkg_{tmp_path.name.replace('-', '_')}"
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "handlers.py").write_text("def f(ctx):\n    return {}\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        try:
            error = load_error(f"name: p\nstages:\n  - id: a\n    handler: {package}.handler.f\n")
        finally:
            sys.modules.pop(package, None)
        assert "did you mean" in str(error)
        assert "handlers" in str(error)

    def test_an_unknown_attribute(self) -> None:
        text = f"name: p\nstages:\n  - id: a\n    handler: {H}.summarise\n"
        error = load_error(text)
        at(error, 4, column_of(text, 4, "tests."), "stages[0].handler")
        assert error.value == f"{H}.summarise"
        assert "has no attribute 'summarise' (did you mean 'summarize'?)" in str(error)

    def test_an_unknown_registered_name(self) -> None:
        text = "name: p\nstages:\n  - id: a\n    handler: summarise\n"
        error = load_error(text, handlers={"summarize": print})
        at(error, 4, column_of(text, 4, "summarise"), "stages[0].handler")
        assert error.value == "summarise"
        assert "no handler registered as 'summarise' (did you mean 'summarize'?)" in str(error)

    def test_an_argument_the_handler_does_not_take(self) -> None:
        text = (
            f"name: p\nstages:\n  - id: a\n    handler: {H}.summarize\n"
            "    with: {text: x, limt: 3}\n"
        )
        error = load_error(text)
        at(error, 5, column_of(text, 5, "limt"), "stages[0].with.limt")
        assert error.value == "limt"
        assert "takes no argument 'limt' (did you mean 'limit'?)" in str(error)

    def test_a_required_argument_missing(self) -> None:
        text = f"name: p\nstages:\n  - id: a\n    handler: {H}.summarize\n    with: {{limit: 3}}\n"
        error = load_error(text)
        at(error, 5, column_of(text, 5, "with"), "stages[0].with")
        assert error.value == "text"
        assert "needs the argument 'text'" in str(error)

    def test_an_output_model_that_is_no_model(self) -> None:
        text = f"name: p\nstages:\n  - id: a\n    handler: {START}\n    output: {H}.NotAModel\n"
        error = load_error(text)
        at(error, 5, column_of(text, 5, "tests."), "stages[0].output")
        assert error.value == f"{H}.NotAModel"
        assert "is no pydantic model or dataclass" in str(error)

    def test_an_exception_in_retry_on_that_is_no_exception(self) -> None:
        text = (
            f"name: p\nstages:\n  - id: a\n    handler: {START}\n    retry:\n"
            f"      attempts: 2\n      retry_on: [builtins.ValueError, {H}.Report]\n"
        )
        error = load_error(text)
        at(error, 7, column_of(text, 7, f"{H}.Report"), "stages[0].retry.retry_on[1]")
        assert error.value == f"{H}.Report"
        assert "is no exception class" in str(error)

    @pytest.mark.parametrize(
        ("option", "field"),
        [
            ("retry: {attempts: 2, base: -1}", "stages[0].retry.base"),
            ("budget: {max_tokens: -1}", "stages[0].budget.max_tokens"),
            (
                "circuit_breaker: {failure_threshold: 0}",
                "stages[0].circuit_breaker.failure_threshold",
            ),
        ],
    )
    def test_a_policy_value_out_of_range(self, option: str, field: str) -> None:
        text = f"name: p\nstages:\n  - id: a\n    handler: {START}\n    {option}\n"
        error = load_error(text)
        assert error.line == 5
        assert error.field.startswith(field.rsplit(".", 1)[0])


REPORT = (
    f"  - {{id: fetch-docs, handler: {H}.summarize, output: {H}.Report, with: {{text: abc}}}}\n"
)


def with_value(value: str, *, inputs: str = "", before: str = "") -> str:
    head = f"name: p\n{inputs}stages:\n{before}"
    return head + f"  - id: b\n    handler: {H}.echo\n    with: {{x: {value}}}\n"


class TestReferences:
    def test_an_unknown_stage(self) -> None:
        text = with_value("$fetch-doc.count", before=REPORT)
        error = load_error(text)
        at(error, 6, column_of(text, 6, "$"), "stages[1].with.x")
        assert error.value == "$fetch-doc.count"
        assert "unknown stage 'fetch-doc' (did you mean 'fetch-docs'?)" in str(error)

    def test_an_unknown_input(self) -> None:
        text = with_value("$inputs.txt", inputs="inputs: {text: string}\n")
        error = load_error(text)
        at(error, 6, column_of(text, 6, "$"), "stages[0].with.x")
        assert error.value == "$inputs.txt"
        assert "unknown input 'txt' (did you mean 'text'?)" in str(error)

    def test_a_field_the_output_model_lacks(self) -> None:
        text = with_value("$fetch-docs.cont", before=REPORT)
        error = load_error(text)
        at(error, 6, column_of(text, 6, "$"), "stages[1].with.x")
        assert "(Report) has no field 'cont' (did you mean 'count'?)" in str(error)

    def test_an_index_into_a_field_that_is_no_list(self) -> None:
        text = with_value('"$fetch-docs.title[0]"', before=REPORT)
        error = load_error(text)
        at(error, 6, column_of(text, 6, "$"), "stages[1].with.x")
        assert "[0] indexes no list" in str(error)

    def test_an_index_into_a_list_field_is_fine(self) -> None:
        text = with_value('"$fetch-docs.tags[0]"', before=REPORT)
        assert loads_pipeline(text).graph.stages[1].dependencies == ("fetch-docs",)

    def test_item_outside_a_map(self) -> None:
        text = with_value("$item.id")
        error = load_error(text)
        at(error, 5, column_of(text, 5, "$"), "stages[0].with.x")
        assert "$item is only in a map stage" in str(error)

    def test_loop_outside_a_loop(self) -> None:
        text = with_value("$loop.iteration")
        error = load_error(text)
        at(error, 5, column_of(text, 5, "$"), "stages[0].with.x")
        assert "$loop is only in a loop's body" in str(error)

    def test_output_outside_routes_and_until(self) -> None:
        text = with_value("1", before=REPORT) + '    when: "$output.count > 1"\n'
        error = load_error(text)
        at(error, 7, column_of(text, 7, "$"), "stages[1].when")
        assert "$output is only in a route's when:" in str(error)

    def test_an_unknown_template_parameter(self) -> None:
        text = with_value("$params.y", inputs="parameters: {x: {type: integer, default: 1}}\n")
        error = load_error(text)
        at(error, 6, column_of(text, 6, "$"), "stages[0].with.x")
        assert error.value == "$params.y"
        assert "unknown template parameter 'y'" in str(error)


def when(expression: str, *, inputs: str = "inputs: {n: integer}\n", before: str = "") -> str:
    return with_value("1", inputs=inputs, before=before) + f'    when: "{expression}"\n'


class TestExpressions:
    def test_an_expression_that_does_not_parse_points_at_the_error(self) -> None:
        text = when("$inputs.n > > 2")
        error = load_error(text)
        at(error, 7, column_of(text, 7, "> 2"), "stages[0].when")
        assert error.value == "$inputs.n > > 2"
        assert "Syntax error" in str(error)

    def test_an_expression_that_does_not_type_check(self) -> None:
        text = when("$inputs.n > 'a'")
        error = load_error(text)
        at(error, 7, column_of(text, 7, "> 'a'"), "stages[0].when")
        assert "no matching overload" in str(error)
        assert "(int, string)" in str(error)

    def test_a_when_that_gives_no_bool(self) -> None:
        text = when("$inputs.n + 1")
        error = load_error(text)
        at(error, 7, column_of(text, 7, "$"), "stages[0].when")
        assert "gives a int, not a bool" in str(error)

    def test_a_whole_template_that_does_not_parse(self) -> None:
        text = with_value('"${{ $inputs.n > > 2 }}"', inputs="inputs: {n: integer}\n")
        error = load_error(text)
        assert (error.line, error.field) == (6, "stages[0].with.x")
        assert error.value == "${{ $inputs.n > > 2 }}"  # what the file says
        assert "Syntax error" in str(error)

    def test_a_whole_template_that_does_not_parse_points_at_the_error(self) -> None:
        text = with_value('"${{ $inputs.n > > 2 }}"', inputs="inputs: {n: integer}\n")
        assert load_error(text).column == column_of(text, 6, "> 2")

    def test_a_template_inside_text_that_does_not_parse_points_into_it(self) -> None:
        text = with_value('"n is ${{ $inputs.n + }}"', inputs="inputs: {n: integer}\n")
        error = load_error(text)
        assert error.column > column_of(text, 6, "$inputs")
        assert error.value == "n is ${{ $inputs.n + }}"

    def test_a_hyphenated_id_in_an_expression(self) -> None:
        loaded = loads_pipeline(when("$fetch-docs.count > 0", inputs="", before=REPORT))
        assert loaded.graph.stages[1].dependencies == ("fetch-docs",)

    def test_a_hyphen_after_the_longest_known_id_is_a_minus(self) -> None:
        text = when("$a-b > 0", inputs="", before=f"  - {{id: a, handler: {START}}}\n")
        error = load_error(text)
        at(error, 7, column_of(text, 7, "b > 0"), "stages[1].when")
        assert "undeclared reference to 'b'" in str(error)

    def test_a_dollar_that_starts_no_reference(self) -> None:
        text = when("$ > 1")
        error = load_error(text)
        at(error, 7, column_of(text, 7, "$"), "stages[0].when")
        assert "a $ that starts no reference" in str(error)

    def test_a_string_that_does_not_end(self) -> None:
        text = when("$inputs.n == 'a")
        error = load_error(text)
        at(error, 7, column_of(text, 7, "'a"), "stages[0].when")
        assert "a string that does not end" in str(error)


def stage_list(*stages: str) -> str:
    return "name: p\nstages:\n" + "".join(f"  - {s}\n" for s in stages)


class TestGraphErrors:
    def test_two_stages_with_one_id(self) -> None:
        text = stage_list(f"{{id: a, handler: {START}}}", f"{{id: a, handler: {START}}}")
        error = load_error(text)
        at(error, 4, 5, "stages[1]")
        assert "two stages are named 'a'" in str(error)

    def test_an_unknown_dependency_at_its_list_item(self) -> None:
        text = stage_list(
            f"{{id: a, handler: {START}}}",
            f"id: b\n    handler: {START}\n    dependencies:\n      - a\n      - c",
        )
        error = load_error(text)
        at(error, 8, column_of(text, 8, "c"), "stages[1].dependencies[1]")
        assert "depends on 'c', which is no stage of pipeline 'p'" in str(error)

    def test_a_dependency_listed_twice(self) -> None:
        text = stage_list(
            f"{{id: a, handler: {START}}}", f"{{id: b, handler: {START}, dependencies: [a, a]}}"
        )
        error = load_error(text)
        assert (error.line, error.field) == (4, "stages[1].dependencies[0]")
        assert "lists dependency 'a' more than once" in str(error)

    def test_a_self_dependency(self) -> None:
        text = stage_list(
            f"{{id: a, handler: {START}}}", f"{{id: b, handler: {START}, dependencies: [a, b]}}"
        )
        error = load_error(text)
        assert (error.line, error.field) == (4, "stages[1].dependencies[1]")
        assert "stage 'b' depends on itself" in str(error)

    def test_a_self_dependency_at_its_list_item(self) -> None:
        text = stage_list(
            f"{{id: a, handler: {START}}}", f"{{id: b, handler: {START}, dependencies: [a, b]}}"
        )
        assert load_error(text).field == "stages[1].dependencies[1]"

    def test_a_cycle(self) -> None:
        text = stage_list(
            f"{{id: a, handler: {START}, dependencies: [b]}}",
            f"{{id: b, handler: {START}, dependencies: [a]}}",
        )
        error = load_error(text)
        at(error, 3, 5, "stages[0]")
        assert "the dependencies form a cycle: a -> b -> a" in str(error)

    def test_a_route_naming_no_direct_successor(self) -> None:
        text = stage_list(
            f"{{id: r, handler: {START}, routes: [x, y]}}",
            f"{{id: x, handler: {START}, dependencies: [r]}}",
            f"{{id: y, handler: {START}}}",
        )
        error = load_error(text)
        at(error, 3, column_of(text, 3, "[x, y]"), "stages[0].routes")
        assert error.value == "y"
        assert "which is not a successor" in str(error)

    def test_a_route_naming_no_stage(self) -> None:
        text = stage_list(
            f"{{id: r, handler: {START}, routes: [x, z]}}",
            f"{{id: x, handler: {START}, dependencies: [r]}}",
        )
        error = load_error(text)
        assert (error.line, error.field, error.value) == (3, "stages[0].routes", "z")
        assert "which is no stage of pipeline 'p'" in str(error)

    def test_routes_on_a_stage_of_another_kind(self) -> None:
        text = stage_list(
            f"id: r\n    handler: {START}\n    kind: work\n    routes: [x]",
            f"{{id: x, handler: {START}, dependencies: [r]}}",
        )
        error = load_error(text)
        at(error, 6, column_of(text, 6, "[x]"), "stages[0].routes")
        assert "routes= is for ROUTE stages" in str(error)

    def test_an_option_out_of_range(self) -> None:
        text = stage_list(f"id: a\n    handler: {START}\n    timeout: -1")
        error = load_error(text)
        at(error, 5, column_of(text, 5, "-1"), "stages[0].timeout")
        assert error.value == -1.0
        assert "timeout must be a positive number" in str(error)

    @pytest.mark.parametrize(
        ("option", "field"),
        [("max_parallel: 0", "stages[1].max_parallel"), ("optional: [zz]", "stages[1].optional")],
    )
    def test_an_option_error_of_a_later_stage_is_placed_at_that_stage(
        self, option: str, field: str
    ) -> None:
        text = stage_list(
            f"{{id: a, handler: {H}.numbers, with: {{n: 3}}}}",
            f"id: m\n    handler: {H}.echo\n    over: $a.values\n    with: {{v: $item}}\n"
            f"    {option}",
        )
        error = load_error(text)
        assert (error.line, error.field) == (8, field)

    def test_a_map_over_a_stage_of_its_list_makes_it_a_dependency(self) -> None:
        # with_map's "over names a non-dependency" cannot arise: the reference adds it
        text = stage_list(
            f"{{id: n, handler: {H}.numbers, with: {{n: 3}}}}",
            f"{{id: m, handler: {H}.echo, over: $n.values, with: {{v: $item}}}}",
        )
        assert loads_pipeline(text).graph.stages[1].dependencies == ("n",)

    def test_a_map_in_a_body_over_an_outer_stage(self) -> None:
        text = stage_list(
            f"{{id: n, handler: {H}.numbers, with: {{n: 3}}}}",
            f"id: l\n    loop:\n      body:\n        stages:\n          - id: m\n"
            f"            handler: {H}.echo\n            over: $n.values\n"
            '            with: {v: $item}\n      until: "true"\n      max_iterations: 3',
        )
        loaded = loads_pipeline(text)
        assert loaded.graph.stages[1].dependencies == ("n",)  # the loop reads n for its body
        result = run_virtual(Engine().run(loaded.graph))
        assert [item.data["v"] for item in result["l[1].m"].items] == [0, 1, 2]

    def test_a_loop_output_stage_that_is_no_stage_of_its_body(self) -> None:
        text = stage_list(
            f"id: l\n    loop:\n      body: {{stages: [{{id: a, handler: {START}}}]}}\n"
            '      until: "$output.count > 1"\n      max_iterations: 3\n      output_stage: zz'
        )
        error = load_error(text)
        assert error.line in (3, 9)
        assert error.field.startswith("stages[0]")
        assert error.value == "zz"
        assert "output_stage 'zz' is no stage of 'l-body'" in str(error)

    def test_a_subgraph_with_two_leaves_and_no_output_stage(self) -> None:
        text = stage_list(
            f"id: s\n    subgraph:\n      stages:\n        - {{id: a, handler: {START}}}\n"
            f"        - {{id: b, handler: {START}}}"
        )
        error = load_error(text)
        assert (error.line, error.field) == (3, "stages[0].output_stage")
        assert "ends in 2 stages ('a', 'b')" in str(error)

    def test_a_stage_with_nothing_to_run(self) -> None:
        error = load_error(stage_list("id: a"))
        at(error, 3, 5, "stages[0]")
        assert error.value == "a"
        assert "needs handler:, loop:, subgraph:, input:" in str(error)


class TestNestedFiles:
    def test_a_subgraph_file_that_does_not_exist(self, tmp_path: Path) -> None:
        path = tmp_path / "outer.yaml"
        text = "name: o\nstages:\n  - id: s\n    subgraph: missing.yaml\n"
        path.write_text(text)
        error = file_error(path)
        at(error, 4, column_of(text, 4, "missing"), "stages[0].subgraph.file")
        assert error.value == "missing.yaml"
        assert f"no file 'missing.yaml' (looked for {tmp_path / 'missing.yaml'})" in str(error)

    def test_two_files_including_each_other(self, tmp_path: Path) -> None:
        (tmp_path / "a.yaml").write_text("name: a\nstages:\n  - id: s\n    subgraph: b.yaml\n")
        (tmp_path / "b.yaml").write_text("name: b\nstages:\n  - id: s\n    subgraph: a.yaml\n")
        error = file_error(tmp_path / "a.yaml")
        at(error, 4, 15, "stages[0].subgraph.file")
        assert error.value == "b.yaml"
        assert "the files include each other: a.yaml -> b.yaml -> a.yaml" in str(error)

    def test_a_file_including_itself(self, tmp_path: Path) -> None:
        path = tmp_path / "self.yaml"
        path.write_text("name: a\nstages:\n  - id: s\n    subgraph: {file: self.yaml}\n")
        error = file_error(path)
        assert (error.line, error.field) == (4, "stages[0].subgraph.file")
        assert "the files include each other: self.yaml -> self.yaml" in str(error)

    def test_a_catalog_name_without_a_catalog(self) -> None:
        text = "name: p\nstages:\n  - id: s\n    subgraph: etl\n"
        error = load_error(text)
        at(error, 4, column_of(text, 4, "etl"), "stages[0].subgraph.pipeline")
        assert "no catalog to find it in" in str(error)


TEMPLATE = (
    "name: t\nparameters:\n  limit: integer\nstages:\n  - id: a\n"
    f"    handler: {H}.summarize\n    with: {{text: x, limit: $params.limit}}\n"
)


class TestTemplateParameters:
    @pytest.fixture
    def template(self, tmp_path: Path) -> Path:
        path = tmp_path / "t.yaml"
        path.write_text(TEMPLATE)
        return path

    def test_a_parameter_given_is_used_typed(self, template: Path) -> None:
        loaded = load_pipeline(template, parameters={"limit": 3})
        assert loaded.graph.names == ("a",)

    def test_a_parameter_missing(self, template: Path) -> None:
        with pytest.raises(ConfigurationError) as caught:
            load_pipeline(template)
        error = caught.value
        assert (error.field, error.value) == ("parameters.limit", None)
        assert "template parameter 'limit' is required" in plain_message(error)

    def test_an_unknown_parameter(self, template: Path) -> None:
        with pytest.raises(ConfigurationError) as caught:
            load_pipeline(template, parameters={"limit": 1, "limt": 2})
        error = caught.value
        assert (error.field, error.value) == ("parameters.limt", 2)
        assert "unknown template parameter 'limt' (did you mean 'limit'?)" in plain_message(error)

    def test_a_parameter_of_the_wrong_type(self, template: Path) -> None:
        with pytest.raises(ConfigurationError) as caught:
            load_pipeline(template, parameters={"limit": "many"})
        error = caught.value
        assert (error.field, error.value) == ("parameters.limit", "many")
        assert "valid integer" in plain_message(error)
        assert "(given 'many')" in str(error)

    def test_a_parameter_of_the_wrong_type_given_by_an_including_file(self, template: Path) -> None:
        outer = template.parent / "outer.yaml"
        text = "name: o\nstages:\n  - id: s\n    subgraph: {file: t.yaml, parameters: {limit: x}}\n"
        outer.write_text(text)
        error = file_error(outer)
        at(error, 4, column_of(text, 4, "t.yaml"), "stages[0].subgraph.file")
        assert "in 't.yaml'" in str(error)
        assert "parameter 'limit'" in str(error)
