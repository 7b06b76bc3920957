"""``python -m stageflow.cli``: the same as the ``stageflow`` command."""

from stageflow.cli import main

main()
