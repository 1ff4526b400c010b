"""A Jepsen-style checker for durable rooms (docs/history.md, contract sections 3, 4, 6).

Clients record everything (:class:`RecordingClient`); publishers send numbered SENDs with
receipts at a steady rate and never stop for a failure (:class:`Publisher`); after the
run, :func:`analyze` computes per subscriber what was lost, duplicated, out of order,
skipped, which gap notices came and which JOIN/LEAVE events did not happen, and checks
that ``(epoch, offset) -> message-id`` is one mapping for everybody. :func:`check_resumer`
holds a client that resumed with ``x-since-offset`` to "exactly what came after", and
:func:`registry_problems` compares the Redis registry with the connected clients.

Definitions (the test asserts each of them is zero):

* acknowledged: a SEND whose RECEIPT arrived (at any time before the end of the run);
  a SEND without a RECEIPT, or answered by an ERROR, is unacknowledged and may be lost.
* lost (per subscriber, per destination): an acknowledged SEND sent after this
  subscription's RECEIPT that never reached it, for a subscriber whose connection stayed
  open to the end.
* duplicated: a MESSAGE whose message-id, ``(x-epoch, x-offset)`` or body (every SEND
  body and every event body is unique) this subscription already received.
* out of order: an ``x-offset`` not above the highest already received in its epoch, or
  a message of an epoch this subscription had already left.
* hole: an offset this subscription skipped (between 1 or its first offset and the last
  offset anybody saw) that is neither a message it received ``x-degraded`` nor inside a
  gap notice; docs/history.md: "A skipped offset is always a message this subscriber
  already received, with the same message-id".
* spurious event: a JOIN for a session already in the room, a LEAVE for a session that
  is connected and in the room, a JOIN/LEAVE of a session that never joined, except, for
  the members of the relay the scenario kills, pauses or cuts off past the TTL, one LEAVE
  ``server-lost`` and (unless killed) one JOIN back after it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from clusterhelpers import (
    PREFIX,
    RelaySpec,
    SessionSpec,
    expected_registry,
    registry_diff,
    snapshot,
)
from stompclient import StompClient

from stomprelay.stomp.frames import Frame

# The fault-matrix timings (seconds): a heartbeat key refreshed every LIVENESS_INTERVAL
# lives LIVENESS_TTL; every relay sweeps every SWEEP_INTERVAL.
LIVENESS_INTERVAL = 1.0
LIVENESS_TTL = 3.0
SWEEP_INTERVAL = 1.0
DRAIN_TIMEOUT = 3.0
TTL_MS = int(LIVENESS_TTL * 1000)
#: Messages kept per destination: far more than a scenario publishes, so that nothing a
#: resumer asks for is trimmed (a trimmed message would be a legitimate gap).
HISTORY_SIZE = 20_000


@dataclass
class Cluster:
    """One scenario's processes: Redis, optionally a proxy, and the relays (A, B, C)."""

    redis: Any
    rdb: redis.Redis
    relays: list[Any]
    proxy: Any = None
    #: relay ids that reach Redis through the proxy
    proxied: set[str] = field(default_factory=set)


# -- recording ---------------------------------------------------------------------------


@dataclass(slots=True)
class Msg:
    """One MESSAGE as a subscriber received it."""

    t: float
    sub: str
    message_id: str
    offset: int | None
    epoch: str | None
    degraded: bool
    gap: str | None
    sync: bool
    body: bytes
    event: dict[str, Any] | None
    bad_offset: str | None = None

    @property
    def key(self) -> tuple[str | None, int] | None:
        return None if self.offset is None else (self.epoch, self.offset)

    def short(self) -> str:
        what = self.body[:60].decode("utf-8", "replace")
        if self.event is not None:
            ev = self.event
            what = f"{ev.get('type')} {ev.get('username')} {ev.get('sessionId')}"
            if ev.get("reason"):
                what += f" ({ev['reason']})"
        flags = "".join(
            f" {name}" for name, on in (("degraded", self.degraded), ("sync", self.sync)) if on
        )
        gap = f" gap={self.gap}" if self.gap is not None else ""
        return f"[{self.epoch}:{self.offset} id={self.message_id}{flags}{gap}] {what}"


def parse_message(t: float, frame: Frame) -> Msg:
    raw_offset = frame.get("x-offset")
    offset: int | None = None
    bad: str | None = None
    if raw_offset is not None:
        if raw_offset.isdigit():
            offset = int(raw_offset)
        else:
            bad = raw_offset
    event: dict[str, Any] | None = None
    if frame.body[:1] == b"{":
        with contextlib.suppress(ValueError):
            data = json.loads(frame.body.decode("utf-8"))
            if isinstance(data, dict) and "type" in data:
                event = data
    return Msg(
        t=t,
        sub=frame.get("subscription") or "",
        message_id=frame.get("message-id") or "",
        offset=offset,
        epoch=frame.get("x-epoch"),
        degraded=frame.get("x-degraded") == "true",
        gap=frame.get("x-gap"),
        sync=frame.get("x-sync") == "true",
        body=frame.body,
        event=event,
        bad_offset=bad,
    )


class RecordingClient(StompClient):
    """:class:`StompClient` that also keeps, with arrival times, every MESSAGE (parsed),
    every RECEIPT (with how many MESSAGEs had arrived before it) and every ERROR, and
    notes when the connection ended and whether this side ended it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.msgs: list[Msg] = []
        self.receipt_frames: dict[str, tuple[float, Frame, int]] = {}
        self.error_frames: list[tuple[float, Frame]] = []
        self.closed_at: float | None = None
        self.closed_by_us = False
        super().__init__(*args, **kwargs)

    async def _read(self) -> None:
        try:
            await super()._read()
        finally:
            self.closed_at = time.monotonic()

    async def _on_frame(self, frame: Frame) -> None:
        now = time.monotonic()
        if frame.command == "MESSAGE":
            self.msgs.append(parse_message(now, frame))
        elif frame.command == "RECEIPT":
            self.receipt_frames[frame.get("receipt-id") or ""] = (now, frame, len(self.msgs))
        elif frame.command == "ERROR":
            self.error_frames.append((now, frame))
        await super()._on_frame(frame)

    async def close(self) -> None:
        self.closed_by_us = True
        await super().close()

    async def disconnect(self, timeout: float = 5) -> None:  # noqa: ASYNC109
        self.closed_by_us = True
        await super().disconnect(timeout)

    @property
    def closed_by_relay(self) -> bool:
        return self.closed and not self.closed_by_us

    def remote_address(self) -> str:
        host, port = self.ws.local_address[:2]
        return f"{host}:{port}"


@dataclass
class Member:
    """A recording client with the role it plays in the scenario."""

    name: str
    relay_id: str
    client: RecordingClient
    kind: str  # "subscriber" | "resumer-before" | "resumer-after" | "publisher"
    username: str = ""
    joined: bool = False
    #: subscription tag -> monotonic time its SUBSCRIBE's RECEIPT arrived
    subscribed_at: dict[str, float] = field(default_factory=dict)

    @property
    def sid(self) -> str:
        return self.client.session_id

    def stayed(self) -> bool:
        return not self.client.closed


# -- publishing --------------------------------------------------------------------------


@dataclass
class Sent:
    rid: str
    tag: str
    body: bytes
    t: float
    client: RecordingClient
    send_error: str | None = None

    @property
    def acked(self) -> bool:
        return self.send_error is None and self.rid in self.client.receipt_frames

    @property
    def errored(self) -> bool:
        return any(f.get("receipt-id") == self.rid for _, f in self.client.error_frames)


class Publisher:
    """Sends ``tag|seq`` SENDs with a receipt to every destination every ``interval`` s,
    never waiting for receipts; on a closed connection it reconnects (when ``may_reconnect``
    says so) and keeps going."""

    def __init__(
        self,
        name: str,
        relay_id: str,
        ws_url: str,
        destinations: Mapping[str, str],
        interval: float,
    ) -> None:
        self.name = name
        self.relay_id = relay_id
        self.ws_url = ws_url
        self.destinations = dict(destinations)
        self.interval = interval
        self.client: RecordingClient | None = None
        self.clients: list[RecordingClient] = []
        self.sent: list[Sent] = []
        self.may_reconnect = True
        self.reconnects = 0
        self.failures: list[str] = []
        self._seq = 0

    async def connect(self) -> RecordingClient:
        client = await RecordingClient.connect(self.ws_url, name=self.name, timeout=2)
        assert isinstance(client, RecordingClient)
        self.client = client
        self.clients.append(client)
        return client

    async def _ensure(self) -> RecordingClient | None:
        if self.client is not None and not self.client.closed:
            return self.client
        if not self.may_reconnect:
            return None
        try:
            client = await self.connect()
        except Exception as exc:
            self.failures.append(f"reconnect: {exc!r}"[:200])
            await asyncio.sleep(0.5)
            return None
        self.reconnects += 1
        return client

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while not stop.is_set():
            for tag, destination in self.destinations.items():
                client = await self._ensure()
                if client is None:
                    continue
                self._seq += 1
                rid = f"{self.name}-{tag}-{self._seq}"
                body = f"{self.name}|{tag}|{self._seq}".encode()
                record = Sent(rid, tag, body, time.monotonic(), client)
                frame = Frame(
                    "SEND",
                    (
                        ("destination", destination),
                        ("content-type", "text/plain"),
                        ("receipt", rid),
                    ),
                    body,
                )
                try:
                    await asyncio.wait_for(client.send_frame(frame), 2)
                except Exception as exc:
                    record.send_error = repr(exc)[:200]
                self.sent.append(record)
            due += self.interval
            await asyncio.sleep(max(0.0, due - loop.time()))

    def outstanding(self) -> int:
        return sum(
            1
            for s in self.sent
            if s.send_error is None and not s.acked and not s.errored and not s.client.closed
        )

    def live_client(self) -> RecordingClient | None:
        if self.client is not None and not self.client.closed:
            return self.client
        return None

    def stats(self) -> dict[str, int]:
        acked = sum(1 for s in self.sent if s.acked)
        return {
            "sent": len(self.sent),
            "acked": acked,
            "unacked": len(self.sent) - acked,
            "errors": sum(1 for s in self.sent if s.errored),
            "send_failures": sum(1 for s in self.sent if s.send_error is not None),
            "reconnects": self.reconnects,
        }


# -- analysis ----------------------------------------------------------------------------


@dataclass
class FaultInfo:
    """What the scenario did, for telling true events from spurious ones."""

    name: str
    #: the relay killed, paused or cut off past the TTL (its members may LEAVE server-lost)
    affected: str | None = None
    #: the affected relay does not come back (no JOIN back)
    killed: bool = False
    started: float = 0.0
    ended: float = 0.0


@dataclass
class Row:
    """Per subscriber and destination."""

    member: str
    relay: str
    tag: str
    state: str
    received: int = 0
    logged: int = 0
    degraded: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    holes: int = 0
    gaps: int = 0
    resets: int = 0
    spurious: int = 0
    #: LEAVE server-lost and JOIN-back events of the affected relay's members (true)
    true_events: int = 0
    syncs: int = 0
    unlogged: int = 0
    epochs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Analysis:
    rows: list[Row]
    problems: list[str]
    mapping_conflicts: int
    #: tag -> {(epoch, offset): message-id}, the agreed mapping
    mapping: dict[str, dict[tuple[str | None, int], str]]
    #: tag -> epoch -> highest offset anybody received
    max_offset: dict[str, dict[str | None, int]]

    def total(self, name: str) -> int:
        return sum(getattr(r, name) for r in self.rows)


def _examples(items: Sequence[str], limit: int = 5) -> str:
    shown = "; ".join(items[:limit])
    return shown + (f"; ... ({len(items)} in all)" if len(items) > limit else "")


def analyze(
    members: Sequence[Member],
    publishers: Sequence[Publisher],
    fault: FaultInfo,
    tags: Sequence[str],
    room_tag: str,
) -> Analysis:
    problems: list[str] = []
    listeners = [m for m in members if m.kind != "publisher"]
    all_sent = [s for p in publishers for s in p.sent]
    # -- the one mapping (epoch, offset) -> message-id, over everybody ------------------
    mapping: dict[str, dict[tuple[str | None, int], str]] = {}
    max_offset: dict[str, dict[str | None, int]] = {}
    bodies: dict[str, dict[tuple[str | None, int], bytes]] = {}
    conflicts = 0
    for tag in tags:
        by_key: dict[tuple[str | None, int], dict[str, list[str]]] = {}
        by_id: dict[str, dict[tuple[str | None, int], list[str]]] = {}
        for m in listeners:
            for msg in m.client.msgs:
                if msg.sub != tag or msg.key is None or msg.gap is not None:
                    continue
                by_key.setdefault(msg.key, {}).setdefault(msg.message_id, []).append(m.name)
                by_id.setdefault(msg.message_id, {}).setdefault(msg.key, []).append(m.name)
        agreed: dict[tuple[str | None, int], str] = {}
        for key, ids in sorted(by_key.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            if len(ids) > 1:
                conflicts += 1
                problems.append(
                    f"mapping {tag} {key}: different message-ids "
                    + ", ".join(f"{mid} at {sorted(set(who))}" for mid, who in ids.items())
                )
            agreed[key] = max(ids.items(), key=lambda kv: len(kv[1]))[0]
        for mid, keys in by_id.items():
            # one name per epoch: after a failover the new epoch names the replicated
            # messages again (docs/redis.md), never two of them at one offset
            if len(keys) > len({epoch for epoch, _ in keys}):
                conflicts += 1
                problems.append(
                    f"mapping {tag}: message-id {mid} at several offsets "
                    + ", ".join(f"{k} at {sorted(set(who))}" for k, who in keys.items())
                )
        mapping[tag] = agreed
        bodies[tag] = {
            x.key: x.body
            for m in listeners
            for x in m.client.msgs
            if x.sub == tag and x.key is not None and x.gap is None
        }
        tops: dict[str | None, int] = {}
        for epoch, offset in agreed:
            tops[epoch] = max(tops.get(epoch, 0), offset)
        max_offset[tag] = tops

    everybody_joined = {m.sid: m for m in members if m.joined}
    rows: list[Row] = []
    for m in listeners:
        state = (
            "open" if m.stayed() else ("closed by relay" if m.client.closed_by_relay else "left")
        )
        for tag in tags:
            if tag not in m.subscribed_at:
                continue
            row = Row(m.name, m.relay_id, tag, state)
            rows.append(row)
            msgs = [x for x in m.client.msgs if x.sub == tag]
            data = [x for x in msgs if x.gap is None and not x.sync]
            row.received = len(data)
            row.logged = sum(1 for x in data if x.offset is not None)
            row.degraded = sum(1 for x in data if x.degraded)
            row.unlogged = sum(1 for x in data if x.offset is None and not x.degraded)
            for x in data:
                if x.bad_offset is not None:
                    problems.append(f"{m.name} {tag}: x-offset {x.bad_offset!r} is not an integer")
                if x.offset is not None and x.degraded:
                    row.notes.append(f"degraded message with an offset: {x.short()}")
                if x.offset is not None and not x.epoch:
                    row.notes.append(f"offset without x-epoch: {x.short()}")
            # duplicates and order
            seen_ids: set[str] = set()
            seen_keys: set[tuple[str | None, int]] = set()
            seen_bodies: set[bytes] = set()
            top: dict[str | None, int] = {}
            epoch_order: list[str | None] = []
            dups: list[str] = []
            disorder: list[str] = []
            for x in data:
                dup = (
                    (x.message_id and x.message_id in seen_ids)
                    or (x.key is not None and x.key in seen_keys)
                    or x.body in seen_bodies
                )
                seen_ids.add(x.message_id)
                seen_bodies.add(x.body)
                if x.key is not None:
                    seen_keys.add(x.key)
                if dup:
                    dups.append(x.short())
                    continue
                if x.offset is None:
                    continue
                if x.epoch not in epoch_order:
                    epoch_order.append(x.epoch)
                elif epoch_order[-1] != x.epoch:
                    disorder.append(f"back to epoch {x.epoch}: {x.short()}")
                    epoch_order.remove(x.epoch)
                    epoch_order.append(x.epoch)
                if x.offset <= top.get(x.epoch, 0):
                    disorder.append(f"{x.short()} after offset {top[x.epoch]}")
                top[x.epoch] = max(top.get(x.epoch, 0), x.offset)
            row.duplicated = len(dups)
            row.out_of_order = len(disorder)
            row.epochs = [str(e) for e in epoch_order]
            if dups:
                problems.append(f"{m.name} {tag}: {len(dups)} duplicated: {_examples(dups)}")
            if disorder:
                problems.append(
                    f"{m.name} {tag}: {len(disorder)} out of order: {_examples(disorder)}"
                )
            # gap notices
            gap_ranges: dict[str | None, list[tuple[int, int]]] = {}
            for x in msgs:
                if x.gap is None:
                    continue
                if x.gap == "reset":
                    row.resets += 1
                    continue
                row.gaps += 1
                lo, _, hi = x.gap.partition("-")
                if lo.isdigit() and hi.isdigit():
                    gap_ranges.setdefault(x.epoch, []).append((int(lo), int(hi)))
                else:
                    problems.append(f"{m.name} {tag}: malformed x-gap {x.gap!r}")
            row.syncs = sum(1 for x in msgs if x.sync)
            # holes: skipped offsets not explained by a degraded delivery or a gap notice
            degraded_ids = {x.message_id for x in data if x.degraded}
            degraded_bodies = {x.body for x in data if x.degraded}
            bodies_by_key = bodies[tag]
            holes: list[str] = []
            got_keys = {x.key for x in data if x.key is not None}
            received_ids = {x.message_id for x in data}
            first_epoch = epoch_order[0] if epoch_order else None
            for epoch in epoch_order:
                mine = sorted(o for (e, o) in got_keys if e == epoch)
                lo = mine[0] if epoch == first_epoch else 1
                hi = max_offset[tag].get(epoch, 0) if m.stayed() else mine[-1]
                for offset in range(lo, hi + 1):
                    if (epoch, offset) in got_keys:
                        continue
                    if any(a <= offset <= b for a, b in gap_ranges.get(epoch, [])):
                        continue
                    mid = mapping[tag].get((epoch, offset))
                    if mid is not None and mid in degraded_ids:
                        continue
                    if mid is not None and mid in received_ids and epoch != first_epoch:
                        # a failover's epoch names the replicated messages again: one
                        # this subscriber has under the old name is not sent twice
                        continue
                    body = bodies_by_key.get((epoch, offset))
                    if body is not None and body in degraded_bodies:
                        row.notes.append(
                            f"offset {epoch}:{offset} was delivered degraded under another "
                            f"message-id than the logged {mid}"
                        )
                        problems.append(
                            f"{m.name} {tag}: message {body!r} delivered degraded with a "
                            f"message-id other than {mid}, the one of {epoch}:{offset}"
                        )
                        continue
                    holes.append(f"{epoch}:{offset} ({body!r}, id {mid})")
            row.holes = len(holes)
            if holes:
                problems.append(f"{m.name} {tag}: {len(holes)} skipped offsets: {_examples(holes)}")
            # acknowledged messages lost
            if m.stayed():
                got_bodies = {x.body for x in data}
                since = m.subscribed_at[tag]
                lost = [
                    s
                    for s in all_sent
                    if s.tag == tag and s.acked and s.t >= since and s.body not in got_bodies
                ]
                row.lost = len(lost)
                if lost:
                    problems.append(
                        f"{m.name} {tag}: {len(lost)} acknowledged SENDs lost: "
                        + _examples([f"{s.body.decode()} (sent t={s.t:.2f})" for s in lost], 8)
                    )
            # presence (subscribers that joined before the fault, room only)
            if tag == room_tag and m.kind == "subscriber":
                spurious, view, true_events = _presence(msgs, everybody_joined, fault)
                row.spurious = len(spurious)
                row.true_events = true_events
                if spurious:
                    problems.append(
                        f"{m.name}: {len(spurious)} spurious room events: {_examples(spurious)}"
                    )
                if m.stayed():
                    truth = {sid for sid, mm in everybody_joined.items() if mm.stayed()}
                    if set(view) != truth:
                        problems.append(
                            f"{m.name}: presence from its events {sorted(view)} != connected "
                            f"members {sorted(truth)} (missing {sorted(truth - set(view))}, "
                            f"extra {sorted(set(view) - truth)})"
                        )
    return Analysis(rows, problems, conflicts, mapping, max_offset)


def _presence(
    msgs: Sequence[Msg], joined: Mapping[str, Member], fault: FaultInfo
) -> tuple[list[str], dict[str, str], int]:
    """Replay a subscriber's room events; return the spurious ones, its final view and
    how many true LEAVE/JOIN-back events of the affected relay's members it saw."""
    view: dict[str, str] = {}
    first_seen: set[str] = set()
    leaves: collections.Counter[str] = collections.Counter()
    rejoins: collections.Counter[str] = collections.Counter()
    spurious: list[str] = []
    true_events = 0
    for x in msgs:
        ev = x.event
        if ev is None:
            continue
        kind = ev.get("type")
        if x.sync or kind == "SYNC":
            view = {
                str(p.get("sessionId")): str(p.get("username"))
                for p in ev.get("participants", [])
                if isinstance(p, dict)
            }
            continue
        if kind not in ("JOIN", "LEAVE"):
            continue
        sid = str(ev.get("sessionId"))
        member = joined.get(sid)
        on_affected = member is not None and member.relay_id == fault.affected
        if member is None:
            spurious.append(f"{kind} of a session that never joined: {x.short()}")
        elif kind == "JOIN":
            if sid not in first_seen and sid not in view:
                first_seen.add(sid)  # the JOIN of the set-up
            elif sid in view:
                spurious.append(f"JOIN of a session already in the room: {x.short()}")
            elif not (on_affected and not fault.killed and rejoins[sid] < leaves[sid]):
                spurious.append(f"JOIN of a session that never left: {x.short()}")
            else:
                rejoins[sid] += 1
                true_events += 1
            first_seen.add(sid)
            view[sid] = str(ev.get("username"))
        else:
            if sid not in view:
                spurious.append(f"LEAVE of a session not in the room: {x.short()}")
            elif not (
                on_affected
                and ev.get("reason") == "server-lost"
                and leaves[sid] == 0
                and x.t >= fault.started
            ):
                spurious.append(f"LEAVE of a connected member: {x.short()}")
            else:
                true_events += 1
            leaves[sid] += 1
            view.pop(sid, None)
    return spurious, view, true_events


# -- the resumer -------------------------------------------------------------------------


@dataclass
class ResumeResult:
    tag: str
    since_epoch: str | None
    since_offset: int | None
    receipt: dict[str, str] = field(default_factory=dict)
    expected_recovered: str = "true"
    replay_epoch: str | None = None
    expected: int = 0
    got: int = 0
    missing: list[int] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    wrong_ids: list[str] = field(default_factory=list)
    before_receipt: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "since": f"{self.since_epoch}:{self.since_offset}",
            "x-recovered": self.receipt.get("x-recovered"),
            "receipt x-offset": self.receipt.get("x-offset"),
            "receipt x-epoch": self.receipt.get("x-epoch"),
            "expected": self.expected,
            "got": self.got,
            "missing": len(self.missing),
            "extra": len(self.extra),
            "wrong ids": len(self.wrong_ids),
            "exact": self.exact,
        }


def last_position(msgs: Iterable[Msg], tag: str) -> tuple[str | None, int | None]:
    """The epoch and highest offset of the last epoch a subscription received."""
    epoch: str | None = None
    offset: int | None = None
    for x in msgs:
        if x.sub != tag or x.offset is None or x.gap is not None:
            continue
        if x.epoch != epoch:
            epoch, offset = x.epoch, x.offset
        else:
            offset = max(offset or 0, x.offset)
    return epoch, offset


def check_resumer(
    result: ResumeResult, after: Member, receipt_id: str, analysis: Analysis
) -> ResumeResult:
    tag = result.tag
    problems = result.problems
    entry = after.client.receipt_frames.get(receipt_id)
    if entry is None:
        problems.append(f"resumer {tag}: no RECEIPT {receipt_id}")
        return result
    _, frame, position = entry
    result.receipt = {k: v for k, v in frame.headers if k.startswith("x-")}
    recovered = result.receipt.get("x-recovered")
    if result.expected_recovered == "any":
        # a failover may or may not have moved the log to a new epoch (docs/redis.md)
        result.expected_recovered = recovered or "true"
    if recovered != result.expected_recovered:
        problems.append(
            f"resumer {tag}: RECEIPT x-recovered={recovered!r}, expected "
            f"{result.expected_recovered!r} (receipt headers {result.receipt})"
        )
    mine = [x for x in after.client.msgs if x.sub == tag]
    result.before_receipt = sum(1 for x in after.client.msgs[:position] if x.sub == tag)
    if result.before_receipt:
        problems.append(f"resumer {tag}: {result.before_receipt} MESSAGEs before the RECEIPT")
    gaps = [x.short() for x in mine if x.gap is not None]
    if gaps:
        problems.append(f"resumer {tag}: gap notices {_examples(gaps)}")
    degraded = [x.short() for x in mine if x.degraded]
    if degraded:
        problems.append(f"resumer {tag}: degraded messages {_examples(degraded)}")
    if result.since_offset is None:
        problems.append(f"resumer {tag}: saw no x-offset before leaving, nothing to resume")
        return result
    same_epoch = result.expected_recovered == "true"
    epoch = result.since_epoch if same_epoch else result.receipt.get("x-epoch")
    result.replay_epoch = epoch
    first = result.since_offset + 1 if same_epoch else 1
    last = analysis.max_offset[tag].get(epoch, 0)
    expected = list(range(first, last + 1))
    result.expected = len(expected)
    logged = [x for x in mine if x.offset is not None and x.gap is None]
    result.got = len(logged)
    got_offsets = [x.offset for x in logged if x.epoch == epoch]
    result.missing = sorted(set(expected) - set(got_offsets))
    counts = collections.Counter(got_offsets)
    result.extra = [
        x.short() for x in logged if x.epoch != epoch or (x.offset is not None and x.offset < first)
    ] + [f"{epoch}:{o} x{n}" for o, n in counts.items() if n > 1]
    if got_offsets != sorted(got_offsets):
        problems.append(f"resumer {tag}: offsets not in order")
    for x in logged:
        want = analysis.mapping[tag].get(x.key) if x.key is not None else None
        if want is not None and want != x.message_id:
            result.wrong_ids.append(f"{x.short()} (others: {want})")
    if result.missing:
        problems.append(
            f"resumer {tag}: {len(result.missing)} offsets of {epoch} after "
            f"{first - 1} missing: {result.missing[:20]}"
        )
    if result.extra:
        problems.append(f"resumer {tag}: unexpected {_examples(result.extra)}")
    if result.wrong_ids:
        problems.append(f"resumer {tag}: message-ids differ: {_examples(result.wrong_ids)}")
    if not expected:
        problems.append(f"resumer {tag}: nothing was logged after {epoch}:{first - 1}")
    return result


# -- the registry ------------------------------------------------------------------------


#: The key families contract section 4 defines; other keys (logs, reaper locks and
#: markers) are not the registry and are left out of the comparison.
def _is_registry_key(key: str) -> bool:
    parts = key.split(":")
    if parts[0] != PREFIX:
        return False
    rest = parts[1:]
    return (
        rest in (["servers", "active"], ["sessions", "active"])
        or (
            len(rest) == 3 and rest[0] == "servers" and rest[2] in ("info", "heartbeat", "sessions")
        )
        or (len(rest) == 2 and rest[0] == "sessions")
        or (len(rest) == 3 and rest[0] == "rooms" and rest[2] in ("participants", "info"))
        or (len(rest) == 3 and rest[0] == "users" and rest[2] == "current_room")
    )


def registry_problems(
    rdb: redis.Redis, relays: Iterable[RelaySpec], sessions: Iterable[SessionSpec], ttl_ms: int
) -> list[str]:
    actual = {k: v for k, v in snapshot(rdb).items() if _is_registry_key(k)}
    return registry_diff(actual, expected_registry(relays, sessions, ttl_ms))


def session_spec(m: Member, rooms: list[str]) -> SessionSpec:
    return SessionSpec(
        m.sid, m.relay_id, m.client.remote_address(), m.username, rooms=rooms if m.joined else []
    )


# -- printing ----------------------------------------------------------------------------

_COLUMNS = (
    ("member", 12),
    ("relay", 8),
    ("tag", 5),
    ("state", 15),
    ("received", 8),
    ("logged", 6),
    ("degraded", 8),
    ("lost", 4),
    ("duplicated", 10),
    ("out_of_order", 12),
    ("holes", 5),
    ("gaps", 4),
    ("resets", 6),
    ("spurious", 8),
    ("true_events", 11),
    ("syncs", 5),
)


def table(rows: Sequence[Row]) -> str:
    head = " ".join(name.ljust(width) for name, width in _COLUMNS) + " epochs"
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = [str(getattr(row, name)).ljust(width) for name, width in _COLUMNS]
        lines.append(" ".join(cells) + " " + ",".join(e[:12] for e in row.epochs))
        lines.extend(f"    note: {n}" for n in row.notes[:5])
    return "\n".join(lines)
