"""What the command shows: costs as money, the drives of a resumed run, retried attempts in
the live table, and a progress bar that a cancel leaves short of n/n."""

from __future__ import annotations

import asyncio
import json
import math
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from stageflow import Engine, Event, Pipeline, RetryPolicy, RunStatus
from stageflow.adapters.sqlalchemy import SQLAlchemyStore
from stageflow.cli import EXIT_CANCELLED, EXIT_COMPLETED, EXIT_FAILED, app
from stageflow.cli._format import money, run_currency
from stageflow.cli._progress import ProgressView
from stageflow.ports import RunRecord
from stageflow.testing import run_virtual

FLOW = """
from stageflow import Engine, Pipeline


async def a(ctx):
    return {}


async def priced(ctx):
    ctx.usage.report(model="m", input_tokens=10, output_tokens=5, cost=7.58e-05)
    return {}


async def tokens(ctx):
    ctx.usage.report(model="m", input_tokens=1_000_000, output_tokens=0)
    return {}


async def b(ctx):
    if ctx.data.get("fail"):
        raise RuntimeError("boom")
    return {}


cheap = Pipeline("cheap").with_stage("a", a).with_stage("priced", priced, dependencies=("a",))
metered = Pipeline("metered").with_stage("tokens", tokens)
twice = Pipeline("twice").with_stage("a", a).with_stage("b", b, dependencies=("a",))
"""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def flow(tmp_path: Path) -> str:
    path = tmp_path / "flow.py"
    path.write_text(FLOW)
    return str(path)


def invoke(runner: CliRunner, *args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


# ----------------------------------------------------------------------------- money


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (7.58e-05, "$0.000076"),  # sub-cent: two significant digits, no exponent
        (0.0123, "$0.012"),
        (0.00999, "$0.010"),  # rounded before the places are chosen
        (0.5, "$0.50"),
        (0.999, "$1.00"),
        (12.34, "$12.34"),
        (1234.5, "$1,234.50"),
        (0, "$0.00"),
        (1e-9, "$0.0000000010"),
        (-0.25, "-$0.25"),
        (None, ""),
        (math.inf, "inf"),
    ],
)
def test_money_prints_a_cost_as_an_amount(value, shown):
    assert money(value) == shown
    assert money(value, "USD") == shown


def test_money_names_a_currency_without_a_sign_after_the_amount():
    assert money(7.58e-05, "EUR") == "0.000076 EUR"
    assert money(12.34, "GBP") == "12.34 GBP"
    assert money(None, "EUR") == ""


def _record(config: str) -> RunRecord:
    return RunRecord("r", "p", "f", "{}", RunStatus.COMPLETED, 0.0, 0.0, config=config)


@pytest.mark.parametrize(
    ("config", "currency"),
    [
        (json.dumps({"version": 1, "prices": {"models": {}, "currency": "EUR"}}), "EUR"),
        (json.dumps({"version": 1, "prices": None}), None),
        ("", None),  # recorded without a configuration
        ("not json", None),
        (json.dumps({"prices": {"currency": 3}}), None),
    ],
)
def test_the_currency_of_a_run_is_its_stored_price_tables(config, currency):
    assert run_currency(_record(config)) == currency


class TestCostsAsMoney:
    def test_run_and_show_print_a_sub_cent_cost_as_money_and_json_keeps_the_number(
        self, runner, url, flow
    ):
        ran = invoke(runner, "run", f"{flow}:cheap", "--store", url, "--run-id", "m1")
        shown = invoke(runner, "show", "m1", "--store", url)
        as_json = json.loads(invoke(runner, "show", "m1", "--store", url, "--json").stdout)

        assert ran.exit_code == shown.exit_code == EXIT_COMPLETED
        assert "usage: 15 tokens (10 in, 5 out), cost $0.000076" in ran.stdout
        assert "usage: 15 tokens (10 in, 5 out), cost $0.000076" in shown.stdout
        row = next(line for line in shown.stdout.splitlines() if line.startswith("priced"))
        assert row.split()[4:6] == ["15", "$0.000076"]  # the stage's tokens and cost
        assert "e-05" not in ran.stdout + shown.stdout
        assert as_json["usage"]["cost"] == pytest.approx(7.58e-05)
        assert as_json["usage"]["by_stage"]["priced"]["cost"] == pytest.approx(7.58e-05)
        assert as_json["usage"]["currency"] is None  # no price table: USD, unsaid

    def test_the_price_tables_currency_is_named(self, runner, url, flow, tmp_path):
        prices = tmp_path / "prices.toml"
        prices.write_text(
            textwrap.dedent("""
                currency = "EUR"

                [models.m]
                input = 2.5
                output = 10.0
            """)
        )

        ran = invoke(runner, "run", f"{flow}:metered", "--store", url, "--run-id", "m2",
                     "--prices", str(prices))  # fmt: skip
        shown = invoke(runner, "show", "m2", "--store", url)
        as_json = json.loads(invoke(runner, "show", "m2", "--store", url, "--json").stdout)

        assert ran.exit_code == EXIT_COMPLETED, ran.stdout + ran.stderr
        assert "cost 2.50 EUR" in ran.stdout
        assert "cost 2.50 EUR" in shown.stdout
        assert (as_json["usage"]["cost"], as_json["usage"]["currency"]) == (2.5, "EUR")

    def test_the_cost_amounts_of_budget_events_are_money(self, runner, url, flow, tmp_path):
        from stageflow.cli._commands import _event_line

        event = {"seq": 4, "ts": 1.0, "type": "budget.warning", "stage": "s", "attempt": 1,
                 "data": {"scope": "run", "limit": "cost", "maximum": 0.001,
                          "spent": 0.000812, "warn_at": 0.8}}  # fmt: skip
        tokens = {**event, "data": {"limit": "tokens", "maximum": 100, "spent": 81}}

        assert _event_line(event)[-1] == (
            "scope=run limit=cost maximum=$0.0010 spent=$0.00081 warn_at=0.8"
        )
        assert _event_line(event, "EUR")[-1] == (
            "scope=run limit=cost maximum=0.0010 EUR spent=0.00081 EUR warn_at=0.8"
        )
        assert _event_line(tokens)[-1] == "limit=tokens maximum=100 spent=81"


# ----------------------------------------------------------------------------- drives


HEADER = r"-- run (started|resumed) \d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


class TestDrives:
    def test_events_says_where_each_drive_of_a_resumed_run_begins(self, runner, url, flow):
        first = invoke(runner, "run", f"{flow}:twice", "--store", url, "--run-id", "d1",
                       "-d", "fail=true")  # fmt: skip
        again = invoke(runner, "resume", "d1", "--store", url)

        table = invoke(runner, "events", "d1", "--store", url)
        followed = invoke(runner, "events", "d1", "--store", url, "--follow")
        lines = invoke(runner, "events", "d1", "--store", url, "--json")

        assert first.exit_code == again.exit_code == EXIT_FAILED
        for shown in (table, followed):
            headers = [line for line in shown.stdout.splitlines() if line.startswith("-- ")]
            assert [h.split()[2] for h in headers] == ["started", "resumed"]
            assert all(re.fullmatch(HEADER, h) for h in headers)
            rows = shown.stdout.splitlines()
            # each header comes just above (or, in a table, above the column names above)
            # a run.started; the resume numbers its events on from the first drive's
            below = [
                rows[at + 1].split() if shown is followed else rows[at + 2].split()
                for at, line in enumerate(rows)
                if line.startswith("-- ")
            ]
            assert [row[2] for row in below] == ["run.started", "run.started"]
            assert below[0][0] == "1"
            assert int(below[1][0]) > 1
        events = [json.loads(line) for line in lines.stdout.splitlines()]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        started = [e for e in events if e["type"] == "run.started"]
        assert [e["data"] for e in started] == [{"stages": 2}, {"stages": 2, "resumed": True}]
        assert [e["type"] for e in events].count("run.failed") == 2
        assert not any(line.startswith("-- ") for line in lines.stdout.splitlines())

    @pytest.mark.parametrize("logged", [False, True], ids=["no-log", "event-log"])
    def test_a_run_started_from_python_shows_the_drives_its_log_has(
        self, runner, url, flow, logged
    ):
        graph = (
            Pipeline("twice").with_stage("a", _nothing).with_stage("b", _fails, dependencies=("a",))
        )

        async def started() -> None:  # with an event log, or none: its first drive left none
            store = SQLAlchemyStore(url)
            try:
                engine = Engine(store=store, event_log=store if logged else None)
                await engine.run(graph.build(), run_id="d2")
            finally:
                await store.aclose()

        asyncio.run(started())

        resumed = invoke(runner, "resume", "d2", "--store", url, "--target", f"{flow}:twice")
        table = invoke(runner, "events", "d2", "--store", url)
        lines = invoke(runner, "events", "d2", "--store", url, "--json").stdout.splitlines()

        assert resumed.exit_code == EXIT_COMPLETED, resumed.stdout + resumed.stderr
        headers = [line for line in table.stdout.splitlines() if line.startswith("-- ")]
        # without a log, the one drive in it is a resume: said by the engine
        assert [h.split()[2] for h in headers] == (
            ["started", "resumed"] if logged else ["resumed"]
        )
        assert [json.loads(line)["seq"] for line in lines] == list(range(1, len(lines) + 1))


async def _nothing(ctx: Any) -> dict[str, Any]:
    return {}


async def _fails(ctx: Any) -> dict[str, Any]:
    raise RuntimeError("boom")


# ----------------------------------------------------------------------------- live table


def _view(*names: str) -> tuple[ProgressView, Console]:
    console = Console(record=True, width=160, force_terminal=False)
    return ProgressView(names, console), console


def _rendered(view: ProgressView, console: Console) -> str:
    console.print(view)
    return console.export_text()


class TestRetriedAttempts:
    def test_a_retried_attempt_shows_as_running_with_its_attempt_number(self):
        view, _ = _view("s")
        seen: dict[int, tuple[str, str]] = {}

        async def flaky(ctx: Any) -> dict[str, Any]:
            state = view.stages["s"]
            seen[ctx.attempt] = (state.shown_status(), state.note)
            if ctx.attempt < 3:
                raise ConnectionError(f"refused ({ctx.attempt})")
            return {}

        graph = Pipeline("p").with_stage(
            "s", flaky, retry=RetryPolicy(attempts=4, backoff="fixed", base=5)
        )
        result = run_virtual(Engine(sink=view).run(graph.build()))

        assert result["s"].ok
        assert seen == {
            1: ("running", ""),
            2: ("running (attempt 2 of 4)", "after ConnectionError: refused (1)"),
            3: ("running (attempt 3 of 4)", "after ConnectionError: refused (2)"),
        }
        assert view.stages["s"].shown_status() == "done"
        assert view.stages["s"].attempts == 3

    def test_during_the_backoff_it_shows_as_retrying_then_running_once_it_starts(self):
        view, console = _view("s")

        def event(type_: str, attempt: int, data: dict[str, Any]) -> None:
            view.try_emit(Event(type_, "r", "p", "s", 1, 1.0, attempt, data))

        event("stage.started", 1, {"kind": "work"})
        event("stage.retrying", 1, {"attempt": 2, "delay": 30.0, "error": "OSError",
                                    "message": "down"})  # fmt: skip
        backoff = _rendered(view, console)
        event("attempt.started", 2, {"attempts": 3})
        running = _rendered(view, console)

        assert re.search(r"s\s+retrying\s+1\s+\S+\s+attempt 2 in 30.00s after OSError: down",
                         backoff)  # fmt: skip
        assert re.search(r"s\s+running \(attempt 2 of 3\)\s+2\s+\S+\s+after OSError: down",
                         running)  # fmt: skip


# ----------------------------------------------------------------------------- the bar


def _bar(text: str) -> str:
    (line,) = [line for line in text.splitlines() if line.lstrip().startswith("stages")]
    return line


class TestTheBarAfterAStop:
    def test_a_cancelled_run_does_not_read_n_of_n(self):
        view, console = _view("a", "b", "c", "d")

        async def hangs(ctx: Any) -> None:
            await asyncio.sleep(3600)

        graph = (
            Pipeline("p")
            .with_stage("a", _nothing)
            .with_stage("b", hangs, dependencies=("a",))
            .with_stage("c", _nothing, dependencies=("b",))
            .with_stage("d", _nothing, dependencies=("c",))
        )
        result = run_virtual(Engine(sink=view).run(graph.build(), timeout=10))

        assert result.status.value == "cancelled"
        assert [v.shown_status() for v in view.stages.values()] == [
            "done", "cancelled", "not started", "not started",
        ]  # fmt: skip
        bar = _bar(_rendered(view, console))
        assert "1/4" in bar
        assert "4/4" not in bar
        assert "1 cancelled, 2 not started" in bar

    def test_fail_fast_counts_the_failed_stage_and_not_those_it_stopped(self):
        view, console = _view("a", "b", "c")

        async def hangs(ctx: Any) -> None:
            await asyncio.sleep(3600)

        async def fails_later(ctx: Any) -> None:
            await asyncio.sleep(1)
            raise RuntimeError("boom")

        graph = (
            Pipeline("p")
            .with_stage("a", fails_later)
            .with_stage("b", hangs)
            .with_stage("c", _nothing, dependencies=("b",))
        )
        run_virtual(Engine(sink=view).run(graph.build()))

        bar = _bar(_rendered(view, console))
        assert "1/3" in bar
        assert "1 failed, 1 cancelled, 1 not started" in bar

    def test_a_run_that_ends_on_its_own_reads_n_of_n_with_what_did_not_complete(self):
        view, console = _view("a", "b", "c")
        graph = (
            Pipeline("p")
            .with_stage("a", _fails)
            .with_stage("b", _nothing, dependencies=("a",))
            .with_stage("c", _nothing)
        )
        run_virtual(Engine(sink=view, fail_fast=False).run(graph.build()))

        bar = _bar(_rendered(view, console))
        assert "3/3" in bar
        assert "1 failed, 1 skipped" in bar

    def test_a_timeout_from_the_command_says_not_started_in_its_lines(self, runner, url, tmp_path):
        path = tmp_path / "hang.py"
        path.write_text(
            textwrap.dedent("""
                import asyncio

                from stageflow import Pipeline


                async def hangs(ctx):
                    await asyncio.sleep(3600)


                async def after(ctx):
                    return {}


                pipeline = Pipeline("hang").with_stage("h", hangs).with_stage(
                    "after", after, dependencies=("h",)
                )
            """)
        )

        result = invoke(runner, "run", f"{path}:pipeline", "--store", url, "--timeout", "0.05")

        assert result.exit_code == EXIT_CANCELLED
        lines = result.stdout.splitlines()
        assert any(line.startswith("cancelled h ") for line in lines)
        assert any(line.startswith("not started after ") for line in lines)
