"""Every tunable number of the relay, in one frozen settings object.

Each field has a documented default, written here once: the options of
``stomprelay serve`` (:mod:`stomprelay.options`, one declaration per option,
whence the flags, the environment variables and the README's configuration
table) take their defaults from these fields and fill them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stomprelay.cluster.base import LIVENESS_INTERVAL, LIVENESS_TTL, REAPER_LOCK_MS


@dataclass(frozen=True, slots=True)
class Limits:
    """Parser limits (STOMP 1.2 "Size Limits" lets servers set these)."""

    #: Largest frame (command, headers and body together), in bytes.
    max_frame_size: int = 64 * 1024
    #: Most headers in one frame.
    max_headers: int = 64
    #: Longest header line, in bytes, before unescaping.
    max_header_line: int = 8 * 1024
    #: Longest command line, in bytes.
    max_command_line: int = 1024


@dataclass(frozen=True, slots=True)
class Settings:
    """Relay-wide settings; times are seconds unless the name says ms."""

    limits: Limits = Limits()
    #: A connection that sends no CONNECT within this time is closed.
    connect_timeout: float = 10.0
    #: Heart-beat the server offers (STOMP 1.2 "Heart-beating": can send every
    #: ms, wants every ms). The spec takes the larger of each side's value, so
    #: these are floors: a client asking ``10000,10000`` gets 10 s, one asking
    #: ``1000,1000`` gets 1 s, one asking ``100,100`` gets these; 0 on either
    #: side turns that direction off.
    heartbeat_send_ms: int = 1_000
    heartbeat_receive_ms: int = 1_000
    #: A client silent for grace x the negotiated interval is closed
    #: (the contract asks for 2-3x; 3 also absorbs browser timer throttling).
    heartbeat_grace: float = 3.0
    #: A heart-beat goes out once the session has sent nothing for the
    #: negotiated interval minus this (at most half the interval), so that the
    #: client never waits longer than it asked for (STOMP 1.2 "Heart-beating":
    #: "at least every <n> milliseconds"). The one timer handles deadlines up to
    #: 50 ms late (``transport/timers.py`` GRANULARITY); the other 200 ms cover
    #: event-loop lag.
    heartbeat_send_lead: float = 0.25
    #: Most subscriptions one session may hold.
    max_subscriptions: int = 256
    #: Most transactions open at once in one session.
    max_transactions: int = 16
    #: Most frames held in one transaction before COMMIT, and most body bytes
    #: held in all of a session's open transactions together.
    max_transaction_frames: int = 1024
    max_transaction_bytes: int = 1024 * 1024
    #: Most unacknowledged MESSAGEs on one client-ack subscription.
    max_pending_acks: int = 1024
    #: Outgoing frames, and bytes, queued for one client before it counts as too slow.
    send_queue_frames: int = 4096
    send_queue_bytes: int = 8 * 1024 * 1024
    #: Longest time a client's socket may take nothing (its write buffer full)
    #: before the client is dropped.
    send_timeout: float = 10.0
    #: STOMP messages read from one socket and not yet handled, past which the
    #: relay stops reading that socket until they are (TCP flow control).
    inbox_frames: int = 256
    #: A client's SENDs whose publish to Redis is not yet acknowledged: past
    #: ``publish_pause`` the relay reads nothing more from it; a publisher held
    #: up for ``publish_timeout`` s gets ERROR ``Publish backlog``.
    publish_pause: int = 1024
    publish_timeout: float = 10.0
    #: Largest WebSocket message (it may carry several STOMP frames); a larger
    #: one gets ERROR ``Message too large``, then close 1009.
    max_message_size: int = 256 * 1024
    #: Pending connections the kernel queues per listener (capped by
    #: net.core.somaxconn).
    listen_backlog: int = 4096
    #: Seconds an HTTP connection may take to send a request head (also the
    #: keep-alive idle time), and the most bytes of a head and of a body.
    handshake_timeout: float = 10.0
    max_request_head: int = 16 * 1024
    max_request_body: int = 16 * 1024
    #: Server API requests that act (publish, broadcast, user changes) in flight on
    #: one relay at once; past it, 429 (docs/api.md).
    api_max_inflight: int = 256
    #: Seconds between WebSocket pings to each client; 0 (the default): none, the
    #: STOMP heart-beats (and TCP keepalive) already find dead peers.
    ws_ping_interval: float = 0.0
    #: TCP keepalive on every client socket (finds dead peers that negotiated no
    #: heart-beat, such as stomp.py's default ``0,0``).
    tcp_keepalive: bool = True
    #: Time a graceful stop allows for closing clients and cleaning up.
    drain_timeout: float = 10.0
    #: Longest chat message (characters) and username accepted by /app/room/....
    max_chat_message: int = 4000
    max_username: int = 64
    #: Most rooms one session may be in at once.
    max_rooms_per_session: int = 64
    #: Most server-side subscriptions one user may hold (``POST
    #: /api/users/{user}/subscribe``); they count toward each session's
    #: ``max_subscriptions`` but are never refused by it.
    max_server_subscriptions: int = 32
    #: Seconds a server API call that acts on a user's sessions (subscribe,
    #: unsubscribe, disconnect) waits for the relays holding them to confirm.
    api_confirm_timeout: float = 5.0
    #: Most temporary queues (``reply-to:/temp-queue/{name}``) one session may hold.
    max_temp_queues: int = 64
    #: Cluster liveness: a relay refreshes its heartbeat key every
    #: ``liveness_interval`` s; the key expires (Redis-side TTL) after
    #: ``liveness_ttl`` s; every relay looks for expired ones every
    #: ``sweep_interval`` s. A dead relay is cleaned up within TTL + one sweep.
    liveness_interval: float = LIVENESS_INTERVAL
    liveness_ttl: float = LIVENESS_TTL
    sweep_interval: float = 5.0
    #: Seconds between two samples of this relay for the dashboard's charts
    #: (docs/operations.md); its ring keeps the last 15 minutes.
    dashboard_interval: float = 5.0
    #: How long a sweeper's lock on a dead relay lives (ms).
    reaper_lock_ms: int = REAPER_LOCK_MS
    #: Durable rooms (docs/history.md): messages kept per destination's log (0
    #: turns history and offsets off), and how long a log outlives its last message.
    history_size: int = 200
    history_ttl: float = 24 * 3600.0
    #: Seconds a message stays in its log whatever ``history_size`` says, so an
    #: outage's journals, appended at once, are kept until every relay read them;
    #: under ``history_max_size`` (0: ten times ``history_size``).
    history_min_age: float = 120.0
    history_max_size: int = 0
    #: Most logs of client-invented ``/topic/{name}`` destinations (rooms and
    #: ``/topic/broadcast`` not counted); past it new topics go unlogged.
    history_max_topics: int = 1000
    #: Log rooms only (plain topics are relayed without offsets).
    history_rooms_only: bool = False
    #: Most messages a SUBSCRIBE with ``x-history`` may ask for.
    max_history_request: int = 1000
    #: What a relay keeps of its clients' messages while Redis is unreachable,
    #: to append once it is back: messages, and their body bytes. A SEND past
    #: either gets an ERROR, never a RECEIPT.
    journal_messages: int = 10_000
    journal_bytes: int = 16 * 1024 * 1024
    #: Seconds between probes of an unreachable Redis.
    probe_interval: float = 0.5
    #: Seconds a relay waits for one Redis command before it counts Redis as down.
    redis_timeout: float = 3.0
    #: Most connections the registry/log client opens to Redis; commands past it
    #: wait (up to ``redis_timeout``) for one to come free.
    redis_pool_size: int = 64
    #: Replicas that must hold a room message before its RECEIPT (Redis ``WAIT``
    #: after each append; standalone and Sentinel). 0: Redis's asynchronous
    #: replication only, so a failover can lose what was acknowledged.
    redis_wait_replicas: int = 0
    #: Most milliseconds one ``WAIT`` blocks; past it the message is acknowledged anyway.
    redis_wait_timeout_ms: int = 500
    #: Seconds after a lost-history repair before the SYNC event reads the
    #: registry (other relays re-register meanwhile).
    sync_settle: float = 2.0

    # -- identity and access (docs/security.md) ------------------------------
    #: Per-session rate limits over every frame the client sends (heart-beats
    #: not counted), as token buckets: frames per second and burst, body and
    #: header bytes per second and burst. 0 turns a limit off. A breach gets
    #: ERROR ``rate limit exceeded``, then close.
    frame_rate: float = 50.0
    frame_burst: int = 200
    byte_rate: float = 512 * 1024
    byte_burst: int = 2 * 1024 * 1024
    #: Longest CONNECT ``login`` (and identity from a token) and longest room
    #: display text; control and bidi-override characters are refused in both.
    max_login: int = 64
    #: Seconds of clock skew allowed on a token's ``exp``, ``nbf`` and ``iat``.
    jwt_leeway: float = 30.0
    #: Seconds between reloads of a JWKS file or URL (keys rotate); an unknown
    #: ``kid`` triggers a reload at most this often too.
    jwks_refresh: float = 300.0
    jwks_min_refresh: float = 10.0

    # -- connection hygiene (docs/security.md), per relay ---------------------
    #: Origins a WebSocket handshake may come from (``*`` wildcards, e.g.
    #: ``https://*.example.com``; ``*`` alone: any). Empty: same origin only (the
    #: Origin's host equals the request's Host), as Spring's default.
    allowed_origins: tuple[str, ...] = ()
    #: Whether a handshake with no Origin header (non-browser clients: stomp.py,
    #: Node, back-ends) is served.
    allow_no_origin: bool = True
    #: Proxies (CIDR ranges) whose X-Forwarded-For is believed; the client is the
    #: rightmost address in it that is not one of them.
    trusted_proxies: tuple[str, ...] = ()
    #: Open connections per client address (0: no cap), and WebSocket handshakes
    #: per second per client address with their burst; past either: 429.
    max_connections_per_ip: int = 1000
    handshake_rate_per_ip: float = 50.0
    handshake_burst_per_ip: int = 200
    #: Serve /metrics to anyone (the admin API still needs the token).
    public_metrics: bool = False

    # -- the back-end authorization hook (docs/security.md) ---------------------
    #: URL the relay POSTs its questions to; None: no hook.
    auth_hook_url: str | None = None
    #: What the hook is asked about: ``connect``, ``subscribe``, ``send``.
    auth_hook_actions: tuple[str, ...] = ("connect", "subscribe")
    #: Seconds an answer may take; past it: ERROR ``authorization unavailable``.
    auth_hook_timeout: float = 2.0
    #: Secret signing the requests (``X-Stomprelay-Signature``); None: unsigned.
    auth_hook_secret: str | None = field(default=None, repr=False)

    # -- queues (docs/queues.md) ------------------------------------------------
    #: Most messages one /queue/ holds (waiting and unacknowledged); a SEND past it: ERROR.
    queue_max_length: int = 100_000
    #: Deliveries of one message before it goes to /queue/{name}.dlq instead.
    queue_max_deliveries: int = 10
    #: Unacknowledged messages per client-ack queue subscription without a
    #: ``prefetch-count`` header (at most ``max_pending_acks``).
    queue_prefetch: int = 100

    # -- webhooks (docs/webhooks.md) --------------------------------------------
    #: URL the relay POSTs batches of events to; None: no webhooks (no events kept).
    webhook_url: str | None = None
    #: Secret signing the batches (``X-Stomprelay-Signature``); None: unsigned.
    webhook_secret: str | None = field(default=None, repr=False)
    #: Streams the events are spread over (by room, else by user, else by session);
    #: one relay at a time delivers each, in order. Every relay must say the same.
    webhook_partitions: int = 16
    #: Most events in one POST, and most milliseconds a batch waits to fill.
    webhook_batch: int = 100
    webhook_linger_ms: int = 100
    #: Seconds one POST may take before it counts as failed.
    webhook_timeout: float = 10.0
    #: Seconds an event is retried before it goes to the dead-letter stream.
    webhook_max_age: float = 3600.0
    #: Destinations (glob patterns) whose messages are events too (``message.published``).
    webhook_messages: tuple[str, ...] = ()
    #: Seconds of the first retry delay of a failed webhook POST, doubled each
    #: attempt (with jitter) up to the cap. Hidden options (tests shorten them).
    webhook_retry_base: float = 1.0
    webhook_retry_cap: float = 30.0
