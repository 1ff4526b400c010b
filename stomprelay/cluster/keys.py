"""The one place where Redis key and channel names are made (contract section 4).

Every name starts with the configurable prefix (default ``stomp``). Room ids
are validated before they get here (``[A-Za-z0-9_.-]{1,64}``), so no name can
contain a glob character or a separator.

The names carry Redis Cluster hash tags (docs/redis.md, "Key layout"): the id
in braces, ``stomp:rooms:{lobby}:participants``. Every key and channel of one
room shares the room's tag (its participants, info, log, and its three
channels), every key of one session the session's, every key of one relay the
relay's; so each registry step touches one slot, and a room's channels live on
the shard that holds its log. The same layout serves every mode: on a single
Redis the braces are only characters. Channels with a tag travel on sharded
pub/sub in cluster mode (SPUBLISH); the others are cluster-wide (PUBLISH).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

PREFIX = re.compile(r"[A-Za-z0-9_.-]{1,32}")

#: name -> template; ``{p}`` is the prefix, ``{x}`` the id (``{{{x}}}``: the id as a hash tag).
TEMPLATES: dict[str, str] = {
    # channels: a room's and a topic's are sharded (tagged), the rest cluster-wide
    "room_channel": "{p}:broadcast:room:{{{x}}}",
    "join_channel": "{p}:event:join:{{{x}}}",
    "leave_channel": "{p}:event:leave:{{{x}}}",
    "topic_channel": "{p}:broadcast:topic:{{{x}}}",
    "user_channel": "{p}:broadcast:user:{{{x}}}",
    "server_channel": "{p}:server:{x}",
    "global_channel": "{p}:broadcast:global",
    "system_channel": "{p}:system:notifications",
    "session_connect_channel": "{p}:session:connect",
    "session_disconnect_channel": "{p}:session:disconnect",
    "control_channel": "{p}:system:control",
    # keys of one session
    "session": "{p}:sessions:{{{x}}}",
    "current_room": "{p}:users:{{{x}}}:current_room",
    # keys of one room
    "room_participants": "{p}:rooms:{{{x}}}:participants",
    "room_info": "{p}:rooms:{{{x}}}:info",
    # keys of one user (its inbox logs are under history:user:{x}:<queue>)
    "user_sessions": "{p}:user:{{{x}}}:sessions",
    # keys of one relay
    "server_sessions": "{p}:servers:{{{x}}}:sessions",
    "server_info": "{p}:servers:{{{x}}}:info",
    "server_heartbeat": "{p}:servers:{{{x}}}:heartbeat",
    "reaper_lock": "{p}:servers:{{{x}}}:reaper_lock",
    "reaped": "{p}:servers:{{{x}}}:reaped",
    # indexes: one key each (each in its own slot)
    "sessions_active": "{p}:sessions:active",
    "servers_active": "{p}:servers:active",
    "liveness": "{p}:servers:liveness",
    "users_suspended": "{p}:users:suspended",
    # keys of one user (the user percent-encoded, as in user destinations)
    "user_subscriptions": "{p}:user:{{{x}}}:subscriptions",
    "users_kicked": "{p}:users:kicked",
    # webhooks (docs/webhooks.md): one partition's keys share its tag ``{w<n>}``
    "webhook_events": "{p}:webhooks:{{w{x}}}:events",
    "webhook_lease": "{p}:webhooks:{{w{x}}}:lease",
    "webhook_cursor": "{p}:webhooks:{{w{x}}}:cursor",
    "webhook_dead": "{p}:webhooks:dead",
    "webhook_members": "{p}:webhooks:{{meta}}:members",
    "webhook_partition_count": "{p}:webhooks:{{meta}}:partitions",
    "history_topics": "{p}:history:topics",
    # the dashboard's rings of one relay (docs/operations.md), in the relay's slot
    "server_samples": "{p}:servers:{{{x}}}:samples",
    "server_degraded": "{p}:servers:{{{x}}}:degraded",
    # queues (docs/queues.md): the index of queue names, one key
    "queue_names": "{p}:queues",
}


def encode_user(user: str) -> str:
    """A user id as a name part: percent-encoded (RFC 3986) but for letters, digits
    and ``_.-~``, so ``:``, ``{``, ``}``, ``*``, ``/`` and spaces never reach a key,
    and each user has one spelling (``a/b`` -> ``a%2Fb``)."""
    return quote(user, safe="")


def glob_escape(text: str) -> str:
    """``text`` matched literally inside a SCAN MATCH pattern (Redis's glob rules)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def queue_tag(name: str) -> str:
    """A queue's hash tag: its name without ``.dlq`` suffixes (a queue and its
    dead-letter queues in one slot)."""
    base = name
    while base.endswith(".dlq") and len(base) > 4:
        base = base[:-4]
    return base


def hash_tag(name: str) -> str | None:
    """The hash tag of a key or shard channel, by Redis Cluster's rule: after the
    first ``{``, up to the first ``}``, not empty; None when there is none (then
    Redis hashes the whole name, and a channel is cluster-wide, not sharded)."""
    start = name.find("{")
    end = name.find("}", start + 1) if start >= 0 else -1
    return name[start + 1 : end] if end > start + 1 else None


@dataclass(frozen=True, slots=True)
class Keys:
    """Maker of every Redis key and channel name under one prefix (contract section 4).

    Relays that share a prefix share a cluster; each name comes from :data:`TEMPLATES`,
    with the hash tag that puts a room's, a session's or a relay's keys in one slot.
    """

    prefix: str = "stomp"

    def __post_init__(self) -> None:
        if not PREFIX.fullmatch(self.prefix):
            raise ValueError(f"key prefix must match {PREFIX.pattern}, not {self.prefix!r}")

    def _name(self, template: str, ident: str = "") -> str:
        return TEMPLATES[template].format(p=self.prefix, x=ident)

    # -- channels ---------------------------------------------------------

    def room_channel(self, room_id: str) -> str:
        return self._name("room_channel", room_id)

    def join_channel(self, room_id: str) -> str:
        return self._name("join_channel", room_id)

    def leave_channel(self, room_id: str) -> str:
        return self._name("leave_channel", room_id)

    def room_channels(self, room_id: str) -> tuple[str, str, str]:
        """Everything a subscriber of ``/topic/room/{id}`` receives."""
        return self.room_channel(room_id), self.join_channel(room_id), self.leave_channel(room_id)

    def topic_channel(self, name: str) -> str:
        """Channel of a plain ``/topic/{name}`` (no participants)."""
        return self._name("topic_channel", name)

    def user_channel(self, user: str) -> str:
        """Channel of one user's queues (``stomp:broadcast:user:{<encoded user>}``):
        sharded, with the user's tag, which the user's inbox logs share."""
        return self._name("user_channel", encode_user(user))

    def user_of_channel(self, channel: str) -> str | None:
        """The user whose channel ``channel`` is (decoded), None for any other channel."""
        head = self._name("user_channel", "")[:-1]  # "stomp:broadcast:user:{"
        if not channel.startswith(head) or not channel.endswith("}"):
            return None
        return unquote(channel[len(head) : -1])

    def server_channel(self, server_id: str) -> str:
        return self._name("server_channel", server_id)

    @property
    def global_channel(self) -> str:
        return self._name("global_channel")

    @property
    def system_channel(self) -> str:
        return self._name("system_channel")

    @property
    def session_connect_channel(self) -> str:
        return self._name("session_connect_channel")

    @property
    def session_disconnect_channel(self) -> str:
        return self._name("session_disconnect_channel")

    @property
    def control_channel(self) -> str:
        """Operator commands to every relay (kick a user)."""
        return self._name("control_channel")

    # -- keys -------------------------------------------------------------

    @property
    def users_suspended(self) -> str:
        """Hash: user -> ms since the epoch until which CONNECT is refused."""
        return self._name("users_suspended")

    @property
    def users_kicked(self) -> str:
        """Hash: user -> ms since the epoch of its latest kick (kept an hour, so a
        relay cut off at the time ends that user's older sessions once it is back)."""
        return self._name("users_kicked")

    def user_subscriptions(self, user: str) -> str:
        """Set: the destinations ``user``'s sessions are subscribed to by the server
        (``POST /api/users/{user}/subscribe``), in the user's slot."""
        return self._name("user_subscriptions", encode_user(user))

    def session(self, session_id: str) -> str:
        return self._name("session", session_id)

    @property
    def sessions_active(self) -> str:
        return self._name("sessions_active")

    def user_sessions(self, user: str) -> str:
        """Set of a user's session ids (``stomp:user:{<encoded user>}:sessions``)."""
        return self._name("user_sessions", encode_user(user))

    def room_participants(self, room_id: str) -> str:
        return self._name("room_participants", room_id)

    def room_info(self, room_id: str) -> str:
        return self._name("room_info", room_id)

    def current_room(self, session_id: str) -> str:
        return self._name("current_room", session_id)

    def server_sessions(self, server_id: str) -> str:
        return self._name("server_sessions", server_id)

    @property
    def servers_active(self) -> str:
        return self._name("servers_active")

    def server_info(self, server_id: str) -> str:
        return self._name("server_info", server_id)

    def server_heartbeat(self, server_id: str) -> str:
        return self._name("server_heartbeat", server_id)

    def reaper_lock(self, server_id: str) -> str:
        return self._name("reaper_lock", server_id)

    def reaped(self, server_id: str) -> str:
        """Tombstone a sweeper leaves: this relay (incarnation) was reaped."""
        return self._name("reaped", server_id)

    @property
    def liveness(self) -> str:
        """Hash: when any relay last refreshed, and until when nobody may reap."""
        return self._name("liveness")

    def history(self, log_id: str) -> str:
        """Stream of a destination's log; entry ids are ``<offset>-0``.

        ``room:lobby`` -> ``stomp:history:room:{lobby}`` (the room's tag),
        ``topic:news`` -> ``stomp:history:topic:{news}``, ``global`` ->
        ``stomp:history:{global}``, ``user:alice:inbox`` ->
        ``stomp:history:user:{alice}:inbox`` (the user's tag: every queue of one
        user in the slot of the user's channel)."""
        kind, _, name = log_id.partition(":")
        if kind == "user":
            user, _, queue = name.partition(":")
            return f"{self.prefix}:history:user:{{{user}}}:{queue}"
        if name:
            return f"{self.prefix}:history:{kind}:{{{name}}}"
        return f"{self.prefix}:history:{{{kind}}}"

    def history_meta(self, log_id: str) -> str:
        return self.history(log_id) + ":meta"

    def history_ids(self, log_id: str) -> str:
        return self.history(log_id) + ":ids"

    def log_keys(self, log_id: str) -> tuple[str, str, str]:
        """A log's stream, meta and ids keys (one slot)."""
        stream = self.history(log_id)
        return stream, stream + ":meta", stream + ":ids"

    def room_keys(self, room_id: str) -> tuple[str, ...]:
        """Every key a room step touches: participants, info, then its log's."""
        return (
            self.room_participants(room_id),
            self.room_info(room_id),
            *self.log_keys(f"room:{room_id}"),
        )

    def session_keys(self, session_id: str) -> tuple[str, str]:
        return self.session(session_id), self.current_room(session_id)

    # -- webhooks (docs/webhooks.md) ------------------------------------------

    def webhook_events(self, partition: int) -> str:
        """Stream of one partition's events, oldest first: entries ``e`` = the
        event's JSON. ``stomp:webhooks:{w3}:events``."""
        return self._name("webhook_events", str(partition))

    def webhook_lease(self, partition: int) -> str:
        """String: the relay delivering the partition now (SET NX PX)."""
        return self._name("webhook_lease", str(partition))

    def webhook_cursor(self, partition: int) -> str:
        """String: the id of the partition's last delivered entry."""
        return self._name("webhook_cursor", str(partition))

    @property
    def webhook_members(self) -> str:
        """Hash: relay id -> until when (ms, Redis time) it delivers webhooks; the
        partitions are shared among these relays only."""
        return self._name("webhook_members")

    @property
    def webhook_partition_count(self) -> str:
        """String: the ``--webhook-partitions`` the delivering relays run with (the
        CLI reads it, so a replay or an inspect sees the partitions they use)."""
        return self._name("webhook_partition_count")

    @property
    def webhook_dead(self) -> str:
        """Stream of events that were not delivered within --webhook-max-age."""
        return self._name("webhook_dead")

    @property
    def history_topics(self) -> str:
        return self._name("history_topics")

    # -- the dashboard (docs/operations.md) -------------------------------------

    def server_samples(self, server_id: str) -> str:
        """List: a relay's last samples (JSON, oldest first), capped, with a TTL."""
        return self._name("server_samples", server_id)

    def server_degraded(self, server_id: str) -> str:
        """List: a relay's past degraded periods (JSON, oldest first), capped."""
        return self._name("server_degraded", server_id)

    def user_sessions_pattern(self, fragment: str) -> str:
        """SCAN pattern of the user indexes whose encoded user holds ``fragment``."""
        return self._name("user_sessions", f"*{glob_escape(encode_user(fragment))}*")

    def room_info_matching(self, fragment: str) -> str:
        """SCAN pattern of the room info hashes whose room id holds ``fragment``."""
        return self._name("room_info", f"*{glob_escape(fragment)}*")

    # -- queues (docs/queues.md) ------------------------------------------------

    @property
    def queue_names(self) -> str:
        """Set: the name of every queue a message was sent to or a client consumed."""
        return self._name("queue_names")

    def queue(self, name: str) -> str:
        """Stream of ``/queue/{name}`` (consumer group ``g``); a dead-letter queue
        ``{name}.dlq`` shares its queue's tag, so one step moves a message between them:
        ``stomp:queue:{orders}:orders``, ``stomp:queue:{orders}:orders.dlq``."""
        return f"{self.prefix}:queue:{{{queue_tag(name)}}}:{name}"

    def queue_consumers(self, name: str) -> str:
        """Hash: relay id -> how many subscriptions of that relay consume the queue."""
        return self.queue(name) + ":consumers"

    @property
    def pattern(self) -> str:
        """SCAN pattern matching every key of this prefix."""
        return f"{self.prefix}:*"

    def room_info_pattern(self) -> str:
        return self._name("room_info", "*")

    @staticmethod
    def tag_of(name: str) -> str:
        """The hash tag of a name (``stomp:rooms:{lobby}:info`` -> ``lobby``)."""
        tag = hash_tag(name)
        return name if tag is None else tag
