"""ACK and NACK of queue subscriptions, frame by frame (sans-I/O): the session reports
which messages each one settled (:class:`Acknowledged`), by the keys the client named
them with, cumulatively in ``client`` mode, at COMMIT inside a transaction, never at
ABORT, and not at all for destinations it was not asked to report."""

from __future__ import annotations

import pytest
from test_session import NO_HEARTBEAT, connected, send

from stomprelay.stomp.frames import V10, V11, V12, PreparedMessage
from stomprelay.stomp.session import Acknowledged, ReceiptDue, ServerSession

QUEUE = "/queue/jobs"


def queue_session(version: str = V12) -> ServerSession:
    session = connected(version, NO_HEARTBEAT)
    session.acked_prefixes = ("/queue/",)
    return session


def deliver(session: ServerSession, sub_id: str, message_id: str, dest: str = QUEUE) -> str:
    key = session.deliver_acked(PreparedMessage(dest, message_id, (), b"x"), sub_id, 1.0)
    assert key is not None
    session.data_to_send()
    return key


def subscribe(session: ServerSession, mode: str, sub_id: str = "s", dest: str = QUEUE) -> None:
    send(session, "SUBSCRIBE", ("id", sub_id), ("destination", dest), ("ack", mode))


@pytest.mark.parametrize("command", ["ACK", "NACK"])
def test_client_mode_reports_every_message_up_to_the_named_one(command: str) -> None:
    session = queue_session()
    subscribe(session, "client")
    keys = [deliver(session, "s", f"m{i}") for i in range(4)]
    assert session.unacked("s") == 4
    events = send(session, command, ("id", keys[2]))
    assert events == [Acknowledged("s", tuple(keys[:3]), command == "NACK")]
    assert session.unacked("s") == 1


def test_client_individual_reports_one_message() -> None:
    session = queue_session()
    subscribe(session, "client-individual")
    keys = [deliver(session, "s", f"m{i}") for i in range(3)]
    assert send(session, "NACK", ("id", keys[1]), ("receipt", "r")) == [
        Acknowledged("s", (keys[1],), True),
        ReceiptDue("r"),
    ]
    assert session.unacked("s") == 2


@pytest.mark.parametrize("version", [V10, V11])
def test_older_versions_name_messages_by_message_id(version: str) -> None:
    session = queue_session(version)
    subscribe(session, "client")
    assert [deliver(session, "s", f"m{i}") for i in range(2)] == ["m0", "m1"]
    headers = [("message-id", "m1")] + ([("subscription", "s")] if version == V11 else [])
    assert send(session, "ACK", *headers) == [Acknowledged("s", ("m0", "m1"), False)]


def test_auto_mode_has_no_key_and_nothing_to_acknowledge() -> None:
    session = queue_session()
    subscribe(session, "auto")
    assert deliver(session, "s", "m0") == ""
    assert session.unacked("s") == 0


def test_acks_in_a_transaction_are_reported_at_commit_only() -> None:
    session = queue_session()
    subscribe(session, "client-individual")
    k0, k1 = deliver(session, "s", "m0"), deliver(session, "s", "m1")
    send(session, "BEGIN", ("transaction", "t"))
    assert send(session, "ACK", ("id", k0), ("transaction", "t")) == []
    assert send(session, "NACK", ("id", k1), ("transaction", "t")) == []
    assert send(session, "ABORT", ("transaction", "t")) == []
    assert session.unacked("s") == 2
    send(session, "BEGIN", ("transaction", "u"))
    send(session, "ACK", ("id", k0), ("transaction", "u"))
    send(session, "NACK", ("id", k1), ("transaction", "u"))
    assert send(session, "COMMIT", ("transaction", "u")) == [
        Acknowledged("s", (k0,), False),
        Acknowledged("s", (k1,), True),
    ]


def test_other_destinations_are_not_reported() -> None:
    session = queue_session()
    subscribe(session, "client", dest="/topic/t")
    key = deliver(session, "s", "m0", dest="/topic/t")
    assert send(session, "ACK", ("id", key)) == []


def test_a_session_not_asked_reports_nothing() -> None:
    session = connected(V12, NO_HEARTBEAT)
    subscribe(session, "client")
    key = deliver(session, "s", "m0")
    assert send(session, "ACK", ("id", key)) == []
