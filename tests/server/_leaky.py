"""A catalog whose one pipeline leaks the secret ``LEAK_TEST_KEY`` every way it can
(``--pipelines tests.server._leaky:catalog``)."""

from __future__ import annotations

import logging
from typing import Any

from stageflow import Catalog, Pipeline, SecretRef

KEY = SecretRef.env("LEAK_TEST_KEY")


async def output(ctx: Any) -> dict[str, Any]:
    key = await ctx.secret(KEY)
    return {"header": f"Bearer {key.get_secret_value()}"}


async def state(ctx: Any) -> dict[str, Any]:
    key = await ctx.secret(KEY)
    try:
        await ctx.state.save({"token": key.get_secret_value()})
    except Exception as error:  # the refusal, kept as this stage's output
        return {"refused": f"{type(error).__name__}: {error}"}
    return {"refused": None}


async def fails(ctx: Any) -> dict[str, Any]:
    key = await ctx.secret(KEY)
    logging.getLogger("stageflow.leak").warning("calling with %s", key.get_secret_value())
    ctx.emit("progress", note=f"calling with {key.get_secret_value()}")
    raise RuntimeError(f"auth failed with key {key.get_secret_value()}")


in_output = Pipeline("in_output").with_stage("output", output)
in_error = (
    Pipeline("in_error")
    .with_stage("state", state)
    .with_stage("fails", fails, dependencies=("state",))
)

catalog = (
    Catalog()
    .add("in_output", in_output, description="Returns its secret in its output")
    .add("in_error", in_error, description="Saves, logs, emits and raises its secret")
)
