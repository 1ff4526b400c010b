"""One exception root for the relay, split by who caused the error.

:class:`PeerError` covers what a client (or another relay) did wrong: it never
escapes the sans-I/O core, which turns it into an ``ERROR`` frame and a close
(STOMP 1.2, "ERROR"). :class:`InternalError` covers our own side, including
infrastructure failures translated at the Redis boundary.
"""

from __future__ import annotations


class StompRelayError(Exception):
    """Root of every exception this package raises on purpose."""


class PeerError(StompRelayError):
    """The peer sent something we refuse; reported to it as an ERROR frame.

    ``message`` is short and fit for the ERROR frame's ``message`` header;
    ``detail`` is the plain-language body.
    """

    def __init__(
        self, message: str, detail: str = "", headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or message
        #: Extra headers for the ERROR frame (e.g. ``version`` on a failed CONNECT).
        self.headers = headers
        #: The offending frame's ``receipt``, when known (STOMP 1.2 "ERROR").
        self.receipt_id: str | None = None


class ProtocolError(PeerError):
    """The bytes are not valid STOMP for the negotiated version."""


class FrameTooLarge(ProtocolError):
    """A frame, header line, header count or command line exceeds a limit."""


class PolicyError(PeerError):
    """Valid STOMP that the relay does not allow (bad destination, limits)."""


class InternalError(StompRelayError):
    """Something on our side failed; the peer is not to blame."""


class BackendUnavailable(InternalError):
    """The shared backend (Redis) cannot be reached right now."""


class BackendTimeout(BackendUnavailable):
    """The backend did not answer in time: the command may still have run."""
