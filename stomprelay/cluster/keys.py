"""The one place where Redis key and channel names are made (contract section 4).

Every name starts with the configurable prefix (default ``stomp``). Room ids
are validated before they get here (``[A-Za-z0-9_.-]{1,64}``), so no name can
contain a glob character or a separator.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "stomp"

    # -- channels ---------------------------------------------------------

    def room_channel(self, room_id: str) -> str:
        return f"{self.prefix}:broadcast:room:{room_id}"

    def join_channel(self, room_id: str) -> str:
        return f"{self.prefix}:event:join:{room_id}"

    def leave_channel(self, room_id: str) -> str:
        return f"{self.prefix}:event:leave:{room_id}"

    def room_channels(self, room_id: str) -> tuple[str, str, str]:
        """Everything a subscriber of ``/topic/room/{id}`` receives."""
        return (
            self.room_channel(room_id),
            self.join_channel(room_id),
            self.leave_channel(room_id),
        )

    def topic_channel(self, name: str) -> str:
        """Channel of a plain ``/topic/{name}`` (no participants)."""
        return f"{self.prefix}:broadcast:topic:{name}"

    @property
    def global_channel(self) -> str:
        return f"{self.prefix}:broadcast:global"

    @property
    def system_channel(self) -> str:
        return f"{self.prefix}:system:notifications"

    @property
    def session_connect_channel(self) -> str:
        return f"{self.prefix}:session:connect"

    @property
    def session_disconnect_channel(self) -> str:
        return f"{self.prefix}:session:disconnect"

    def server_channel(self, server_id: str) -> str:
        return f"{self.prefix}:server:{server_id}"

    # -- keys -------------------------------------------------------------

    def session(self, session_id: str) -> str:
        return f"{self.prefix}:sessions:{session_id}"

    @property
    def sessions_active(self) -> str:
        return f"{self.prefix}:sessions:active"

    def room_participants(self, room_id: str) -> str:
        return f"{self.prefix}:rooms:{room_id}:participants"

    def room_info(self, room_id: str) -> str:
        return f"{self.prefix}:rooms:{room_id}:info"

    def current_room(self, session_id: str) -> str:
        return f"{self.prefix}:users:{session_id}:current_room"

    def server_sessions(self, server_id: str) -> str:
        return f"{self.prefix}:servers:{server_id}:sessions"

    @property
    def servers_active(self) -> str:
        return f"{self.prefix}:servers:active"

    def server_info(self, server_id: str) -> str:
        return f"{self.prefix}:servers:{server_id}:info"

    def server_heartbeat(self, server_id: str) -> str:
        return f"{self.prefix}:servers:{server_id}:heartbeat"

    def reaper_lock(self, server_id: str) -> str:
        return f"{self.prefix}:servers:{server_id}:reaper_lock"

    @property
    def pattern(self) -> str:
        """SCAN pattern matching every key of this prefix."""
        return f"{self.prefix}:*"
