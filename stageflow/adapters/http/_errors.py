"""Errors as JSON: ``{"error": {"type", "message", "field", "value"}}``, with their status.

stageflow's exceptions are translated here, once, for every route.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ...errors import (
    ConfigurationError,
    GraphMismatchError,
    InputAlreadyGivenError,
    InputError,
    InputTimeoutError,
    InputValidationError,
    RunCancelledError,
    RunExistsError,
    RunLeasedError,
    RunNotRetryableError,
    StageflowError,
    StoreError,
    UnknownInputError,
    UnknownPipelineError,
    UnknownRunError,
)
from .._shared import shown_value

logger = logging.getLogger("stageflow.http")

# The first class an error is an instance of gives its status: subclasses first.
STATUS: Final[tuple[tuple[type[BaseException], int], ...]] = (
    (UnknownPipelineError, 404),
    (UnknownRunError, 404),
    (UnknownInputError, 404),
    (RunCancelledError, 409),
    (GraphMismatchError, 409),
    (RunExistsError, 409),
    (RunLeasedError, 409),
    (RunNotRetryableError, 409),
    (InputAlreadyGivenError, 409),
    (InputTimeoutError, 409),
    (InputValidationError, 422),
    (ConfigurationError, 422),
    (StoreError, 503),
)


def error_response(
    status: int,
    kind: str,
    message: str,
    *,
    field: str | None = None,
    value: Any = None,
    headers: dict[str, str] | None = None,
    **more: Any,
) -> JSONResponse:
    """The JSON error response every refusal of the API is."""
    body = {"type": kind, "message": message, "field": field, "value": shown_value(value), **more}
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _field_and_value(error: StageflowError) -> tuple[str | None, Any]:
    if isinstance(error, InputValidationError):  # where in the body {"value": ...}
        return ("value." + error.field if error.field else "value"), error.value
    if isinstance(error, ConfigurationError):
        return error.field, error.value
    if isinstance(error, InputError):
        return "name", error.input
    run_id = getattr(error, "run_id", None)
    if run_id is not None:
        return "run_id", run_id
    return None, None


async def _stageflow_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StageflowError)
    status = next((code for kind, code in STATUS if isinstance(error, kind)), 500)
    if status == 500:
        logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
    if status == 503:
        logger.warning("%s %s: the store failed: %s", request.method, request.url.path, error)
    field, value = _field_and_value(error)
    return error_response(status, type(error).__name__, str(error), field=field, value=value)


async def _invalid_request(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    found = [
        {
            "field": ".".join(str(part) for part in item["loc"][1:]) or item["loc"][0],
            "message": item["msg"],
        }
        for item in error.errors()
    ]
    first = error.errors()[0] if error.errors() else {"loc": ("body",), "msg": "invalid"}
    field = found[0]["field"] if found else "body"
    return error_response(
        422,
        "RequestValidationError",
        f"{field}: {first['msg']}",
        field=field,
        value=first.get("input"),
        errors=found,
    )


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(error.status_code, "HTTPError")
    return error_response(
        error.status_code, kind, str(error.detail), headers=getattr(error, "headers", None)
    )


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    # Logged by the server (Starlette re-raises it after this response); nothing of it
    # is shown to the client.
    return error_response(500, "InternalError", "internal server error (see the server's log)")


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as JSON."""
    app.add_exception_handler(StageflowError, _stageflow_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
