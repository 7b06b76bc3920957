"""The HTTP API on a real server: every endpoint, and every error it answers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import Server


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The error of a refused request, checked to have the API's one shape."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"type", "message", "field", "value"}
    assert isinstance(error["message"], str)
    assert error["message"]
    return error  # type: ignore[no-any-return]


class TestHealth:
    def test_healthz_needs_no_token(self, server: Server):
        with server.client(None) as client:
            response = client.get("/healthz")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})

    def test_readyz_answers_once_the_store_does(self, server: Server):
        with server.client("read") as client:
            response = client.get("/readyz")
        assert (response.status_code, response.json()) == (200, {"status": "ready"})

    def test_the_api_is_described_in_openapi(self, server: Server):
        with server.client(None) as client:
            schema = client.get("/openapi.json").json()
            docs = client.get("/docs")
        assert "/runs/{run_id}/events" in schema["paths"]
        assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
        assert docs.status_code == 200


class TestPipelines:
    def test_the_catalog_is_listed(self, server: Server):
        with server.client("read") as client:
            listed = client.get("/pipelines").json()["pipelines"]
        assert [p["name"] for p in listed] == [
            "quick",
            "gated",
            "approval",
            "failing",
            "two_approvals",
        ]
        assert listed[0] == {
            "name": "quick",
            "description": "Four quick stages",
            "category": "demo",
            "tags": [],
            "stages": 4,
        }

    def test_a_pipeline_has_its_stages_drawing_and_data_schema(self, server: Server):
        with server.client("read") as client:
            shown = client.get("/pipelines/quick").json()
            approval = client.get("/pipelines/approval").json()
        assert [(s["name"], s["dependencies"]) for s in shown["stages"]] == [
            ("source", []),
            ("double", ["source"]),
            ("square", ["source"]),
            ("total", ["double", "square"]),
        ]
        assert all(s["kind"] == "work" for s in shown["stages"])
        assert shown["mermaid"].startswith(("graph", "flowchart"))
        assert "total" in shown["mermaid"]
        assert shown["data_schema"]["properties"]["n"]["type"] == "integer"
        assert approval["stages"][1]["kind"] == "input"
        assert approval["stages"][1]["input_schema"]["required"] == ["approved"]

    def test_an_unknown_pipeline_is_404(self, server: Server):
        with server.client("read") as client:
            error = error_of(client.get("/pipelines/nope"), 404)
        assert (error["type"], error["field"], error["value"]) == (
            "UnknownPipelineError",
            "pipeline",
            "nope",
        )


class TestStartRun:
    def test_a_run_is_created_and_completes(self, server: Server):
        with server.client() as client:
            response = client.post(
                "/runs", json={"pipeline": "quick", "data": {"n": 3}, "labels": {"by": "me"}}
            )
            assert response.status_code == 201
            run_id = response.json()["run_id"]
            assert response.headers["location"] == f"/runs/{run_id}"
            assert client.get(f"/runs/{run_id}").status_code == 200  # recorded already
        events = server.follow(run_id)
        assert events[-1].event == "run.completed"
        with server.client("read") as client:
            shown = client.get(f"/runs/{run_id}").json()
            outputs = client.get(f"/runs/{run_id}/outputs").json()
        assert (shown["status"], shown["labels"], shown["data"]) == (
            "completed",
            {"by": "me"},
            {"n": 3},
        )
        assert outputs == {
            "run_id": run_id,
            "status": "completed",
            "outputs": {
                "source": {"n": 3},
                "double": {"n": 6},
                "square": {"n": 9},
                "total": {"n": 15},
            },
        }

    def test_a_run_id_given_is_used_and_a_second_time_refused(self, server: Server):
        run_id = server.start("quick", run_id="api-given-1")
        assert run_id == "api-given-1"
        with server.client() as client:
            error = error_of(
                client.post("/runs", json={"pipeline": "quick", "run_id": run_id}), 409
            )
        assert (error["type"], error["field"], error["value"]) == (
            "RunExistsError",
            "run_id",
            run_id,
        )

    def test_an_unknown_pipeline_is_404(self, server: Server):
        with server.client() as client:
            error = error_of(client.post("/runs", json={"pipeline": "nope"}), 404)
        assert error["type"] == "UnknownPipelineError"

    @pytest.mark.parametrize(
        ("body", "field", "value"),
        [
            ({"pipeline": "quick", "data": {"n": "many"}}, "data.n", "many"),
            ({"pipeline": "quick", "run_id": "not an id"}, "run_id", "not an id"),
            ({}, "pipeline", {}),
            ({"pipeline": "quick", "pipline": "x"}, "pipline", "x"),
            ({"pipeline": "quick", "labels": {"k": 1}}, "labels.k", 1),
            ({"pipeline": "quick", "data": [1]}, "data", [1]),
            ({"pipeline": 7}, "pipeline", 7),
        ],
    )
    def test_a_bad_body_is_422_naming_the_field(self, server: Server, body, field, value):
        with server.client() as client:
            error = error_of(client.post("/runs", json=body), 422)
        assert (error["field"], error["value"]) == (field, value)
        assert field.rpartition(".")[2] in error["message"]

    def test_a_body_that_is_no_json_is_422(self, server: Server):
        with server.client() as client:
            response = client.post(
                "/runs", content=b"{not json", headers={"Content-Type": "application/json"}
            )
        assert error_of(response, 422)["type"] == "RequestValidationError"

    def test_a_body_too_large_is_413_by_its_length(self, server: Server):
        big = {"pipeline": "quick", "data": {"blob": "x" * 1_100_000}}
        with server.client() as client:
            error = error_of(client.post("/runs", json=big), 413)
        assert (error["type"], error["field"]) == ("RequestTooLarge", "body")

    def test_a_body_too_large_is_413_when_sent_in_chunks(self, server: Server):
        def chunks():
            yield b'{"pipeline": "quick", "data": {"blob": "'
            for _ in range(12):
                yield b"x" * 100_000
            yield b'"}}'

        with server.client() as client:
            response = client.post(
                "/runs", content=chunks(), headers={"Content-Type": "application/json"}
            )
        assert error_of(response, 413)["type"] == "RequestTooLarge"


class TestListRuns:
    def test_filters_and_pages(self, server: Server):
        label = f"list-{id(self)}"
        started = [server.start("quick", labels={"batch": label}) for _ in range(5)]
        failed = server.start("failing", labels={"batch": label})
        for run_id in [*started, failed]:
            server.follow(run_id)
        with server.client("read") as client:
            seen: list[str] = []
            cursor = None
            while True:
                params: dict[str, Any] = {"label": f"batch={label}", "limit": 2}
                if cursor is not None:
                    params["cursor"] = cursor
                page = client.get("/runs", params=params).json()
                assert len(page["runs"]) <= 2
                seen += [r["run_id"] for r in page["runs"]]
                cursor = page["next"]
                if cursor is None:
                    break
            failing = client.get(
                "/runs", params={"label": f"batch={label}", "status": "failed"}
            ).json()["runs"]
            quick = client.get(
                "/runs", params={"label": f"batch={label}", "pipeline": "quick"}
            ).json()["runs"]
        assert seen == [failed, *reversed(started)]
        assert [r["run_id"] for r in failing] == [failed]
        assert failing[0]["status"] == "failed"
        assert "RuntimeError" in failing[0]["error"]
        assert [r["run_id"] for r in quick] == list(reversed(started))

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"status": "sleeping"}, "status"),
            ({"limit": 0}, "limit"),
            ({"limit": "ten"}, "limit"),
            ({"cursor": "nope"}, "cursor"),
            ({"label": "no-equals"}, "label"),
        ],
    )
    def test_a_bad_filter_is_422_naming_it(self, server: Server, params, field):
        with server.client("read") as client:
            error = error_of(client.get("/runs", params=params), 422)
        assert error["field"] == field


class TestGetRun:
    def test_a_failed_run_shows_its_stages_and_error(self, server: Server):
        run_id = server.start("failing")
        server.follow(run_id)
        with server.client("read") as client:
            shown = client.get(f"/runs/{run_id}").json()
        assert shown["status"] == "failed"
        assert [(s["name"], s["status"]) for s in shown["stages"]] == [
            ("source", "completed"),
            ("broken", "failed"),
        ]
        assert "always fails" in shown["stages"][1]["error"]
        assert shown["usage"]["tokens"] == 0
        assert shown["driven"] is False

    @pytest.mark.parametrize("path", ["/runs/nope", "/runs/nope/outputs"])
    def test_an_unknown_run_is_404(self, server: Server, path):
        with server.client("read") as client:
            error = error_of(client.get(path), 404)
        assert (error["type"], error["field"], error["value"]) == (
            "UnknownRunError",
            "run_id",
            "nope",
        )

    def test_a_bad_run_id_is_422(self, server: Server):
        with server.client("read") as client:
            error = error_of(client.get("/runs/bad%20id"), 422)
        assert (error["field"], error["value"]) == ("run_id", "bad id")


class TestCancel:
    def test_a_run_in_flight_is_cancelled(self, server: Server):
        run_id = server.start("gated", {"gate": str(server.gate())})
        server.follow(run_id, until="stage.started")  # start
        with server.client() as client:
            response = client.post(f"/runs/{run_id}/cancel")
        assert (response.status_code, response.json()) == (
            200,
            {"run_id": run_id, "status": "cancelled"},
        )
        assert server.status(run_id) == "cancelled"
        assert server.follow(run_id)[-1].event == "run.cancelled"

    def test_a_run_waiting_for_input_is_cancelled_and_its_stream_ends(self, server: Server):
        run_id = server.start("approval")
        server.follow(run_id, until="run.waiting")
        with server.client() as client:
            response = client.post(f"/runs/{run_id}/cancel")
            assert response.json() == {"run_id": run_id, "status": "cancelled"}
            shown = client.get(f"/runs/{run_id}").json()
            late = client.post(f"/runs/{run_id}/inputs/approve", json={"value": {"approved": True}})
        assert (shown["status"], shown["error"]) == (
            "cancelled",
            "cancelled while it waited for input",
        )
        assert server.follow(run_id)[-1].event == "run.cancelled"
        assert error_of(late, 404)["type"] == "UnknownInputError"

    def test_a_run_that_has_ended_is_left_as_it_ended(self, server: Server):
        run_id = server.start("quick")
        server.follow(run_id)
        with server.client() as client:
            response = client.post(f"/runs/{run_id}/cancel")
        assert (response.status_code, response.json()) == (
            200,
            {"run_id": run_id, "status": "completed"},
        )

    def test_an_unknown_run_is_404(self, server: Server):
        with server.client() as client:
            error_of(client.post("/runs/nope/cancel"), 404)


class TestResume:
    def test_a_cancelled_run_goes_on_to_complete(self, server: Server):
        gate = server.gate()
        run_id = server.start("gated", {"gate": str(gate)})
        server.follow(run_id, until="stage.started")
        with server.client() as client:
            client.post(f"/runs/{run_id}/cancel")
            gate.touch()
            response = client.post(f"/runs/{run_id}/resume")
            assert (response.status_code, response.json()) == (
                202,
                {"run_id": run_id, "status": "running"},
            )
            events = server.follow(run_id)
            shown = client.get(f"/runs/{run_id}").json()
        assert events[-1].event == "run.completed"
        assert [e.event for e in events].count("run.started") == 2
        assert shown["status"] == "completed"
        restored = [e.data["stage"] for e in events if e.event == "stage.restored"]
        assert restored == ["start"]

    def test_a_run_driven_already_is_409(self, server: Server):
        gate = server.gate()
        run_id = server.start("gated", {"gate": str(gate)})
        with server.client() as client:
            error = error_of(client.post(f"/runs/{run_id}/resume"), 409)
        gate.touch()
        server.follow(run_id)
        assert (error["type"], error["field"], error["value"]) == (
            "RunLeasedError",
            "run_id",
            run_id,
        )

    def test_an_unknown_run_is_404(self, server: Server):
        with server.client() as client:
            error_of(client.post("/runs/nope/resume"), 404)


class TestInputs:
    def test_a_waiting_run_answered_completes(self, server: Server):
        run_id = server.start("approval", {"title": "launch"})
        server.follow(run_id, until="run.waiting")
        with server.client() as client:
            waiting = client.get(f"/runs/{run_id}").json()
            assert waiting["status"] == "waiting"
            (pending,) = waiting["waiting_for"]
            assert (pending["name"], pending["prompt"]) == ("approve", "Publish 'post launch'?")
            response = client.post(
                f"/runs/{run_id}/inputs/approve", json={"value": {"approved": True}}
            )
            assert response.status_code == 200
            given = response.json()
            assert (given["value"], given["resumed"]) == ({"approved": True, "note": ""}, True)
            events = server.follow(run_id)
            outputs = client.get(f"/runs/{run_id}/outputs").json()["outputs"]
        assert events[-1].event == "run.completed"
        assert outputs["publish"] == {"published": True}

    def test_a_value_that_does_not_match_is_422_naming_the_field(self, server: Server):
        run_id = server.start("approval")
        server.follow(run_id, until="run.waiting")
        with server.client() as client:
            error = error_of(
                client.post(
                    f"/runs/{run_id}/inputs/approve", json={"value": {"approved": "maybe"}}
                ),
                422,
            )
            assert (error["type"], error["field"], error["value"]) == (
                "InputValidationError",
                "value.approved",
                "maybe",
            )
            missing = error_of(client.post(f"/runs/{run_id}/inputs/approve", json={}), 422)
            assert missing["field"] == "value"
            assert client.get(f"/runs/{run_id}").json()["status"] == "waiting"

    def test_an_input_given_twice_is_409(self, server: Server):
        run_id = server.start("two_approvals")  # it waits for "legal" after "approve"
        server.follow(run_id, until="run.waiting")
        with server.client() as client:
            path = f"/runs/{run_id}/inputs/approve"
            assert client.post(path, json={"value": {"approved": False}}).status_code == 200
            error = error_of(client.post(path, json={"value": {"approved": True}}), 409)
            assert (error["type"], error["field"], error["value"]) == (
                "InputAlreadyGivenError",
                "name",
                "approve",
            )
            legal = client.post(f"/runs/{run_id}/inputs/legal", json={"value": True})
            assert legal.status_code == 200
        assert server.follow(run_id)[-1].event == "run.completed"
        assert server.status(run_id) == "completed"

    def test_an_input_of_an_ended_run_is_404_saying_so(self, server: Server):
        run_id = server.start("approval")
        server.follow(run_id, until="run.waiting")
        with server.client() as client:
            path = f"/runs/{run_id}/inputs/approve"
            assert client.post(path, json={"value": {"approved": True}}).status_code == 200
            assert server.follow(run_id)[-1].event == "run.completed"
            error = error_of(client.post(path, json={"value": {"approved": True}}), 404)
        assert error["type"] == "UnknownInputError"
        assert "has ended" in error["message"]

    def test_an_unknown_input_or_run_is_404(self, server: Server):
        run_id = server.start("approval")
        server.follow(run_id, until="run.waiting")
        with server.client() as client:
            error = error_of(client.post(f"/runs/{run_id}/inputs/nope", json={"value": 1}), 404)
            assert error["type"] == "UnknownInputError"
            error_of(client.post("/runs/nope/inputs/approve", json={"value": 1}), 404)


class TestDelete:
    def test_a_finished_run_is_deleted_with_its_events(self, server: Server):
        run_id = server.start("quick")
        server.follow(run_id)
        with server.client() as client:
            response = client.delete(f"/runs/{run_id}")
            assert (response.status_code, response.content) == (204, b"")
            error_of(client.get(f"/runs/{run_id}"), 404)
            error_of(client.get(f"/runs/{run_id}/events"), 404)
            error_of(client.delete(f"/runs/{run_id}"), 404)

    def test_a_run_being_driven_is_409(self, server: Server):
        gate = server.gate()
        run_id = server.start("gated", {"gate": str(gate)})
        with server.client() as client:
            error = error_of(client.delete(f"/runs/{run_id}"), 409)
        assert (error["type"], error["field"]) == ("RunLeasedError", "run_id")
        gate.touch()
        assert server.follow(run_id)[-1].event == "run.completed"


class TestOtherErrors:
    def test_an_unknown_route_is_404_as_json(self, server: Server):
        with server.client() as client:
            error = error_of(client.get("/nowhere"), 404)
        assert error["type"] == "NotFound"

    def test_a_method_not_allowed_is_405_as_json(self, server: Server):
        with server.client() as client:
            error = error_of(client.put("/runs"), 405)
        assert error["type"] == "MethodNotAllowed"
