"""The loader's less travelled paths: misplaced fields, odd values, imports that fail in
their own ways, non-bool answers at run time, outputs of branches not taken."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from stageflow import Catalog, Engine, ExpressionError, MissingInputError, Pipeline, StageStatus
from stageflow.adapters.declarative import (
    import_object,
    load_catalog,
    load_pipeline,
    loads_pipeline,
)
from stageflow.errors import ConfigurationError, PipelineFileError
from stageflow.testing import run_virtual

from .test_load_errors import START, H, at, column_of, load_error


def text_of(source: str) -> str:
    return textwrap.dedent(source)


# ----------------------------------------------------------------------------- misplaced


@pytest.mark.parametrize(
    ("stage", "field", "said"),
    [
        (f"id: a\n    handler: {START}\n    loop: {{body: {{stages: [{{id: b, handler: "
         f'{START}}}]}}, until: "true", max_iterations: 2}}', "stages[0].loop",
         "has one of handler:, loop:, subgraph: and input:"),
        (f"id: a\n    loop: {{body: {{stages: [{{id: b, handler: {START}}}]}}, until: \"true\", "
         "max_iterations: 2}\n    with: {x: 1}", "stages[0].with",
         "with: does not apply to a stage with loop:"),
        ('id: a\n    routes: [{to: b, when: "true"}, {to: c}]\n    with: {x: 1}',
         "stages[0].with", "with: needs a handler:"),
        (f"id: a\n    handler: {START}\n    key: $item.id", "stages[0].key",
         "key: is for a map: give over: too"),
        (f"id: a\n    handler: {START}\n    max_parallel: 2", "stages[0].max_parallel",
         "max_parallel: is for a map"),
        (f"id: a\n    subgraph: {{stages: [{{id: b, handler: {START}}}]}}\n    over: $inputs.xs",
         "stages[0].over", "over: does not apply to a stage with subgraph:"),
    ],
    ids=["handler-and-loop", "with-on-loop", "with-on-routes", "key", "max-parallel",
         "over-on-subgraph"],
)  # fmt: skip
def test_a_field_that_does_not_apply_is_refused_not_ignored(stage: str, field: str,
                                                            said: str) -> None:  # fmt: skip
    text = f"name: p\ninputs: {{xs: array}}\nstages:\n  - {stage}\n" + "".join(
        f"  - {{id: {n}, handler: {START}, dependencies: [a]}}\n" for n in ("b", "c")
        if "routes" in stage
    )  # fmt: skip
    error = load_error(text)
    assert error.field == field
    assert said in str(error)


def test_an_invalid_pipeline_name() -> None:
    error = load_error(f"name: 'not a name!'\nstages:\n  - {{id: a, handler: {START}}}\n")
    at(error, 1, 7, "name")


def test_several_schema_problems_are_counted_and_listed() -> None:
    error = load_error("name: p\nstages:\n  - {id: a, handlr: x, tmeout: 3, retri: 2}\n")
    assert "and 2 more" in str(error)
    assert "(line 3)" in str(error)


# ----------------------------------------------------------------------------- parameters


def test_parameters_given_that_are_no_mapping() -> None:
    with pytest.raises(ConfigurationError, match="parameters must be a mapping") as caught:
        loads_pipeline(f"name: p\nstages:\n  - {{id: a, handler: {START}}}\n",
                       parameters=["x"])  # type: ignore[arg-type]  # fmt: skip
    assert caught.value.field == "parameters"


def test_a_parameters_section_that_is_no_mapping() -> None:
    error = load_error(f"name: p\nparameters: [x]\nstages:\n  - {{id: a, handler: {START}}}\n")
    at(error, 2, 13, "parameters")


def test_a_parameter_of_an_unknown_type() -> None:
    text = f"name: p\nparameters:\n  x: {{type: strng}}\nstages:\n  - {{id: a, handler: {START}}}\n"
    error = load_error(text)
    assert error.field == "parameters.x"
    assert error.line == 3


def test_handlers_that_are_no_mapping() -> None:
    with pytest.raises(ConfigurationError, match="handlers must be a mapping") as caught:
        loads_pipeline(f"name: p\nstages:\n  - {{id: a, handler: {START}}}\n",
                       handlers=[START])  # type: ignore[arg-type]  # fmt: skip
    assert caught.value.field == "handlers"


# ----------------------------------------------------------------------------- imports


@pytest.mark.parametrize(
    ("dotted", "said"),
    [
        ("1bad", "is no dotted path"),
        ("a b", "is no dotted path"),
        (f"{H}:nothing", "has no attribute 'nothing'"),
    ],
)
def test_import_object_refuses_what_it_cannot_find(dotted: str, said: str) -> None:
    with pytest.raises(LookupError, match=said):
        import_object(dotted)


def test_import_object_takes_module_colon_attribute() -> None:
    from tests.unit.declarative import handlers

    assert import_object(f"{H}:Report.model_fields") is handlers.Report.model_fields


@pytest.fixture
def broken_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Modules that fail to import in their own ways."""
    prefix = f"m_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{prefix}_raises.py").write_text("raise RuntimeError('at import')\n")
    (tmp_path / f"{prefix}_needs.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return prefix


def test_a_module_whose_import_raises_is_named_with_its_error(broken_modules: str) -> None:
    error = load_error(f"name: p\nstages:\n  - id: a\n    handler: {broken_modules}_raises.f\n")
    assert "raised RuntimeError: at import" in str(error)


def test_a_module_whose_own_import_fails_names_what_is_missing(broken_modules: str) -> None:
    error = load_error(f"name: p\nstages:\n  - id: a\n    handler: {broken_modules}_needs.f\n")
    assert "no_such_dependency_xyz" in str(error)
    assert error.field == "stages[0].handler"
    with pytest.raises(LookupError, match="no_such_dependency_xyz"):
        import_object(f"{broken_modules}_needs:f")


def test_a_condition_that_is_not_callable() -> None:
    error = load_error(f"name: p\nstages:\n  - id: a\n    handler: {START}\n"
                       f"    when: {{python: {H}.START_VALUE}}\n")  # fmt: skip
    assert error.field == "stages[0].when.python"


# ----------------------------------------------------------------------------- values


def test_a_dollar_word_that_is_no_reference_says_to_double_it() -> None:
    text = f"name: p\nstages:\n  - id: b\n    handler: {H}.echo\n    with: {{x: '$a b'}}\n"
    error = load_error(text)
    assert "is no reference" in str(error)
    assert "write $$ for a literal $" in str(error)


def test_a_double_dollar_is_a_literal() -> None:
    text = f"name: p\nstages:\n  - id: b\n    handler: {H}.echo\n    with: {{x: '$$5'}}\n"
    assert run_virtual(Engine().run(loads_pipeline(text).graph))["b"].data == {"x": "$5"}


def test_an_over_reference_to_an_unknown_stage_is_placed() -> None:
    text = f"name: p\nstages:\n  - id: m\n    handler: {H}.echo\n    over: $nothing.xs\n"
    error = load_error(text)
    at(error, 5, column_of(text, 5, "$nothing"), "stages[0].over")


def test_an_expression_error_in_a_block_scalar_is_at_the_value() -> None:
    text = (f"name: p\ninputs: {{n: integer}}\nstages:\n  - id: b\n    handler: {START}\n"
            "    when: |\n      $inputs.n > 1 &&\n      $inputs.n > > 2\n")  # fmt: skip
    error = load_error(text)
    assert error.field == "stages[0].when"
    assert error.line in (6, 7)


def test_an_input_schema_of_an_unknown_type_name() -> None:
    error = load_error("name: p\nstages:\n  - id: ok\n    input: {schema: strng}\n")
    assert error.field == "stages[0].input.schema"
    assert "unknown type 'strng' (did you mean 'string'?)" in str(error)


# ----------------------------------------------------------------------------- nested graphs


@pytest.mark.parametrize(
    ("subgraph", "said"),
    [
        (
            f"{{stages: [{{id: b, handler: {START}}}], file: other.yaml}}",
            "one of stages:, file: and pipeline:",
        ),
        (
            f"{{stages: [{{id: b, handler: {START}}}], parameters: {{x: 1}}}}",
            "parameters: are for a file: or a pipeline: template",
        ),
        ("{pipeline: elsewhere, parameters: {x: 1}}", "parameters: need a catalog of files"),
        ("{pipeline: nothing}", "no pipeline 'nothing' in the catalog"),
    ],
    ids=["two-sources", "inline-parameters", "plain-catalog-template", "unknown-name"],
)
def test_a_nested_graph_given_wrong(subgraph: str, said: str) -> None:
    catalog = Catalog({"elsewhere": Pipeline("e").with_stage("a", lambda ctx: {})})
    error = load_error(f"name: p\nstages:\n  - id: s\n    subgraph: {subgraph}\n",
                       catalog=catalog)  # fmt: skip
    assert said in str(error)
    assert error.field.startswith("stages[0].subgraph")


def test_a_template_parameter_refused_in_a_nested_catalog_template(tmp_path: Path) -> None:
    (tmp_path / "t.yaml").write_text(
        f"name: sized\nparameters: {{n: integer}}\nstages:\n  - id: a\n    handler: {H}.numbers\n"
        "    with: {n: $params.n}\n"
    )
    (tmp_path / "u.yaml").write_text(
        "name: user\nstages:\n  - id: s\n    subgraph: {pipeline: sized, parameters: {n: many}}\n"
    )
    with pytest.raises(PipelineFileError) as caught:
        load_catalog(tmp_path)
    assert caught.value.field == "stages[0].subgraph.pipeline"
    assert "parameter 'n'" in str(caught.value)


def test_a_template_of_a_non_file_entry(tmp_path: Path) -> None:
    catalog = load_catalog(tmp_path)
    catalog.add("py", Pipeline("py").with_stage("a", lambda ctx: {}))
    with pytest.raises(ConfigurationError, match="is not a file: it takes no parameters"):
        catalog.template("py", {})


# ----------------------------------------------------------------------------- run time


def _failure(text: str, data: dict[str, Any] | None = None) -> BaseException:
    result = run_virtual(Engine().run(loads_pipeline(text).graph, data=data or {}))
    failed = [s for s in result.stages.values() if s.status is StageStatus.FAILED]
    assert failed, result
    assert failed[0].error is not None
    return failed[0].error


def test_a_when_that_gives_no_bool_fails_the_stage_naming_it() -> None:
    error = _failure(f"name: p\ninputs: {{x: any}}\nstages:\n  - id: a\n    handler: {START}\n"
                     '    when: "$inputs.x"\n', {"x": 5})  # fmt: skip
    assert isinstance(error, ExpressionError)
    assert "it gave 5, not a bool" in str(error)


def test_a_route_when_that_gives_no_bool() -> None:
    error = _failure(
        f"name: p\ninputs: {{x: any}}\nstages:\n  - id: r\n    routes: "
        f'[{{to: a, when: "$inputs.x"}}, {{to: b}}]\n'
        f"  - {{id: a, handler: {START}, dependencies: [r]}}\n"
        f"  - {{id: b, handler: {START}, dependencies: [r]}}\n",
        {"x": "yes"},
    )
    assert "it gave 'yes', not a bool" in str(error)


def test_an_until_that_gives_no_bool() -> None:
    error = _failure(
        f"name: p\nstages:\n  - id: l\n    loop:\n      body: {{stages: [{{id: a, handler: "
        f'{H}.echo, with: {{n: 3}}}}]}}\n      until: "$output.n"\n      max_iterations: 2\n'
    )
    assert "it gave 3, not a bool" in str(error)


def test_outputs_of_a_branch_not_taken_are_none_and_a_missing_input_raises() -> None:
    loaded = loads_pipeline(
        f"name: p\ninputs: {{go: boolean}}\nstages:\n  - id: a\n    handler: {H}.echo\n"
        "    with: {v: 1}\n    when: $inputs.go\noutputs:\n  v: $a.v\n  go: $inputs.go\n"
    )
    skipped = run_virtual(Engine().run(loaded.graph, data={"go": False}))
    assert loaded.outputs(skipped, {"go": False}) == {"v": None, "go": False}
    with pytest.raises(MissingInputError):
        loaded.outputs(skipped, {})


def test_a_handler_object_with_execute_and_a_retry_count(tmp_path: Path) -> None:
    text = (f"name: p\nstages:\n  - id: a\n    handler: {H}.Shouter\n    with: {{word: owl}}\n"
            "    retry: 2\n")  # fmt: skip
    loaded = loads_pipeline(text)
    assert loaded.graph["a"].retry is not None
    assert loaded.graph["a"].retry.attempts == 2
    assert run_virtual(Engine().run(loaded.graph))["a"].data == {"word": "OWL"}


def test_a_file_path_loads_with_its_folder_for_nested_files(tmp_path: Path) -> None:
    (tmp_path / "inner.yaml").write_text(f"name: inner\nstages:\n  - {{id: x, handler: {START}}}\n")
    (tmp_path / "outer.yaml").write_text(
        "name: outer\nstages:\n  - {id: s, subgraph: inner.yaml}\n"
    )
    result = run_virtual(Engine().run(load_pipeline(tmp_path / "outer.yaml").graph))
    assert result["s.x"].ok


# ----------------------------------------------------------------------------- the text


def test_a_file_too_large_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stageflow.adapters.declarative import _source

    monkeypatch.setattr(_source, "MAX_FILE_BYTES", 100)
    path = tmp_path / "big.yaml"
    path.write_text("name: p\n" + "# padding\n" * 20)
    with pytest.raises(PipelineFileError, match="more than 100") as caught:
        load_pipeline(path)
    assert caught.value.value == path.stat().st_size
    with pytest.raises(PipelineFileError, match="characters, more than 100"):
        loads_pipeline("name: p\n" + "# padding\n" * 20)


def test_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(PipelineFileError, match="cannot read the file as UTF-8 text"):
        load_pipeline(path)


def test_an_alias_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from stageflow.adapters.declarative import _source

    monkeypatch.setattr(_source, "MAX_NODES", 1000)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    bomb += "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nname: p\nstages: [*c]\n"
    with pytest.raises(PipelineFileError, match="expands to more than 1000 values"):
        loads_pipeline(bomb)


@pytest.mark.parametrize(
    ("text", "said", "line"),
    [
        ("name: p\n? [a, b]\n: 1\nstages: []\n", "a key must be a plain value", 2),
        ("name: !!python/object:os.system x\nstages: []\n", "could not determine a constructor", 1),
    ],
    ids=["mapping-key", "python-tag"],
)
def test_yaml_that_parses_but_is_not_plain_data(text: str, said: str, line: int) -> None:
    error = load_error(text)
    assert said in str(error)
    assert error.line == line


def test_toml_that_does_not_parse_is_placed(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\n[[stages]]\nid = \n')
    with pytest.raises(PipelineFileError, match="not valid TOML") as caught:
        load_pipeline(path)
    assert caught.value.line == 3


def test_json_with_a_syntax_error_keeps_its_position(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text('{"name": "p",\n "stages": [\n  {"id": "a", "handler": }\n]}\n')
    with pytest.raises(PipelineFileError) as caught:
        load_pipeline(path)
    assert caught.value.line == 3


def test_a_stage_s_runner_and_resources() -> None:
    loaded = loads_pipeline(f"name: p\nstages:\n  - id: a\n    handler: {START}\n"
                            "    runner: ray\n    resources: {num_cpus: 2}\n")  # fmt: skip
    assert loaded.graph["a"].placement == ("ray", {"num_cpus": 2})


def test_a_runner_on_an_input_stage_is_refused_not_ignored() -> None:
    error = load_error("name: p\nstages:\n  - id: ok\n    input: {schema: boolean}\n"
                       "    runner: ray\n")  # fmt: skip
    assert error.field == "stages[0].runner"
    assert "runner: does not apply to a stage with input:" in str(error)
