"""The options of the back-end integrations: the authorization hook, webhooks and
queues (docs/security.md, docs/webhooks.md, docs/queues.md), declared as in
:mod:`stomprelay.options`, which lists them where the README's table shows them."""

from __future__ import annotations

from stomprelay.flags import Option, comma_list
from stomprelay.hook import check_actions, check_url
from stomprelay.httpclient import check_http_url

INTEGRATION_OPTIONS: tuple[Option, ...] = (
    Option(
        "--auth-hook-url",
        "back-end authorization hook: the relay POSTs signed JSON questions here and "
        "obeys 200 {allow, reason?, user?, ttl?}; fails closed (docs/security.md)",
        "AUTH_HOOK_URL",
        ("auth_hook_url",),
        validate=check_url,
        metavar="URL",
        shown="off",
    ),
    Option(
        "--auth-hook-actions",
        "what the hook is asked about, comma separated: connect, subscribe, send",
        "AUTH_HOOK_ACTIONS",
        ("auth_hook_actions",),
        comma_list,
        validate=check_actions,
        shown="connect,subscribe",
    ),
    Option(
        "--auth-hook-timeout",
        "seconds the hook may take to answer; past it: ERROR authorization unavailable",
        "AUTH_HOOK_TIMEOUT",
        ("auth_hook_timeout",),
        float,
        positive=True,
    ),
    Option(
        "--auth-hook-secret",
        "secret signing the hook's requests (X-Stomprelay-Signature, HMAC-SHA256)",
        "AUTH_HOOK_SECRET",
        ("auth_hook_secret",),
        shown="unsigned",
    ),
    Option(
        "--webhook-url",
        "back-end webhooks: the relay POSTs signed batches of events here, at least "
        "once and in order per room (docs/webhooks.md)",
        "WEBHOOK_URL",
        ("webhook_url",),
        validate=lambda url: check_http_url(url, "--webhook-url"),
        metavar="URL",
        shown="off",
    ),
    Option(
        "--webhook-secret",
        "secret signing the webhook batches (X-Stomprelay-Signature, HMAC-SHA256); also "
        "the authorization hook's, unless --auth-hook-secret is given",
        "WEBHOOK_SECRET",
        ("webhook_secret",),
        shown="unsigned",
    ),
    Option(
        "--webhook-partitions",
        "streams the events are spread over (by room, else by user); each is delivered "
        "in order by one relay at a time; the same on every relay",
        "WEBHOOK_PARTITIONS",
        ("webhook_partitions",),
        int,
        minimum=1,
    ),
    Option(
        "--webhook-batch",
        "most events in one webhook POST",
        "WEBHOOK_BATCH",
        ("webhook_batch",),
        int,
        minimum=1,
    ),
    Option(
        "--webhook-linger-ms",
        "most milliseconds a webhook batch waits for more events",
        "WEBHOOK_LINGER_MS",
        ("webhook_linger_ms",),
        int,
        minimum=0,
    ),
    Option(
        "--webhook-timeout",
        "seconds one webhook POST may take before it counts as failed",
        "WEBHOOK_TIMEOUT",
        ("webhook_timeout",),
        float,
        positive=True,
    ),
    Option(
        "--webhook-max-age",
        "seconds an undelivered event is retried before it goes to the dead-letter stream",
        "WEBHOOK_MAX_AGE",
        ("webhook_max_age",),
        float,
        positive=True,
    ),
    Option(
        "--webhook-messages",
        "destinations (glob, e.g. /topic/room/*) whose messages are webhook events "
        "too (message.published); repeatable",
        "WEBHOOK_MESSAGES",
        ("webhook_messages",),
        default=[],
        to_setting=tuple,
        repeat=True,
        metavar="PATTERN",
        shown="none",
    ),
    Option(
        "--queue-max-length",
        "most messages one queue (/queue/{name}) holds, waiting or unacknowledged; a SEND "
        "past it gets an ERROR (docs/queues.md)",
        "QUEUE_MAX_LENGTH",
        ("queue_max_length",),
        int,
        minimum=1,
    ),
    Option(
        "--queue-max-deliveries",
        "deliveries of one queue message before it goes to /queue/{name}.dlq",
        "QUEUE_MAX_DELIVERIES",
        ("queue_max_deliveries",),
        int,
        minimum=1,
    ),
    Option(
        "--queue-prefetch",
        "unacknowledged messages per client-ack queue subscription without a "
        "prefetch-count header (at most --max-pending-acks)",
        "QUEUE_PREFETCH",
        ("queue_prefetch",),
        int,
        minimum=1,
    ),
    # webhook retry delays (docs/webhooks.md): the defaults suit production; tests shorten them
    Option(
        "--webhook-retry-base",
        "",
        fields=("webhook_retry_base",),
        kind=float,
        positive=True,
        hidden=True,
    ),
    Option(
        "--webhook-retry-cap",
        "",
        fields=("webhook_retry_cap",),
        kind=float,
        positive=True,
        hidden=True,
    ),
)
