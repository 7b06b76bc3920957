"""Exit codes of the ``stageflow`` command, and the error that ends it with a message."""

from __future__ import annotations

from typing import Final

EXIT_COMPLETED: Final = 0
"""The run completed (or the command did what it was asked)."""
EXIT_FAILED: Final = 1
"""The run failed: a stage failed."""
EXIT_USAGE: Final = 2
"""Bad input of any kind: an option, a TARGET, a store URL, an unknown run id."""
EXIT_WAITING: Final = 3
"""The run waits for input (``with_input``): give it with ``stageflow send``, then resume."""
EXIT_CANCELLED: Final = 130
"""The run was cancelled: Ctrl-C (SIGINT), or its status is cancelled (``--timeout``)."""

EXIT_CODES: Final = {
    "completed": EXIT_COMPLETED,
    "failed": EXIT_FAILED,
    "usage": EXIT_USAGE,
    "waiting": EXIT_WAITING,
    "cancelled": EXIT_CANCELLED,
}


class CliError(Exception):
    """Ends the command with one line on stderr and an exit code.

    Args:
        message: the line (without the ``error:`` prefix).
        code: the exit code (default: :data:`EXIT_USAGE`).
        cause: the user's exception behind it, whose traceback ``--verbose`` shows.
    """

    def __init__(
        self, message: str, code: int = EXIT_USAGE, cause: BaseException | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.cause = cause
