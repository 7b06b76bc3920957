"""stageflow._check: the checks every constructor and option uses to refuse a bad value."""

from __future__ import annotations

import enum
import math
from typing import Any

import pytest

from stageflow._check import integer, number, refuse
from stageflow.errors import ConfigurationError, InvalidOptionError


class _Level(enum.IntEnum):
    LOW = 1


class TestNumber:
    @pytest.mark.parametrize("value", [0.5, 1, 3.25, 10**6])
    def test_a_number_within_the_bounds_is_returned_as_a_float(self, value: Any) -> None:
        checked = number(value, "timeout", "a positive number", gt=0)

        assert checked == value
        assert type(checked) is float

    @pytest.mark.parametrize(
        "value", [True, False, None, "1", [1], math.nan, math.inf, -math.inf, 10**400]
    )
    def test_what_is_no_finite_number_is_refused(self, value: Any) -> None:
        with pytest.raises(ConfigurationError) as info:
            number(value, "timeout", "a number")

        assert info.value.field == "timeout"
        assert info.value.value is value
        assert str(info.value) == f"timeout must be a number, not {value!r}"

    @pytest.mark.parametrize(
        ("bounds", "good", "bad"),
        [
            ({"gt": 0}, [1e-9, 1], [0, -1]),
            ({"ge": 0}, [0, 0.0, 2], [-1e-9, -3]),
            ({"lt": 1}, [0.999, -5], [1, 2]),
            ({"le": 3600}, [3600, 0], [3600.5]),
            ({"gt": 0, "lt": 1}, [0.5], [0, 1]),
            ({"gt": 0, "le": 1}, [1, 0.01], [0, 1.01]),
        ],
    )
    def test_the_bounds_are_kept(self, bounds: dict[str, float], good: list, bad: list) -> None:
        for value in good:
            assert number(value, "x", "a number", **bounds) == value
        for value in bad:
            with pytest.raises(ConfigurationError):
                number(value, "x", "a number", **bounds)

    def test_finite_false_takes_an_infinity_but_never_nan(self) -> None:
        assert number(math.inf, "retention", "seconds", gt=0, finite=False) == math.inf

        with pytest.raises(ConfigurationError):
            number(math.nan, "retention", "seconds", finite=False)
        with pytest.raises(ConfigurationError):
            number(-math.inf, "retention", "seconds", gt=0, finite=False)


class TestInteger:
    def test_an_int_within_the_bounds_is_returned_as_it_is(self) -> None:
        assert integer(3, "attempts", "an int >= 1", ge=1) == 3
        assert integer(10**400, "tokens", "an int", ge=0) == 10**400
        level = integer(_Level.LOW, "level", "a level")
        assert level is _Level.LOW

    @pytest.mark.parametrize("value", [True, False, None, 1.0, "3", 0, -1])
    def test_what_is_no_int_or_below_the_bound_is_refused(self, value: Any) -> None:
        with pytest.raises(ConfigurationError) as info:
            integer(value, "maxsize", "a positive int", ge=1)

        assert info.value.field == "maxsize"
        assert info.value.value is value
        assert str(info.value) == f"maxsize must be a positive int, not {value!r}"

    def test_every_bound_applies(self) -> None:
        assert integer(5, "n", "n", gt=4, lt=6, le=5, ge=5) == 5
        for bounds in ({"gt": 5}, {"lt": 5}, {"le": 4}, {"ge": 6}):
            with pytest.raises(ConfigurationError):
                integer(5, "n", "n", **bounds)


class TestRefuse:
    def test_a_stage_option_is_an_invalid_option_error_naming_the_stage(self) -> None:
        with pytest.raises(InvalidOptionError) as info:
            number(-1, "timeout", "a positive number of seconds", gt=0, stage="fetch")

        error = info.value
        assert str(error) == "stage 'fetch': timeout must be a positive number of seconds, not -1"
        assert (error.stage, error.option, error.value) == ("fetch", "timeout", -1)
        assert error.stages == ("fetch",)

    def test_owner_and_label_name_the_subject_the_field_stays(self) -> None:
        with pytest.raises(ConfigurationError) as info:
            integer(0, "attempts", "an int >= 1", ge=1, owner="RetryPolicy")
        assert str(info.value) == "RetryPolicy.attempts must be an int >= 1, not 0"
        assert info.value.field == "attempts"

        with pytest.raises(ConfigurationError) as info:
            refuse("stage_timeout", "positive", -2, label="the default stage timeout")
        assert str(info.value) == "the default stage timeout must be positive, not -2"
        assert info.value.field == "stage_timeout"

    def test_the_error_has_no_context_of_the_check_itself(self) -> None:
        with pytest.raises(ConfigurationError) as info:
            number(10**400, "x", "a number")

        assert info.value.__context__ is None


async def _noop(ctx: Any) -> None:
    return None


class TestWithStageOptions:
    """The table of ``make_spec``: each option's check, its message and what the spec keeps."""

    @pytest.mark.parametrize(
        ("option", "values", "what"),
        [
            ("timeout", [0, -1, math.nan, math.inf, True, "5"], "a positive number of seconds"),
            ("retry", [0, True, 1.5, "3"], "a RetryPolicy or a number of attempts >= 1"),
            ("circuit_breaker", [3, {}], "a CircuitBreakerPolicy"),
            ("budget", [100, {"max_tokens": 1}], "a Budget"),
            ("estimate", [-1, True, 1.5], "an Estimate or a number of tokens >= 0"),
            ("metadata", [5, {1: "v"}], "a mapping with str keys"),
            ("output", [dict, 5, "Model"], "a pydantic model class or a dataclass type"),
        ],
    )
    def test_a_bad_value_is_refused_naming_stage_option_and_value(
        self, option: str, values: list, what: str
    ) -> None:
        from stageflow import Pipeline

        for value in values:
            with pytest.raises(InvalidOptionError) as info:
                Pipeline().with_stage("a", _noop, **{option: value})

            assert str(info.value) == f"stage 'a': {option} must be {what}, not {value!r}"
            assert (info.value.stage, info.value.option) == ("a", option)
            assert info.value.value is value

    def test_a_bad_kind_lists_the_kinds(self) -> None:
        from stageflow import Pipeline, StageKind

        with pytest.raises(InvalidOptionError) as info:
            Pipeline().with_stage("a", _noop, "nope")  # type: ignore[arg-type]

        kinds = ", ".join(k.value for k in StageKind)
        assert str(info.value) == f"stage 'a': kind must be a StageKind ({kinds}), not 'nope'"

    def test_the_shorthands_become_their_values(self) -> None:
        from stageflow import Estimate, Pipeline, RetryPolicy, StageKind

        meta = {"k": 1}
        (spec,) = Pipeline().with_stage(
            "a", _noop, "agent", timeout=2, retry=3, estimate=600, tags=["x"], metadata=meta
        )

        assert spec.kind is StageKind.AGENT
        assert spec.timeout == 2.0
        assert type(spec.timeout) is float
        assert spec.retry == RetryPolicy(attempts=3)
        assert spec.estimate == Estimate(tokens=600)
        assert spec.tags == frozenset({"x"})
        assert spec.metadata == meta
        meta["k"] = 2
        assert spec.metadata == {"k": 1}  # a read-only copy

    def test_without_options_the_spec_shares_its_empty_values(self) -> None:
        from stageflow import Pipeline

        first, second = Pipeline().with_stage("a", _noop).with_stage("b", _noop, tags=())

        assert first.tags is first.optional is second.tags
        assert first.metadata is second.metadata
        assert first[8:] == second[8:] == (None,) * 11
