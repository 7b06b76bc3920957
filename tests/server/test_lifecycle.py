"""``stageflow serve`` as a process: its refusals, its shutdown, and a restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stageflow.adapters.sqlalchemy import SQLAlchemyStore

from .conftest import CATALOG, ROOT, Server, start_server

# uvicorn shuts down gracefully on SIGTERM, then ends with that signal (as a supervisor
# expects of a process told to stop); that it shut down gracefully shows in the store.
STOPPED = (0, -signal.SIGTERM)


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    return subprocess.run(
        [sys.executable, "-m", "stageflow.cli", "serve", *args],
        cwd=ROOT, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


def stored_status(url: str, run_id: str) -> str:
    async def read() -> str:
        store = SQLAlchemyStore(url)
        try:
            return (await store.get_run(run_id)).status.value
        finally:
            await store.aclose()

    return asyncio.run(read())


class TestRefusals:
    def test_without_tokens_it_does_not_start(self, tmp_path: Path):
        done = serve("--store", f"sqlite:///{tmp_path}/runs.db", "--pipelines", CATALOG)
        assert done.returncode == 2
        assert "no tokens" in done.stderr
        assert "stageflow token" in done.stderr

    @pytest.mark.parametrize(
        ("pipelines", "said"),
        [
            ("tests.server._catalog:nothing", "has no attribute 'nothing'"),
            ("tests.server._catalog:quick", "a stageflow Catalog or a mapping"),
            ("no_such_module:catalog", "no module named"),
            ("nocolon", "must be"),
        ],
    )
    def test_a_bad_catalog_is_refused_in_one_line(self, tmp_path: Path, pipelines, said):
        done = serve(
            "--store", f"sqlite:///{tmp_path}/runs.db", "--pipelines", pipelines,
            env={"STAGEFLOW_TOKENS": "x run sha256:" + "a" * 64},
        )  # fmt: skip
        assert done.returncode == 2
        assert said in done.stderr
        assert done.stderr.startswith("error:")

    def test_a_bad_tokens_line_is_refused_without_showing_it(self, tmp_path: Path):
        secret = "sft_a-secret-someone-pasted"
        (tmp_path / "tokens").write_text(f"ci run {secret}\n")
        done = serve(
            "--store", f"sqlite:///{tmp_path}/runs.db", "--pipelines", CATALOG,
            "--tokens-file", str(tmp_path / "tokens"),
        )  # fmt: skip
        assert done.returncode == 2
        assert "line 1" in done.stderr
        assert secret not in done.stderr


class TestShutdown:
    def test_sigterm_cancels_runs_in_flight_and_a_new_server_resumes_them(self, own_server: Server):
        gate = own_server.gate()
        run_id = own_server.start("gated", {"gate": str(gate)})
        own_server.follow(run_id, until="stage.started")
        quick = own_server.start("quick")
        own_server.follow(quick)
        assert own_server.stop() in STOPPED
        assert "127.0.0.1" in own_server.log.read_text()  # the default bind
        assert stored_status(own_server.store, run_id) == "cancelled"
        assert stored_status(own_server.store, quick) == "completed"

        again = start_server(own_server.folder, (own_server.run_token, own_server.read_token))
        try:
            with again.client() as client:
                assert client.get(f"/runs/{run_id}").json()["status"] == "cancelled"
                gate.touch()
                assert client.post(f"/runs/{run_id}/resume").status_code == 202
            events = again.follow(run_id)
            assert events[-1].event == "run.completed"
            assert again.status(run_id) == "completed"
        finally:
            assert again.stop() in STOPPED

    def test_an_open_stream_does_not_hold_the_shutdown(self, own_server: Server):
        run_id = own_server.start("approval")  # waits: its stream never ends by itself
        with (
            own_server.client("read") as client,
            client.stream("GET", f"/runs/{run_id}/events") as response,
        ):
            assert response.status_code == 200
            assert own_server.stop() in STOPPED
        assert stored_status(own_server.store, run_id) == "waiting"  # not cancelled
