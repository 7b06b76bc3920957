"""PriceTable: what tokens cost, per model (a validated pydantic model)."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigurationError, UnknownModelError

__all__ = ["ModelPrice", "PriceTable"]

_PER: float = 1_000_000.0  # prices are per million tokens, as providers list them


class ModelPrice(BaseModel):
    """One model's prices, per million tokens.

    Attributes:
        input: the price of a million input (prompt) tokens.
        output: the price of a million output (completion) tokens.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    input: float = Field(ge=0, allow_inf_nan=False)
    output: float = Field(ge=0, allow_inf_nan=False)


class PriceTable(BaseModel):
    """What tokens cost, per model; turns usage reports into cost.

    Build one from keyword arguments, from a mapping of model names to prices
    (``PriceTable.of({"gpt-4o": {"input": 2.5, "output": 10}})``) or from a TOML or
    JSON file (:meth:`from_file`)::

        currency = "USD"

        [models."gpt-4o"]
        input = 2.50      # per million input tokens
        output = 10.00    # per million output tokens

        [fallback]        # optional: the price of models not listed
        input = 1.00
        output = 4.00

    Attributes:
        models: prices by model name.
        fallback: the price of a model not in ``models``; None (the default) makes
            such a model an :class:`~stageflow.errors.UnknownModelError`.
        currency: what the costs are in; informative.

    Raises:
        ConfigurationError: a field is missing, negative or of the wrong type; the
            error names it (``models.gpt-4o.output``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: dict[str, ModelPrice] = Field(default_factory=dict)
    fallback: ModelPrice | None = None
    currency: str = "USD"

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise _configuration_error(error, data) from None

    @classmethod
    def of(cls, models: Mapping[str, Any], **options: Any) -> PriceTable:
        """A table from ``{model: {"input": ..., "output": ...}}``."""
        if not isinstance(models, Mapping):
            raise ConfigurationError(
                f"prices must be a mapping of model names to prices, not {models!r}",
                field="models",
                value=models,
            )
        return cls(models=dict(models), **options)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> PriceTable:
        """Read a table from a ``.toml`` or ``.json`` file (see the class's example)."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigurationError(
                f"cannot read the price table {str(file)!r}: {error.strerror or error}",
                field="path",
                value=str(file),
            ) from None
        try:
            data = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
        except (ValueError, tomllib.TOMLDecodeError) as error:
            raise ConfigurationError(
                f"the price table {str(file)!r} is not valid "
                f"{'JSON' if file.suffix == '.json' else 'TOML'}: {error}",
                field="path",
                value=str(file),
            ) from None
        if not isinstance(data, dict):
            raise ConfigurationError(
                f"the price table {str(file)!r} must hold a table, not {data!r}",
                field="path",
                value=str(file),
            )
        return cls(**data)

    def price(self, model: str) -> ModelPrice:
        """The model's prices (the fallback's when it is not listed)."""
        price = self.models.get(model, self.fallback)
        if price is None:
            raise UnknownModelError.of(model, list(self.models))
        return price

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """What ``input_tokens`` in and ``output_tokens`` out cost on ``model``.

        Example:
            >>> table = PriceTable.of({"gpt-4o": {"input": 2.5, "output": 10}})
            >>> table.cost("gpt-4o", 1_000_000, 100_000)
            3.5
        """
        price = self.price(model)
        return (input_tokens * price.input + output_tokens * price.output) / _PER


def _configuration_error(error: ValidationError, data: Mapping[str, Any]) -> ConfigurationError:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "prices"
    value = first.get("input")
    problem = first["msg"]
    if first["type"] == "missing":
        value = None
        problem = "is missing"
    elif first["type"] == "extra_forbidden":
        problem = "is not a known field (models, fallback, currency; input, output per model)"
    else:
        problem = f"is invalid ({problem[0].lower()}{problem[1:]}): {value!r}"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return ConfigurationError(f"price table: {field} {problem}{more}", field=field, value=value)
