"""Interceptors that do not fit the Protocol, and calls that return what is not a StageOutput."""

from __future__ import annotations

from stageflow import Interceptor, StageCall, StageContext, StageSpec


class NoName:
    priority = 10

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        return call


class TextPriority:
    name = "t"
    priority = "high"

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        return call


class RawResult:
    name = "raw"
    priority = 10

    def wrap(self, spec: StageSpec, call: StageCall) -> StageCall:
        async def raw(ctx: StageContext) -> dict[str, int]:
            return {"n": 1}

        # StageCall returns Awaitable[StageOutput]: a raw dict is no StageOutput
        return raw  # E: expected "Callable[[StageContext], Awaitable[StageOutput]]"


a: Interceptor = NoName()  # E: (expression has type "NoName", variable has type "Interceptor")
b: Interceptor = TextPriority()  # E: (expression has type "TextPriority", variable
