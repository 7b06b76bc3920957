"""The ``stageflow`` command as real processes: Ctrl-C, SIGTERM, SIGKILL, then resume.

A chain of ten stages, each sleeping 0.1 s and then appending its name to a file, is
interrupted once some stages completed; ``stageflow resume`` must finish it without
running any stage the store had recorded as completed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    events = _cli(folder, "events", "r1", "--json")
    restored = [
        json.loads(line)["stage"]
        for line in events.stdout.splitlines()
        if json.loads(line)["type"] == "stage.restored"
    ]
    assert set(restored) == completed


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


def test_the_console_script_and_the_module_are_the_same_command(tmp_path: Path) -> None:
    module = _cli(tmp_path, "--help")
    script = _cli(tmp_path, "--help", script=True)

    assert module.returncode == script.returncode == 0
    assert "Usage: stageflow " in module.stdout
    assert module.stdout == script.stdout
