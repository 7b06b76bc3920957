"""The function a RayRunner's task runs in a Ray worker, run here (no cluster): what it
sends back for each kind of return, where the output goes (with the call, or its own
object), and the stand-ins for what came as arguments. The cluster tests are in tests/ray;
their workers' lines are not measured by coverage, these are."""

from __future__ import annotations

from typing import Any

import pytest

from stageflow import StageOutput, StageStatus
from stageflow.adapters.ray._runner import _decoded, _encoder, _smaller, _task
from stageflow.errors import InvalidOutputError


def wire(*, data: Any = None, outputs: dict[str, Any] | None = None) -> tuple[Any, ...]:
    outputs = {} if outputs is None else outputs
    return ("run-1", "p", "s", 1, data, outputs, "s", tuple(outputs), None, None, "run-1/s",
            (False, None), {}, None)  # fmt: skip


def reads(ctx: Any) -> dict[str, Any]:
    return {"data": dict(ctx.data), "inputs": {d: dict(ctx.inputs[d]) for d in ctx.inputs}}


def test_run_data_and_handed_outputs_come_as_arguments_in_the_order_of_their_stand_ins() -> None:
    call = _task(reads, 100_000)
    told, kept = call(wire(data=None, outputs={"a": None, "b": {"n": 2}, "c": None}),
                      {"k": 1}, {"n": 1}, {"n": 3})  # fmt: skip
    ended, inline, reports, states, models = _decoded(told)
    assert (ended, kept, reports, states, models) == (None, None, (), (), ())
    assert inline == {"data": {"k": 1}, "inputs": {"a": {"n": 1}, "b": {"n": 2}, "c": {"n": 3}}}


@pytest.mark.parametrize(
    ("returned", "ended", "data"),
    [
        (None, None, {}),
        ({"n": 1}, None, {"n": 1}),
        (StageOutput.skip("why"), ("skipped", "why", None), {}),
        (StageOutput(StageStatus.COMPLETED, {"n": 2}), ("completed", None, None), {"n": 2}),
    ],
    ids=["none", "dict", "skip", "stage-output"],
)
def test_how_the_stage_ended_comes_back_first(returned: Any, ended: Any, data: Any) -> None:
    from types import MappingProxyType

    told, kept = _task(lambda ctx: returned, 100_000)(wire(data={}))
    assert _decoded(told)[:2] == (ended, data)
    assert kept is None
    told, _ = _task(lambda ctx: MappingProxyType({"m": 1}), 100_000)(wire(data={}))
    assert _decoded(told)[1] == {"m": 1}  # any Mapping: as a dict


def test_a_large_or_opaque_output_is_an_object_of_its_own() -> None:
    told, kept = _task(lambda ctx: {"text": "x" * 2000}, 1000)(wire(data={}))
    assert _decoded(told)[1] is None
    assert kept == {"text": "x" * 2000}


def test_what_is_no_output_is_refused_there_naming_the_stage() -> None:
    with pytest.raises(InvalidOutputError, match="stage 's' returned list"):
        _task(lambda ctx: [1], 100_000)(wire(data={}))


@pytest.mark.parametrize(
    ("data", "limit", "small"),
    [
        ({}, 100, True),
        ({"a": [1, 2.0, None, True, (b"x", "y")]}, 1000, True),
        ({"a": "x" * 1000}, 1000, False),
        ({"a": [{"b": "x"}] * 100}, 1000, False),
        ({"a": bytearray(3)}, 10**9, False),
        ({"a": object()}, 10**9, False),
    ],
    ids=["empty", "plain", "long-text", "many", "array", "object"],
)
def test_small_is_plain_data_under_the_limit(data: dict[str, Any], limit: int, small: bool) -> None:
    assert _smaller(data, limit) is small


def test_what_crosses_is_pickle_s_bytes_unless_ray_must_serialize_it() -> None:
    import ray

    encoded = _encoder()
    assert _decoded(encoded(("run", {"n": [1, 2]}))) == ("run", {"n": [1, 2]})
    assert isinstance(encoded(("run", {})), bytes)
    unpicklable = {"f": lambda: 1}  # cloudpickle's, not pickle's
    assert encoded(unpicklable) is unpicklable
    ref = ray.ObjectRef(b"\0" * 28)  # Ray keeps count of those it serializes
    assert encoded(("run", {"ref": ref}))[1]["ref"] is ref
    assert _decoded(unpicklable) is unpicklable
