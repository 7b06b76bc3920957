"""Catalog: named pipelines, each with its graph, description and run data model."""

from __future__ import annotations

import pickle

import pytest
from pydantic import BaseModel

from stageflow import Catalog, CatalogEntry, Pipeline, StageGraph
from stageflow.errors import ConfigurationError, UnknownPipelineError


async def step(ctx):
    return {"ok": True}


def pipeline(name: str = "etl") -> Pipeline:
    return Pipeline(name).with_stage("step", step)


class Order(BaseModel):
    order_id: int
    note: str = ""


class TestEntries:
    def test_a_pipeline_is_built_when_added_and_a_graph_is_kept_as_is(self):
        graph = pipeline("b").build()
        catalog = Catalog({"a": pipeline("a"), "b": graph})
        assert isinstance(catalog["a"].graph, StageGraph)
        assert catalog["a"].graph.name == "a"
        assert catalog["b"].graph is graph

    def test_entries_keep_the_order_they_were_added_in(self):
        catalog = Catalog().add("z", pipeline()).add("a", pipeline()).add("m", pipeline())
        assert catalog.names == ("z", "a", "m")
        assert [entry.name for entry in catalog] == ["z", "a", "m"]
        assert len(catalog) == 3
        assert "a" in catalog
        assert "q" not in catalog

    def test_an_entry_keeps_its_description_category_model_and_tags(self):
        catalog = Catalog().add(
            "orders", pipeline(), description="Ships orders", category="shop", data=Order,
            tags=["daily", "money"],
        )  # fmt: skip
        entry = catalog["orders"]
        assert isinstance(entry, CatalogEntry)
        assert (entry.description, entry.category, entry.data, entry.tags) == (
            "Ships orders", "shop", Order, ("daily", "money"),
        )  # fmt: skip

    def test_of_accepts_a_catalog_or_a_mapping(self):
        catalog = Catalog({"a": pipeline()})
        assert Catalog.of(catalog) is catalog
        assert Catalog.of({"b": pipeline()}).names == ("b",)


class TestUnknownPipelines:
    def test_an_unknown_name_is_an_error_listing_the_known_ones(self):
        catalog = Catalog({"etl": pipeline(), "eval": pipeline()})
        with pytest.raises(UnknownPipelineError) as caught:
            catalog["elt"]
        error = caught.value
        assert (error.pipeline, error.field, error.value) == ("elt", "pipeline", "elt")
        assert error.known == ("etl", "eval")
        assert str(error) == "no pipeline named 'elt' in the catalog; it has 'etl', 'eval'"
        assert isinstance(error, KeyError)

    def test_the_error_pickles_with_its_fields(self):
        error = UnknownPipelineError.of("x", ["a"])
        copy = pickle.loads(pickle.dumps(error))
        assert (copy.pipeline, copy.known, str(copy)) == ("x", ("a",), str(error))

    def test_a_name_that_is_no_str_is_unknown_too(self):
        with pytest.raises(UnknownPipelineError):
            Catalog({"a": pipeline()})[["a"]]  # type: ignore[index]


class TestRunData:
    def test_without_a_model_any_object_is_taken_and_the_schema_is_an_object(self):
        entry = Catalog({"a": pipeline()})["a"]
        assert entry.validate_data({"x": 1}) == {"x": 1}
        assert entry.validate_data(None) == {}
        assert entry.data_schema() == {"type": "object"}

    def test_with_a_model_data_is_validated_and_made_json_ready(self):
        entry = Catalog().add("orders", pipeline(), data=Order)["orders"]
        assert entry.validate_data({"order_id": "7"}) == {"order_id": 7, "note": ""}
        assert entry.data_schema()["properties"]["order_id"]["type"] == "integer"

    def test_data_that_does_not_match_names_the_field_and_the_value(self):
        entry = Catalog().add("orders", pipeline(), data=Order)["orders"]
        with pytest.raises(ConfigurationError) as caught:
            entry.validate_data({"order_id": "seven"})
        assert (caught.value.field, caught.value.value) == ("data.order_id", "seven")
        assert "orders" in str(caught.value)
        assert "order_id" in str(caught.value)

    def test_data_that_is_no_object_is_refused(self):
        entry = Catalog({"a": pipeline()})["a"]
        with pytest.raises(ConfigurationError) as caught:
            entry.validate_data([1, 2])  # type: ignore[arg-type]
        assert (caught.value.field, caught.value.value) == ("data", [1, 2])


class TestBadInput:
    @pytest.mark.parametrize("name", ["", "   ", 3, None, "x" * 201])
    def test_a_name_must_be_a_non_empty_str(self, name):
        with pytest.raises(ConfigurationError) as caught:
            Catalog().add(name, pipeline())  # type: ignore[arg-type]
        assert (caught.value.field, caught.value.value) == ("name", name)

    def test_a_name_is_taken_once(self):
        catalog = Catalog({"a": pipeline()})
        with pytest.raises(ConfigurationError, match="not in the catalog yet"):
            catalog.add("a", pipeline())

    def test_a_pipeline_must_be_a_pipeline_or_a_graph(self):
        with pytest.raises(ConfigurationError) as caught:
            Catalog({"a": step})  # type: ignore[dict-item]
        assert caught.value.value is step
        assert "pipeline 'a'" in str(caught.value)

    def test_a_pipeline_that_does_not_build_raises_its_graph_error_when_added(self):
        broken = Pipeline("p").with_stage("b", step, dependencies=("missing",))
        with pytest.raises(Exception, match="missing"):
            Catalog({"p": broken})

    @pytest.mark.parametrize(
        ("option", "value"),
        [("description", 3), ("category", 3), ("data", dict), ("data", Order(order_id=1)),
         ("tags", "daily"), ("tags", [1])],
    )  # fmt: skip
    def test_options_of_the_wrong_type_are_refused(self, option, value):
        with pytest.raises(ConfigurationError) as caught:
            Catalog().add("a", pipeline(), **{option: value})
        assert (caught.value.field, caught.value.value) == (option, value)

    def test_pipelines_must_be_a_mapping(self):
        with pytest.raises(ConfigurationError) as caught:
            Catalog([pipeline()])  # type: ignore[arg-type]
        assert caught.value.field == "pipelines"

    def test_of_refuses_anything_else(self):
        with pytest.raises(ConfigurationError) as caught:
            Catalog.of(42)
        assert (caught.value.field, caught.value.value) == ("catalog", 42)
