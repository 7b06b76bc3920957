"""The pipeline file format, as pydantic models (its JSON Schema is ``stageflow schema``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

__all__ = [
    "BreakerDecl",
    "BudgetDecl",
    "EstimateDecl",
    "FieldDecl",
    "GraphDecl",
    "InputDecl",
    "LoopDecl",
    "PipelineDecl",
    "Python",
    "RetryDecl",
    "RouteDecl",
    "StageDecl",
]

KINDS = ("transform", "enrich", "route", "guard", "work", "agent")
TYPES = ("string", "integer", "number", "boolean", "array", "object", "any")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Python(_Strict):
    """A Python object by dotted path (``module.attr`` or ``module:attr``): a condition,
    an item list, a key function or a prompt that is code, not an expression."""

    python: str = Field(description="dotted path of a module-level callable")


Expr = str  # a CEL expression, with $references
TypeName = Literal["string", "integer", "number", "boolean", "array", "object", "any"]


class FieldDecl(_Strict):
    """A typed value: a pipeline input, a template parameter or a field of an input's schema."""

    type: TypeName = "any"
    description: str = ""
    default: Any = Field(default=None, description="its value when not given (absent: required)")
    enum: list[Any] | None = Field(default=None, description="the values it may take")


class RetryDecl(_Strict):
    """``RetryPolicy``'s fields; exceptions by dotted path."""

    attempts: int = 3
    backoff: Literal["fixed", "linear", "exponential"] = "exponential"
    base: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 30.0
    jitter: bool = False
    deadline: float | None = None
    retry_on: list[str] | None = None
    give_up_on: list[str] | None = None


class BreakerDecl(_Strict):
    """``CircuitBreakerPolicy``'s fields; exceptions by dotted path."""

    failure_threshold: int = 5
    failure_rate: float | None = None
    window: float = 60.0
    minimum_calls: int = 10
    recovery_timeout: float = 30.0
    half_open_max_calls: int = 1
    key: str | None = None
    failure_on: list[str] | None = None


class BudgetDecl(_Strict):
    """``Budget``'s fields."""

    max_tokens: int | None = None
    max_cost: float | None = None
    warn_at: float | None = None
    policy: Literal["block", "downgrade", "notify"] = "block"


class EstimateDecl(_Strict):
    """``Estimate``'s fields."""

    tokens: int = 0
    cost: float = 0.0


class RouteDecl(_Strict):
    """One route of a ROUTE stage: its target, chosen when ``when`` holds (the first
    that holds is chosen; a route without ``when`` is the default, last)."""

    to: str
    when: Expr | None = None


class GraphDecl(_Strict):
    """A nested graph: inline ``stages``, or a ``file`` (relative to this one) or a
    catalog ``pipeline``, with template ``parameters``."""

    name: str | None = None
    stages: list[StageDecl] | None = None
    file: str | None = None
    pipeline: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


class LoopDecl(_Strict):
    """``with_loop``'s options."""

    body: str | GraphDecl
    until: Expr | Python
    max_iterations: int
    on_exhausted: Literal["fail", "complete"] = "fail"
    output_stage: str | None = None


def _schema_kind(value: Any) -> str:
    """Which of its forms an input's ``schema:`` is (one form's errors, not all three)."""
    if isinstance(value, dict):
        return "python-object" if "python" in value else "field-map"
    return "type-name"


class InputDecl(_Strict):
    """``with_input``'s options: the value a person gives."""

    schema_: Annotated[
        Annotated[Python, Tag("python-object")]
        | Annotated[dict[str, FieldDecl | TypeName], Tag("field-map")]
        | Annotated[str, Tag("type-name")],
        Discriminator(_schema_kind),
    ] = Field(alias="schema", description="a type name, fields, or {python: dotted.Model}")
    prompt: str | Python | None = None
    timeout: float | None = None
    on_timeout: Any = "fail"


class StageDecl(_Strict):
    """One stage: a handler (with ``with:`` arguments), a ROUTE by expressions, a
    ``loop``, a ``subgraph`` or an ``input``; ``over`` makes it a map."""

    id: str = Field(description="the stage's name; letters, digits, _ and -")
    description: str = ""
    handler: str | None = Field(default=None, description="dotted path or registered name")
    kind: Literal["transform", "enrich", "route", "guard", "work", "agent"] | None = None
    dependencies: list[str] = Field(default_factory=list)
    optional: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    when: Expr | Python | None = None
    timeout: float | None = None
    retry: int | RetryDecl | None = None
    circuit_breaker: BreakerDecl | None = None
    budget: BudgetDecl | None = None
    estimate: int | EstimateDecl | None = None
    output: str | None = Field(default=None, description="dotted path of its output model")
    runner: str | None = Field(
        default=None,
        description="where its call runs: a runner's name the engine knows (Engine(runners=...))",
    )
    resources: dict[str, Any] | None = Field(
        default=None, description="what the call needs where it runs ({num_cpus: 2})"
    )
    routes: list[str | RouteDecl] | None = None
    over: str | Python | None = Field(default=None, description="a map: $stage.field or code")
    key: Expr | Python | None = None
    max_parallel: int | None = None
    on_item_error: Literal["fail", "skip", "collect"] = "fail"
    loop: LoopDecl | None = None
    subgraph: str | GraphDecl | None = None
    output_stage: str | None = None
    input: InputDecl | None = None


class PipelineDecl(_Strict):
    """A pipeline file."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        json_schema_extra={
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "stageflow pipeline",
        },
    )

    format: Literal[1] = Field(default=1, description="the file format's version")
    name: str
    version: str | None = None
    description: str = ""
    category: str | None = None
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, FieldDecl | TypeName] = Field(
        default_factory=dict, description="a template's parameters, given when it is loaded"
    )
    inputs: dict[str, FieldDecl | TypeName] = Field(default_factory=dict)
    stages: list[StageDecl] = Field(min_length=1)
    outputs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        return (
            str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
        )


GraphDecl.model_rebuild()
