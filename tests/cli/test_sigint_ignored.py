"""Started with SIGINT ignored (a background job, nohup, some CI runners), Ctrl-C still works.

The children that the demo and the tests press Ctrl-C on start with SIGINT at its default
(``tests/_signals.py``, ``examples/demo.py``), so the interrupt tests pass when the test
run itself, or ``make demo``, starts with SIGINT ignored.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .._signals import default_sigint, ignored_sigint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ROOT = Path(__file__).resolve().parents[2]

# Run under a parent that ignores SIGINT: what SIGINT is here, in a plain child and in a
# child started through default_sigint.
ASK = "import signal; print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN)"
PROBE = f"""
import signal, subprocess, sys
from tests._signals import default_sigint

def ignored(command):
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

ask = [sys.executable, "-c", {ASK!r}]
print(signal.getsignal(signal.SIGINT) is signal.SIG_IGN, ignored(ask), ignored(default_sigint(ask)))
"""

INTERRUPT_TESTS = (
    "tests/cli/test_cli_process.py::"
    "test_ctrl_c_or_sigterm_cancels_the_run_and_resume_completes_it[ctrl-c]",
    "tests/integration/test_examples.py::TestResearchExample::"
    "test_the_demo_runs_interrupts_and_resumes_through_the_command",
)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("STAGEFLOW_", "PYTEST_"))}


def test_a_child_started_with_default_sigint_gets_ctrl_c_back_from_a_parent_ignoring_it() -> None:
    done = subprocess.run(
        ignored_sigint([sys.executable, "-c", PROBE]),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    # ignored in the parent: a plain child inherits that, default_sigint's child does not
    assert done.stdout.split() == ["True", "True", "False"]


def test_default_sigint_keeps_the_pid_so_signals_reach_the_command() -> None:
    ask = [sys.executable, "-c", "import os; print(os.getpid())"]
    child = subprocess.Popen(default_sigint(ask), stdout=subprocess.PIPE, text=True)
    out, _ = child.communicate(timeout=60)

    assert int(out) == child.pid


@pytest.mark.slow  # the Ctrl-C test and the demo, in a pytest of their own: ~15 s
def test_the_interrupt_tests_pass_when_the_test_run_ignores_sigint() -> None:
    done = subprocess.run(
        ignored_sigint(
            [sys.executable, "-m", "pytest", *INTERRUPT_TESTS, "-q", "-p", "no:cacheprovider"]
        ),
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout
