"""Stage functions the Ray tests run in Ray workers (a module the workers import)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any


class Pinned(Exception):
    """An exception with a field that pickles (its __reduce__ rebuilds it)."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> Any:
        return (_pinned, (str(self), self.code))


def _pinned(message: str, code: int) -> Pinned:
    return Pinned(message, code=code)


class Unpicklable(Exception):
    """An exception whose keyword-only field pickle cannot rebuild."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


async def where(ctx: Any) -> dict[str, Any]:
    """Where the call ran, and the numbers it was given."""
    return {"pid": os.getpid(), "n": int(ctx.data.get("n", 3))}


def square(ctx: Any) -> dict[str, Any]:
    """A sync stage (run in the worker's thread) reading its dependency's output."""
    n = ctx.inputs.get_from("where", "n", type=int)
    return {"pid": os.getpid(), "square": n * n}


def spend(ctx: Any) -> dict[str, Any]:
    ctx.usage.report(model="m", input_tokens=300, output_tokens=100)
    return {"spent": 400}


def pinned(ctx: Any) -> None:
    raise Pinned(f"attempt {ctx.attempt} failed", code=7)


def unpicklable(ctx: Any) -> None:
    raise Unpicklable("bad", code=1)


def dies_first(ctx: Any) -> dict[str, Any]:
    """Kills its own worker process on the first attempt; the second completes."""
    if ctx.attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return {"attempt": ctx.attempt, "pid": os.getpid()}


def blocks(ctx: Any) -> dict[str, Any]:
    """Writes its pid to data["pidfile"], then waits for data["release"] to exist."""
    Path(ctx.data["pidfile"]).write_text(str(os.getpid()))
    release = Path(ctx.data["release"])
    while not release.exists():
        time.sleep(0.02)
    return {"released": True}


def assigned(ctx: Any) -> dict[str, Any]:
    import ray

    return {"resources": ray.get_runtime_context().get_assigned_resources()}


async def doubled(ctx: Any) -> dict[str, Any]:
    return {"v": ctx.item * 2, "pid": os.getpid()}


async def items(ctx: Any) -> dict[str, Any]:
    return {"items": [1, 2, 3, 4]}


async def step(ctx: Any) -> dict[str, Any]:
    """A loop body's stage: its iteration and the previous iteration's output."""
    previous = ctx.loop.previous
    state = await ctx.state.load(0)
    await ctx.state.save(state + 1)
    return {"n": ctx.loop.iteration, "was": None if previous is None else previous["n"],
            "key": ctx.idempotency_key}  # fmt: skip


# ----------------------------------------------------------------------- worker tracing


def setup_tracing() -> None:
    """A Ray worker's setup hook (see conftest.py): with ``STAGEFLOW_TEST_SPANS`` set,
    the global TracerProvider is the real SDK's, exporting every span it ends as a JSON
    line to that file; without it, nothing (the worker has no SDK, as by default)."""
    path = os.environ.get("STAGEFLOW_TEST_SPANS")
    if not path:
        return
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_json_lines(Path(path))))
    trace.set_tracer_provider(provider)


def _json_lines(path: Path) -> Any:
    """An exporter appending each span to ``path`` as a JSON line (name, ids, parent)."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class JsonLines(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            lines = []
            for span in spans:
                parent = span.parent
                lines.append(json.dumps({
                    "name": span.name,
                    "trace_id": f"{span.context.trace_id:032x}",
                    "span_id": f"{span.context.span_id:016x}",
                    "parent": None if parent is None else f"{parent.span_id:016x}",
                    "parent_remote": None if parent is None else parent.is_remote,
                    "attributes": dict(span.attributes or {}),
                    "pid": os.getpid(),
                }) + "\n")  # fmt: skip
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, "".join(lines).encode())
            finally:
                os.close(fd)
            return SpanExportResult.SUCCESS

    return JsonLines()


def _inner(ctx: Any) -> dict[str, Any]:
    from opentelemetry import trace

    tracer = trace.get_tracer("tests.ray")
    with tracer.start_as_current_span("inner", attributes={"run": ctx.run_id, "stage": ctx.stage}):
        return {"pid": os.getpid(), "traceparent": ctx.traceparent}


def traced_sync(ctx: Any) -> dict[str, Any]:
    """Makes a span ``inner`` (the worker's global tracer) in a sync stage."""
    return _inner(ctx)


async def traced_async(ctx: Any) -> dict[str, Any]:
    """Makes a span ``inner`` (the worker's global tracer) in an async stage."""
    return _inner(ctx)


# ----------------------------------------------------------------------- crash and resume


def recorded(ctx: Any) -> dict[str, Any]:
    """A stage ``s<i>`` of a chain: appends ``run stage attempt pid`` to data["calls"]
    (fsync'd) when it starts, sleeps data["sleep"] seconds, and returns ``v``: its
    dependency ``s<i-1>``'s ``v`` + 1 (1 for ``s0``)."""
    _append(Path(ctx.data["calls"]), f"{ctx.run_id} {ctx.stage} {ctx.attempt} {os.getpid()}\n")
    time.sleep(float(ctx.data.get("sleep", 0.3)))
    i = int(ctx.stage[1:])
    v = 1 if i == 0 else ctx.inputs.get_from(f"s{i - 1}", "v", type=int) + 1
    return {"v": v, "pid": os.getpid()}


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


class Tripwire:
    """A value that writes, to the file it names, the pid of each process that unpickles
    it (pickling writes nothing): where its data was materialised."""

    pickled = 0  # times pickled in this process

    def __init__(self, path: str, payload: bytes) -> None:
        self.path = path
        self.payload = payload

    def __reduce__(self) -> Any:
        Tripwire.pickled += 1
        return (_arrived, (self.path, self.payload))


def _arrived(path: str, payload: bytes) -> Tripwire:
    with open(path, "a") as file:
        file.write(f"{os.getpid()}\n")
    return Tripwire(path, payload)


def produce(ctx: Any) -> dict[str, Any]:
    """A Tripwire of data["size"] bytes, noting data["trip"]."""
    return {"blob": Tripwire(ctx.data["trip"], b"x" * int(ctx.data["size"])), "pid": os.getpid()}


def consume(ctx: Any) -> dict[str, Any]:
    blob = ctx.inputs.get_from("produce", "blob", type=Tripwire)
    return {"size": len(blob.payload), "pid": os.getpid()}


def passes(ctx: Any) -> dict[str, Any]:
    """Hands its dependency's blob on, unread."""
    (dependency,) = ctx.inputs
    return {"blob": ctx.inputs.get_from(dependency, "blob")}


def data_size(ctx: Any) -> dict[str, Any]:
    """The size of the Tripwire in the run's data."""
    return {"size": len(ctx.data["blob"].payload)}


def on_the_model_given(ctx: Any) -> dict[str, Any]:
    """Spends 400 tokens on the model ctx.model() gives for gpt-4o."""
    model = ctx.model("gpt-4o")
    ctx.usage.report(model=model, input_tokens=300, output_tokens=100)
    return {"model": model}


def sized(ctx: Any) -> dict[str, Any]:
    """Plain data of about data["size"] bytes."""
    return {"text": "x" * int(ctx.data["size"]), "n": [1, 2.5, None, True], "nested": {"k": b"v"}}


def passes_text(ctx: Any) -> dict[str, Any]:
    return {"length": len(ctx.inputs.get_from("sized", "text", type=str))}


async def beats(ctx: Any) -> dict[str, Any]:
    """An async stage: writes its pid to data["pidfile"], then a beat to data["beats"]
    every 20 ms, forever."""
    import asyncio

    Path(ctx.data["pidfile"]).write_text(str(os.getpid()))
    beats = Path(ctx.data["beats"])
    while True:
        with beats.open("a") as file:
            file.write(".")
        await asyncio.sleep(0.02)


async def tasks_here(ctx: Any) -> dict[str, Any]:
    """This worker's pid, and the tasks its event loop holds besides this call's."""
    import asyncio

    return {"pid": os.getpid(), "others": len(asyncio.all_tasks()) - 1}
