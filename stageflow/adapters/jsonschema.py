"""JSON Schema documents as the schemas of inputs, validated by the ``jsonschema`` library.

Two uses (extra ``jsonschema``: ``pip install 'stageflow[jsonschema]'``):

- ``with_input("order", schema=JSONSchema({...}))``: an input whose value is checked
  against a JSON Schema document (Draft 2020-12 unless it says ``$schema``); the
  stage's output is the JSON object for an ``"object"`` schema, else ``{"value": ...}``.
- :func:`send_input`: give an input without the run's graph, validated against the
  JSON Schema its store keeps (every input stage's, a pydantic model's included),
  e.g. in a service that knows only the store. JSON Schema is what the store keeps of
  a pydantic schema: it checks types and constraints, not a model's own validators,
  and no coercion (``"true"`` is no boolean here; ``engine.send`` with the graph is
  pydantic's own, lax mode).

Example:
    >>> schema = JSONSchema(
    ...     {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    ... )
    >>> schema.validate({"ok": True})
    {'ok': True}
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from .. import _codec
from .._dynamic import InputSchema, InvalidValue, invalid_input
from ..errors import ConfigurationError, UnknownInputError
from ..ports import InputRecord, InputStore

__all__ = ["JSONSchema", "send_input"]


class JSONSchema(InputSchema):
    """A JSON Schema document as an input's schema (``with_input(schema=JSONSchema(...))``).

    Args:
        document: the schema, a JSON object (checked against its metaschema here).

    Raises:
        ConfigurationError: ``document`` is no valid JSON Schema (naming where).
    """

    __slots__ = ("_validator",)

    def __init__(self, document: Mapping[str, Any]) -> None:
        if not isinstance(document, Mapping):
            raise ConfigurationError(
                f"JSONSchema takes a JSON Schema document (a dict), not {document!r}",
                field="document",
                value=document,
            )
        try:
            text = json.dumps(dict(document), separators=(",", ":"), sort_keys=True)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(
                f"a JSON Schema document is JSON: {error}", field="document", value=document
            ) from None
        cls = jsonschema.validators.validator_for(document, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(document)
        except jsonschema.SchemaError as error:
            where = "/".join(str(part) for part in error.absolute_path) or "(top)"
            raise ConfigurationError(
                f"invalid JSON Schema at {where}: {error.message}",
                field="document",
                value=document,
            ) from None
        self.schema = dict(document)
        self.is_model = False
        self.text = text
        self._validator = cls(self.schema)

    def validate(self, value: Any) -> Any:
        """``value`` if it is valid JSON data for the schema, else :class:`InvalidValue`."""
        try:
            data = json.loads(json.dumps(value))  # JSON data: what a store keeps
        except (TypeError, ValueError):
            raise InvalidValue("", value, "it is no JSON data") from None
        return checked(self._validator, data)

    def output(self, stored: Any) -> dict[str, Any]:
        if self.schema.get("type") == "object" and isinstance(stored, dict):
            return dict(stored)
        return {"value": stored}


def checked(validator: Any, data: Any) -> Any:
    """``data`` if ``validator`` finds it valid, else InvalidValue for its best error."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is None:
        return data
    field = ".".join(str(part) for part in error.absolute_path)
    raise InvalidValue(field, error.instance, error.message)


async def send_input(
    store: InputStore, run_id: str, name: str, value: Any, *, at: float | None = None
) -> InputRecord:
    """Give input ``name`` of run ``run_id`` its value, without the run's graph: validated
    against the JSON Schema the store keeps for it, then stored once (as ``engine.send``
    stores it; a driver waiting with ``wait=True`` finds it, else ``Engine.resume``).

    Args:
        store: the run's store (an :class:`~stageflow.ports.InputStore`).
        run_id: the run.
        name: the input, or ``stage[key]`` for an item of an input per item.
        value: the value, as JSON data.
        at: when it is given, seconds since the epoch (default: now).

    Raises:
        InputValidationError: ``value`` does not match the stored schema; nothing stored.
        UnknownInputError, InputAlreadyGivenError, InputTimeoutError, UnknownRunError:
            as ``InputStore.give_input`` raises them.
    """
    rows = await store.load_inputs(run_id)
    row = rows.get(name)
    if row is None and name.endswith("]"):  # an item: its input's schema
        row = rows.get(name.partition("[")[0])
    if row is None or not row.schema:
        known = sorted(n for n, r in rows.items() if r.value is None)
        raise UnknownInputError.of(run_id, name, known)
    validator_class = jsonschema.validators.validator_for(
        schema := json.loads(row.schema), default=jsonschema.Draft202012Validator
    )
    try:
        data = checked(validator_class(schema), json.loads(json.dumps(value)))
    except (TypeError, ValueError) as error:
        invalid = error if isinstance(error, InvalidValue) else None
        raise invalid_input(
            run_id, name, invalid or InvalidValue("", value, "it is no JSON data")
        ) from None
    text = _codec.dumps(data, f"input {name!r}")
    return await store.give_input(run_id, name, text, time.time() if at is None else at)
