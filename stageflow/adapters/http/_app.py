"""The HTTP API of a RunService: routes, scopes, and the event streams."""

import json
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any, Final

from fastapi import APIRouter, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from ..._check import integer, number
from ..._service import RunService
from ..._version import __version__
from ...errors import ConfigurationError, RunNotRetryableError
from ._auth import Token, authenticate
from ._errors import error_response, install
from ._limits import BodyLimit
from ._web import mount_page

__all__ = ["SCOPE", "create_app"]

SCOPE: Final = "x-stageflow-scope"
"""The OpenAPI extension of each operation that names the scope it needs."""

_READ: Final[dict[str, Any]] = {SCOPE: "read", "security": [{"bearer": []}]}
_RUN: Final[dict[str, Any]] = {SCOPE: "run", "security": [{"bearer": []}]}


class StartRun(BaseModel):
    """The body of ``POST /runs``."""

    model_config = ConfigDict(extra="forbid")

    pipeline: str = Field(description="The name of a pipeline of the catalog.")
    data: dict[str, Any] | None = Field(None, description="The run's data (see its schema).")
    labels: dict[str, str] | None = Field(None, description="Str to str, kept with the run.")
    run_id: str | None = Field(None, description="The run's id (default: a new ULID).")


class GiveInput(BaseModel):
    """The body of ``POST /runs/{run_id}/inputs/{name}``."""

    model_config = ConfigDict(extra="forbid")

    value: Any = Field(description="The input's value, valid for its schema.")


_Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _scoped_route(tokens: tuple[Token, ...]) -> type[APIRoute]:
    """A route class that checks the bearer token before anything of the request is
    read (its body included), for each route whose OpenAPI extra names a scope."""

    class ScopedRoute(APIRoute):
        def get_route_handler(self) -> _Handler:
            handler = super().get_route_handler()
            scope = (self.openapi_extra or {}).get(SCOPE)
            if scope is None:
                return handler

            async def guarded(request: Request) -> Response:
                found = authenticate(tokens, request.headers.get("authorization"))
                if found is None or isinstance(found, str):
                    said = "a bearer token is needed: 'Authorization: Bearer <token>'"
                    return error_response(
                        401, "Unauthorized", found or said,
                        headers={"WWW-Authenticate": 'Bearer realm="stageflow"'},
                    )  # fmt: skip
                if not found.allows(scope):
                    return error_response(
                        403, "Forbidden", f"token {found.name!r} lacks the {scope!r} scope",
                        field="scope", value=scope,
                    )  # fmt: skip
                return await handler(request)

            return guarded

    return ScopedRoute


def _after(last_event_id: str | None, after: int | None) -> int:
    """Where a stream starts: after ``Last-Event-ID`` (a reconnecting client's), else
    after ``?after=``, else at the first event."""
    if last_event_id is None:
        return 0 if after is None else after
    text = last_event_id.strip()
    if not text.isdigit():
        raise ConfigurationError(
            f"Last-Event-ID must be the id (seq) of an event, an int >= 0, not {text[:40]!r}",
            field="Last-Event-ID",
            value=text[:40],
        )
    return int(text)


def _labels(given: Iterable[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in given:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ConfigurationError(
                f"label must be KEY=VALUE, not {item[:80]!r}", field="label", value=item[:80]
            )
        labels[key] = value
    return labels


def create_app(
    service: RunService,
    *,
    tokens: Iterable[Token],
    max_body: int = 1_000_000,
    heartbeat: float = 15.0,
) -> FastAPI:
    """The HTTP API of ``service``, as a FastAPI app (run it with uvicorn).

    Every route but ``GET /healthz`` needs a bearer token of ``tokens``: those that
    only read need the ``read`` scope, those that start, cancel, resume, answer or
    delete runs the ``run`` scope (which implies ``read``). ``/openapi.json`` and
    ``/docs`` describe the API and show no pipeline nor run: they need none. When
    the app stops (uvicorn's shutdown), it closes the service: the runs it drives are
    cancelled and recorded as such.

    Args:
        service: what the routes call.
        tokens: who may call them (see :func:`load_tokens`, :func:`new_token`).
        max_body: bytes of a request body at most (larger: 413).
        heartbeat: seconds between two comments on an idle event stream, so that
            proxies and clients see it alive.

    Raises:
        ConfigurationError: ``service`` is no RunService, a token is no Token, or
            ``max_body`` or ``heartbeat`` is out of range.
    """
    if not isinstance(service, RunService):
        raise ConfigurationError(
            f"service must be a RunService, not {service!r}", field="service", value=service
        )
    allowed = tuple(tokens)
    for token in allowed:
        if not isinstance(token, Token):
            raise ConfigurationError(
                f"tokens must be Token values (load_tokens, new_token), not {type(token)}",
                field="tokens",
                value=type(token).__name__,
            )
    integer(max_body, "max_body", "a positive int (bytes)", ge=1)
    number(heartbeat, "heartbeat", "a positive number of seconds", gt=0)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await service.aclose()

    app = FastAPI(
        title="stageflow",
        version=__version__,
        description="Start, follow, answer and manage the runs of a stageflow catalog.",
        lifespan=lifespan,
    )
    install(app)
    app.add_middleware(BodyLimit, max_body=max_body)
    router = APIRouter(route_class=_scoped_route(allowed))

    @router.get("/healthz", tags=["service"], summary="The process is up (no token needed)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", tags=["service"], summary="The store answers", openapi_extra=_READ)
    async def readyz() -> dict[str, str]:
        await service.ready()
        return {"status": "ready"}

    @router.get("/pipelines", tags=["pipelines"], summary="The catalog", openapi_extra=_READ)
    async def pipelines() -> dict[str, Any]:
        return {"pipelines": service.pipelines()}

    @router.get(
        "/pipelines/{name}", tags=["pipelines"], openapi_extra=_READ,
        summary="A pipeline: stages, drawing (Mermaid), data schema",
    )  # fmt: skip
    async def pipeline(name: str) -> dict[str, Any]:
        return service.pipeline(name)

    @router.post(
        "/runs", tags=["runs"], status_code=201, openapi_extra=_RUN,
        summary="Start a run (driven by the server; returns once it is recorded)",
    )  # fmt: skip
    async def start(body: StartRun) -> JSONResponse:
        run_id = await service.start(
            body.pipeline, body.data, labels=body.labels, run_id=body.run_id
        )
        return JSONResponse(
            {"run_id": run_id}, status_code=201, headers={"Location": f"/runs/{run_id}"}
        )

    @router.get("/runs", tags=["runs"], summary="Runs, newest first", openapi_extra=_READ)
    async def runs(
        status: str | None = Query(None, description="Only runs with this status."),
        pipeline: str | None = Query(None, description="Only runs of this pipeline."),
        label: list[str] = Query([], description="Only runs with this label: KEY=VALUE."),  # noqa: B008
        limit: int = Query(50, description="At most this many runs (1 to 1000)."),
        cursor: str | None = Query(None, description="The 'next' of the page before."),
    ) -> dict[str, Any]:
        return await service.list(
            status=status, pipeline=pipeline, label=_labels(label), limit=limit, cursor=cursor
        )

    @router.get(
        "/runs/{run_id}", tags=["runs"], openapi_extra=_READ,
        summary="A run: status, stages, attempts, usage, pending inputs",
    )  # fmt: skip
    async def get_run(run_id: str) -> dict[str, Any]:
        return await service.get(run_id)

    @router.get(
        "/runs/{run_id}/outputs", tags=["runs"], openapi_extra=_READ,
        summary="The output data of the run's completed stages",
    )  # fmt: skip
    async def outputs(run_id: str) -> dict[str, Any]:
        return await service.outputs(run_id)

    @router.post(
        "/runs/{run_id}/cancel", tags=["runs"], openapi_extra=_RUN,
        summary="Cancel a run the server drives (returns once it is recorded cancelled)",
    )  # fmt: skip
    async def cancel(run_id: str) -> dict[str, Any]:
        return await service.cancel(run_id)

    @router.post(
        "/runs/{run_id}/resume", tags=["runs"], status_code=202, openapi_extra=_RUN,
        summary="Go on with a run that stopped (returns once the server holds it)",
    )  # fmt: skip
    async def resume(run_id: str) -> dict[str, Any]:
        return await service.resume(run_id)

    @router.post(
        "/runs/{run_id}/retry", tags=["runs"], status_code=201, openapi_extra=_RUN,
        summary="Start a new run of a failed or cancelled run, reusing its completed stages",
    )  # fmt: skip
    async def retry(run_id: str) -> JSONResponse:
        try:
            retried = await service.retry(run_id)
        except RunNotRetryableError as error:
            return error_response(
                409, type(error).__name__, str(error), field="run_id", value=run_id,
                run_status=error.status,
            )  # fmt: skip
        new_id = retried["run_id"]
        return JSONResponse(retried, status_code=201, headers={"Location": f"/runs/{new_id}"})

    @router.post(
        "/runs/{run_id}/inputs/{name}", tags=["runs"], openapi_extra=_RUN,
        summary="Give a run's input its value (validated; a waiting run goes on)",
    )  # fmt: skip
    async def give_input(run_id: str, name: str, body: GiveInput) -> dict[str, Any]:
        return await service.send(run_id, name, body.value)

    @router.delete(
        "/runs/{run_id}", tags=["runs"], status_code=204, openapi_extra=_RUN,
        summary="Delete a run that is not being driven, with its events",
    )  # fmt: skip
    async def delete(run_id: str) -> Response:
        await service.delete(run_id)
        return Response(status_code=204)

    @router.get(
        "/runs/{run_id}/events", tags=["runs"], openapi_extra=_READ,
        summary="The run's events as Server-Sent Events, until the run ends (204: it has "
        "ended and no event comes after Last-Event-ID)",
        response_class=EventSourceResponse,
    )  # fmt: skip
    async def events(
        run_id: str,
        after: int | None = Query(None, ge=0, description="Start after this seq."),
        last_event_id: str | None = Header(
            None, description="Resume after this event (what a reconnecting client sends)."
        ),
    ) -> Response:
        stream = await service.events(run_id, after=_after(last_event_id, after))
        if stream.ended:  # nothing more will come: 204 stops an EventSource's reconnects
            return Response(status_code=204)

        async def sent() -> AsyncIterator[ServerSentEvent]:
            async for event in stream:
                data = json.dumps(event.to_dict(), default=repr, allow_nan=False)
                yield ServerSentEvent(data=data, event=str(event.type), id=str(event.seq))

        return EventSourceResponse(sent(), ping=heartbeat)

    app.include_router(router)
    mount_page(app)
    _document_security(app)
    return app


def _document_security(app: FastAPI) -> None:
    """Declare the bearer scheme in the OpenAPI document (operations name it)."""
    made = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = made()
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["bearer"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "A token of the server's tokens file or $STAGEFLOW_TOKENS; "
                f"{SCOPE} on each operation names the scope it needs (read, or run).",
            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
