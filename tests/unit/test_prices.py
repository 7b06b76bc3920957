"""Price tables, budgets, estimates and model chains: building them, and bad input refused."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from stageflow import (
    Budget,
    ConfigurationError,
    CostPolicy,
    Engine,
    Estimate,
    InvalidOptionError,
    ModelChain,
    ModelPrice,
    Pipeline,
    PriceTable,
    StageContext,
    UnknownModelError,
)
from stageflow.testing import run_virtual

from ._helpers import noop

TOML = """
currency = "EUR"

[models."gpt-4o"]
input = 2.50
output = 10.00

[models.local]
input = 0
output = 0

[fallback]
input = 1.00
output = 4.00
"""


class TestPriceTable:
    def test_of_a_mapping(self):
        table = PriceTable.of({"gpt-4o": {"input": 2.5, "output": 10}})

        assert table.models["gpt-4o"].input == 2.5
        assert table.models["gpt-4o"].output == 10.0
        assert table.fallback is None
        assert table.currency == "USD"

    def test_from_keywords_and_model_prices(self):
        table = PriceTable(
            models={"a": ModelPrice(input=1, output=2)},
            fallback={"input": 3, "output": 4},
            currency="EUR",
        )

        assert table.models["a"] == ModelPrice(input=1.0, output=2.0)
        assert table.fallback == ModelPrice(input=3, output=4)
        assert table.currency == "EUR"
        assert table == PriceTable.of(
            {"a": {"input": 1, "output": 2}}, fallback={"input": 3, "output": 4}, currency="EUR"
        )

    def test_costs_are_per_million_tokens(self):
        table = PriceTable.of({"gpt-4o": {"input": 2.5, "output": 10}})

        assert table.cost("gpt-4o", 1_000_000, 100_000) == pytest.approx(3.5)
        assert table.cost("gpt-4o", 0, 0) == 0.0
        assert table.cost("gpt-4o", 400, 200) == pytest.approx(0.003)
        assert table.cost("gpt-4o", 1, 0) == pytest.approx(2.5e-6)

    def test_a_model_not_listed_costs_the_fallback(self):
        table = PriceTable.of({"a": {"input": 1, "output": 2}}, fallback={"input": 5, "output": 7})

        assert table.price("b") == table.fallback
        assert table.cost("b", 1_000_000, 2_000_000) == pytest.approx(19.0)
        assert table.cost("a", 1_000_000, 2_000_000) == pytest.approx(5.0)

    def test_a_model_not_listed_without_fallback_is_unknown_and_the_known_are_listed(self):
        table = PriceTable.of(
            {"zeta": {"input": 1, "output": 1}, "alpha": {"input": 1, "output": 1}}
        )

        with pytest.raises(UnknownModelError) as info:
            table.cost("gpt-5", 1, 1)

        error = info.value
        assert isinstance(error, ConfigurationError)
        assert isinstance(error, KeyError)
        assert (error.model, error.known, error.field, error.value) == (
            "gpt-5",
            ("alpha", "zeta"),
            "model",
            "gpt-5",
        )
        assert str(error).startswith(
            "no price for model 'gpt-5'; the price table has 'alpha', 'zeta'"
        )
        assert "fallback" in str(error)

    def test_an_empty_table_says_it_has_no_models(self):
        with pytest.raises(UnknownModelError, match="the price table has none"):
            PriceTable().price("x")

    def test_a_table_is_frozen(self):
        table = PriceTable.of({"a": {"input": 1, "output": 2}})

        with pytest.raises(Exception, match="frozen"):
            table.currency = "EUR"
        with pytest.raises(Exception, match="frozen"):
            table.models["a"].input = 0

    def test_from_a_toml_file(self, tmp_path: Path):
        path = tmp_path / "prices.toml"
        path.write_text(TOML, encoding="utf-8")

        table = PriceTable.from_file(path)

        assert table.currency == "EUR"
        assert sorted(table.models) == ["gpt-4o", "local"]
        assert table.cost("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(12.5)
        assert table.cost("local", 10**9, 10**9) == 0.0
        assert table.cost("other", 1_000_000, 0) == pytest.approx(1.0)
        assert PriceTable.from_file(str(path)) == table

    def test_from_a_json_file(self, tmp_path: Path):
        path = tmp_path / "prices.json"
        data = {"models": {"gpt-4o": {"input": 2.5, "output": 10}}, "currency": "USD"}
        path.write_text(json.dumps(data), encoding="utf-8")

        table = PriceTable.from_file(path)

        assert table == PriceTable.of({"gpt-4o": {"input": 2.5, "output": 10}})

    @pytest.mark.parametrize(
        ("models", "field", "value"),
        [
            ({"gpt-4o": {"input": 2.5}}, "models.gpt-4o.output", {"input": 2.5}),
            ({"gpt-4o": {"input": 2.5, "output": -10}}, "models.gpt-4o.output", -10),
            ({"gpt-4o": {"input": "cheap", "output": 1}}, "models.gpt-4o.input", "cheap"),
            ({"gpt-4o": {"input": math.nan, "output": 1}}, "models.gpt-4o.input", math.nan),
            ({"gpt-4o": {"input": math.inf, "output": 1}}, "models.gpt-4o.input", math.inf),
            ({"gpt-4o": {"input": 1, "output": 1, "cached": 0.5}}, "models.gpt-4o.cached", 0.5),
            ({"gpt-4o": 2.5}, "models.gpt-4o", 2.5),
            ({"gpt-4o": [1, 2]}, "models.gpt-4o", [1, 2]),
        ],
    )
    def test_a_bad_price_is_refused_naming_the_field_and_value(self, models, field, value):
        with pytest.raises(ConfigurationError) as info:
            PriceTable.of(models)

        error = info.value
        assert error.field == field
        assert str(error).startswith(f"price table: {field} ")
        if "missing" not in str(error) and "not a known field" not in str(error):
            assert repr(value) in str(error)  # a wrong value is shown; the field says the rest
        if "missing" in str(error):
            return  # nothing to show but the field
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(error.value)
        else:
            assert error.value == value

    def test_an_unknown_field_is_named_and_the_known_are_listed(self):
        with pytest.raises(ConfigurationError, match="colour is not a known field") as info:
            PriceTable(models={}, colour="blue")

        assert info.value.field == "colour"
        assert "models, fallback, currency" in str(info.value)

    def test_a_currency_that_is_no_string_is_refused(self):
        with pytest.raises(ConfigurationError, match="currency") as info:
            PriceTable(currency=5)

        assert info.value.field == "currency"

    def test_many_problems_are_counted(self):
        with pytest.raises(ConfigurationError, match=r"\(and 1 more\)"):
            PriceTable.of({"a": {"input": -1, "output": -1}})

    def test_of_needs_a_mapping(self):
        with pytest.raises(ConfigurationError, match="mapping of model names") as info:
            PriceTable.of([("gpt-4o", {"input": 1, "output": 1})])

        assert info.value.field == "models"

    @pytest.mark.parametrize("price", [True, "2.5", None])
    def test_a_price_of_the_wrong_type_is_refused(self, price):
        with pytest.raises(ConfigurationError) as info:
            PriceTable.of({"gpt-4o": {"input": price, "output": 1}})

        assert info.value.field == "models.gpt-4o.input"
        assert info.value.value == price
        assert repr(price) in str(info.value)

    def test_a_file_with_a_bad_price_names_the_field_and_value(self, tmp_path: Path):
        path = tmp_path / "prices.toml"
        path.write_text(TOML.replace("output = 10.00", "output = -10.0"), encoding="utf-8")

        with pytest.raises(ConfigurationError) as info:
            PriceTable.from_file(path)

        assert info.value.field == "models.gpt-4o.output"
        assert info.value.value == -10.0
        assert "models.gpt-4o.output" in str(info.value)
        assert "-10.0" in str(info.value)

    def test_an_unreadable_file_is_refused_naming_it(self, tmp_path: Path):
        path = tmp_path / "missing.toml"

        with pytest.raises(ConfigurationError, match="cannot read the price table") as info:
            PriceTable.from_file(path)

        assert (info.value.field, info.value.value) == ("path", str(path))
        assert str(path) in str(info.value)

    def test_a_directory_is_unreadable(self, tmp_path: Path):
        with pytest.raises(ConfigurationError, match="cannot read"):
            PriceTable.from_file(tmp_path)

    @pytest.mark.parametrize(
        ("name", "text", "kind"),
        [
            ("p.toml", "models = [", "TOML"),
            ("p.json", "{models:", "JSON"),
            ("p.txt", "x y", "TOML"),
        ],
    )
    def test_an_invalid_file_is_refused_saying_what_it_should_be(self, tmp_path, name, text, kind):
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")

        with pytest.raises(ConfigurationError, match=f"is not valid {kind}") as info:
            PriceTable.from_file(path)

        assert (info.value.field, info.value.value) == ("path", str(path))

    @pytest.mark.parametrize("content", ["[1, 2]", '"prices"', "42", "null"])
    def test_a_json_file_holding_no_table_is_refused(self, tmp_path: Path, content):
        path = tmp_path / "prices.json"
        path.write_text(content, encoding="utf-8")

        with pytest.raises(ConfigurationError, match="must hold a table") as info:
            PriceTable.from_file(path)

        assert info.value.field == "path"

    def test_an_empty_toml_file_is_an_empty_table(self, tmp_path: Path):
        path = tmp_path / "prices.toml"
        path.write_text("", encoding="utf-8")

        assert PriceTable.from_file(path) == PriceTable()


class TestEngineOptions:
    def test_a_mapping_of_prices_becomes_a_price_table(self):
        engine = Engine(prices={"gpt-4o": {"input": 2.5, "output": 10}})

        prices = engine.governance.prices
        assert isinstance(prices, PriceTable)
        assert prices.cost("gpt-4o", 1_000_000, 0) == 2.5

    def test_a_price_table_is_kept_as_it_is(self):
        table = PriceTable.of({"a": {"input": 1, "output": 1}})

        assert Engine(prices=table).governance.prices is table

    def test_a_bad_mapping_of_prices_is_refused_naming_the_field(self):
        with pytest.raises(ConfigurationError) as info:
            Engine(prices={"gpt-4o": {"input": -1, "output": 1}})

        assert info.value.field == "models.gpt-4o.input"

    @pytest.mark.parametrize("prices", [42, "prices.toml", [("a", 1)], True])
    def test_prices_that_are_no_table_or_mapping_are_refused(self, prices):
        with pytest.raises(ConfigurationError, match="prices must be a PriceTable") as info:
            Engine(prices=prices)

        assert (info.value.field, info.value.value) == ("prices", prices)

    def test_an_engine_without_budget_prices_or_chains_governs_nothing(self):
        assert Engine().governance is None
        assert Engine(model_chains=[]).governance is None

    def test_model_chains_must_be_a_list_of_chains(self):
        with pytest.raises(ConfigurationError, match="must be a list of ModelChain") as info:
            Engine(model_chains=ModelChain("a", "b"))  # type: ignore[arg-type]
        assert info.value.field == "model_chains"
        with pytest.raises(ConfigurationError, match="must be a list of ModelChain"):
            Engine(model_chains="ab")  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="must be a list of ModelChain"):
            Engine(model_chains=42)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="must hold ModelChain objects"):
            Engine(model_chains=[("a", "b")])  # type: ignore[list-item]

    def test_a_model_in_two_chains_is_refused(self):
        with pytest.raises(ConfigurationError, match="'mini' is in two model chains") as info:
            Engine(model_chains=[ModelChain("big", "mini"), ModelChain("other", "mini")])

        assert info.value.field == "model_chains"

    def test_chains_are_indexed_by_model(self):
        first, second = ModelChain("a", "b"), ModelChain("c")

        chains = Engine(model_chains=(first, second)).governance.chains

        assert chains == {"a": first, "b": first, "c": second}


class TestBudget:
    def test_a_budget_keeps_its_limits(self):
        budget = Budget(max_tokens=20_000, max_cost=5, warn_at=0.8, policy="downgrade")

        assert (budget.max_tokens, budget.max_cost, budget.warn_at) == (20_000, 5.0, 0.8)
        assert isinstance(budget.max_cost, float)
        assert budget.policy is CostPolicy.DOWNGRADE
        assert Budget(max_tokens=1).policy is CostPolicy.BLOCK
        assert Budget(max_cost=0).max_cost == 0.0
        assert repr(Budget(max_tokens=20_000, warn_at=0.8)) == (
            "Budget(max_tokens=20000, warn_at=0.8, policy='block')"
        )

    def test_budgets_are_values(self):
        assert Budget(max_tokens=5, policy="notify") == Budget(
            max_tokens=5, policy=CostPolicy.NOTIFY
        )
        assert Budget(max_tokens=5) != Budget(max_tokens=6)
        assert Budget(max_tokens=5) != Estimate(5)
        assert len({Budget(max_tokens=5), Budget(max_tokens=5)}) == 1
        with pytest.raises(AttributeError, match="immutable"):
            Budget(max_tokens=5).max_tokens = 6  # type: ignore[misc]

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"max_tokens": -1}, "max_tokens"),
            ({"max_tokens": True}, "max_tokens"),
            ({"max_tokens": 1.5}, "max_tokens"),
            ({"max_tokens": "100"}, "max_tokens"),
            ({"max_cost": -0.5}, "max_cost"),
            ({"max_cost": False}, "max_cost"),
            ({"max_cost": math.nan}, "max_cost"),
            ({"max_cost": math.inf}, "max_cost"),
            ({"max_cost": "1"}, "max_cost"),
            ({"max_tokens": 10, "warn_at": 0}, "warn_at"),
            ({"max_tokens": 10, "warn_at": 1}, "warn_at"),
            ({"max_tokens": 10, "warn_at": 1.5}, "warn_at"),
            ({"max_tokens": 10, "warn_at": -0.5}, "warn_at"),
            ({"max_tokens": 10, "warn_at": "x"}, "warn_at"),
            ({"max_tokens": 10, "warn_at": True}, "warn_at"),
            ({"max_tokens": 10, "warn_at": math.nan}, "warn_at"),
            ({}, "max_tokens"),
            ({"max_tokens": None, "max_cost": None}, "max_tokens"),
        ],
    )
    def test_bad_limits_are_refused_naming_the_field(self, kwargs, field):
        with pytest.raises(ConfigurationError) as info:
            Budget(**kwargs)

        assert info.value.field == field
        assert field in str(info.value)

    def test_an_unknown_policy_is_refused_listing_the_four(self):
        with pytest.raises(ConfigurationError) as info:
            Budget(max_tokens=10, policy="stop")

        assert info.value.field == "policy"
        assert info.value.value == "stop"
        for policy in ("'block'", "'downgrade'", "'notify'", "'continue'"):
            assert policy in str(info.value)

    def test_a_budget_field_cannot_be_deleted(self):
        budget = Budget(max_tokens=5)

        with pytest.raises(AttributeError):
            del budget.max_tokens  # type: ignore[misc]
        assert budget.max_tokens == 5


class TestEstimate:
    def test_an_estimate_keeps_tokens_and_cost(self):
        assert (Estimate(600).tokens, Estimate(600).cost) == (600, 0.0)
        assert Estimate(tokens=10, cost=1) == Estimate(10, 1.0)
        assert repr(Estimate(tokens=10, cost=0.5)) == "Estimate(tokens=10, cost=0.5)"

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"tokens": -1}, "tokens"),
            ({"tokens": 1.5}, "tokens"),
            ({"tokens": None}, "tokens"),
            ({"tokens": True}, "tokens"),
            ({"cost": -1}, "cost"),
            ({"cost": math.inf}, "cost"),
            ({"cost": "0.5"}, "cost"),
        ],
    )
    def test_bad_estimates_are_refused_naming_the_field(self, kwargs, field):
        with pytest.raises(ConfigurationError) as info:
            Estimate(**kwargs)

        assert info.value.field == field


class TestModelChain:
    def test_after_steps_down_and_runs_out(self):
        chain = ModelChain("gpt-4o", "gpt-4o-mini", "local")

        assert [chain.after("gpt-4o", n) for n in range(4)] == [
            "gpt-4o",
            "gpt-4o-mini",
            "local",
            None,
        ]
        assert chain.after("gpt-4o-mini", 1) == "local"
        assert chain.after("local", 1) is None
        assert list(chain) == ["gpt-4o", "gpt-4o-mini", "local"]
        assert len(chain) == 3
        assert chain == ModelChain("gpt-4o", "gpt-4o-mini", "local")
        assert repr(chain) == "ModelChain('gpt-4o', 'gpt-4o-mini', 'local')"

    @pytest.mark.parametrize(
        ("models", "match"),
        [
            ((), "at least one model"),
            (("a", "b", "a"), "'a' more than once"),
            (("a", 1), "non-empty strings"),
            (("a", ""), "non-empty strings"),
            ((["a", "b"],), "non-empty strings"),
        ],
    )
    def test_bad_chains_are_refused(self, models, match):
        with pytest.raises(ConfigurationError, match=match) as info:
            ModelChain(*models)

        assert info.value.field == "models"


class TestStageOptions:
    @pytest.mark.parametrize(
        ("option", "value"),
        [
            ("budget", "x"),
            ("budget", 1000),
            ("budget", Estimate(5)),
            ("estimate", -1),
            ("estimate", "x"),
            ("estimate", True),
            ("estimate", 1.5),
            ("estimate", Budget(max_tokens=1)),
        ],
    )
    def test_a_bad_budget_or_estimate_is_refused_naming_stage_and_option(self, option, value):
        with pytest.raises(InvalidOptionError) as info:
            Pipeline().with_stage("summarize", noop, **{option: value})

        error = info.value
        assert (error.stage, error.option, error.value) == ("summarize", option, value)
        assert "stage 'summarize'" in str(error)
        assert option in str(error)

    def test_a_number_estimate_is_tokens(self):
        graph = (
            Pipeline()
            .with_stage("a", noop, estimate=600)
            .with_stage("b", noop, estimate=Estimate(tokens=1, cost=0.5))
            .with_stage("c", noop, budget=Budget(max_tokens=5))
            .build()
        )

        specs = {s.name: s for s in graph.stages}
        assert specs["a"].estimate == Estimate(tokens=600)
        assert specs["b"].estimate == Estimate(tokens=1, cost=0.5)
        assert specs["c"].budget == Budget(max_tokens=5)
        assert specs["c"].estimate is None
        assert specs["a"].budget is None

    @pytest.mark.parametrize("bad", ["", 42, None])
    def test_ctx_model_needs_a_model_name(self, bad):
        errors: list[BaseException] = []

        async def stage(ctx: StageContext) -> None:
            try:
                ctx.model(bad)
            except ConfigurationError as error:
                errors.append(error)
                raise

        result = run_virtual(Engine().run(Pipeline().with_stage("s", stage).build()))

        (error,) = errors
        assert error.field == "model"
        assert error.value == bad
        assert "stage 's'" in str(error)
        assert result["s"].error is error


class TestImports:
    def test_importing_stageflow_does_not_import_pydantic(self):
        code = (
            "import sys, stageflow\n"
            "assert 'pydantic' not in sys.modules, 'pydantic imported'\n"
            "from stageflow import Budget, Engine, Estimate, ModelChain, Pipeline\n"
            "Engine(budget=Budget(max_tokens=5), model_chains=[ModelChain('a')])\n"
            "assert 'pydantic' not in sys.modules, 'pydantic imported by an engine'\n"
            "from stageflow import PriceTable, ModelPrice\n"
            "assert 'pydantic' in sys.modules\n"
            "assert PriceTable.of({'m': {'input': 1, 'output': 1}}).cost('m', 10**6, 0) == 1\n"
            "assert ModelPrice(input=1, output=2).output == 2\n"
        )

        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )

        assert done.returncode == 0, done.stderr

    def test_an_unknown_attribute_of_stageflow_is_an_attribute_error(self):
        import stageflow

        with pytest.raises(AttributeError, match="no attribute 'PriceTables'"):
            stageflow.PriceTables  # noqa: B018
