"""Run ids: ULIDs, sortable by creation time, from the standard library alone; the shapes of
run ids and queue names."""

from __future__ import annotations

import os
import re
import time
from typing import Final

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")


def new_run_id() -> str:
    """A ULID: 48 bits of milliseconds since the epoch, then 80 random bits; 26 characters."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


QUEUE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}")
"""A queue's name (``Engine.submit(queue=)``, ``stageflow worker --queue``): as a run id."""
