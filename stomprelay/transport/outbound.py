"""The send side of a STOMP socket, and when its client counts as a slow consumer.

The transport's write buffer is the send queue (docs/protocol.md): frames go
straight to ``transport.write`` until the buffer passes its high-water mark
and asyncio calls ``pause_writing``. From then on frames wait here, bounded by
``send_queue_frames`` and ``send_queue_bytes`` (counting what the transport
still holds); past either bound, or after ``send_timeout`` of being paused,
the client is dropped as a slow consumer (:func:`slow_consumer_error` says
why, in the ERROR frame it gets if it still reads anything).
"""

from __future__ import annotations

import asyncio

from stomprelay.errors import PolicyError
from stomprelay.settings import Settings


def slow_consumer_error(settings: Settings) -> PolicyError:
    """The ERROR a dropped slow consumer is sent (STOMP 1.2 "ERROR")."""
    return PolicyError(
        "Slow consumer",
        f"More than {settings.send_queue_frames} frames or "
        f"{settings.send_queue_bytes} bytes were waiting for this client, "
        f"or its socket took nothing for {settings.send_timeout:g} s.",
    )


class SendQueue:
    """What waits for one socket while its transport's buffer is full, within
    the send limits; which frames and how many bytes, and since when."""

    __slots__ = ("_held", "_held_bytes", "_settings", "paused_at")

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        #: Since when the transport has asked for no more writes (``pause_writing``).
        self.paused_at: float | None = None
        #: Frames held while paused (made on the first one: most sockets never pause).
        self._held: list[bytes] | None = None
        self._held_bytes = 0

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    def write(self, transport: asyncio.WriteTransport, chunks: list[bytes]) -> bool:
        """Write ``chunks`` now, or hold them while the transport is paused;
        False once what waits is over the limits (the client is a slow consumer)."""
        if self.paused_at is None:
            # past the high-water mark the transport calls pause_writing at once,
            # and what follows is held (and bounded) below
            transport.write(b"".join(chunks) if len(chunks) > 1 else chunks[0])
            return True
        held = self._held
        if held is None:
            held = self._held = []
        held.extend(chunks)
        self._held_bytes += sum(map(len, chunks))
        settings = self._settings
        return not (
            len(held) > settings.send_queue_frames
            or self._held_bytes + transport.get_write_buffer_size() > settings.send_queue_bytes
        )

    def pause(self, now: float) -> None:
        self.paused_at = now

    def resume(self, transport: asyncio.WriteTransport | None) -> None:
        """The transport takes writes again: what was held goes out in one write."""
        self.paused_at = None
        held = self._held
        if held:
            self._held = None
            self._held_bytes = 0
            if transport is not None:
                transport.write(b"".join(held))

    def due(self) -> float | None:
        """When a paused socket has taken nothing for too long."""
        paused = self.paused_at
        return None if paused is None else paused + self._settings.send_timeout

    def timed_out(self, now: float) -> bool:
        paused = self.paused_at
        return paused is not None and now - paused >= self._settings.send_timeout

    def clear(self) -> bool:
        """Drop the backlog and forget the pause; True if the socket was paused."""
        was_paused = self.paused_at is not None
        self._held = None
        self._held_bytes = 0
        self.paused_at = None
        return was_paused
