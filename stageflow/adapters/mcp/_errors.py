"""Errors as MCP tool results: ``isError``, ``{"error": {"type", "message", "field", "value"}}``.

stageflow's exceptions are translated here, once, for every tool and resource; what is
no stageflow error is logged with its traceback and shown to the client as an internal
error, without it.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, TextContent

from ...errors import (
    ConfigurationError,
    InputError,
    InputTimeoutError,
    InputValidationError,
    RunExistsError,
    RunLeasedError,
    StageflowError,
    StoreError,
    UnknownRunError,
)
from .._shared import shown_value

logger = logging.getLogger("stageflow.mcp")

# Store errors about what the caller asked (not the store failing): not logged.
_CALLERS: Final = (UnknownRunError, RunExistsError, RunLeasedError)


def error_json(error: BaseException, *, data_is_arguments: bool = False) -> dict[str, Any]:
    """``{"type", "message", "field", "value"}`` of an error a tool or a resource met.

    Args:
        error: what was raised.
        data_is_arguments: the tool's arguments are the run's data (a pipeline's own
            tool): a field of the data (``data.n``) is named as the argument (``n``).
    """
    if not isinstance(error, StageflowError):
        return {
            "type": "InternalError",
            "message": "internal error (see the server's log)",
            "field": None,
            "value": None,
        }
    field, value = _field_and_value(error)
    if data_is_arguments and field is not None and field.startswith("data."):
        field = field.removeprefix("data.")
    kind = type(error).__name__
    return {"type": kind, "message": str(error), "field": field, "value": shown_value(value)}


def tool_error(
    error: BaseException, *, tool: str, data_is_arguments: bool = False
) -> CallToolResult:
    """The ``isError`` result of a tool call that raised ``error`` (logged when unexpected)."""
    _log(error, f"tool {tool!r}")
    shown = error_json(error, data_is_arguments=data_is_arguments)
    where = f" (field {shown['field']!r})" if shown["field"] else ""
    return CallToolResult(
        content=[TextContent(text=f"{shown['type']}: {shown['message']}{where}")],
        structured_content={"error": shown},
        is_error=True,
    )


def resource_error(error: BaseException, *, uri: str) -> MCPError:
    """The MCP error (a JSON-RPC error: resources have no ``isError``) for a read of ``uri``."""
    _log(error, f"resource {uri!r}")
    shown = error_json(error)
    return MCPError(INVALID_PARAMS, f"{shown['type']}: {shown['message']}", {"uri": uri, **shown})


def _log(error: BaseException, what: str) -> None:
    if not isinstance(error, StageflowError):
        logger.error("%s failed", what, exc_info=error)
    elif isinstance(error, StoreError) and not isinstance(error, _CALLERS):
        logger.warning("%s: the store failed: %s", what, error)


def _field_and_value(error: StageflowError) -> tuple[str | None, Any]:
    """Where the caller went wrong, as the argument's name, and the value there."""
    if isinstance(error, InputValidationError):  # where in send_input's "value"
        return ("value." + error.field if error.field else "value"), error.value
    if isinstance(error, ConfigurationError):
        return error.field, error.value
    if isinstance(error, InputError):
        return "name", error.input
    if isinstance(error, InputTimeoutError):
        return "name", error.stage
    run_id = getattr(error, "run_id", None)
    if run_id is not None:
        return "run_id", run_id
    return None, None
