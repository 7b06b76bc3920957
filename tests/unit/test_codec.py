"""The JSON codec: what goes in comes out, type included, or a clear refusal."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid

import pydantic
import pytest

from stageflow._codec import CodecError, dumps, loads


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    when: dt.datetime


class Report(pydantic.BaseModel):
    title: str
    at: dt.datetime
    tags: tuple[str, ...]


ROUND_TRIPS = [
    None,
    True,
    0,
    -(2**70),
    1.5,
    "ünïcode",
    [1, [2, "x"]],
    (1, (2, 3)),
    {"a": {"b": (1,)}},
    {1.5, "x"},
    frozenset({1, 2}),
    b"\x00\xffbytes",
    dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.UTC),
    dt.datetime(2026, 11, 23, 12, 0),
    dt.date(2026, 11, 23),
    dt.time(12, 30, 1, 5),
    dt.timedelta(days=-1, seconds=5, microseconds=7),
    decimal.Decimal("1.10"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    Color.RED,
    Point(1, dt.datetime(2020, 1, 1)),
    Report(title="t", at=dt.datetime(2020, 1, 1), tags=("a", "b")),
    float("inf"),
    {"__sf__": "a key that looks like our tag"},
]


class TestCodec:
    @pytest.mark.parametrize("value", ROUND_TRIPS, ids=lambda v: type(v).__name__)
    def test_a_value_reads_back_equal_and_of_the_same_type(self, value):
        back = loads(dumps(value))

        assert back == value
        assert type(back) is type(value)

    def test_nan_reads_back_as_nan(self):
        back = loads(dumps(float("nan")))

        assert back != back

    def test_plain_json_is_written_as_plain_json(self):
        assert dumps({"a": [1, "x", None, True]}) == '{"a":[1,"x",null,true]}'

    @pytest.mark.parametrize(
        ("value", "where", "kind"),
        [
            ({"x": object()}, "output['x']", "builtins:object"),
            ({"k": [1, {2: "v"}]}, "output['k'][1]", "int"),
            ({"f": open}, "output['f']", "builtin_function_or_method"),
        ],
    )
    def test_what_cannot_be_stored_faithfully_is_refused_naming_where_and_what(
        self, value, where, kind
    ):
        with pytest.raises(CodecError) as info:
            dumps(value, "output")

        assert where in str(info.value)
        assert kind in str(info.value)
