"""What a dynamic stage declares: a map over a list known at run time, a loop, a subgraph,
an input a person gives.

Frozen values kept on a stage's :class:`~stageflow.StageSpec` (``spec.dynamic``),
validated by ``with_map`` / ``with_loop`` / ``with_subgraph`` and ``build()``. What
they decide at run time (the items, each iteration) the engine records in the store.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from . import _codec
from .errors import InputValidationError

if TYPE_CHECKING:
    from ._context import StageContext
    from ._graph import StageGraph

__all__ = [
    "InputSchema",
    "InputSpec",
    "InvalidValue",
    "LoopSpec",
    "MapSpec",
    "WaitingForInput",
]

ITEM_ERRORS: Final = ("fail", "skip", "collect")
EXHAUSTED: Final = ("fail", "complete")


class MapSpec(NamedTuple):
    """A map stage's declaration: its stage runs once per item of a sequence.

    Attributes:
        over: ``"stage.field"`` naming a dependency's output field, or a callable
            ``ctx -> Sequence`` called once with the map's context.
        key: item -> str, the items' stable identity (None: the index).
        max_parallel: at most this many items at once (None: no limit).
        on_item_error: ``"fail"``, ``"skip"`` or ``"collect"``.
    """

    over: str | Callable[[StageContext], Sequence[Any]]
    key: Callable[[Any], str] | None = None
    max_parallel: int | None = None
    on_item_error: str = "fail"

    @property
    def source(self) -> tuple[str, str] | None:
        """``(stage, field)`` when ``over`` names a dependency's field, else None."""
        if isinstance(self.over, str):
            stage, _, field = self.over.partition(".")
            return stage, field
        return None


class LoopSpec(NamedTuple):
    """A loop or subgraph stage's declaration: a graph run inside the stage.

    A subgraph is a loop of one iteration without ``until``.

    Attributes:
        body: the graph run once per iteration.
        output: the body's stage whose output is an iteration's output.
        until: ``outputs -> bool`` called after each iteration with its output; true
            ends the loop (None: a subgraph).
        max_iterations: at most this many iterations.
        on_exhausted: ``"fail"`` or ``"complete"`` (with the last iteration's output)
            when ``max_iterations`` ran and ``until`` never held.
    """

    body: StageGraph
    output: str
    until: Callable[[Mapping[str, Any]], bool] | None = None
    max_iterations: int = 1
    on_exhausted: str = "fail"

    @property
    def is_loop(self) -> bool:
        """True for ``with_loop``, False for ``with_subgraph``."""
        return self.until is not None

    def prefix(self, stage: str, iteration: int) -> str:
        """What the body's stage names are prefixed with in one iteration:
        ``refine[2].`` for a loop, ``etl.`` for a subgraph."""
        return f"{stage}[{iteration}]." if self.until is not None else f"{stage}."


FAIL: Final = "fail"  # with_input(on_timeout=): fail the stage (anything else: the default)


class InvalidValue(ValueError):
    """What :meth:`InputSchema.validate` raises: where in the value, and what is wrong.

    Attributes:
        field: where, dotted (``"approved"``, ``"items.0.sku"``; ``""``: the value itself).
        value: the offending value there.
        reason: what is wrong with it, in words.
    """

    def __init__(self, field: str, value: Any, reason: str) -> None:
        super().__init__(f"{field or 'value'}: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


def invalid_input(run_id: str, name: str, invalid: InvalidValue) -> InputValidationError:
    """The error of a value sent for input ``name`` that ``invalid`` says is wrong."""
    where = f"[{invalid.field}]" if invalid.field else ""
    bad = invalid.value
    return InputValidationError(
        f"run {run_id!r}: input {name!r}: value{where} is {type(bad).__qualname__} "
        f"{bad!r}: {invalid.reason}; nothing was stored",
        run_id=run_id,
        input=name,
        field=invalid.field,
        value=bad,
    )


class InputSchema:
    """What an input's value must be (``with_input(schema=)``), and the output it gives.

    ``schema`` is a pydantic model class (the stage's output is the model's fields, as
    a stage declaring ``output=`` the model has) or any type pydantic validates
    (``bool``, ``Literal["a", "b"]``, ``list[str]``, a TypedDict, ...: the output is
    ``{"value": ...}``). Values are validated as JSON data (what a person or an HTTP
    client sends), so an ISO date string is a valid ``datetime``.

    A subclass may validate otherwise: ``stageflow.adapters.jsonschema.JSONSchema``
    validates against a JSON Schema document. It sets ``schema``, ``is_model`` and
    ``text`` and overrides :meth:`validate` and :meth:`output`.
    """

    __slots__ = ("_adapter", "is_model", "schema", "text")

    def __init__(self, schema: Any) -> None:
        import pydantic  # a core dependency, imported only for graphs with input stages

        self.schema = schema
        self.is_model = isinstance(schema, type) and _codec.is_model_class(schema)
        try:
            self._adapter: Any = pydantic.TypeAdapter(schema)
            document = self._adapter.json_schema()
        except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError):
            raise ValueError(f"{schema!r} is no type pydantic can validate") from None
        self.text = json.dumps(document, separators=(",", ":"), sort_keys=True)
        """The JSON Schema of a value, as JSON text (what a store keeps)."""

    @property
    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of a value."""
        return json.loads(self.text)  # type: ignore[no-any-return]

    def validate(self, value: Any) -> Any:
        """``value`` validated, as JSON data (what is stored), or raise
        :class:`InvalidValue`."""
        import pydantic

        try:
            validated = self._adapter.validate_python(value)
        except pydantic.ValidationError as error:
            first = error.errors(include_url=False)[0]
            field = ".".join(str(part) for part in first["loc"])
            raise InvalidValue(field, first.get("input"), first["msg"]) from None
        return self._adapter.dump_python(validated, mode="json")

    def output(self, stored: Any) -> dict[str, Any]:
        """The stage's output data for a stored (valid) value."""
        validated = self._adapter.validate_python(stored)
        if self.is_model:
            return {name: getattr(validated, name) for name in type(validated).model_fields}
        return {"value": validated}


class InputSpec(NamedTuple):
    """An input stage's declaration (``with_input``): a value a person gives.

    Attributes:
        schema: what the value must be.
        prompt: what the person is shown: a str, or ``ctx -> str`` called with the
            stage's context (its inputs) when it first waits; None: nothing.
        timeout: seconds from the first wait to the deadline (None: no deadline).
        on_timeout: ``"fail"`` (:class:`~stageflow.errors.InputTimeoutError`) or the
            value given at the deadline, as JSON data (valid for ``schema``).
        map: for an input per item of a list (``with_input(over=)``), how the items are
            found and keyed (each item's input is ``stage[key]``); None: one input.
    """

    schema: InputSchema
    prompt: str | Callable[[StageContext], str] | None = None
    timeout: float | None = None
    on_timeout: Any = FAIL
    map: MapSpec | None = None


class WaitingForInput(asyncio.CancelledError):
    """What an input stage's call raises when its run stops to wait for input: a
    cancellation (the stage has not ended; it waits again when the run goes on), which
    the interceptors around it (spans, metrics, logs) can tell from any other."""
