"""Reading Server-Sent Events off an httpx response, as a browser's EventSource does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Sent:
    """One event of a stream (``id:``, ``event:``, ``data:`` as JSON)."""

    id: int
    event: str
    data: dict[str, Any]


@dataclass
class _Parser:
    """Lines in, events out; comment lines (``: ping``) counted."""

    comments: int = 0
    _fields: dict[str, list[str]] = field(default_factory=dict)

    def feed(self, line: str) -> Sent | None:
        if not line:
            fields, self._fields = self._fields, {}
            if "data" not in fields:
                return None
            return Sent(
                int(fields["id"][-1]), fields["event"][-1], json.loads("\n".join(fields["data"]))
            )
        if line.startswith(":"):
            self.comments += 1
            return None
        name, _, value = line.partition(":")
        self._fields.setdefault(name, []).append(value.removeprefix(" "))
        return None


def parse(lines: Iterable[str], *, until: str | None = None) -> Iterator[Sent]:
    parser = _Parser()
    for line in lines:
        sent = parser.feed(line)
        if sent is not None:
            yield sent
            if until is not None and sent.event == until:
                return


def read_events(
    response: httpx.Response, *, until: str | None = None, count: int | None = None
) -> list[Sent]:
    """The events of the stream, to its end, or up to the first ``until`` event, or the
    first ``count`` events."""
    events: list[Sent] = []
    for sent in parse(response.iter_lines(), until=until):
        events.append(sent)
        if count is not None and len(events) == count:
            break
    return events


async def aparse(response: httpx.Response) -> AsyncIterator[Sent | None]:
    """The events of the stream as they come; None for each comment line (a heartbeat)."""
    parser = _Parser()
    async for line in response.aiter_lines():
        comments = parser.comments
        sent = parser.feed(line)
        if sent is not None:
            yield sent
        elif parser.comments > comments:
            yield None
