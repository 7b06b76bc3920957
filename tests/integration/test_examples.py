"""The examples run: the research pipeline behaves as the demo says it does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stageflow import Engine
from stageflow.testing import RecordingSink, run_virtual

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def research(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    import research

    return research


class TestResearchExample:
    def test_the_pipeline_retries_fails_skips_and_still_reports(self, research):
        sink = RecordingSink()
        graph = research.pipeline.build()

        result = run_virtual(
            Engine(sink=sink, fail_fast=False).run(graph, data={"topic": "owls", "language": "en"})
        )

        assert result.status == "failed"  # fetch_archive is down, and says so
        assert result.with_status("failed") == ("fetch_archive",)
        assert result["fetch_papers"].attempts == 2
        assert sink.types("fetch_papers").count("stage.retrying") == 1
        assert result["translate"].status == "skipped"
        assert result["report"].data["report"].startswith("4 findings about owls")

    def test_the_demo_runs_and_shows_the_report(self):
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "demo.py")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert done.returncode == 0, done.stderr
        assert "4 findings about owls" in done.stdout
        assert "fetch_archive" in done.stdout
