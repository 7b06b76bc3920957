"""Checks of arguments: each refuses a bad value with an error naming the field and the value.

Every message reads ``"<subject> must be <what>, not <value!r>"``: the caller says what is
expected (``"a positive int"``), the check says what was given. An option of
``with_stage`` (``stage=`` given) is refused with an
:class:`~stageflow.errors.InvalidOptionError` and the message starts with the stage's
name; anything else with a :class:`~stageflow.errors.ConfigurationError`.

Example:
    >>> from stageflow._check import integer, number
    >>> number(2, "timeout", "a positive number of seconds", gt=0)
    2.0
    >>> integer(0, "maxsize", "a positive int", ge=1)
    Traceback (most recent call last):
    ...
    stageflow.errors.ConfigurationError: maxsize must be a positive int, not 0

These are for checks made once, where a value is configured (a constructor, an
option): a per-stage hot path keeps its own inline test and calls them only to
raise.
"""

from __future__ import annotations

import math
from typing import NoReturn

from ._ids import QUEUE
from .errors import ConfigurationError, InvalidOptionError

__all__ = ["integer", "number", "refuse"]


def refuse(
    field: str,
    what: str,
    value: object,
    *,
    stage: str | None = None,
    owner: str | None = None,
    label: str | None = None,
) -> NoReturn:
    """Raise the error for ``value``, given as ``field``, that is not ``what``.

    Args:
        field: the argument or option; the error's ``field`` (or ``option``).
        what: what it must be, as words (``"a positive int or None"``).
        value: what was given; the error's ``value``.
        stage: for an option of this stage: an InvalidOptionError, and the message
            starts with ``stage 'name': ``.
        owner: the class whose field it is: the message names ``owner.field``
            (``RetryPolicy.base``).
        label: the subject of the message when it is neither ``field`` nor
            ``owner.field`` (``"the default stage timeout"``).

    Raises:
        InvalidOptionError: with ``stage``.
        ConfigurationError: without.
    """
    subject = label or (field if owner is None else f"{owner}.{field}")
    if stage is not None:
        raise InvalidOptionError(
            f"stage {stage!r}: {subject} must be {what}, not {value!r}",
            stage=stage,
            option=field,
            value=value,
        )
    raise ConfigurationError(f"{subject} must be {what}, not {value!r}", field=field, value=value)


def _within(
    x: float, gt: float | None, ge: float | None, lt: float | None, le: float | None
) -> bool:
    return (
        (gt is None or x > gt)
        and (ge is None or x >= ge)
        and (lt is None or x < lt)
        and (le is None or x <= le)
    )


def number(
    value: object,
    field: str,
    what: str,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    finite: bool = True,
    stage: str | None = None,
    owner: str | None = None,
    label: str | None = None,
) -> float:
    """``value`` as a float if it is an int or a float (not a bool, never NaN) within the
    bounds (``gt`` < value, ``ge`` <= value, value < ``lt``, value <= ``le``), finite
    unless ``finite=False``; else :func:`refuse` it (``what``, ``stage``, ``owner`` and
    ``label`` as there).

    None is refused too: an optional value is checked by its caller when it is not None.
    """
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            x = float(value)
        except OverflowError:  # an int too large for a float
            x = math.nan
        if (math.isfinite(x) if finite else not math.isnan(x)) and _within(x, gt, ge, lt, le):
            return x
    refuse(field, what, value, stage=stage, owner=owner, label=label)


def integer(
    value: object,
    field: str,
    what: str,
    *,
    gt: int | None = None,
    ge: int | None = None,
    lt: int | None = None,
    le: int | None = None,
    stage: str | None = None,
    owner: str | None = None,
    label: str | None = None,
) -> int:
    """``value`` itself if it is an int (not a bool) within the bounds (as :func:`number`'s);
    else :func:`refuse` it."""
    if isinstance(value, int) and not isinstance(value, bool) and _within(value, gt, ge, lt, le):
        return value
    refuse(field, what, value, stage=stage, owner=owner, label=label)


def check_queue(queue: object, field: str = "queue") -> str:
    """``queue``, refused with ConfigurationError unless it is a queue's name."""
    if not isinstance(queue, str) or QUEUE.fullmatch(queue) is None:
        refuse(field, "a queue's name: 1 to 128 letters, digits, '_', '.', ':' or '-'", queue)
    return queue
