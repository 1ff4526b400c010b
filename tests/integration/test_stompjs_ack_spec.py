"""The @stomp/stompjs v7.1.1 queue acknowledgement specs (``spec/unit/ack.spec.js``,
ported in tests/js/ack.spec.mjs, which cites its source) under Node, against one relay
in memory and against one on Redis: NACK delivers to the other client, a connection
that drops before its ACK has the message delivered to the other client, and an ACKed
message is not delivered again."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from stomprelay.transport import RelayServer

pytestmark = pytest.mark.node

#: The ``relays`` fixture (tests/integration/conftest.py).
Relays = Callable[..., Awaitable[list[RelayServer]]]
SPEC = Path(__file__).resolve().parents[1] / "js" / "ack.spec.mjs"


async def test_stompjs_ack_specs_pass(relays: Relays) -> None:
    (server,) = await relays(1)
    proc = await asyncio.create_subprocess_exec(
        "node",
        "--test",
        "--test-reporter=tap",
        str(SPEC),
        cwd=SPEC.parent,
        env={**os.environ, "STOMPRELAY_URL": f"ws://127.0.0.1:{server.port}/ws"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report
    assert "# pass 3" in report, report
    assert "# fail 0" in report, report
