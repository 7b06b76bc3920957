"""StageOutput, StageResult, StageKind and StageStatus: the values a stage deals in."""

from __future__ import annotations

import pytest

from stageflow import StageKind, StageOutput, StageResult, StageStatus


class TestStageOutput:
    def test_ok_carries_the_data(self):
        output = StageOutput.ok(summary="3 pages", pages=3)

        assert output.status is StageStatus.COMPLETED
        assert dict(output.data) == {"summary": "3 pages", "pages": 3}
        assert output.reason is None

    def test_the_default_is_an_empty_success(self):
        assert StageOutput() == StageOutput.ok()
        assert dict(StageOutput().data) == {}

    def test_skip_carries_a_reason_as_str(self):
        assert StageOutput.skip("cache is fresh").reason == "cache is fresh"
        assert StageOutput.skip(42).reason == "42"  # type: ignore[arg-type]
        assert StageOutput.skip().reason == "skipped by the stage"
        assert StageOutput.skip().status is StageStatus.SKIPPED

    def test_fail_takes_a_reason_or_an_exception_and_data(self):
        from_text = StageOutput.fail("bad rows", rejected=[2])
        from_error = StageOutput.fail(ValueError("row 2"))

        assert from_text.status is StageStatus.FAILED
        assert from_text.reason == "bad rows"
        assert dict(from_text.data) == {"rejected": [2]}
        assert from_error.reason == "ValueError: row 2"

    def test_attributes_cannot_be_set(self):
        output = StageOutput.ok(x=1)

        with pytest.raises(AttributeError, match="immutable"):
            output.status = StageStatus.FAILED  # type: ignore[misc]
        with pytest.raises(AttributeError):
            output.extra = 1  # type: ignore[attr-defined]
        assert output.status is StageStatus.COMPLETED

    def test_attributes_cannot_be_deleted(self):
        output = StageOutput.fail("bad")

        with pytest.raises(AttributeError):
            del output.reason
        assert output.reason == "bad"

    def test_equality_compares_status_reason_and_data(self):
        assert StageOutput.ok(x=1) == StageOutput.ok(x=1)
        assert StageOutput.ok(x=1) != StageOutput.ok(x=2)
        assert StageOutput.skip("a") != StageOutput.skip("b")
        assert StageOutput.fail("a") != StageOutput.skip("a")
        assert StageOutput.ok() != {}

    def test_is_unhashable_because_its_data_may_be_mutable(self):
        with pytest.raises(TypeError):
            hash(StageOutput.ok())

    @pytest.mark.parametrize(
        ("output", "text"),
        [
            (StageOutput.ok(x=1, y="z"), "StageOutput.ok(x=1, y='z')"),
            (StageOutput.skip("later"), "StageOutput.skip('later')"),
            (StageOutput.fail("bad"), "StageOutput.fail('bad')"),
        ],
    )
    def test_repr_reads_like_the_constructor(self, output, text):
        assert repr(output) == text


class TestStageResult:
    def test_duration_is_none_unless_the_stage_ran(self):
        ran = StageResult("a", StageStatus.COMPLETED, attempts=1, started=1.5, ended=4.0)
        never = StageResult("b", StageStatus.SKIPPED, reason="dependency 'a' was skipped")

        assert ran.duration == 2.5
        assert never.duration is None
        assert never.started is None

    def test_ok_only_when_completed(self):
        assert StageResult("a", StageStatus.COMPLETED).ok
        for status in (StageStatus.FAILED, StageStatus.SKIPPED, StageStatus.CANCELLED):
            assert not StageResult("a", status).ok

    def test_repr_names_stage_status_attempts_and_reason(self):
        result = StageResult("a", StageStatus.SKIPPED, reason="later")

        assert repr(result) == "<StageResult 'a' skipped attempts=0, reason='later'>"
        assert repr(StageResult("b", StageStatus.COMPLETED, attempts=1)) == (
            "<StageResult 'b' completed attempts=1>"
        )


class TestEnums:
    def test_stage_kinds(self):
        assert [k.value for k in StageKind] == [
            "transform",
            "enrich",
            "route",
            "guard",
            "work",
            "agent",
            "input",
        ]

    def test_stage_statuses(self):
        assert [s.value for s in StageStatus] == [
            "completed", "failed", "skipped", "cancelled", "waiting", "pending",
        ]  # fmt: skip

    def test_enums_are_their_string_values(self):
        assert StageKind.WORK == "work"
        assert f"{StageStatus.FAILED}" == "failed"
