"""A pipeline file run by the real CLI, SIGKILLed midway, resumes without redoing work.

``stageflow run FILE`` drives a map of 120 items, a loop and a last stage on a store (SQLite
file, PostgreSQL); once some items are done the process is SIGKILLed; ``stageflow resume
RUN_ID`` (the file found again from the run's label) finishes it. Every item stored as
completed before the kill is never called again, and the result is an uninterrupted run's.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from .conftest import Backend, Child

pytestmark = pytest.mark.slow

FILE = Path(__file__).with_name("declarative_crash.yaml")
CLI = "stageflow.cli"


def calls(path: Path) -> Counter[str]:
    if not path.exists():
        return Counter()
    return Counter(line.split()[0] for line in path.read_text().splitlines() if line)


def test_a_file_pipeline_killed_in_its_map_resumes_where_it_was(
    backend: Backend, tmp_path: Path, children: list[Child], monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("STAGEFLOW_CRASH_CALLS", str(log))
    run_id = "01JDECLARATIVECRASH000001"
    first = Child.start(["run", str(FILE), "--store", backend.url, "--run-id", run_id],
                        tmp_path / "first.err", module=CLI)  # fmt: skip
    children.append(first)
    deadline = time.monotonic() + 60
    while sum(n for label, n in calls(log).items() if label.startswith("score[")) < 30:
        assert first.process.poll() is None, f"the run ended before the kill{first}"
        assert time.monotonic() < deadline, f"no progress{first}"
        time.sleep(0.002)
    first.signal(__import__("signal").SIGKILL)
    first.wait()
    snapshot = asyncio.run(backend.snapshot(run_id))
    stored = {name for name, r in snapshot.records.items() if r.status == "completed"}
    done_items = {name for name in stored if name.startswith("score[")}
    assert 0 < len(done_items) < 120, "the kill must land inside the map"
    before = calls(log)

    second = Child.start(["resume", run_id, "--store", backend.url, "--take-over"],
                         tmp_path / "second.err",
                         module=CLI)  # fmt: skip
    children.append(second)
    assert second.wait(60) == 0, str(second)
    after = calls(log)
    resumed = after - before
    for name in done_items:  # stored before the kill: never called again
        assert resumed[name] == 0, name
    assert resumed["split"] == 0
    items = {label for label in after if label.startswith("score[")}
    assert len(items) == 120
    assert all(after[label] <= 2 for label in items)  # at most once more: in flight at the kill
    assert (after["report"], after["step[3]"], after["step[4]"]) == (1, 1, 0)
    final = asyncio.run(backend.snapshot(run_id))
    assert final.run is not None
    assert final.run.status == "completed"
    report = final.records["report"]
    expected = sum(int(f"{i:03d}") % 7 for i in range(120))
    assert json.loads(report.output) == {"sum": expected, "final": 123}
