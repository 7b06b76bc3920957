"""A served run whose stages leak a secret (a SecretRef the server resolves) every way
they can: the secret is in no HTTP response (the run, the runs, its outputs, its event
stream), not in the server's log, not in the store's bytes; each refused write failed its
stage saying where."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import start_server

SECRET = "sk-served-Vb61KpQ2zX9R"


def test_a_secret_leaked_in_served_runs_is_in_no_response(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEAK_TEST_KEY", SECRET)
    server = start_server(tmp_path, catalog="tests.server._leaky:catalog")
    texts: list[str] = []
    try:
        runs = {name: server.start(name) for name in ("in_output", "in_error")}
        with server.client() as client:
            for run_id in runs.values():
                texts.append(repr(server.follow(run_id, until="run.failed")))
                for path in (f"/runs/{run_id}", f"/runs/{run_id}/outputs"):
                    answer = client.get(path)
                    assert answer.status_code == 200, answer.text
                    texts.append(answer.text)
            texts.append(client.get("/runs").text)
    finally:
        assert server.stop() in (0, -15)
    joined = "\n".join(texts)
    # Each refused write failed its stage saying where; the error is masked.
    assert "the output of stage 'output'['header'] is a secret" in joined
    assert "the state of stage 'state'['token'] is a secret" in joined
    assert "auth failed with key ***" in joined
    assert "custom.progress" in joined
    assert SECRET not in joined
    assert SECRET not in server.log.read_text()
    stored = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("runs.db*")))
    assert runs["in_error"].encode() in stored
    assert SECRET.encode() not in stored
