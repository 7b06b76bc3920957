"""``make demo``: the research pipeline through the ``stageflow`` command, on SQLite.

What a newcomer sees in under a minute, with no network:

1. a run with live progress (parallel fetches, a retried transient failure, a
   stage that skips itself, a "model" that reports the tokens it spent);
2. a second run interrupted half-way with Ctrl-C (SIGINT): the command exits 130
   and the run is recorded as cancelled;
3. ``stageflow resume``: the stages that had completed are restored from the
   store, not run again; the others run;
4. ``stageflow runs`` and ``stageflow show``: both runs, as the store keeps them.

Every step is the command a user would type; the store is a SQLite file of its own
(``.stageflow/demo.db``), started afresh each time.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE = ROOT / ".stageflow"
DB = STATE / "demo.db"
STORE = "sqlite:///.stageflow/demo.db"  # relative to the repository, where the commands run
TARGET = "examples/research.py:pipeline"
STAGEFLOW = [sys.executable, "-m", "stageflow.cli"]

# Runs a command with SIGINT at its default: it sets SIG_DFL, then execs the command (same
# pid). A process started with SIGINT ignored (a background job, nohup, some CI runners)
# passes SIG_IGN on to its children, and the stageflow command rightly keeps it ignored;
# the child the demo presses Ctrl-C on must get it back. ``restore_signals`` resets only
# SIGPIPE, SIGXFZ and SIGXFSZ, and ``preexec_fn`` is not safe with threads.
DEFAULT_SIGINT = [
    sys.executable,
    "-I",
    "-S",
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]


def say(step: str) -> None:
    bold, plain = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}── {step}{plain}\n", flush=True)


def stageflow(*args: str) -> int:
    """Run one command as a user would, its output straight to the terminal."""
    print("$ stageflow " + " ".join(args), flush=True)
    return subprocess.run([*STAGEFLOW, *args], cwd=ROOT, check=False).returncode


def stored_stages(run_id: str) -> int:
    """How many stage completions the store holds for ``run_id`` (read past the CLI)."""
    try:
        with sqlite3.connect(f"file:{DB}?mode=ro", uri=True, timeout=1) as db:
            row = db.execute(
                "SELECT count(*) FROM stageflow_stages WHERE run_id = ?", (run_id,)
            ).fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0])


def interrupted_run(run_id: str, after: int) -> int:
    """Start a run, press Ctrl-C (SIGINT) once ``after`` stages are stored; its exit code."""
    args = ("run", TARGET, "--data", "topic=barn owls", "--run-id", run_id, "--store", STORE)
    print("$ stageflow " + " ".join(args) + "     # Ctrl-C half-way", flush=True)
    reset = DEFAULT_SIGINT if os.name == "posix" else []  # Ctrl-C even if ours is ignored
    child = subprocess.Popen([*reset, *STAGEFLOW, *args], cwd=ROOT)
    deadline = time.monotonic() + 30
    while stored_stages(run_id) < after and child.poll() is None:
        if time.monotonic() > deadline:
            child.kill()
            raise SystemExit("the demo run did not progress")
        time.sleep(0.05)
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
    return child.wait(30)


def main() -> int:
    if STATE.exists():
        for stale in (DB, DB.with_name("demo.db-wal"), DB.with_name("demo.db-shm")):
            stale.unlink(missing_ok=True)

    say("1/4  a run, with live progress")
    first = stageflow("run", TARGET, "--data", "topic=owls", "--store", STORE)
    if first != 0:
        return first

    say("2/4  a second run, interrupted half-way")
    run_id = f"demo-{int(time.time())}"
    code = interrupted_run(run_id, after=4)
    print(f"(exit code {code}: 130 means cancelled)", flush=True)
    if code != 130:
        return 1

    say("3/4  resume it: completed stages are restored, the rest runs")
    if stageflow("resume", run_id, "--store", STORE) != 0:
        return 1

    say("4/4  both runs, as the store keeps them")
    stageflow("runs", "--store", STORE)
    return stageflow("show", run_id, "--store", STORE)


if __name__ == "__main__":
    sys.exit(main())
