"""The testing kit's strategies load lazily; DagShape's lookups refuse unknown stages."""

from __future__ import annotations

import importlib
import sys

import pytest

import stageflow
import stageflow.testing
import stageflow.testing.strategies
from stageflow.testing import DagShape

STRATEGIES = (
    "DynamicGraph",
    "DynamicStage",
    "PlannedFailure",
    "dag_shapes",
    "dynamic_graphs",
    "invalid_dag_shapes",
    "pipelines",
)
HINT = "pip install 'stageflow[testing]'"


def _forget_hypothesis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make Hypothesis unimportable and the kit's modules unimported, until the test ends."""
    monkeypatch.setattr(stageflow, "testing", stageflow.testing)  # restored afterwards
    for name in list(sys.modules):
        if name == "hypothesis" or name.startswith(("hypothesis.", "stageflow.testing")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "hypothesis", None)  # `import hypothesis` raises


class TestTheStrategiesLoadLazily:
    @pytest.mark.parametrize("name", STRATEGIES)
    def test_either_module_gives_the_same_strategy(self, name):
        assert getattr(stageflow.testing, name) is getattr(stageflow.testing.strategies, name)

    def test_they_are_listed_by_dir_and_kept_out_of_all(self):
        assert set(STRATEGIES) <= set(dir(stageflow.testing))
        assert not set(STRATEGIES) & set(stageflow.testing.__all__)
        assert stageflow.testing.strategies.__all__ == list(STRATEGIES)

    def test_an_unknown_name_is_still_an_attribute_error(self):
        with pytest.raises(AttributeError, match=r"'stageflow\.testing' has no attribute 'nope'"):
            stageflow.testing.nope  # noqa: B018
        with pytest.raises(ImportError, match="cannot import name 'nope'"):
            exec("from stageflow.testing import nope", {})

    def test_without_hypothesis_the_rest_of_the_kit_imports(self, monkeypatch):
        original = stageflow.testing
        _forget_hypothesis(monkeypatch)

        kit = importlib.import_module("stageflow.testing")

        assert kit is not original  # a fresh import, without Hypothesis
        assert {"RecordingSink", "run_virtual", "ManualClock", "DagShape"} <= set(vars(kit))
        assert "hypothesis" not in {n.partition(".")[0] for n in sys.modules if sys.modules[n]}

    @pytest.mark.parametrize(
        "statement",
        [
            "from stageflow.testing import dag_shapes",
            "from stageflow.testing import invalid_dag_shapes",
            "from stageflow.testing import dynamic_graphs",
            "import stageflow.testing; stageflow.testing.pipelines",
            "import stageflow.testing.strategies",
            "from stageflow.testing.strategies import pipelines",
        ],
    )
    def test_without_hypothesis_a_strategy_raises_an_import_error_naming_the_extra(
        self, monkeypatch, statement
    ):
        _forget_hypothesis(monkeypatch)

        with pytest.raises(ImportError) as info:
            exec(statement, {})

        assert HINT in str(info.value)
        assert "works without it" in str(info.value)
        assert info.value.name == "hypothesis"
        assert isinstance(info.value.__cause__, ImportError)  # the original, chained

    def test_without_hypothesis_the_error_comes_again_on_each_attempt(self, monkeypatch):
        _forget_hypothesis(monkeypatch)
        kit = importlib.import_module("stageflow.testing")

        for _ in range(2):
            with pytest.raises(ImportError, match=r"stageflow\[testing\]"):
                kit.dag_shapes  # noqa: B018


SHAPE = DagShape((("load", ("clean",)), ("fetch", ()), ("clean", ("fetch",)), ("solo", ())))


class TestDagShape:
    def test_ancestors_are_every_stage_a_stage_depends_on(self):
        assert SHAPE.ancestors("load") == {"clean", "fetch"}
        assert SHAPE.ancestors("clean") == {"fetch"}
        assert SHAPE.ancestors("fetch") == SHAPE.ancestors("solo") == frozenset()

    def test_descendants_are_every_stage_that_depends_on_it(self):
        assert SHAPE.descendants("fetch") == {"clean", "load"}
        assert SHAPE.descendants("load") == SHAPE.descendants("solo") == frozenset()

    @pytest.mark.parametrize("method", ["ancestors", "descendants", "dependencies"])
    @pytest.mark.parametrize("name", ["nope", "", "LOAD", 3, None, ["load"]])
    def test_a_name_not_in_the_shape_is_a_key_error_naming_its_stages(self, method, name):
        with pytest.raises(KeyError) as info:
            getattr(SHAPE, method)(name)

        message = info.value.args[0]
        assert message.startswith(f"{name!r} is not a stage of this shape")
        assert "'load', 'fetch', 'clean', 'solo'" in message

    def test_an_empty_shape_says_it_has_no_stages(self):
        with pytest.raises(KeyError, match=r"its stages: none"):
            DagShape(()).ancestors("a")
