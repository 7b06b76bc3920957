"""The handlers ingest.yaml names: page through a (fake) product API, clean each record,
keep the valid rows and load them.

The API is a list in this module: the same pages every time, no network. It throttles
the second page once (``Unavailable`` on the first attempt), as real APIs do, so that
the file's ``retry:`` has something to retry.
"""

from __future__ import annotations

import hashlib
from typing import Any

from stageflow import StageContext

CATALOG: dict[str, list[dict[str, Any]]] = {
    "products": [
        {"sku": "OWL-1", "name": " Barn owl mug ", "price": "12.50", "currency": "eur"},
        {"sku": "OWL-2", "name": "Owl poster", "price": "8", "currency": "EUR"},
        {"sku": "OWL-3", "name": "owl socks", "price": "n/a", "currency": "EUR"},
        {"sku": "OWL-4", "name": "Owl lamp", "price": "39.90", "currency": "eur"},
        {"sku": "OWL-5", "name": "Snowy owl print", "price": "24", "currency": "EUR"},
        {"sku": "OWL-6", "name": "Owl tote", "price": "15.00", "currency": "EUR"},
        {"sku": "OWL-7", "name": " Owl pin", "price": "3.20", "currency": "eur"},
    ],
}
"""The API's data, by source."""


class Unavailable(Exception):
    """The API said 503: try again later (a transient error, retried)."""


async def fetch_page(
    ctx: StageContext, source: str, page: int, size: int, previous: dict[str, Any] | None
) -> dict[str, Any]:
    """One page of ``source``, added to the records of the pages before (``previous``,
    the loop's previous iteration; None on the first page)."""
    if page == 2 and ctx.attempt == 1:
        raise Unavailable(f"{source}: page {page}: 503 Service Unavailable")
    try:
        records = CATALOG[source]
    except KeyError:
        raise LookupError(f"no source {source!r} (known: {', '.join(CATALOG)})") from None
    start = (page - 1) * size
    found = records[start : start + size]
    before = previous["records"] if previous else []
    return {"records": before + found, "page": page, "more": start + size < len(records)}


async def clean(record: dict[str, Any]) -> dict[str, Any]:
    """One record, normalized: a trimmed name, the price in cents, an upper-case currency.

    Raises:
        ValueError: the price is no number (the map collects it as an error).
    """
    try:
        cents = round(float(record["price"]) * 100)
    except ValueError:
        raise ValueError(f"{record['sku']}: price {record['price']!r} is no number") from None
    return {
        "sku": record["sku"],
        "name": record["name"].strip(),
        "price_cents": cents,
        "currency": record["currency"].upper(),
    }


def valid_rows(results: list[dict[str, Any] | None]) -> dict[str, Any]:
    """The rows to load: a map collecting its errors gives None for a failed item."""
    rows = [row for row in results if row is not None]
    return {"rows": rows, "rejected": len(results) - len(rows)}


async def write_rows(table: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Load the rows (here: compute the batch's id, as a warehouse's load job would)."""
    digest = hashlib.sha256(",".join(row["sku"] for row in rows).encode()).hexdigest()
    return {"table": table, "count": len(rows), "batch": digest[:12]}
