"""The ``stageflow`` command: run pipelines durably, resume them, inspect their runs.

Needs the ``cli`` extra (typer and rich) and a store driver (``sqlite`` or ``postgres``
extra). ``stageflow --help`` lists the commands; see the CLI page of the docs.
"""

from __future__ import annotations

from ._commands import app
from ._errors import EXIT_CANCELLED, EXIT_COMPLETED, EXIT_FAILED, EXIT_USAGE, EXIT_WAITING
from ._files import export, pipelines, schema
from ._files import graph as _graph
from ._files import run as _run
from ._files import validate as _validate
from ._info import info
from ._mcp import mcp
from ._serve import serve, token
from ._worker import submit, worker, workers

app.command()(serve)
app.command()(token)
app.command()(mcp)
app.command()(info)
app.command("run")(_run)
app.command("graph")(_graph)
app.command("validate")(_validate)
app.command()(schema)
app.command()(export)
app.command()(pipelines)
app.command()(submit)
app.command()(worker)
app.command()(workers)

__all__ = [
    "EXIT_CANCELLED",
    "EXIT_COMPLETED",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_WAITING",
    "app",
    "main",
]


def main() -> None:
    """Run the ``stageflow`` command with ``sys.argv`` (the console script's entry point)."""
    app(prog_name="stageflow")
