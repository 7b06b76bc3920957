"""Interceptors: what wraps every stage call (timeouts, retries, tracing, your own).

The chain is composed once per (graph, engine): each interceptor's
``wrap(spec, call)`` returns a new call, or ``call`` unchanged when it does not
apply, so an interceptor that does not apply to a stage costs that stage nothing.
Lower ``priority`` wraps outer; see :class:`Priority` for the built-ins' order.
"""

from ._assist import AssistanceInterceptor
from ._base import (
    BaseInterceptor,
    Interceptor,
    Priority,
    RunInterceptor,
    SelectiveInterceptor,
    TransparentInterceptor,
)
from ._breaker import (
    CircuitBreaker,
    CircuitBreakerInterceptor,
    CircuitBreakerRegistry,
    CircuitState,
)
from ._budget import BudgetInterceptor
from ._checkpoint import CheckpointInterceptor
from ._logging import JsonFormatter, LoggingInterceptor
from ._metrics import MetricsInterceptor
from ._retry import RetryInterceptor
from ._timeout import TimeoutInterceptor
from ._tracing import TracingInterceptor

__all__ = [
    "AssistanceInterceptor",
    "BaseInterceptor",
    "BudgetInterceptor",
    "CheckpointInterceptor",
    "CircuitBreaker",
    "CircuitBreakerInterceptor",
    "CircuitBreakerRegistry",
    "CircuitState",
    "Interceptor",
    "JsonFormatter",
    "LoggingInterceptor",
    "MetricsInterceptor",
    "Priority",
    "RetryInterceptor",
    "RunInterceptor",
    "SelectiveInterceptor",
    "TimeoutInterceptor",
    "TracingInterceptor",
    "TransparentInterceptor",
]
