"""Auth on every route: no token 401, a wrong one 401, a read token on a run route 403."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from stageflow.adapters.http import SCOPE

from .conftest import Server

METHODS = ("get", "post", "put", "patch", "delete")


def operations(server: Server) -> list[tuple[str, str, str | None]]:
    """Every operation of the server's OpenAPI document: method, path, scope."""
    with server.client(None) as client:
        schema = client.get("/openapi.json").json()
    return [
        (method.upper(), path, operation.get(SCOPE))
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def call(client: httpx.Client, method: str, path: str, run_id: str) -> httpx.Response:
    """One request to an operation, its path filled in with a run of the test's."""
    name = "quick" if path.startswith("/pipelines") else "approve"
    body: dict[str, Any] | None = None
    if method == "POST":
        body = {"value": {"approved": True}} if "inputs" in path else {"pipeline": "quick"}
    return client.request(method, path.format(run_id=run_id, name=name), json=body)


class TestEveryRoute:
    def test_every_route_but_healthz_names_its_scope(self, server: Server):
        found = operations(server)
        assert len(found) == 14
        unscoped = [(m, p) for m, p, scope in found if scope is None]
        assert unscoped == [("GET", "/healthz")]
        assert {scope for _, _, scope in found} == {None, "read", "run"}
        runs = {(m, p) for m, p, scope in found if scope == "run"}
        assert runs == {
            ("POST", "/runs"),
            ("POST", "/runs/{run_id}/cancel"),
            ("POST", "/runs/{run_id}/resume"),
            ("POST", "/runs/{run_id}/retry"),
            ("POST", "/runs/{run_id}/inputs/{name}"),
            ("DELETE", "/runs/{run_id}"),
        }

    def test_without_a_token_every_route_but_healthz_is_401(self, server: Server):
        run_id = server.start("quick")
        server.follow(run_id)
        refused = []
        with server.client(None) as client:
            for method, path, scope in operations(server):
                response = call(client, method, path, run_id)
                if scope is None:
                    assert response.status_code == 200, path
                    continue
                refused.append(path)
                assert response.status_code == 401, (method, path)
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.json()["error"]["type"] == "Unauthorized"
        assert len(refused) == 13
        assert server.status(run_id) == "completed"  # nothing was done to it

    @pytest.mark.parametrize(
        "authorization",
        ["Bearer sft_not-a-token", "Bearer", "Basic dGVzdGVyOnNlY3JldA==", "sft_bare"],
    )
    def test_a_bad_token_is_401_everywhere(self, server: Server, authorization):
        run_id = server.start("quick")
        server.follow(run_id)
        with httpx.Client(
            base_url=server.url, headers={"Authorization": authorization}, timeout=30
        ) as client:
            for method, path, scope in operations(server):
                if scope is not None:
                    assert call(client, method, path, run_id).status_code == 401, path

    def test_a_read_token_is_403_on_every_run_route_and_welcome_on_the_others(self, server: Server):
        run_id = server.start("quick")
        server.follow(run_id)
        with server.client("read") as client:
            for method, path, scope in operations(server):
                response = call(client, method, path, run_id)
                if scope == "run":
                    assert response.status_code == 403, (method, path)
                    error = response.json()["error"]
                    assert (error["type"], error["field"], error["value"]) == (
                        "Forbidden",
                        "scope",
                        "run",
                    )
                    assert "'reader'" in error["message"]
                else:
                    assert response.status_code in (200, 204), (method, path)
        assert server.status(run_id) == "completed"  # the run routes did nothing
        with server.client("read") as client:
            assert client.get(f"/runs/{run_id}").status_code == 200  # not deleted

    def test_a_run_token_may_read_too(self, server: Server):
        run_id = server.start("quick")
        server.follow(run_id)
        with server.client("run") as client:
            for method, path, scope in operations(server):
                if scope == "read":
                    assert call(client, method, path, run_id).status_code in (200, 204), path

    def test_the_token_is_checked_before_the_body_is_read(self, server: Server):
        with server.client(None) as client:
            response = client.post(
                "/runs", content=b"{broken", headers={"Content-Type": "application/json"}
            )
        assert response.status_code == 401


class TestSecrets:
    def test_a_refused_token_is_never_echoed(self, server: Server):
        secret = "sft_this-is-a-secret-that-must-not-show"
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
        ) as client:
            responses = [client.get("/runs"), client.post("/runs", json={"pipeline": "x"})]
        for response in responses:
            assert secret not in response.text
            assert secret not in str(response.headers)
        assert secret not in server.log.read_text()

    def test_stored_runs_and_the_log_hold_no_token(self, server: Server):
        run_id = server.start("quick", {"n": 2}, labels={"by": "auth-test"})
        server.follow(run_id)
        with server.client() as client:
            client.get(f"/runs/{run_id}")
        stored = b"".join(
            path.read_bytes() for path in server.folder.glob("runs.db*") if path.is_file()
        )
        assert run_id.encode() in stored
        for secret in (server.run_token, server.read_token):
            assert secret.encode() not in stored
            assert secret not in server.log.read_text()
        tokens = (server.folder / "tokens").read_text()
        assert server.run_token not in tokens
        assert "sha256:" in tokens

    def test_docs_need_no_token_and_show_no_pipeline(self, server: Server):
        with server.client(None) as client:
            text = client.get("/openapi.json").text
        assert "approval" not in text
        assert "two_approvals" not in text
