"""JSON Schema documents as input schemas, and sending input without the graph."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from stageflow import (
    Engine,
    InputAlreadyGivenError,
    InputValidationError,
    Pipeline,
    RunStatus,
    StageContext,
    UnknownInputError,
)
from stageflow.adapters.jsonschema import JSONSchema, send_input
from stageflow.errors import ConfigurationError, InvalidOptionError

from ._helpers import StoreOpener, durably

ORDER = {
    "type": "object",
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"},
        "qty": {"type": "integer", "minimum": 1},
    },
    "required": ["sku", "qty"],
    "additionalProperties": False,
}


async def ship(ctx: StageContext) -> dict[str, Any]:
    return {"shipped": ctx.inputs["order"]["qty"]}


def order_graph() -> Any:
    return (
        Pipeline("orders")
        .with_input("order", schema=JSONSchema(ORDER), prompt="what to ship?")
        .with_stage("ship", ship, dependencies=("order",))
        .build()
    )


class Approval(BaseModel):
    approved: bool


def approval_graph() -> Any:
    return (
        Pipeline("mail")
        .with_input("approval", schema=Approval)
        .with_input("copies", schema=int, over=lambda ctx: ["a", "b"], key=str)
        .build()
    )


def test_a_json_schema_input_gives_the_json_object_as_output(open_store: StoreOpener) -> None:
    async def scenario(store: Any) -> Any:
        engine = Engine(store=store)
        waiting = await engine.run(order_graph(), run_id="r1")
        assert waiting.waiting_for[0].schema == ORDER
        with pytest.raises(InputValidationError) as raised:
            await engine.send("r1", "order", {"sku": "ABC-1", "qty": 0})
        assert (raised.value.field, raised.value.value) == ("qty", 0)
        await engine.send("r1", "order", {"sku": "ABC-1", "qty": 2})
        return await engine.resume("r1", order_graph())

    result = durably(open_store, scenario)
    assert result.ok
    assert result["order"].data == {"sku": "ABC-1", "qty": 2}
    assert result["ship"].data == {"shipped": 2}


def test_send_input_validates_against_the_stored_schema_without_the_graph(
    open_store: StoreOpener,
) -> None:
    async def scenario(store: Any) -> None:
        await Engine(store=store).run(approval_graph(), run_id="r1")
        with pytest.raises(InputValidationError) as raised:
            await send_input(store, "r1", "approval", {"approved": "yes"})
        assert raised.value.field == "approved"
        assert (await store.load_inputs("r1"))["approval"].value is None
        await send_input(store, "r1", "approval", {"approved": True})
        with pytest.raises(InputAlreadyGivenError):
            await send_input(store, "r1", "approval", {"approved": False})
        await send_input(store, "r1", "copies[a]", 3)  # an item: its input's schema
        with pytest.raises(InputValidationError):
            await send_input(store, "r1", "copies[b]", "three")
        with pytest.raises(UnknownInputError):
            await send_input(store, "r1", "nope", 1)
        with pytest.raises(InputValidationError, match="no JSON data"):
            await send_input(store, "r1", "copies[b]", {1, 2})
        result = await Engine(store=store).resume("r1", approval_graph())
        assert result.status is RunStatus.WAITING
        assert [p.name for p in result.waiting_for] == ["copies[b]"]

    durably(open_store, scenario)


def test_bad_documents_and_a_bare_dict_are_refused_naming_the_option() -> None:
    with pytest.raises(ConfigurationError, match="properties"):
        JSONSchema({"type": "object", "properties": 3})
    with pytest.raises(ConfigurationError, match="dict"):
        JSONSchema("object")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="JSONSchema") as raised:
        Pipeline("p").with_input("order", schema=ORDER)
    assert (raised.value.stage, raised.value.option) == ("order", "schema")
    with pytest.raises(InvalidOptionError, match="on_timeout"):
        Pipeline("p").with_input(
            "order", schema=JSONSchema(ORDER), timeout=5, on_timeout={"sku": "x"}
        )
