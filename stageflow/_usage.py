"""What stages spend: token counts and cost, per stage, model and pipeline."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

__all__ = ["Usage", "UsageSummary"]


class Usage:
    """Tokens and cost: of one report, or summed over many.

    ``cost`` is None when nothing summed into it had a cost (no price table and no
    explicit cost); otherwise it is the sum of the costs that were known.

    Example:
        >>> total = Usage(100, 20, 0.5) + Usage(10, 2)
        >>> total.tokens, total.cost
        (132, 0.5)
    """

    __slots__ = ("cost", "input_tokens", "output_tokens")

    input_tokens: int
    output_tokens: int
    cost: float | None

    def __init__(self, input_tokens: int = 0, output_tokens: int = 0, cost: float | None = None):
        object.__setattr__(self, "input_tokens", input_tokens)
        object.__setattr__(self, "output_tokens", output_tokens)
        object.__setattr__(self, "cost", cost)

    @property
    def tokens(self) -> int:
        """Input and output tokens together."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        if self.cost is None:
            cost = other.cost
        elif other.cost is None:
            cost = self.cost
        else:
            cost = self.cost + other.cost
        return Usage(
            self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens, cost
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Usage is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Usage is immutable; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Usage):
            return NotImplemented
        same_cost = (self.cost is None and other.cost is None) or (
            self.cost is not None
            and other.cost is not None
            and math.isclose(self.cost, other.cost, rel_tol=1e-9, abs_tol=1e-12)
        )
        return (
            self.input_tokens == other.input_tokens
            and self.output_tokens == other.output_tokens
            and same_cost
        )

    def __hash__(self) -> int:
        return hash((self.input_tokens, self.output_tokens))

    def __repr__(self) -> str:
        cost = "" if self.cost is None else f" cost={self.cost:g}"
        return f"<Usage in={self.input_tokens} out={self.output_tokens}{cost}>"


ZERO: Final = Usage()


class UsageSummary:
    """Usage summed: in all, by stage, by model and by pipeline.

    ``result.usage`` of a run and ``store.usage(...)`` over many runs are
    UsageSummaries. A report without a model counts under the model ``""``.

    Attributes:
        total: everything summed.
        by_stage: per stage name.
        by_model: per model name.
        by_pipeline: per pipeline name.
    """

    __slots__ = ("by_model", "by_pipeline", "by_stage", "total")

    def __init__(
        self,
        total: Usage = ZERO,
        *,
        by_stage: Mapping[str, Usage] | None = None,
        by_model: Mapping[str, Usage] | None = None,
        by_pipeline: Mapping[str, Usage] | None = None,
    ) -> None:
        self.total = total
        self.by_stage: Mapping[str, Usage] = MappingProxyType(dict(by_stage or {}))
        self.by_model: Mapping[str, Usage] = MappingProxyType(dict(by_model or {}))
        self.by_pipeline: Mapping[str, Usage] = MappingProxyType(dict(by_pipeline or {}))

    @classmethod
    def of(cls, rows: Iterable[tuple[str, str, str | None, Usage]]) -> UsageSummary:
        """Sum ``(pipeline, stage, model, usage)`` rows."""
        return cls.of_counts(
            (pipeline, stage, model, u.input_tokens, u.output_tokens, u.cost)
            for pipeline, stage, model, u in rows
        )

    @classmethod
    def of_counts(
        cls, rows: Iterable[tuple[str, str, str | None, int, int, float | None]]
    ) -> UsageSummary:
        """Sum ``(pipeline, stage, model, input_tokens, output_tokens, cost)`` rows."""
        # Plain numbers while summing: a Usage per addition would cost a run that
        # reports once per stage several microseconds per stage.
        total = [0, 0, 0.0, False]
        by_stage: dict[str, list[Any]] = {}
        by_model: dict[str, list[Any]] = {}
        by_pipeline: dict[str, list[Any]] = {}
        for pipeline, stage, model, input_tokens, output_tokens, cost in rows:
            for sums in (
                total,
                by_stage.get(stage) or by_stage.setdefault(stage, [0, 0, 0.0, False]),
                by_model.get(model or "") or by_model.setdefault(model or "", [0, 0, 0.0, False]),
                by_pipeline.get(pipeline) or by_pipeline.setdefault(pipeline, [0, 0, 0.0, False]),
            ):
                sums[0] += input_tokens
                sums[1] += output_tokens
                if cost is not None:
                    sums[2] += cost
                    sums[3] = True

        def usage(sums: list[Any]) -> Usage:
            return Usage(sums[0], sums[1], sums[2] if sums[3] else None)

        return cls(
            usage(total),
            by_stage={k: usage(v) for k, v in by_stage.items()},
            by_model={k: usage(v) for k, v in by_model.items()},
            by_pipeline={k: usage(v) for k, v in by_pipeline.items()},
        )

    @property
    def tokens(self) -> int:
        """All tokens, input and output."""
        return self.total.tokens

    @property
    def input_tokens(self) -> int:
        """All input tokens."""
        return self.total.input_tokens

    @property
    def output_tokens(self) -> int:
        """All output tokens."""
        return self.total.output_tokens

    @property
    def cost(self) -> float | None:
        """All cost, or None when no cost was known."""
        return self.total.cost

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UsageSummary):
            return NotImplemented
        return (
            self.total == other.total
            and dict(self.by_stage) == dict(other.by_stage)
            and dict(self.by_model) == dict(other.by_model)
            and dict(self.by_pipeline) == dict(other.by_pipeline)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        cost = "" if self.cost is None else f" cost={self.cost:g}"
        return f"<UsageSummary tokens={self.tokens}{cost} stages={len(self.by_stage)}>"


EMPTY: Final = UsageSummary()
