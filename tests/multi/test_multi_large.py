"""1 MiB messages (docs/protocol.md, "Limits"): a SEND that large passes both the STOMP
frame limit and the WebSocket message limit once both are raised with their flags, across
two relays and Redis (the room's log keeps it too), with stomp.py and @stomp/stompjs. At
the default limits it gets an ERROR: tests/integration/test_large_messages.py.
"""

from __future__ import annotations

import asyncio
import random
import string
from collections.abc import Awaitable, Callable

import pytest
from clusterhelpers import PyStompClient
from jsclient import StompJsClient
from procs import RelayProcess

pytestmark = pytest.mark.redis

MIB = 1024 * 1024
#: The flags the @stomp/stompjs suite's "Large data" specs need (README, docs/protocol.md).
RAISED = ["--max-frame-size", str(2 * MIB), "--max-message-size", str(2 * MIB)]
ROOM = "/topic/room/big"


def payload(seed: int) -> str:
    """1 MiB of text, different for each seed (so a mix-up cannot pass)."""
    return "".join(random.Random(seed).choices(string.ascii_letters + string.digits, k=MIB))


async def test_a_1_mib_send_crosses_two_relays_with_raised_limits(
    start_relay: Callable[..., RelayProcess],
    pystomp_clients: Callable[..., Awaitable[PyStompClient]],
    stompjs: StompJsClient,
) -> None:
    a = start_relay("A", extra=RAISED)
    b = start_relay("B", extra=RAISED)
    py = await pystomp_clients(b, login="py")
    await py.subscribe(ROOM, "s-py")
    await stompjs.connect(a.ws_url, login="js")
    await stompjs.subscribe(ROOM, sub_id="s-js", receipt="r-js")
    await stompjs.expect("receipt", lambda e: e["receipt_id"] == "r-js")

    from_py, from_js = payload(1), payload(2)
    await py.send(ROOM, from_py, headers={"content-type": "text/plain"})
    got = await stompjs.expect("message", lambda e: e["subscription"] == "s-js", timeout=30)
    assert got["body"] == from_py
    assert got["headers"]["x-sender"] == "py"
    mine = await py.next_message(timeout=30)
    assert mine.body == from_py.encode()

    await stompjs.send(ROOM, body=from_js, headers={"content-type": "text/plain"})
    frame = await py.next_message(lambda f: f.headers.get("x-sender") == "js", timeout=30)
    assert frame.body == from_js.encode()
    assert int(frame.headers["content-length"]) == MIB
    assert not py.errors

    # the room's log kept both: a late subscriber on the other relay reads them back
    late = await pystomp_clients(a, login="late")
    await asyncio.to_thread(
        late.conn.subscribe, ROOM, "s-late", headers={"x-history": "2"}, receipt="r-late"
    )
    await late.receipt("r-late", timeout=30)
    bodies = [(await late.next_message(timeout=30)).body for _ in range(2)]
    assert bodies == [from_py.encode(), from_js.encode()]
