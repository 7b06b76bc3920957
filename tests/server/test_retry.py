"""``POST /runs/{id}/retry`` on a real server: a new run that reuses completed stages."""

from __future__ import annotations

from .conftest import Server


def _stages(server: Server, run_id: str) -> dict[str, dict[str, object]]:
    with server.client("read") as client:
        body = client.get(f"/runs/{run_id}").json()
    return {stage["name"]: stage for stage in body["stages"]}


def test_retry_of_a_cancelled_run_reuses_its_completed_stage(server: Server) -> None:
    gate = server.gate()
    old = server.start("gated", {"gate": str(gate)}, labels={"team": "owls"})
    server.follow(old, until="stage.completed")  # "start" completed; "hold" holds
    with server.client() as client:
        assert client.post(f"/runs/{old}/cancel").json()["status"] == "cancelled"
        gate.write_text("open")
        response = client.post(f"/runs/{old}/retry")
    assert response.status_code == 201, response.text
    body = response.json()
    new = body["run_id"]
    assert new != old
    assert body["retry_of"] == old
    assert body["reused"] == ["start"]
    assert response.headers["location"] == f"/runs/{new}"
    events = server.follow(new)
    assert events[-1].event == "run.completed"
    restored = [e.data.get("stage") for e in events if e.event == "stage.restored"]
    assert restored == ["start"]  # restored, not run again
    assert server.status(new) == "completed"
    assert server.status(old) == "cancelled"
    assert _stages(server, new)["start"]["started"] == _stages(server, old)["start"]["started"]
    with server.client("read") as client:
        labels = client.get(f"/runs/{new}").json()["labels"]
    assert labels == {"team": "owls", "stageflow.retry_of": old}


def test_retry_of_a_failed_run_runs_the_failed_stage_again(server: Server) -> None:
    old = server.start("failing")
    server.follow(old)
    assert server.status(old) == "failed"
    with server.client() as client:
        response = client.post(f"/runs/{old}/retry")
    assert response.status_code == 201, response.text
    new = response.json()["run_id"]
    assert response.json()["reused"] == ["source"]
    server.follow(new)
    assert server.status(new) == "failed"
    assert _stages(server, new)["broken"]["status"] == "failed"


def test_retry_of_a_completed_run_is_409(server: Server) -> None:
    run_id = server.start("quick", {"n": 2})
    server.follow(run_id)
    with server.client() as client:
        response = client.post(f"/runs/{run_id}/retry")
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["type"] == "RunNotRetryableError"
    assert run_id in error["message"]
    assert "completed" in error["message"]
    assert error["field"] == "run_id"
    assert error["run_status"] == "completed"


def test_retry_of_an_unknown_run_is_404(server: Server) -> None:
    with server.client() as client:
        response = client.post("/runs/no-such-run/retry")
    assert response.status_code == 404, response.text
    assert response.json()["error"]["type"] == "UnknownRunError"


def test_retry_needs_the_run_scope(server: Server) -> None:
    old = server.start("failing")
    server.follow(old)
    with server.client(None) as client:
        assert client.post(f"/runs/{old}/retry").status_code == 401
    with server.client("read") as client:
        response = client.post(f"/runs/{old}/retry")
    assert response.status_code == 403, response.text
    assert response.json()["error"]["field"] == "scope"
    with server.client("read") as client:
        assert len(client.get("/runs", params={"pipeline": "failing"}).json()["runs"]) >= 1
