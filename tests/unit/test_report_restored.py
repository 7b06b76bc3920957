"""StageContext.report_restored: an interceptor says a stage's outcome was restored, not run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stageflow import ConfigurationError, Engine, Pipeline, Priority, StageOutput
from stageflow.testing import RecordingSink, run_virtual


class Replay:
    """Returns a canned output instead of calling the stage, reporting ``taken``."""

    name = "replay"
    priority = Priority.USER

    def __init__(self, *taken: Any) -> None:
        self.taken = taken

    def wrap(self, spec, call):
        async def replayed(ctx):
            ctx.report_restored(*self.taken)
            return StageOutput(data={"replayed": True})

        return replayed


async def slow(ctx):
    await asyncio.sleep(3)
    return {"replayed": False}


def graph():
    return Pipeline().with_stage("s", slow).build()


class TestReportRestored:
    def test_the_result_and_the_terminal_event_report_what_it_took(self):
        sink = RecordingSink()
        result = run_virtual(Engine(interceptors=[Replay(3, 1.5, 4.0)], sink=sink).run(graph()))
        s = result["s"]
        assert s.data == {"replayed": True}
        assert (s.attempts, s.started, s.ended, s.duration) == (3, 1.5, 4.0, 2.5)
        (done,) = sink.of_type("stage.completed")
        assert done.attempt == 3
        assert done.data["duration"] == 2.5

    def test_without_times_the_result_has_none(self):
        result = run_virtual(Engine(interceptors=[Replay(2)]).run(graph()))
        assert (result["s"].attempts, result["s"].started, result["s"].duration) == (2, None, None)

    def test_a_stage_that_is_not_restored_reports_its_own_run(self):
        result = run_virtual(Engine().run(graph()))
        s = result["s"]
        assert (s.attempts, s.started, s.ended, s.data) == (1, 0.0, 3.0, {"replayed": False})

    @pytest.mark.parametrize(
        ("taken", "field"),
        [
            ((0,), "attempts"),
            ((True,), "attempts"),
            (("2",), "attempts"),
            ((1.0,), "attempts"),
            ((1, -1.0, 2.0), "started"),
            ((1, float("nan"), 2.0), "started"),
            ((1, "0", 2.0), "started"),
            ((1, 3.0, 2.0), "ended"),
            ((1, None, -0.5), "ended"),
        ],
    )
    def test_bad_values_are_refused_naming_the_field(self, taken, field):
        result = run_virtual(Engine(interceptors=[Replay(*taken)]).run(graph()))
        error = result["s"].error
        assert isinstance(error, ConfigurationError)
        assert error.field == field
        assert f"{field} must be" in str(error)
