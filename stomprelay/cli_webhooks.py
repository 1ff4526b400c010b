"""``stomprelay inspect webhooks`` and ``stomprelay webhooks replay`` (docs/webhooks.md).

Both read Redis directly: the partitions (length, cursor, lease holder, age of
the oldest event not yet delivered) and the dead-letter stream. A replay puts
dead letters back at the end of their partition (``XADD``), then drops them from
the dead-letter stream (``XDEL``): if it stops in between, a dead letter is sent
twice, never lost. A single node keeps its events in memory: nothing to read.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from stomprelay.options import BY_FLAG, REDIS, add_options
from stomprelay.webhooks import replay_partition, timestamp_ms

SINGLE_NODE = (
    "a single node keeps its webhook events in memory (lost with the process): there "
    "is nothing to {what}; give --redis-url (or REDIS_URL) of the relays' Redis"
)


def add_webhooks_command(commands: Any) -> None:
    """``stomprelay webhooks replay [--id ID ...|--all]``."""
    webhooks = commands.add_parser("webhooks", help="webhook dead letters: send them again")
    actions = webhooks.add_subparsers(dest="webhooks_action", required=True)
    replay = actions.add_parser(
        "replay", help="put dead letters back into their partitions, to be delivered again"
    )
    add_options(replay, (REDIS,))
    add_partitions_option(replay)
    chosen = replay.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--id", action="append", default=[], help="a dead letter's id (repeatable)")
    chosen.add_argument("--all", action="store_true", help="every dead letter")


def add_partitions_option(parser: argparse.ArgumentParser) -> None:
    import os

    BY_FLAG["--webhook-partitions"].add_to(parser, os.environ)


def _client(args: argparse.Namespace) -> Any:
    from stomprelay.cluster.connect import make_client

    return make_client(args.redis_target, decode=True)


async def partition_count(client: Any, keys: Any, given: int) -> int:
    """The partitions the delivering relays announce (they record their
    ``--webhook-partitions``), else ``given``: a replay or an inspect sees the
    streams the relays read, whatever this shell's flag or variable says."""
    recorded = await client.get(keys.webhook_partition_count)
    if recorded is not None and str(recorded).isdigit() and int(recorded) > 0:
        if int(recorded) != given:
            print(
                f"the relays deliver {recorded} webhook partitions (not {given}): using theirs",
                file=sys.stderr,
            )
        return int(recorded)
    return given


async def partitions_view(
    client: Any, keys: Any, partitions: int, now_ms: int
) -> list[dict[str, Any]]:
    """One row per partition: length, cursor, lease holder, age (ms) of the oldest
    event not yet delivered (None: none waits)."""
    rows = []
    for p in range(partitions):
        cursor = await client.get(keys.webhook_cursor(p))
        length = await client.xlen(keys.webhook_events(p))
        first = await client.xread({keys.webhook_events(p): cursor or "0-0"}, count=1)
        age = None
        for _stream, items in first or []:
            for _entry_id, fields in items:
                stamp = timestamp_ms(fields.get("e", "{}"))
                if stamp is not None:
                    age = max(0, now_ms - stamp)
        rows.append(
            {
                "partition": p,
                "length": int(length),
                "cursor": cursor,
                "lease": await client.get(keys.webhook_lease(p)),
                "oldestPendingAgeMs": age,
            }
        )
    return rows


async def dead_view(client: Any, keys: Any) -> list[dict[str, Any]]:
    """Every dead letter: its id, partition, entry id, last error and event."""
    rows = []
    for dead_id, fields in await client.xrange(keys.webhook_dead):
        try:
            event: Any = json.loads(fields.get("e", "null"))
        except ValueError:
            event = fields.get("e")
        rows.append(
            {
                "id": dead_id,
                "partition": int(fields.get("partition", -1)),
                "entry": fields.get("entry"),
                "error": fields.get("error"),
                "event": event,
            }
        )
    return rows


async def inspect_webhooks(args: argparse.Namespace, keys: Any) -> int:
    from redis.exceptions import RedisError

    if args.redis_target is None:
        print("stomprelay inspect webhooks: " + SINGLE_NODE.format(what="inspect"), file=sys.stderr)
        return 2
    client = _client(args)
    try:
        count = await partition_count(client, keys, args.webhook_partitions)
        view = {
            "partitions": await partitions_view(client, keys, count, int(time.time() * 1000)),
            "dead": await dead_view(client, keys),
        }
    except (RedisError, OSError) as exc:
        print(f"stomprelay inspect webhooks: redis: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    from stomprelay.humanize import duration, moment

    now = int(time.time() * 1000)
    console = Console()
    table = Table(title=f"webhook partitions ({len(view['partitions'])})")
    # the raw cursor (an entry id) is in --json; here, when that entry was appended
    for column in ("partition", "length", "delivered up to", "lease", "oldest pending"):
        table.add_column(column, no_wrap=column == "lease")
    for row in view["partitions"]:
        age = row["oldestPendingAgeMs"]
        table.add_row(
            str(row["partition"]),
            str(row["length"]),
            _entry_moment(row["cursor"] or "", now, moment),
            row["lease"] or "",
            "" if age is None else duration(age),
        )
    console.print(table)
    dead = Table(title=f"dead letters ({len(view['dead'])})")
    for column in ("id", "dead since", "partition", "type", "event id", "error"):
        dead.add_column(column)
    for row in view["dead"]:
        event = row["event"] if isinstance(row["event"], dict) else {}
        dead.add_row(
            row["id"],
            _entry_moment(row["id"], now, moment),
            str(row["partition"]),
            str(event.get("type", "")),
            str(event.get("id", "")),
            str(row["error"] or ""),
        )
    console.print(dead)
    return 0


def _entry_moment(entry_id: str, now_ms: int, moment: Any) -> str:
    """When a stream entry was added, as people read it (its id's first part is ms)."""
    first = entry_id.partition("-")[0]
    return moment(int(first), now_ms) if first.isdigit() else ""


async def replay(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from stomprelay.cluster.keys import Keys

    if args.redis_target is None:
        print("stomprelay webhooks replay: " + SINGLE_NODE.format(what="replay"), file=sys.stderr)
        return 2
    keys = Keys(args.key_prefix)
    client = _client(args)
    try:
        letters = await client.xrange(keys.webhook_dead)
        wanted = set(args.id)
        chosen = [(i, f) for i, f in letters if args.all or i in wanted]
        missing = sorted(wanted - {i for i, _ in chosen})
        if missing:
            print(
                f"stomprelay webhooks replay: no dead letter {', '.join(missing)}", file=sys.stderr
            )
            return 1
        count = await partition_count(client, keys, args.webhook_partitions)
        for dead_id, fields in chosen:
            event = fields.get("e", "{}")
            # back where it was taken from (a stream the relays read), else where its
            # room's, user's or session's events go
            stored = str(fields.get("partition", ""))
            partition = (
                int(stored)
                if stored.isdigit() and int(stored) < count
                else replay_partition(event, count)
            )
            await client.xadd(keys.webhook_events(partition), {"e": event})
            await client.xdel(keys.webhook_dead, dead_id)
    except (RedisError, OSError) as exc:
        print(f"stomprelay webhooks replay: redis: {exc}", file=sys.stderr)
        return 1
    finally:
        await client.aclose()
    print(f"replayed {len(chosen)} dead letter(s)")
    return 0
