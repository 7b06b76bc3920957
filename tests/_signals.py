"""Start a child with SIGINT at its default (or ignored), whatever ours is.

A process started with SIGINT ignored (a background job, ``nohup``, some CI runners)
passes SIG_IGN on to its children, and the ``stageflow`` command rightly keeps it
ignored. A test that interrupts a child with SIGINT must therefore start it with SIGINT
reset: ``default_sigint(command)`` is ``command`` run through a tiny Python that sets
SIG_DFL and execs it (same pid, so signals sent to ``Popen.pid`` reach the command).

Why not the standard options: ``restore_signals=True`` resets only SIGPIPE, SIGXFZ and
SIGXFSZ, and ``preexec_fn`` is not safe in a process that has threads (the child may
deadlock before it execs). A caught signal is reset to SIG_DFL by ``exec`` anyway, but an
ignored one stays ignored: only an explicit SIG_DFL before the ``exec`` helps.

``ignored_sigint(command)`` does the reverse, to test what happens under such a parent.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["default_sigint", "ignored_sigint"]


def _exec_with(handler: str) -> list[str]:
    return [
        sys.executable,
        "-I",  # isolated and without site: starts fast; the command gets our environment
        "-S",
        "-c",
        f"import os, signal, sys; signal.signal(signal.SIGINT, signal.{handler}); "
        "os.execv(sys.argv[1], sys.argv[1:])",
    ]


def default_sigint(command: Sequence[str]) -> list[str]:
    """``command`` (its first item a path to an executable) run with SIGINT at SIG_DFL."""
    return [*_exec_with("SIG_DFL"), *command]


def ignored_sigint(command: Sequence[str]) -> list[str]:
    """``command`` (its first item a path to an executable) run with SIGINT ignored."""
    return [*_exec_with("SIG_IGN"), *command]
