"""Input stages from the shell: a run that waits, ``stageflow send``, and the resume after it.

The pipelines are a module written to the test's folder, driven through typer's CliRunner
on a SQLite store; their stages append their names to ``calls.txt`` beside the module, so
that a test sees which stage ran how often across the commands.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from datetime import datetime
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from stageflow import Engine, Event, EventType
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.cli import EXIT_COMPLETED, EXIT_USAGE, EXIT_WAITING, app
from stageflow.cli._commands import TARGET_LABEL
from stageflow.cli._load import load_graph
from stageflow.cli._progress import ProgressView
from stageflow.ports import InputRecord

FLOWS = """
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from stageflow import Engine, Pipeline
from stageflow.testing import ManualClock

CALLS = Path(__file__).with_name("calls.txt")


def called(stage):
    with CALLS.open("a") as file:
        file.write(stage + "\\n")


class Decision(BaseModel):
    approved: bool
    note: str = ""


async def draft(ctx):
    called("draft")
    return {"text": "the launch post"}


async def publish(ctx):
    called("publish")
    return {"published": ctx.inputs.get_from("approve", "approved")}


def ask(ctx):
    return f"Publish {ctx.inputs.get_from('draft', 'text')!r}?"


approval = (
    Pipeline("approval")
    .with_stage("draft", draft)
    .with_input("approve", schema=Decision, dependencies=("draft",), prompt=ask, timeout=3600)
    .with_stage("publish", publish, dependencies=("approve",))
)


async def merge(ctx):
    called("merge")
    return {"legal": ctx.inputs.get_from("legal", "value"),
            "brand": ctx.inputs.get_from("brand", "value")}


two = (
    Pipeline("two")
    .with_stage("draft", draft)
    .with_input("legal", schema=bool, dependencies=("draft",), prompt="Legal: ok?")
    .with_input("brand", schema=Literal["ok", "rework"], dependencies=("draft",),
                prompt="Brand: ok?")
    .with_stage("merge", merge, dependencies=("legal", "brand"))
)


async def ship(ctx):
    called("ship")
    return {"shipped": ctx.inputs.get_from("final", "value")}


chained = (
    Pipeline("chained")
    .with_stage("draft", draft)
    .with_input("first", schema=bool, dependencies=("draft",), prompt="First look?")
    .with_input("final", schema=bool, dependencies=("first",), prompt="Final word?")
    .with_stage("ship", ship, dependencies=("final",))
)


async def split(ctx):
    called("split")
    return {"docs": ["a", "b"]}


per_item = (
    Pipeline("per_item")
    .with_stage("split", split)
    .with_input("review", schema=bool, dependencies=("split",), over="split.docs", key=str,
                prompt=lambda ctx: f"Keep {ctx.item}?")
)
"""

EXPIRING = """
from stageflow import Engine, Pipeline
from stageflow.testing import ManualClock

# The run waits at a manual clock's time, far in the past: its deadline (1060) has passed
# for a sender on the real clock, as it would have an hour after a real run waited.
engine = Engine(clock=ManualClock(1000.0))
pipeline = Pipeline("expiring").with_input("approve", schema=bool, timeout=60)
"""

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def flows(tmp_path: Path) -> str:
    path = tmp_path / "flows.py"
    path.write_text(FLOWS)
    return str(path)


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.txt"
    return path.read_text().split() if path.exists() else []


def inputs(url: str, run_id: str) -> dict[str, InputRecord]:
    async def read() -> dict[str, InputRecord]:
        store = SQLAlchemyStore(url)
        try:
            return await store.load_inputs(run_id)
        finally:
            await store.aclose()

    return asyncio.run(read())


ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"


# ----------------------------------------------------------------------------- end to end


class TestApprovalEndToEnd:
    def test_run_waits_send_is_checked_and_stored_once_and_resume_completes(
        self, runner, url, flows, tmp_path
    ):
        target = f"{flows}:approval"

        ran = invoke(runner, "run", target, "--store", url, "--run-id", "r1")

        assert ran.exit_code == EXIT_WAITING, ran.output
        assert "waiting: run r1 of 'approval'" in ran.stdout
        assert "stages: 1 completed, 1 waiting, 1 pending" in ran.stdout
        assert "  approve: Publish 'the launch post'?" in ran.stdout
        assert re.search(rf'value \{{"approved": boolean, "note"\?: string\}}, deadline {ISO}',
                         ran.stdout)  # fmt: skip
        assert f"give input with  stageflow send r1 approve JSON --store {url}" in ran.stdout
        assert f"then resume with  stageflow resume r1 --store {url}" in ran.stdout
        assert "Traceback" not in ran.output

        bad_json = invoke(runner, "send", "r1", "approve", "yes", "--store", url)

        assert bad_json.exit_code == EXIT_USAGE
        assert "error: JSON 'yes' is not valid JSON" in bad_json.stderr
        assert inputs(url, "r1")["approve"].value is None

        invalid = invoke(runner, "send", "r1", "approve", '{"approved": "maybe"}', "--store", url)

        assert invalid.exit_code == EXIT_USAGE
        assert "input 'approve': value[approved] is str 'maybe'" in invalid.stderr
        assert "nothing was stored" in invalid.stderr
        assert inputs(url, "r1")["approve"].value is None

        given = invoke(runner, "send", "r1", "approve", '{"approved": true}', "--store", url)

        assert given.exit_code == EXIT_COMPLETED, given.output
        assert "gave input 'approve' of run r1" in given.stdout
        assert f"go on with  stageflow resume r1 --store {url}" in given.stdout
        assert json.loads(inputs(url, "r1")["approve"].value or "null") == {
            "approved": True, "note": "",
        }  # fmt: skip

        again = invoke(runner, "send", "r1", "approve", '{"approved": false}', "--store", url)

        assert again.exit_code == EXIT_USAGE
        assert "input 'approve' was given already" in again.stderr
        assert json.loads(inputs(url, "r1")["approve"].value or "null")["approved"] is True

        resumed = invoke(runner, "resume", "r1", "--store", url, "--json")

        assert resumed.exit_code == EXIT_COMPLETED, resumed.output
        out = json.loads(resumed.stdout)
        assert out["status"] == "completed"
        assert out["waiting_for"] == []
        assert {name: s["status"] for name, s in out["stages"].items()} == {
            "draft": "completed", "approve": "completed", "publish": "completed",
        }  # fmt: skip
        assert calls(tmp_path) == ["draft", "publish"]  # draft ran once, before the wait

        late = invoke(runner, "send", "r1", "approve", '{"approved": true}', "--store", url)

        assert late.exit_code == EXIT_USAGE
        assert "has ended" in late.stderr

    def test_run_json_says_what_the_run_waits_for_and_how_to_send_it(self, runner, url, flows):
        ran = invoke(runner, "run", f"{flows}:approval", "--store", url, "--run-id", "j1",
                     "--json")  # fmt: skip

        assert ran.exit_code == EXIT_WAITING
        out = json.loads(ran.stdout)
        assert out["status"] == "waiting"
        assert out["stages"]["approve"]["status"] == "waiting"
        assert out["stages"]["publish"]["status"] == "pending"
        (pending,) = out["waiting_for"]
        assert pending["name"] == "approve"
        assert pending["prompt"] == "Publish 'the launch post'?"
        assert pending["schema"]["required"] == ["approved"]
        assert pending["deadline"] > datetime.now().timestamp()
        assert "stageflow send j1 approve JSON" in ran.stderr

    def test_send_json_reports_the_input_and_what_the_run_still_waits_for(self, runner, url, flows):
        invoke(runner, "run", f"{flows}:two", "--store", url, "--run-id", "t1")

        sent = invoke(runner, "send", "t1", "legal", "true", "--store", url, "--json")

        assert sent.exit_code == EXIT_COMPLETED
        out = json.loads(sent.stdout)
        assert (out["run_id"], out["input"], out["status"]) == ("t1", "legal", "waiting")
        assert out["given_at"] is not None
        assert [p["name"] for p in out["waiting_for"]] == ["brand"]


class TestParallelInputs:
    def test_each_input_is_sent_by_name_and_a_resume_waits_again_for_the_rest(
        self, runner, url, flows, tmp_path
    ):
        ran = invoke(runner, "run", f"{flows}:two", "--store", url, "--run-id", "p1")

        assert ran.exit_code == EXIT_WAITING
        assert "  legal: Legal: ok?" in ran.stdout
        assert "  brand: Brand: ok?" in ran.stdout
        assert 'value "ok" | "rework"' in ran.stdout
        assert "stageflow send p1 NAME JSON" in ran.stdout  # two inputs: which is yours

        legal = invoke(runner, "send", "p1", "legal", "true", "--store", url)

        assert legal.exit_code == EXIT_COMPLETED
        assert "run p1 still waits for:" in legal.stdout
        assert "  brand: Brand: ok?" in legal.stdout
        assert "stageflow send p1 brand JSON" in legal.stdout

        waits_again = invoke(runner, "resume", "p1", "--store", url)

        assert waits_again.exit_code == EXIT_WAITING, waits_again.output
        assert "  brand: Brand: ok?" in waits_again.stdout
        assert "  legal:" not in waits_again.stdout
        assert "stageflow send p1 brand JSON" in waits_again.stdout

        wrong = invoke(runner, "send", "p1", "brand", '"maybe"', "--store", url)

        assert wrong.exit_code == EXIT_USAGE
        assert "value is str 'maybe'" in wrong.stderr

        assert invoke(runner, "send", "p1", "brand", '"ok"', "--store", url).exit_code == 0
        done = invoke(runner, "resume", "p1", "--store", url, "--json")

        assert done.exit_code == EXIT_COMPLETED, done.output
        assert calls(tmp_path) == ["draft", "merge"]

    def test_an_input_sent_before_its_stage_waits_is_kept_for_it(
        self, runner, url, flows, tmp_path
    ):
        ran = invoke(runner, "run", f"{flows}:chained", "--store", url, "--run-id", "e1")
        assert ran.exit_code == EXIT_WAITING
        assert "  final:" not in ran.stdout  # it waits for first only

        early = invoke(runner, "send", "e1", "final", "true", "--store", url)

        assert early.exit_code == EXIT_COMPLETED, early.output
        assert "run e1 still waits for:" in early.stdout
        assert "  first: First look?" in early.stdout

        assert invoke(runner, "send", "e1", "first", "true", "--store", url).exit_code == 0
        done = invoke(runner, "resume", "e1", "--store", url, "--json")

        assert done.exit_code == EXIT_COMPLETED, done.output  # final did not wait: given
        assert json.loads(done.stdout)["waiting_for"] == []
        assert calls(tmp_path) == ["draft", "ship"]

    def test_an_input_per_item_is_sent_by_its_item_name(self, runner, url, flows, tmp_path):
        ran = invoke(runner, "run", f"{flows}:per_item", "--store", url, "--run-id", "i1")

        assert ran.exit_code == EXIT_WAITING
        assert "  review[a]: Keep a?" in ran.stdout
        assert "  review[b]: Keep b?" in ran.stdout

        whole = invoke(runner, "send", "i1", "review", "true", "--store", url)

        assert whole.exit_code == EXIT_USAGE
        assert "'review[key]'" in whole.stderr  # its items take the values

        item = invoke(runner, "send", "i1", "review[a]", "true", "--store", url)

        assert item.exit_code == EXIT_COMPLETED, item.output
        assert "stageflow send i1 'review[b]' JSON" in item.stdout  # quoted for the shell
        assert invoke(runner, "send", "i1", "review[b]", "false", "--store", url).exit_code == 0
        done = invoke(runner, "resume", "i1", "--store", url, "--json")

        assert done.exit_code == EXIT_COMPLETED, done.output
        assert calls(tmp_path) == ["split"]

    def test_a_driver_waiting_in_another_process_takes_the_value_sent(
        self, runner, url, flows, tmp_path
    ):
        target = f"{flows}:approval"
        waiting = asyncio.Event()

        class OnWait:
            def try_emit(self, event: Event) -> None:
                if event.type == EventType.INPUT_WAITING:
                    waiting.set()

            async def emit(self, event: Event) -> None:
                self.try_emit(event)

        async def scenario():
            store = SQLAlchemyStore(url)
            try:
                engine = Engine(store=store, sink=OnWait(), input_poll=0.01)
                driver = asyncio.create_task(
                    engine.run(load_graph(target), run_id="live-1", wait=True,
                               labels={TARGET_LABEL: target})
                )  # fmt: skip
                await waiting.wait()
                sent = await asyncio.to_thread(
                    invoke, runner, "send", "live-1", "approve", '{"approved": true}',
                    "--store", url,
                )  # fmt: skip
                return sent, await driver
            finally:
                await store.aclose()

        sent, result = asyncio.run(scenario())

        assert sent.exit_code == EXIT_COMPLETED, sent.output
        assert "run live-1 is running: a driver waiting for input takes the value" in sent.stdout
        assert result.status == "completed"
        assert result["publish"].data == {"published": True}
        assert calls(tmp_path) == ["draft", "publish"]


# ----------------------------------------------------------------------------- send refusals


class TestSendRefusals:
    def test_an_unknown_input_names_the_inputs_of_the_run(self, runner, url, flows):
        invoke(runner, "run", f"{flows}:two", "--store", url, "--run-id", "u1")

        result = invoke(runner, "send", "u1", "approve", "true", "--store", url)

        assert result.exit_code == EXIT_USAGE
        assert "run 'u1' has no input 'approve' (its inputs: " in result.stderr
        assert "'legal'" in result.stderr
        assert "'brand'" in result.stderr

    def test_an_unknown_run_is_refused(self, runner, url, flows):
        invoke(runner, "run", f"{flows}:approval", "--store", url, "--run-id", "k1")

        result = invoke(runner, "send", "nope", "approve", "true", "--store", url)

        assert result.exit_code == EXIT_USAGE
        assert "no run 'nope'" in result.stderr

    def test_a_store_with_no_runs_is_not_created_by_send(self, runner, url, tmp_path):
        result = invoke(runner, "send", "r1", "approve", "true", "--store", url)

        assert result.exit_code == EXIT_USAGE
        assert "no run 'r1'" in result.stderr
        assert not (tmp_path / "runs.db").exists()

    def test_bad_json_is_refused_before_the_store_is_opened(self, runner, tmp_path):
        result = invoke(runner, "send", "r1", "approve", "{approved: true}",
                        "--store", f"sqlite:///{tmp_path}/none.db")  # fmt: skip

        assert result.exit_code == EXIT_USAGE
        assert "error: JSON '{approved: true}' is not valid JSON" in result.stderr

    def test_a_value_after_the_deadline_is_refused_and_not_stored(self, runner, url, tmp_path):
        path = tmp_path / "expiring.py"
        path.write_text(EXPIRING)
        ran = invoke(runner, "run", f"{path}:pipeline", "--store", url, "--run-id", "x1")
        assert ran.exit_code == EXIT_WAITING, ran.output
        assert "deadline 1970-01-01T" in ran.stdout

        result = invoke(runner, "send", "x1", "approve", "true", "--store", url)

        assert result.exit_code == EXIT_USAGE
        assert "input 'approve': its deadline passed" in result.stderr
        assert inputs(url, "x1")["approve"].value is None

    def test_a_run_started_from_python_needs_its_target(self, runner, url, flows):
        async def start() -> None:
            store = SQLAlchemyStore(url)
            try:
                await Engine(store=store).run(load_graph(f"{flows}:approval"), run_id="py1")
            finally:
                await store.aclose()

        asyncio.run(start())

        refused = invoke(runner, "send", "py1", "approve", '{"approved": true}', "--store", url)

        assert refused.exit_code == EXIT_USAGE
        assert "give its pipeline with --target" in refused.stderr
        assert inputs(url, "py1")["approve"].value is None

        given = invoke(runner, "send", "py1", "approve", '{"approved": true}', "--store", url,
                       "--target", f"{flows}:approval")  # fmt: skip

        assert given.exit_code == EXIT_COMPLETED, given.output
        assert inputs(url, "py1")["approve"].value is not None

    def test_a_target_that_is_not_the_runs_graph_is_refused(self, runner, url, flows):
        invoke(runner, "run", f"{flows}:approval", "--store", url, "--run-id", "m1")

        result = invoke(runner, "send", "m1", "legal", "true", "--store", url,
                        "--target", f"{flows}:two")  # fmt: skip

        assert result.exit_code == EXIT_USAGE
        assert "m1" in result.stderr
        assert inputs(url, "m1")["approve"].value is None


# ----------------------------------------------------------------------------- inspect


class TestInspect:
    def test_runs_lists_the_waiting_runs(self, runner, url, flows):
        invoke(runner, "run", f"{flows}:approval", "--store", url, "--run-id", "w1")
        invoke(runner, "run", f"{flows}:approval", "--store", url, "--run-id", "w2")
        invoke(runner, "send", "w2", "approve", '{"approved": true}', "--store", url)
        invoke(runner, "resume", "w2", "--store", url)

        result = invoke(runner, "runs", "--status", "waiting", "--store", url, "--json")

        assert result.exit_code == EXIT_COMPLETED, result.output
        assert [(r["run_id"], r["status"]) for r in json.loads(result.stdout)] == [
            ("w1", "waiting")
        ]
        table = invoke(runner, "runs", "--status", "waiting", "--store", url)
        assert re.search(r"^w1\s+approval\s+waiting", table.stdout, re.M)

    def test_show_lists_the_pending_inputs_and_the_waiting_stage(self, runner, url, flows):
        invoke(runner, "run", f"{flows}:approval", "--store", url, "--run-id", "s1")

        result = invoke(runner, "show", "s1", "--store", url)

        assert result.exit_code == EXIT_COMPLETED, result.output
        assert "run s1 of 'approval': waiting" in result.stdout
        assert re.search(r"^approve\s+waiting\s+0", result.stdout, re.M)
        assert re.search(r"^publish\s+pending\s+0", result.stdout, re.M)
        assert re.search(rf"^approve\s+no, waiting\s+{ISO}\s+Publish 'the launch post'\?",
                         result.stdout, re.M)  # fmt: skip
        assert f"give input with  stageflow send s1 approve JSON --store {url}" in result.stdout

    def test_show_json_holds_the_inputs_given_and_pending(self, runner, url, flows):
        invoke(runner, "run", f"{flows}:two", "--store", url, "--run-id", "s2")
        invoke(runner, "send", "s2", "legal", "false", "--store", url)

        out = json.loads(invoke(runner, "show", "s2", "--store", url, "--json").stdout)

        assert out["status"] == "waiting"
        assert out["stages"]["brand"]["status"] == "waiting"
        assert out["stages"]["legal"]["status"] == "pending"  # given: its resume completes it
        assert out["inputs"]["legal"]["status"] == "given"
        assert out["inputs"]["legal"]["value"] is False
        assert out["inputs"]["brand"]["status"] == "waiting"
        assert out["inputs"]["brand"]["prompt"] == "Brand: ok?"
        assert out["inputs"]["brand"]["schema"]["enum"] == ["ok", "rework"]
        assert [p["name"] for p in out["waiting_for"]] == ["brand"]

    def test_show_after_the_value_was_given_says_so(self, runner, url, flows):
        invoke(runner, "run", f"{flows}:approval", "--store", url, "--run-id", "s3")
        invoke(runner, "send", "s3", "approve", '{"approved": true}', "--store", url)

        result = invoke(runner, "show", "s3", "--store", url)

        assert re.search(rf"^approve\s+yes, {ISO}", result.stdout, re.M)
        assert "give input with" not in result.stdout

    def test_events_print_the_input_times_as_times(self, runner, url, flows):
        invoke(runner, "run", f"{flows}:approval", "--store", url, "--run-id", "v1")

        result = invoke(runner, "events", "v1", "--store", url)

        assert result.exit_code == EXIT_COMPLETED
        assert re.search(rf"input\.waiting\s+approve\s+1\s+prompt=Publish .* deadline={ISO}",
                         result.stdout)  # fmt: skip
        assert re.search(r"run\.waiting\s+-\s+status=waiting", result.stdout)

    def test_a_run_that_waited_and_was_resumed_shows_both_drives_numbered_on(
        self, runner, url, flows
    ):
        invoke(runner, "run", f"{flows}:approval", "--store", url, "--run-id", "w1")
        followed = invoke(runner, "events", "w1", "--store", url, "--follow", "--json")
        invoke(runner, "send", "w1", "approve", '{"approved": true}', "--store", url)
        resumed = invoke(runner, "resume", "w1", "--store", url)

        table = invoke(runner, "events", "w1", "--store", url)
        lines = invoke(runner, "events", "w1", "--store", url, "--json").stdout.splitlines()

        assert followed.exit_code == 0  # a waiting run has stopped: the follow ends
        assert json.loads(followed.stdout.splitlines()[-1])["type"] == "run.waiting"
        assert resumed.exit_code == EXIT_COMPLETED, resumed.output
        headers = [line.split()[2] for line in table.stdout.splitlines() if line[:3] == "-- "]
        assert headers == ["started", "resumed"]
        events = [json.loads(line) for line in lines]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        types = [e["type"] for e in events]
        assert types.index("run.waiting") < types.index("run.started", 1)
        assert (types.count("run.started"), types[-1]) == (2, "run.completed")
        assert followed.stdout.splitlines() == lines[: len(followed.stdout.splitlines())]

    def test_follow_goes_on_while_a_driver_waits_for_input_and_ends_with_the_run(
        self, runner, url, flows, monkeypatch
    ):
        from stageflow.cli import _commands

        target = f"{flows}:approval"
        waiting = asyncio.Event()
        looks = []
        following = threading.Event()  # set at the follower's second look: it follows
        get_run = _commands._get_run

        async def looked(store, run_id, url):
            record = await get_run(store, run_id, url)
            looks.append(record.status)
            if len(looks) == 2:
                following.set()
            return record

        monkeypatch.setattr(_commands, "_get_run", looked)

        class OnWait:
            def try_emit(self, event: Event) -> None:
                if event.type == EventType.INPUT_WAITING:
                    waiting.set()

            async def emit(self, event: Event) -> None:
                self.try_emit(event)

        async def scenario():
            store = SQLAlchemyStore(url)
            try:
                engine = Engine(store=store, event_log=store, sink=OnWait(), input_poll=0.01)
                driver = asyncio.create_task(
                    engine.run(load_graph(target), run_id="live-2", wait=True,
                               labels={TARGET_LABEL: target})
                )  # fmt: skip
                await waiting.wait()
                follower = asyncio.create_task(asyncio.to_thread(
                    invoke, runner, "events", "live-2", "--store", url, "--follow", "--json"
                ))  # fmt: skip
                await asyncio.to_thread(following.wait, 30)
                await engine.send("live-2", "approve", {"approved": True})
                result = await driver
                return await follower, result, await store.read_events("live-2")
            finally:
                await store.aclose()

        followed, result, stored = asyncio.run(scenario())

        assert result.status == "completed"
        assert followed.exit_code == 0, followed.output
        assert looks[:2] == ["running", "running"]  # it followed the run while it waited
        assert [json.loads(line) for line in followed.stdout.splitlines()] == [
            e.to_dict() for e in stored
        ]
        assert stored[-1].type == "run.completed"


# ----------------------------------------------------------------------------- progress


def _event(type_: EventType, stage: str, **data: object) -> Event:
    return Event(type_, "r", "p", stage, seq=1, ts=0.0, attempt=1, data=data)


class TestProgress:
    def test_a_waiting_input_shows_its_prompt_and_counts_beside_the_bar(self):
        console = Console(record=True, width=160, force_terminal=False)
        view = ProgressView(("draft", "approve"), console)

        view.try_emit(_event(EventType.STAGE_STARTED, "approve", kind="input"))
        view.try_emit(_event(EventType.INPUT_WAITING, "approve", prompt="Ship it?",
                             deadline=None))  # fmt: skip

        row = view.stages["approve"]
        assert (row.status, row.note) == ("waiting", "Ship it?")
        console.print(view)
        assert re.search(r"approve\s+waiting\s+1\s+.*Ship it\?", console.export_text())
        assert view.progress.tasks[0].fields["ends"] == "1 waiting"

    def test_piped_a_waiting_input_is_one_line(self):
        console = Console(record=True, width=160, force_terminal=False)
        view = ProgressView(("approve",), console, lines=True)

        view.try_emit(_event(EventType.INPUT_WAITING, "approve", prompt="Ship it?",
                             deadline=None))  # fmt: skip

        assert console.export_text().startswith("waiting   approve")

    def test_a_value_received_runs_the_stage_on(self):
        view = ProgressView(("approve",), Console(record=True))
        view.try_emit(_event(EventType.INPUT_WAITING, "approve", prompt=None, deadline=None))

        view.try_emit(_event(EventType.INPUT_RECEIVED, "approve", given_at=1.0))

        assert (view.stages["approve"].status, view.stages["approve"].note) == (
            "running", "input given",
        )  # fmt: skip
