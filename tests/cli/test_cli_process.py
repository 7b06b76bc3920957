"""The ``stageflow`` command as real processes: Ctrl-C, SIGTERM, SIGKILL, then resume.

A chain of ten stages, each sleeping 0.1 s and then appending its name to a file, is
interrupted once some stages completed; ``stageflow resume`` must finish it without
running any stage the store had recorded as completed.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from .._signals import default_sigint

pytestmark = [
    pytest.mark.slow,  # real processes, real time: a few seconds each
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

CHAIN = """
import asyncio
from pathlib import Path

from stageflow import Pipeline


def stage(name):
    async def run(ctx):
        await asyncio.sleep(0.1)
        with Path(ctx.data["log"]).open("a") as log:
            log.write(name + "\\n")
        return {"stage": name}

    return run


pipeline = Pipeline("chain")
for i in range(10):
    pipeline = pipeline.with_stage(f"s{i}", stage(f"s{i}"),
                                   dependencies=(f"s{i - 1}",) if i else ())
"""
NAMES = [f"s{i}" for i in range(10)]
SCRIPT = Path(sys.executable).with_name("stageflow")  # the console script of this venv


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    (tmp_path / "chain.py").write_text(CHAIN)
    return tmp_path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    env["TTY_COMPATIBLE"] = "0"
    return env


def _command(*args: str, script: bool = False) -> list[str]:
    if script:
        return [str(SCRIPT), *args]
    return [sys.executable, "-m", "stageflow.cli", *args]


def _cli(folder: Path, *args: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(*args, script=script),
        cwd=folder,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _start(folder: Path, *extra: str) -> subprocess.Popen[str]:
    # With SIGINT at its default even when ours is ignored (see tests/_signals.py): the
    # Ctrl-C test presses it.
    return subprocess.Popen(
        default_sigint(_command("run", "chain.py:pipeline", "--run-id", "r1",
                                "-d", f"log={folder / 'log'}", *extra)),
        cwd=folder,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _wait_for_stages(folder: Path, process: subprocess.Popen[str], count: int) -> None:
    log = folder / "log"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    process.kill()
    pytest.fail(f"no {count} stages in 30 s: {process.communicate()}")


def _show(folder: Path) -> dict:
    shown = _cli(folder, "show", "r1", "--json")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def _resume_and_check(folder: Path, before: dict, *extra: str) -> None:
    completed = {n for n, s in before["stages"].items() if s["status"] == "completed"}
    assert 1 <= len(completed) < 10, before
    resumed = _cli(folder, "resume", "r1", "--json", *extra, script=True)

    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["status"] == "completed"
    ran = (folder / "log").read_text().splitlines()
    assert sorted(set(ran)) == NAMES
    for name in completed:  # restored, not run again
        assert ran.count(name) == 1, (name, ran)
    assert len(ran) <= 11  # only the stage in flight at the interruption ran twice
    after = _show(folder)
    assert after["status"] == "completed"
    assert {s["status"] for s in after["stages"].values()} == {"completed"}
    events = [
        json.loads(line) for line in _cli(folder, "events", "r1", "--json").stdout.splitlines()
    ]
    restored = [e["stage"] for e in events if e["type"] == "stage.restored"]
    assert set(restored) == completed
    # both drives are in the store's event log, the resume's numbered on from the first's
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    started = [e for e in events if e["type"] == "run.started"]
    assert [e["data"].get("resumed", False) for e in started] == [False, True]
    assert events[-1]["type"] == "run.completed"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_cancels_the_run_and_resume_completes_it(
    chain: Path, sig: signal.Signals
) -> None:
    process = _start(chain)
    _wait_for_stages(chain, process, 3)

    process.send_signal(sig)
    out, err = process.communicate(timeout=30)

    assert process.returncode == 130, (out, err)
    assert "cancelled: resume with  stageflow resume r1" in out
    assert "Traceback" not in out + err
    before = _show(chain)
    assert before["status"] == "cancelled"
    _resume_and_check(chain, before)


def test_a_killed_driver_is_resumed_once_its_lease_expired(chain: Path) -> None:
    process = _start(chain, "--lease-ttl", "0.5")
    _wait_for_stages(chain, process, 3)

    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)

    before = _show(chain)
    assert before["status"] == "running"  # nobody could record the end
    time.sleep(0.6)  # the lease of the killed driver expires
    _resume_and_check(chain, before)


def test_a_killed_driver_is_taken_over_at_once_with_take_over(chain: Path) -> None:
    process = _start(chain, "--lease-ttl", "600")
    _wait_for_stages(chain, process, 3)

    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)

    before = _show(chain)
    assert before["status"] == "running"
    refused = _cli(chain, "resume", "r1")
    assert refused.returncode == 2, refused.stderr
    assert "--take-over if it is known dead" in refused.stderr
    _resume_and_check(chain, before, "--take-over")  # no waiting out the ten minutes


GATED = """
import asyncio
from pathlib import Path

from stageflow import Pipeline


async def first(ctx):
    return {}


async def gate(ctx):
    Path(ctx.data["ready"]).touch()
    while not Path(ctx.data["go"]).exists():
        await asyncio.sleep(0.01)
    return {}


pipeline = (
    Pipeline("gated")
    .with_stage("first", first)
    .with_stage("gate", gate, dependencies=("first",))
    .with_stage("last", first, dependencies=("gate",))
)
"""


def _lines(stream: IO[str]) -> queue.Queue[str]:
    """The lines of a child's output as it prints them (a reader thread: no blocking)."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")  # the end

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_events_follow_in_another_process_prints_the_run_as_its_driver_goes(
    tmp_path: Path,
) -> None:
    (tmp_path / "gated.py").write_text(GATED)
    ready, go = tmp_path / "ready", tmp_path / "go"
    with contextlib.ExitStack() as children:
        driver = children.enter_context(_child(
            tmp_path, "run", "gated.py:pipeline", "--run-id", "g1", "--json",
            "-d", f"ready={ready}", "-d", f"go={go}",
        ))  # fmt: skip
        deadline = time.monotonic() + 30
        while not ready.exists():  # the run is in the store, its gate stage waiting
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "the gate stage did not start in 30 s"
            time.sleep(0.01)
        follower = children.enter_context(_child(tmp_path, "events", "g1", "--follow", "--json"))
        assert follower.stdout is not None
        lines = _lines(follower.stdout)
        printed = [lines.get(timeout=30)]
        while '"stage":"gate"' not in printed[-1]:  # live, line by line through a pipe
            assert printed[-1], follower.communicate()
            printed.append(lines.get(timeout=30))
        assert driver.poll() is None  # the run waits at its gate while the follower prints it
        go.touch()
        ran, _ = driver.communicate(timeout=30)
        while printed[-1]:
            printed.append(lines.get(timeout=30))
        follower.wait(timeout=30)

    assert driver.returncode == 0
    assert json.loads(ran)["status"] == "completed"
    assert follower.returncode == 0
    stored = _cli(tmp_path, "events", "g1", "--json")
    assert "".join(printed) == stored.stdout
    events = [json.loads(line) for line in stored.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "run.completed"
    assert [e["stage"] for e in events if e["type"] == "stage.completed"] == [
        "first", "gate", "last",
    ]  # fmt: skip


@contextlib.contextmanager
def _child(folder: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """The command as a child process, killed if it still runs when the block ends."""
    process = subprocess.Popen(
        _command(*args), cwd=folder, env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def test_events_of_a_run_the_store_has_not_is_a_clear_error(chain: Path) -> None:
    _start_and_finish = _cli(chain, "run", "chain.py:pipeline", "--run-id", "r1", "--json",
                             "-d", f"log={chain / 'log'}")  # fmt: skip
    missing = _cli(chain, "events", "nope")
    followed = _cli(chain, "events", "nope", "--follow")

    assert _start_and_finish.returncode == 0, _start_and_finish.stderr
    for result in (missing, followed):
        assert result.returncode == 2
        assert result.stdout == ""
        assert result.stderr == "error: no run 'nope' in sqlite:///./.stageflow/runs.db\n"


def test_the_console_script_and_the_module_are_the_same_command(tmp_path: Path) -> None:
    module = _cli(tmp_path, "--help")
    script = _cli(tmp_path, "--help", script=True)

    assert module.returncode == script.returncode == 0
    assert "Usage: stageflow " in module.stdout
    assert module.stdout == script.stdout
