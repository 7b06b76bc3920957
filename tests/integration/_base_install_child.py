"""Run by tests/integration/test_base_install.py with the python of a venv that holds stageflow
and its runtime dependencies only: uses the testing kit there and prints what it saw, as JSON.

Usage: ``python _base_install_child.py DOCS.json REPORT.json``: DOCS.json maps each page to
its runnable blocks (``[line, source]`` pairs, in order); the report is written to REPORT.json
(examples may print). Only the standard library and stageflow
are imported: pytest is not installed there either.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import sys
import types
from typing import Any


def _environment() -> dict[str, Any]:
    return {
        "distributions": sorted({d.metadata["Name"] for d in importlib.metadata.distributions()}),
        "hypothesis_found": importlib.util.find_spec("hypothesis") is not None,
        "prefix": sys.prefix,
    }


def _star_import() -> list[str]:
    namespace: dict[str, object] = {}
    exec("from stageflow.testing import *", namespace)
    return sorted(k for k in namespace if k != "__builtins__")


def _pipeline_on_virtual_time() -> dict[str, Any]:
    from stageflow import Engine, Pipeline
    from stageflow.testing import RecordingSink, run_virtual

    async def crawl(ctx: Any) -> dict[str, int]:
        await asyncio.sleep(3600)
        return {"pages": 3}

    async def index(ctx: Any) -> dict[str, int]:
        await asyncio.sleep(600)
        return {"indexed": ctx.inputs.get_from("crawl", "pages")}

    graph = (
        Pipeline("nightly")
        .with_stage("crawl", crawl)
        .with_stage("index", index, dependencies=("crawl",))
        .build()
    )
    sink = RecordingSink()
    result = run_virtual(Engine(sink=sink).run(graph))
    return {
        "status": str(result.status),
        "duration": result.duration,
        "index": result["index"].data,
        "index_events": sink.types("index"),
        "last_event": sink.types()[-1],
    }


def _manual_clock() -> dict[str, Any]:
    from stageflow import Engine, Pipeline, RetryPolicy
    from stageflow.testing import ManualClock

    calls: list[float] = []

    async def flaky(ctx: Any) -> None:
        calls.append(ctx.clock.monotonic())
        if len(calls) == 1:
            raise OSError("first call fails")

    async def main() -> Any:
        clock = ManualClock(0.0)
        policy = RetryPolicy(attempts=2, backoff="fixed", base=30)
        graph = Pipeline("retried").with_stage("flaky", flaky, retry=policy).build()
        run = asyncio.ensure_future(Engine(clock=clock).run(graph))
        await clock.pass_time(30)  # the backoff, in no real time
        return await run

    result = asyncio.run(main())  # a real event loop: the clock alone moves time
    return {"ok": result.ok, "calls": calls}


def _shapes() -> dict[str, Any]:
    from stageflow import Engine
    from stageflow.testing import DagShape, run_virtual

    shape = DagShape((("fetch", ()), ("parse", ("fetch",)), ("index", ("parse", "fetch"))))
    result = run_virtual(Engine().run(shape.pipeline().build()))
    return {
        "ancestors": sorted(shape.ancestors("index")),
        "descendants": sorted(shape.descendants("fetch")),
        "ran": sorted(stage.stage for stage in result if stage.status == "completed"),
    }


def _store_contract() -> str:
    from stageflow.adapters.memory import MemoryStore
    from stageflow.testing import ManualClock, check_checkpoint_store

    async def memory(clock: ManualClock) -> MemoryStore:
        return MemoryStore(clock=clock)

    asyncio.run(check_checkpoint_store(memory))
    return "passed"


_STRATEGY_IMPORTS = (
    "from stageflow.testing import dag_shapes",
    "import stageflow.testing.strategies",
    "from stageflow.testing.strategies import pipelines",
    "import stageflow.testing; stageflow.testing.invalid_dag_shapes",
)


def _strategies() -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for statement in _STRATEGY_IMPORTS:
        try:
            exec(statement, {})
        except Exception as error:
            seen[statement] = {"type": type(error).__name__, "message": str(error)}
        else:
            seen[statement] = None
    return seen


def _docs(pages: dict[str, list[tuple[int, str]]]) -> dict[str, list[Any]]:
    """Each page's blocks, run in order in one namespace, until the first that raises."""
    outcomes: dict[str, list[Any]] = {}
    for page, blocks in pages.items():
        module = types.ModuleType("docs_example")
        sys.modules["docs_example"] = module
        ran: list[Any] = []
        for line, source in blocks:
            try:
                exec(compile("\n" * (line - 1) + source, page, "exec"), module.__dict__)
            except ModuleNotFoundError as error:
                ran.append({"line": line, "missing": error.name})
                break
            except Exception as error:
                ran.append({"line": line, "error": f"{type(error).__name__}: {error}"})
                break
            ran.append({"line": line, "ok": True})
        del sys.modules["docs_example"]
        outcomes[page] = ran
    return outcomes


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as file:
        pages = json.load(file)
    report = {
        "environment": _environment(),
        "star_import": _star_import(),
        "pipeline": _pipeline_on_virtual_time(),
        "manual_clock": _manual_clock(),
        "shapes": _shapes(),
        "store_contract": _store_contract(),
        "strategies": _strategies(),
        "docs": _docs(pages),
        "modules": sorted({name.partition(".")[0] for name in sys.modules}),
    }
    with open(sys.argv[2], "w", encoding="utf-8") as file:
        json.dump(report, file)


if __name__ == "__main__":
    main()
