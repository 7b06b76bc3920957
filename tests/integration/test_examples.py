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
            Engine(sink=sink, fail_fast=False).run(
                graph, data={"topic": "owls", "language": "en", "archive": "down"}
            )
        )

        assert result.status == "failed"  # fetch_archive is down, and says so
        assert result.with_status("failed") == ("fetch_archive",)
        assert result["fetch_papers"].attempts == 2
        assert sink.types("fetch_papers").count("stage.retrying") == 1
        assert result["translate"].status == "skipped"
        assert result["report"].data["report"].startswith("4 findings about owls")
        assert result.usage.by_model["demo-model"].tokens > 0

    def test_with_the_archive_up_the_run_completes(self, research):
        graph = research.pipeline.build()

        result = run_virtual(Engine().run(graph, data={"topic": "owls"}))

        assert result.status == "completed"
        assert result["report"].data["report"].startswith("5 findings about owls")

    def test_the_demo_runs_interrupts_and_resumes_through_the_command(self):
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "demo.py")],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert out.count("completed: run") == 2  # the first run, and the resumed one
        assert "(exit code 130" in out  # the second run was interrupted
        assert "cancelled: resume with  stageflow resume demo-" in out
        assert "restored  fetch_news" in out  # the resume ran nothing that had completed
        assert "usage: 115 tokens" in out
