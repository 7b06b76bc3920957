"""How the command prints values: costs as money."""

from __future__ import annotations

import json
import math
from typing import Any

from ..ports import RunRecord

SIGNS = {"USD": "$"}
"""Currencies printed with a sign before the amount; any other is named after it."""


def money(value: float | None, currency: str | None = None) -> str:
    """A cost as money: ``$12.34``, ``$0.50``, and sub-cent costs to two significant
    digits (``$0.000076``, never ``7.6e-05``); "" for no cost.

    Args:
        value: the cost, in the price table's currency.
        currency: that currency's code; USD (``$``) where None (PriceTable's default,
            and a run without a price table). Another code is named after the amount:
            ``0.50 EUR``.
    """
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    amount = abs(value)
    if 0 < amount < 1:  # two significant digits, at least to the cent
        amount = float(f"{amount:.1e}")
    places = 2 if amount == 0 or amount >= 1 else max(2, 1 - math.floor(math.log10(amount)))
    digits = f"{amount:,.{places}f}"
    sign = "-" if value < 0 and amount else ""
    code = currency or "USD"
    if code in SIGNS:
        return f"{sign}{SIGNS[code]}{digits}"
    return f"{sign}{digits} {code}"


def run_currency(record: RunRecord) -> str | None:
    """The currency of the price table stored with the run, or None (none stored)."""
    try:
        config: Any = json.loads(record.config) if record.config else None
        currency = config["prices"]["currency"]
    except (ValueError, TypeError, KeyError):
        return None
    return currency if isinstance(currency, str) and currency else None
