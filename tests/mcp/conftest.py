"""Real ``stageflow mcp`` processes, reached with the ``mcp`` SDK's own client.

``connect`` is parametrized over both transports and one more: over ``stdio`` the
client starts the server (``python -m stageflow.cli mcp``) as its subprocess, on a
SQLite file of the test's; over ``http`` it reaches the session's streamable-HTTP server
on 127.0.0.1 and a free port; ``in-process`` connects it to ``create_mcp_server`` in the
test's process (what coverage sees). Every server runs the catalog of
``tests/mcp/_catalog.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import CallToolResult

from stageflow import Catalog, Engine, RunService
from stageflow.adapters.mcp import create_mcp_server
from stageflow.adapters.sqlalchemy import SQLAlchemyStore

from ._catalog import catalog as test_catalog

ROOT = Path(__file__).resolve().parents[2]
CATALOG = "tests.mcp._catalog:catalog"
BOUND = 10.0  # the servers' wait bound, in seconds
STARTUP = 30.0  # seconds a server may take to answer


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAGEFLOW_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def command(folder: Path, *options: str) -> list[str]:
    """``stageflow mcp`` on the SQLite file of ``folder``, with ``options``."""
    return [
        sys.executable, "-m", "stageflow.cli", "mcp", "--store", f"sqlite:///{folder / 'runs.db'}",
        "--pipelines", CATALOG, *options,
    ]  # fmt: skip


Connect = Callable[[], AbstractAsyncContextManager[Client]]


@asynccontextmanager
async def stdio(folder: Path, *options: str, mode: str = "auto") -> AsyncIterator[Client]:
    """A client of its own ``stageflow mcp`` subprocess (stdio), whose stderr goes to
    ``folder/server.log``; ``mode="legacy"`` speaks the 2025 protocol (the handshake)."""
    if not any(o.startswith("--wait-bound") for o in options):
        options = (*options, "--wait-bound", str(BOUND))
    program, *args = command(folder, *options)
    parameters = StdioServerParameters(command=program, args=args, env=_environment(), cwd=ROOT)
    with (folder / "server.log").open("a") as log:
        transport = stdio_client(parameters, errlog=log)
        async with Client(transport, mode=mode) as client:  # type: ignore[arg-type]
            yield client


@asynccontextmanager
async def served(
    folder: Path, catalog: Catalog = test_catalog, **options: Any
) -> AsyncIterator[tuple[Client, RunService]]:
    """A client of ``create_mcp_server`` in this process, and the service behind it, on
    the SQLite file of ``folder``."""
    options.setdefault("wait_bound", BOUND)
    store = SQLAlchemyStore(f"sqlite:///{folder / 'runs.db'}")
    service = RunService(Engine(store=store, event_log=store), catalog)
    try:
        async with Client(create_mcp_server(service, **options)) as client:
            yield client, service
    finally:
        await service.aclose()
        await store.aclose()


@asynccontextmanager
async def in_process(folder: Path) -> AsyncIterator[Client]:
    async with served(folder) as (client, _):
        yield client


@dataclass
class HttpServer:
    """A ``stageflow mcp --transport http`` process."""

    url: str
    folder: Path
    process: subprocess.Popen[bytes]
    log: Path

    def client(self) -> Client:
        return Client(self.url)

    def stop(self) -> int:
        """SIGTERM, and the exit code once the process ended (killed after 30 s)."""
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


def start_http(folder: Path, *options: str) -> HttpServer:
    """Start ``stageflow mcp --transport http`` on the SQLite file of ``folder``; return
    once it answers HTTP."""
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a port found free may be taken before the server binds it
        port = _free_port()
        log = folder / f"server-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command(folder, "--transport", "http", "--port", str(port),
                        "--wait-bound", str(BOUND), *options),
                cwd=ROOT, env=_environment(), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        server = HttpServer(f"http://127.0.0.1:{port}/mcp", folder, process, log)
        if _answers(server):
            return server
        server.stop()
        if "address already in use" not in log.read_text().lower():
            break
    pytest.fail(f"stageflow mcp --transport http did not start:\n{log.read_text()}")


def _answers(server: HttpServer) -> bool:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        try:
            httpx.get(server.url, timeout=1)  # any answer (a GET without a session: 4xx)
            return True
        except httpx.TransportError:
            pass
        try:  # the pause between two tries, which also sees the process end early
            server.process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        return False
    return False


@pytest.fixture(scope="session")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """The session's streamable-HTTP server."""
    started = start_http(tmp_path_factory.mktemp("mcp-http"))
    yield started
    started.stop()


@pytest.fixture(params=["stdio", "http", "in-process"])
def connect(request: pytest.FixtureRequest, tmp_path: Path) -> Connect:
    """``async with connect() as client``: a client of a server over the transport of the
    test's parameter (stdio, in-process: a server per client, on the test's store)."""
    if request.param == "stdio":
        return lambda: stdio(tmp_path)
    if request.param == "in-process":
        return lambda: in_process(tmp_path)
    server: HttpServer = request.getfixturevalue("http_server")
    return server.client


@pytest.fixture(params=["http", "in-process"])
def quick_connect(request: pytest.FixtureRequest, tmp_path: Path) -> Connect:
    """As ``connect``, without starting a process per test: the session's HTTP server,
    or a server in this process."""
    if request.param == "in-process":
        return lambda: in_process(tmp_path)
    server: HttpServer = request.getfixturevalue("http_server")
    return server.client


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """A gate file not made yet: a ``gated`` run holds until it exists."""
    return tmp_path / f"gate-{uuid.uuid4().hex}"


def answer(result: CallToolResult) -> Any:
    """The structured answer of a tool call that succeeded (its text is the same JSON)."""
    assert not result.is_error, result.content
    assert json.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]
    return result.structured_content


def refusal(result: CallToolResult) -> dict[str, Any]:
    """The ``error`` of a tool call that was refused: type, message, field, value."""
    assert result.is_error, result.structured_content
    error: dict[str, Any] = result.structured_content["error"]  # type: ignore[index]
    assert result.content[0].text.startswith(f"{error['type']}: ")  # type: ignore[union-attr]
    return error
