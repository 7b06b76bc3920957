"""Interceptors as the docs write them satisfy the Interceptor Protocol."""

from __future__ import annotations

from stageflow import (
    BaseInterceptor,
    Engine,
    Interceptor,
    Priority,
    StageCall,
    StageContext,
    StageOutput,
    StageSpec,
)


class Audit:
    """The documented pattern: class attributes, priority a Priority."""

    name = "audit"
    priority = Priority.USER

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        async def audited(ctx: StageContext) -> StageOutput:
            output = await call(ctx)
            print(ctx.stage, output.status)
            return output

        return audited


class Configured:
    """Instance attributes set in __init__."""

    def __init__(self, name: str, priority: int = 900) -> None:
        self.name, self.priority = name, priority

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        return call


class Computed:
    """Read-only properties."""

    @property
    def name(self) -> str:
        return "computed"

    @property
    def priority(self) -> int:
        return Priority.TIMEOUT + 1

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        return call


class Hooks(BaseInterceptor):
    priority = Priority.USER

    async def after(self, ctx: StageContext, output: StageOutput) -> StageOutput | None:
        return None


chain: list[Interceptor] = [Audit(), Configured("c"), Computed(), Hooks()]
engine = Engine(interceptors=chain)
