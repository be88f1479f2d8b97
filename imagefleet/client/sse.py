"""A server-sent events reader (the text/event-stream format), for the client's streams.

Only what the imagefleet streams use: `id`, `event`, `data` (joined across lines) and
`retry`; comment lines (keepalives) are skipped. Incremental: it yields each event as soon
as its blank line arrives, so a caller sees progress live.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field


@dataclass
class ServerEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry_ms: int | None = None


@dataclass
class _Builder:
    data: list[str] = field(default_factory=list)
    event: str | None = None
    id: str | None = None
    retry_ms: int | None = None

    def feed(self, line: str) -> ServerEvent | None:
        """Takes one line; returns the event a blank line completes."""
        if not line:
            if not self.data and self.event is None:
                self.id = None
                return None
            done = ServerEvent(
                self.event or "message", "\n".join(self.data), self.id, self.retry_ms
            )
            self.data, self.event, self.id = [], None, None
            return done
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id":
            self.id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


def parse_events(lines: Iterable[str]) -> Iterator[ServerEvent]:
    builder = _Builder()
    for line in lines:
        event = builder.feed(line.rstrip("\r\n"))
        if event is not None:
            yield event


async def aparse_events(lines: AsyncIterable[str]) -> AsyncIterator[ServerEvent]:
    builder = _Builder()
    async for line in lines:
        event = builder.feed(line.rstrip("\r\n"))
        if event is not None:
            yield event
