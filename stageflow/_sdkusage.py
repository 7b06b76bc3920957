"""What an LLM SDK's response says it used, as a usage report's fields.

``ctx.usage.report_response(response)`` reads a response of the OpenAI SDK (chat
completions, the Responses API, embeddings; any OpenAI-compatible server), of the
Anthropic SDK (messages), or the same as decoded JSON (a dict), and reports its model
and token counts in one call. No SDK is imported: the shapes are read as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .errors import ConfigurationError

__all__ = ["ResponseUsage", "usage_of_response"]


class ResponseUsage(NamedTuple):
    """A response's model and token counts."""

    model: str | None
    input_tokens: int
    output_tokens: int


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_of_response(response: Any) -> ResponseUsage:
    """The model and token counts ``response`` reports.

    - OpenAI chat completions and embeddings: ``usage.prompt_tokens`` in,
      ``usage.completion_tokens`` out (0 for embeddings);
    - OpenAI Responses API: ``usage.input_tokens`` / ``usage.output_tokens``;
    - Anthropic messages: ``usage.input_tokens`` plus the prompt-cache tokens written
      and read (``cache_creation_input_tokens``, ``cache_read_input_tokens``: tokens the
      model took in, though billed at other rates: give ``cost=`` for an exact cost)
      in, ``usage.output_tokens`` out.

    Raises:
        ConfigurationError: ``response`` has no ``usage`` of a known shape.
    """
    usage = _get(response, "usage")
    if usage is None:
        raise ConfigurationError(
            f"usage.report_response() takes an LLM SDK response with a usage (OpenAI, "
            f"Anthropic, or their JSON), not {type(response).__qualname__} without one",
            field="response",
            value=type(response).__qualname__,
        )
    model = _get(response, "model")
    model = model if isinstance(model, str) and model else None
    prompt = _get(usage, "prompt_tokens")
    if prompt is not None:  # OpenAI chat completions, embeddings
        return ResponseUsage(model, _count(prompt), _count(_get(usage, "completion_tokens")))
    given = _get(usage, "input_tokens")
    if given is None:
        raise ConfigurationError(
            f"usage.report_response(): the response's usage ({type(usage).__qualname__}) has "
            "neither prompt_tokens (OpenAI) nor input_tokens (Anthropic, OpenAI Responses)",
            field="response.usage",
            value=type(usage).__qualname__,
        )
    cached = _count(_get(usage, "cache_creation_input_tokens")) + _count(
        _get(usage, "cache_read_input_tokens")
    )
    return ResponseUsage(model, _count(given) + cached, _count(_get(usage, "output_tokens")))
