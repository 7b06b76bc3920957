"""The ``stageflow`` command configures the engine as Python does (real processes).

A budgeted pipeline run from the command is blocked / downgraded exactly as the same
pipeline and engine are from Python, and a budgeted run started from Python and resumed
with ``stageflow resume`` keeps its budget and what it spent.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stageflow import Budget, Engine, RunStatus
from stageflow.adapters.sqlalchemy import SQLAlchemyStore

pytestmark = pytest.mark.slow  # real processes: about a second each

FLOWS = """
from pathlib import Path

from stageflow import Budget, Engine, ModelChain, Pipeline


def stage(tokens):
    async def run(ctx):
        model = ctx.model("big")
        with Path(ctx.data["log"]).open("a") as log:
            log.write(f"{ctx.stage} {model}\\n")
        ctx.usage.report(model=model, input_tokens=tokens)
        failed = Path(ctx.data["log"] + ".failed")
        if ctx.stage == "b" and ctx.data.get("fail_b") and not failed.exists():
            failed.touch()  # once: the next attempt, or the resume, goes through
            raise ConnectionError("down")
        return {"model": model}

    return run


pipeline = (
    Pipeline("spend")
    .with_stage("a", stage(600), estimate=600)
    .with_stage("b", stage(300), dependencies=["a"], estimate=300)
    .with_stage("c", stage(300), dependencies=["b"], estimate=300)
)
CHAINS = [ModelChain("big", "small")]
PRICES = {"big": {"input": 10.0, "output": 10.0}, "small": {"input": 1.0, "output": 1.0}}
"""
BLOCKING = FLOWS + "\nengine = Engine(budget=Budget(max_tokens=1000), prices=PRICES)\n"
DOWNGRADING = FLOWS + (
    "\ndef engine():\n"
    "    return Engine(budget=Budget(max_tokens=1000, policy='downgrade'), model_chains=CHAINS)\n"
)
PRICES_TOML = (
    "[models.big]\ninput = 10.0\noutput = 10.0\n[models.small]\ninput = 1.0\noutput = 1.0\n"
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    env["TTY_COMPATIBLE"] = "0"
    return env


def _cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stageflow.cli", *args],
        cwd=folder, env=_env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_flows_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _from_python(folder: Path, name: str, engine: Engine | None = None) -> dict[str, Any]:
    """The same pipeline and engine, run from Python: each stage's status and model."""
    module = _module(folder / f"{name}.py")
    engine = engine if engine is not None else module.engine
    if not isinstance(engine, Engine):
        engine = engine()
    log = folder / f"{name}-python.log"
    result = asyncio.run(engine.run(module.pipeline.build(), {"log": str(log)}))
    return {
        "stages": {r.stage: r.status.value for r in result},
        "models": log.read_text().split("\n")[:-1],
        "tokens": result.usage.tokens,
    }


def _from_cli(folder: Path, name: str, *flags: str) -> dict[str, Any]:
    log = folder / f"{name}-cli.log"
    done = _cli(folder, "run", f"{name}.py:pipeline", "--json", "-d", f"log={log}", *flags)
    assert done.returncode in (0, 1), done.stderr
    shown = json.loads(done.stdout)
    return {
        "stages": {n: s["status"] for n, s in shown["stages"].items()},
        "models": log.read_text().split("\n")[:-1],
        "tokens": shown["usage"]["tokens"],
        "errors": {n: s["error"] for n, s in shown["stages"].items()},
    }


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "blocking.py").write_text(BLOCKING)
    (tmp_path / "downgrading.py").write_text(DOWNGRADING)
    (tmp_path / "plain.py").write_text(FLOWS)
    (tmp_path / "prices.toml").write_text(PRICES_TOML)
    return tmp_path


class TestTheTargetsEngine:
    def test_a_budget_the_module_brings_blocks_as_it_does_from_python(self, folder):
        cli = _from_cli(folder, "blocking")
        python = _from_python(folder, "blocking")

        assert cli["stages"] == python["stages"] == {
            "a": "completed", "b": "completed", "c": "failed",
        }  # fmt: skip
        assert "BudgetExceededError" in cli["errors"]["c"]
        assert cli["tokens"] == python["tokens"] == 900

    def test_a_downgrade_budget_the_module_brings_downgrades_as_from_python(self, folder):
        cli = _from_cli(folder, "downgrading")
        python = _from_python(folder, "downgrading")

        assert cli["models"] == python["models"] == ["a big", "b big", "c small"]
        assert cli["stages"] == python["stages"]
        assert set(cli["stages"].values()) == {"completed"}


class TestFlags:
    def test_budget_flags_block_a_pipeline_without_an_engine(self, folder):
        cli = _from_cli(folder, "plain", "--budget-tokens", "1000")

        assert cli["stages"] == {"a": "completed", "b": "completed", "c": "failed"}
        assert "BudgetExceededError" in cli["errors"]["c"]

    def test_flags_override_the_modules_engine_one_setting_at_a_time(self, folder):
        # the module's downgrade budget of 1000, its limit raised: nothing is downgraded
        cli = _from_cli(folder, "downgrading", "--budget-tokens", "5000")
        assert cli["models"] == ["a big", "b big", "c big"]
        # its policy made block: c is blocked instead of downgraded
        cli = _from_cli(folder, "downgrading", "--budget-policy", "block")
        assert cli["stages"]["c"] == "failed"

    def test_a_price_file_and_a_cost_budget(self, folder):
        # a costs 600 * 10 / 1e6 = 0.006; b's 300 more make 0.009; c's would make 0.012
        cli = _from_cli(
            folder, "plain", "--prices", "prices.toml", "--budget-cost", "0.01",
        )  # fmt: skip
        assert cli["stages"] == {"a": "completed", "b": "completed", "c": "failed"}

    def test_retry_and_an_interceptor_from_the_command_line(self, folder):
        (folder / "extra.py").write_text(
            "from pathlib import Path\n"
            "class Mark:\n"
            "    name = 'mark'\n"
            "    priority = 100\n"
            "    def wrap(self, spec, call):\n"
            "        async def marked(ctx):\n"
            "            with Path(ctx.data['log']).open('a') as log:\n"
            "                log.write(f'mark {spec.name}\\n')\n"
            "            return await call(ctx)\n"
            "        return marked\n"
        )
        failing = _from_cli(folder, "plain", "-d", "fail_b=true", "--run-id", "x1")
        assert failing["stages"]["b"] == "failed"
        for leftover in ("plain-cli.log", "plain-cli.log.failed"):
            (folder / leftover).unlink()
        cli = _from_cli(
            folder, "plain", "-d", "fail_b=true", "--retry", "1", "--interceptor", "extra.py:Mark",
        )  # fmt: skip
        assert cli["stages"] == {"a": "completed", "b": "completed", "c": "completed"}
        assert cli["models"].count("b big") == 2, "retried once"
        assert cli["models"].count("mark b") == 1, "priority 100: outside the retry"

    @pytest.mark.parametrize(
        ("flags", "said"),
        [
            (("--prices", "nope.toml"), "cannot read the price table"),
            (("--interceptor", "extra_missing.py:X"), "not found"),
            (("--interceptor", "plain.py:PRICES"), "not an interceptor"),
            (("--budget-policy", "downgrade"), "--budget-policy needs a budget"),
        ],
    )
    def test_bad_engine_flags_are_refused_before_anything_runs(self, folder, flags, said):
        done = _cli(folder, "run", "plain.py:pipeline", "-d", "log=x", *flags)

        assert done.returncode == 2
        assert said in done.stderr
        assert not (folder / "x").exists()

    def test_an_engine_attribute_that_is_no_engine_is_refused(self, folder):
        (folder / "bad.py").write_text(FLOWS + "\nengine = 42\n")
        done = _cli(folder, "run", "bad.py:pipeline", "-d", "log=x")

        assert done.returncode == 2
        assert "bad.py:engine is a int, not an Engine" in done.stderr


class TestResumeKeepsThePythonBudget:
    def _start_in_python(self, folder: Path) -> str:
        url = f"sqlite:///{folder / 'runs.db'}"
        module = _module(folder / "blocking.py")
        graph = module.pipeline.build()

        async def main() -> None:
            store = SQLAlchemyStore(url)
            try:
                engine = Engine(store=store, budget=Budget(max_tokens=1400), prices=module.PRICES)
                data = {"log": str(folder / "python.log"), "fail_b": True}
                result = await engine.run(graph, data, run_id="r1", labels={
                    "stageflow.target": f"{folder / 'plain.py'}:pipeline",
                })  # fmt: skip
                assert result.status is RunStatus.FAILED  # b failed, c never ran
            finally:
                await store.aclose()

        asyncio.run(main())
        return url

    def test_stageflow_resume_keeps_the_budget_and_what_was_spent(self, folder):
        url = self._start_in_python(folder)

        # plain.py brings no engine: only the stored budget can block c
        done = _cli(folder, "resume", "r1", "--store", url, "--json")

        assert done.returncode == 1, done.stderr
        shown = json.loads(done.stdout)
        assert shown["stages"]["a"]["status"] == "completed"
        assert shown["stages"]["b"]["status"] == "completed"
        assert shown["stages"]["c"]["status"] == "failed"
        assert "BudgetExceededError" in shown["stages"]["c"]["error"]
        # a 600 + b's failed 300 (stored by Python) + b again 300 = 1200; c's 300: > 1400
        assert shown["usage"]["tokens"] == 1200
        assert shown["usage"]["cost"] == pytest.approx(1200 * 10 / 1e6)  # the stored prices

    def test_a_budget_flag_on_resume_is_an_override(self, folder):
        url = self._start_in_python(folder)

        done = _cli(folder, "resume", "r1", "--store", url, "--json", "--budget-tokens", "5000")

        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["usage"]["tokens"] == 1500

    def test_a_target_engine_with_another_budget_is_refused_without_override(self, folder):
        url = self._start_in_python(folder)
        (folder / "other.py").write_text(
            FLOWS + "\nengine = Engine(budget=Budget(max_tokens=9000), prices=PRICES)\n"
        )

        refused = _cli(folder, "resume", "r1", "--store", url, "--target", "other.py:pipeline")
        assert refused.returncode == 2
        assert "instead of the stored Budget(max_tokens=1400" in refused.stderr
        allowed = _cli(folder, "resume", "r1", "--store", url, "--target", "other.py:pipeline",
                       "--override", "--json")  # fmt: skip
        assert allowed.returncode == 0, allowed.stderr


def test_the_stored_budget_is_what_the_python_run_had(tmp_path):
    # the premise of the resume tests: Python stored the budget with the run
    (tmp_path / "blocking.py").write_text(BLOCKING)
    module = _module(tmp_path / "blocking.py")
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def main() -> str:
        store = SQLAlchemyStore(url)
        try:
            await module.engine.replace(store=store).run(
                module.pipeline.build(), {"log": str(tmp_path / "l")}, run_id="r1"
            )
            return (await store.get_run("r1")).config
        finally:
            await store.aclose()

    config = json.loads(asyncio.run(main()))
    assert config["budget"]["max_tokens"] == 1000


KILLABLE = """
import asyncio, sys
from pathlib import Path
from stageflow import Budget, Engine, Pipeline
from stageflow.adapters.sqlalchemy import SQLAlchemyStore

def stage(tokens):
    async def run(ctx):
        log = Path(ctx.data["log"])
        with log.open("a") as out:
            out.write(f"{ctx.stage}\\n")
        ctx.usage.report(model="big", input_tokens=tokens)
        if ctx.stage == "b" and not Path(str(log) + ".killed").exists():
            Path(str(log) + ".in-b").touch()  # the parent SIGKILLs this process now
            await asyncio.sleep(600)
        return {}
    return run

pipeline = (
    Pipeline("spend")
    .with_stage("a", stage(600), estimate=600)
    .with_stage("b", stage(300), dependencies=["a"], estimate=300)
    .with_stage("c", stage(300), dependencies=["b"], estimate=300)
)

async def main(url, log):
    store = SQLAlchemyStore(url)
    engine = Engine(store=store, budget=Budget(max_tokens=1100), lease_ttl=30)
    await engine.run(pipeline.build(), {"log": log}, run_id="k1",
                     labels={"stageflow.target": __file__ + ":pipeline"})

if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_a_budget_survives_a_sigkilled_python_driver_and_governs_the_cli_resume(tmp_path):
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    log = tmp_path / "stages.log"
    errors = tmp_path / "child.err"
    with errors.open("w") as err:
        child = subprocess.Popen(
            [sys.executable, str(script), url, str(log)], cwd=tmp_path, env=_env(),
            stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        marker = Path(str(log) + ".in-b")
        deadline = time.monotonic() + 30
        while not marker.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)  # polls the child's progress, times nothing
        assert marker.exists(), errors.read_text()
        child.send_signal(signal.SIGKILL)  # mid-stage b: a was stored, b was in flight
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    Path(str(log) + ".killed").touch()

    # the driver is dead and its lease unexpired: take the run over from the command
    done = _cli(tmp_path, "resume", "k1", "--store", url, "--json", "--take-over")

    assert done.returncode == 1, done.stderr
    shown = json.loads(done.stdout)
    assert [shown["stages"][n]["status"] for n in "abc"] == ["completed", "completed", "failed"]
    assert "BudgetExceededError" in shown["stages"]["c"]["error"]  # 600 + 300 + 300 > 1100
    assert log.read_text().split() == ["a", "b", "b"]  # a once; b again after the kill
