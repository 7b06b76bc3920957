"""The app and the command in this process: their refusals, and failures a healthy server
never shows (a store that breaks, a body cut short)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from stageflow import Engine, RunService
from stageflow.adapters._shared import shown_value as _shown
from stageflow.adapters.http import create_app, new_token
from stageflow.adapters.http._limits import BodyLimit
from stageflow.adapters.memory import MemoryStore
from stageflow.cli import app as cli
from stageflow.errors import ConfigurationError, StoreError

from ._catalog import catalog

SECRET, TOKEN = new_token("tester", ["run"])
AUTH = {"Authorization": f"Bearer {SECRET}"}


class BrokenStore(MemoryStore):
    """A store whose run list fails: with a StoreError, or with a bug of its own."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    async def list_runs(self, **filters: Any) -> Any:
        raise self.error


def served(
    store: MemoryStore, main: Callable[[httpx.AsyncClient], Awaitable[Any]], **options: Any
) -> Any:
    async def run() -> Any:
        service = RunService(Engine(store=store, event_log=store), catalog)
        app = create_app(service, tokens=[TOKEN], **options)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=AUTH
            ) as client:
                return await main(client)
        finally:
            await service.aclose()

    return asyncio.run(run())


class TestCreateApp:
    @pytest.mark.parametrize(
        ("options", "field"),
        [
            ({"service": "svc"}, "service"),
            ({"tokens": ["tester run sha256:00"]}, "tokens"),
            ({"max_body": 0}, "max_body"),
            ({"heartbeat": 0}, "heartbeat"),
        ],
    )
    def test_bad_arguments_are_refused_naming_the_field(self, options, field):
        store = MemoryStore()
        given = {
            "service": RunService(Engine(store=store, event_log=store), catalog),
            "tokens": [TOKEN],
            **options,
        }
        with pytest.raises(ConfigurationError) as caught:
            create_app(given.pop("service"), **given)
        assert caught.value.field == field

    def test_the_openapi_document_is_made_once(self):
        store = MemoryStore()
        app = create_app(RunService(Engine(store=store, event_log=store), catalog), tokens=[])
        assert app.openapi() is app.openapi()


class TestFailures:
    def test_a_store_that_fails_is_503_and_not_ready(self):
        async def main(client: httpx.AsyncClient) -> list[httpx.Response]:
            return [await client.get("/readyz"), await client.get("/runs")]

        for response in served(BrokenStore(StoreError("the disk is gone")), main):
            assert response.status_code == 503
            assert response.json()["error"]["type"] == "StoreError"

    def test_a_bug_is_500_saying_nothing_of_it(self):
        async def main(client: httpx.AsyncClient) -> httpx.Response:
            return await client.get("/runs")

        async def run() -> httpx.Response:
            store = BrokenStore(RuntimeError("secret internals"))
            service = RunService(Engine(store=store, event_log=store), catalog)
            app = create_app(service, tokens=[TOKEN])
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=AUTH
            ) as client:
                return await main(client)

        response = asyncio.run(run())
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "InternalError"
        assert "secret" not in response.text

    def test_a_body_over_the_limit_is_413_in_process_too(self):
        async def main(client: httpx.AsyncClient) -> httpx.Response:
            return await client.post("/runs", json={"pipeline": "quick", "data": {"x": "y" * 50}})

        response = served(MemoryStore(), main, max_body=20)
        assert response.status_code == 413

    def test_events_of_a_completed_run_in_process(self):
        async def main(client: httpx.AsyncClient) -> tuple[str, list[str]]:
            run_id = (await client.post("/runs", json={"pipeline": "quick"})).json()["run_id"]
            text = (await client.get(f"/runs/{run_id}/events")).text
            return run_id, [line for line in text.splitlines() if line.startswith("event:")]

        _, events = served(MemoryStore(), main)
        assert events[0] == "event: run.started"
        assert events[-1] == "event: run.completed"


class TestBodyLimit:
    def test_a_client_gone_while_sending_its_body_ends_the_request(self):
        reached: list[str] = []

        async def inner(scope: Any, receive: Any, send: Any) -> None:
            reached.append("app")

        messages = iter([{"type": "http.request", "body": b"ab", "more_body": True},
                         {"type": "http.disconnect"}])  # fmt: skip

        async def receive() -> Any:
            return next(messages)

        async def send(message: Any) -> None:
            reached.append(message["type"])

        scope = {"type": "http", "method": "POST", "headers": []}
        asyncio.run(BodyLimit(inner, 10)(scope, receive, send))
        assert reached == []  # neither the app nor an answer: nobody is there

    def test_other_scopes_pass_through(self):
        reached: list[str] = []

        async def inner(scope: Any, receive: Any, send: Any) -> None:
            reached.append(scope["type"])

        asyncio.run(BodyLimit(inner, 10)({"type": "lifespan"}, None, None))
        assert reached == ["lifespan"]

    def test_a_content_length_that_is_no_number_is_read_and_counted(self):
        async def inner(scope: Any, receive: Any, send: Any) -> None:
            message = await receive()
            assert message["body"] == b"abc"

        async def receive() -> Any:
            return {"type": "http.request", "body": b"abc", "more_body": False}

        scope = {"type": "http", "method": "POST", "headers": [(b"content-length", b"x")]}
        asyncio.run(BodyLimit(inner, 10)(scope, receive, None))


class TestShownValues:
    def test_json_values_are_shown_as_they_are(self):
        assert _shown({"a": [1, "b"]}) == {"a": [1, "b"]}
        assert _shown(None) is None

    def test_long_or_non_json_values_are_cut_or_said(self):
        assert len(_shown("x" * 5000)) == 2003
        assert _shown(object()).startswith("<object object")
        assert _shown(b"bytes") == "b'bytes'"


class TestCommand:
    runner = CliRunner()

    def test_token_prints_a_secret_and_its_line(self):
        done = self.runner.invoke(cli, ["token", "ci", "--scope", "run", "--json"])
        assert done.exit_code == 0, done.output
        made = json.loads(done.stdout)
        assert made["line"].startswith("ci run sha256:")
        assert made["token"] not in made["line"]
        plain = self.runner.invoke(cli, ["token", "dash"])
        assert plain.exit_code == 0
        assert "line:  dash read sha256:" in plain.stdout

    def test_token_refuses_a_bad_scope(self):
        done = self.runner.invoke(cli, ["token", "ci", "--scope", "admin"])
        assert done.exit_code == 2
        assert "scopes" in done.output

    def test_serve_refuses_an_empty_catalog(self, tmp_path, monkeypatch):
        (tmp_path / "empty.py").write_text("from stageflow import Catalog\ncatalog = Catalog()\n")
        monkeypatch.setenv("STAGEFLOW_TOKENS", TOKEN.line)
        done = self.runner.invoke(
            cli,
            ["serve", "--store", f"sqlite:///{tmp_path}/runs.db",
             "--pipelines", f"{tmp_path / 'empty.py'}:catalog"],
        )  # fmt: skip
        assert done.exit_code == 2
        assert "the catalog is empty" in done.output

    def test_serve_takes_a_factory_of_a_catalog(self, tmp_path, monkeypatch):
        (tmp_path / "made.py").write_text("def catalog():\n    return {'x': 42}\n")
        monkeypatch.setenv("STAGEFLOW_TOKENS", TOKEN.line)
        done = self.runner.invoke(
            cli,
            ["serve", "--store", f"sqlite:///{tmp_path}/runs.db",
             "--pipelines", f"{tmp_path / 'made.py'}:catalog"],
        )  # fmt: skip
        assert done.exit_code == 2
        assert "Pipeline or a built StageGraph" in done.output  # it was called, then checked
