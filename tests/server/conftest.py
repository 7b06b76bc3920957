"""A real ``stageflow serve`` on 127.0.0.1, a free port and a SQLite file.

``server`` serves the whole session (most tests use runs of their own on it), twice: as
a ``stageflow serve`` process, and as the same uvicorn server (``_serve.prepare``) in a
thread of the tests' process, where coverage sees the server's code run. ``own_server``
is a process for one test (to stop it, or to start it again on the same store). Each
has a ``run`` token (start, cancel, ...) in its tokens file and a ``read`` token in
``$STAGEFLOW_TOKENS`` (in the tokens file too, for a server in a thread).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from stageflow.adapters.http import TOKENS_ENV, new_token

from ._sse import read_events

ROOT = Path(__file__).resolve().parents[2]
CATALOG = "tests.server._catalog:catalog"
STARTUP = 30.0  # seconds a server may take to answer /healthz
HEARTBEAT = 0.2  # seconds between two comments on an idle stream


@dataclass
class Server:
    """A ``stageflow serve`` process and what a test needs to talk to it."""

    url: str
    folder: Path
    run_token: str
    read_token: str
    log: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = None
    served: Any = None  # the thread's _serve.Served
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> str:
        return f"sqlite:///{self.folder / 'runs.db'}"

    def client(self, token: str | None = "run", **options: Any) -> httpx.Client:
        """A client with the ``run`` token, the ``read`` one, another str, or none."""
        secret = {"run": self.run_token, "read": self.read_token}.get(token or "", token)
        headers = {} if secret is None else {"Authorization": f"Bearer {secret}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **options)

    def async_client(self, **options: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.run_token}"}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30, **options)

    def gate(self) -> Path:
        """A gate file not made yet: a ``gated`` run holds until it exists."""
        return self.folder / "gates" / uuid.uuid4().hex

    def start(self, pipeline: str, data: dict[str, Any] | None = None, **body: Any) -> str:
        with self.client() as client:
            response = client.post("/runs", json={"pipeline": pipeline, "data": data, **body})
        assert response.status_code == 201, response.text
        return str(response.json()["run_id"])

    def follow(self, run_id: str, *, until: str | None = None, **headers: str) -> list[Any]:
        """The run's events from the stream: all of them, or up to the first of type
        ``until`` (then it disconnects)."""
        with (
            self.client() as client,
            client.stream("GET", f"/runs/{run_id}/events", headers=headers) as response,
        ):
            assert response.status_code == 200, response.read()
            return read_events(response, until=until)

    def status(self, run_id: str) -> str:
        with self.client() as client:
            return str(client.get(f"/runs/{run_id}").json()["status"])

    def stop(self) -> int:
        """SIGTERM, and the exit code once the process ended (killed after 30 s); a
        server in a thread is told to exit, and 0 once it did."""
        if self.thread is not None:
            self.served.server.should_exit = True
            self.thread.join(30)
            return 0 if not self.thread.is_alive() else -1
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(
    folder: Path, tokens: tuple[str, str] | None = None, catalog: str = CATALOG
) -> Server:
    """Start ``stageflow serve`` on the SQLite file of ``folder``; return once /healthz
    answers. ``tokens``: the run and read secrets to use again (a restart); ``catalog``:
    the ``--pipelines`` it serves."""
    (folder / "gates").mkdir(parents=True, exist_ok=True)
    if tokens is None:
        run_secret, run_token = new_token("tester", ["run"])
        read_secret, read_token = new_token("reader", ["read"])
        (folder / "tokens").write_text(f"# tokens of the tests\n{run_token.line}\n")
        (folder / "read-token").write_text(read_token.line)
    else:
        run_secret, read_secret = tokens
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    env[TOKENS_ENV] = (folder / "read-token").read_text()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for _ in range(3):  # a port found free may be taken before the server binds it
        port = _free_port()
        log = folder / f"server-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "stageflow.cli", "serve",
                 "--store", f"sqlite:///{folder / 'runs.db'}", "--pipelines", catalog,
                 "--port", str(port), "--tokens-file", str(folder / "tokens"),
                 "--heartbeat", str(HEARTBEAT), "--log-level", "warning"],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        server = Server(
            f"http://127.0.0.1:{port}", folder, run_secret, read_secret, log, port, process
        )
        if _healthy(server):
            return server
        server.stop()
        if "address already in use" not in log.read_text().lower():
            break
    pytest.fail(f"stageflow serve did not start:\n{log.read_text()}")


def start_thread_server(folder: Path) -> Server:
    """The server ``stageflow serve`` runs, in a thread of this process."""
    from stageflow.cli._serve import prepare

    (folder / "gates").mkdir(parents=True, exist_ok=True)
    run_secret, run_token = new_token("tester", ["run"])
    read_secret, read_token = new_token("reader", ["read"])
    (folder / "tokens").write_text(f"{run_token.line}\n{read_token.line}\n")
    log = folder / "server.log"
    log.write_text("")
    for _ in range(3):
        port = _free_port()
        served = prepare(
            CATALOG, store=f"sqlite:///{folder / 'runs.db'}", port=port,
            tokens_file=folder / "tokens", heartbeat=HEARTBEAT, log_level="warning",
            log_config=None,
        )  # fmt: skip
        thread = threading.Thread(target=asyncio.run, args=(served.run(),), daemon=True)
        thread.start()
        server = Server(
            f"http://127.0.0.1:{port}", folder, run_secret, read_secret, log, port,
            thread=thread, served=served,
        )  # fmt: skip
        if _healthy(server):
            return server
        server.stop()
    pytest.fail("the server did not start in its thread")


def _healthy(server: Server) -> bool:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        if server.thread is not None:  # the pause between two tries; it may have ended
            server.thread.join(0.05)
            if not server.thread.is_alive():
                return False
            continue
        assert server.process is not None
        try:  # the pause between two tries, which also sees the process end early
            server.process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        return False
    return False


@pytest.fixture(scope="session", params=["process", "thread"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The session's server: a ``stageflow serve`` process, or the same in a thread."""
    folder = tmp_path_factory.mktemp(f"server-{request.param}")
    started = start_server(folder) if request.param == "process" else start_thread_server(folder)
    yield started
    assert started.stop() in (0, -signal.SIGTERM)


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own (stopped at the end if the test did not)."""
    started = start_server(tmp_path)
    yield started
    started.stop()
