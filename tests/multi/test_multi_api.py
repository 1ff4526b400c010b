"""The server API across relays and Redis (contract section 10): publish reaching
stomp.py and stomp.js on every relay as the back-end, idempotency across relays,
503 while degraded, 429 past the in-flight bound, and ``stomprelay publish``."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
from apiclient import call, publish
from clusterhelpers import eventually
from procs import ROOT, wait_for

pytestmark = pytest.mark.redis

KEY = "back-end-key"
ADMIN = "operator-token"
ROOM = "/topic/room/lobby"
API_ARGS = ["--api-key", KEY, "--admin-token", ADMIN]


async def run_cli(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """``python -m stomprelay ARGS`` (with ``env`` added): exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stomprelay",
        *args,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_KEY")}
        | (env or {}),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_publish_reaches_stomppy_and_stompjs_as_the_back_end(
    start_relay, pystomp_clients, stompjs_clients
) -> None:
    a = start_relay("relay-a", extra=API_ARGS)
    b = start_relay("relay-b", extra=API_ARGS)
    js = await stompjs_clients()
    await js.connect(a.ws_url, login="server")
    await js.subscribe(ROOM, sub_id="lobby", receipt="r-lobby")
    await js.expect("receipt", lambda e: e["receipt_id"] == "r-lobby")
    py = await pystomp_clients(b, "py@b")
    await py.subscribe(ROOM, "lobby")

    status, answer = await publish(
        a.http, KEY, destination=ROOM, body="from the shop", headers={"x-order": "17"}
    )
    assert status == 200, answer
    assert answer["offset"] == 1
    frame = await py.next_message(lambda f: f.body == b"from the shop")
    assert frame.headers["x-sender"] == "server"
    assert "x-sender-session" not in frame.headers
    assert frame.headers["x-order"] == "17"
    assert frame.headers["x-offset"] == "1"
    assert frame.headers["x-epoch"] == answer["epoch"]
    assert frame.headers["message-id"] == answer["messageId"]
    event = await js.expect("message", lambda e: e["body"] == "from the shop")
    assert event["headers"]["x-sender"] == "server"
    assert "x-sender-session" not in event["headers"]

    # a client logged in as "server" cannot pass for the back-end: its SENDs carry its session
    await js.send(ROOM, body="I am the server")
    frame = await py.next_message(lambda f: f.body == b"I am the server")
    assert frame.headers["x-sender-session"]

    # the admin token publishes as the operator, through the other relay
    status, answer = await publish(b.http, ADMIN, destination=ROOM, body="from ops")
    assert (status, answer["offset"]) == (200, 3)
    frame = await py.next_message(lambda f: f.body == b"from ops")
    assert frame.headers["x-sender"] == "operator"
    event = await js.expect("message", lambda e: e["body"] == "from ops")
    assert event["headers"]["x-sender"] == "operator"


async def test_the_api_key_name_is_the_back_ends_x_sender(
    start_relay, stomp_clients, redis_server
) -> None:
    """``--api-key-name`` names what the API key publishes, through a relay and through
    ``stomprelay publish``; the admin token's messages stay the operator's."""
    a = start_relay("relay-a", extra=[*API_ARGS, "--api-key-name", "shop"])
    client = await stomp_clients(a, name="watcher")
    sub = await client.subscribe(ROOM)
    assert (await publish(a.http, KEY, destination=ROOM, body="by key"))[0] == 200
    assert (await publish(a.http, ADMIN, destination=ROOM, body="by token"))[0] == 200
    code, _, err = await run_cli(
        "publish", "--redis-url", redis_server.url, "--api-key-name", "shop", ROOM, "by shell"
    )
    assert code == 0, err
    frames = await client.collect(3, sub)
    assert [(f.body, f.get("x-sender")) for f in frames] == [
        (b"by key", "shop"),
        (b"by token", "operator"),
        (b"by shell", "shop"),
    ]
    assert all(f.get("x-sender-session") is None for f in frames)


async def test_the_same_idempotency_key_on_two_relays_is_one_message(
    start_relay, stomp_clients
) -> None:
    a = start_relay("relay-a", extra=API_ARGS)
    b = start_relay("relay-b", extra=API_ARGS)
    on_a, on_b = await stomp_clients(a, name="on-a"), await stomp_clients(b, name="on-b")
    sub_a, sub_b = await on_a.subscribe(ROOM), await on_b.subscribe(ROOM)

    first = await publish(a.http, KEY, destination=ROOM, body="once", idempotencyKey="order-17")
    again = await publish(b.http, KEY, destination=ROOM, body="once", idempotencyKey="order-17")
    assert first[0] == again[0] == 200
    assert first[1] == again[1]
    assert first[1]["offset"] == 1
    # the same key on another destination is another message
    other = await publish(
        a.http, KEY, destination="/topic/room/other", body="x", idempotencyKey="order-17"
    )
    assert other[1]["messageId"] != first[1]["messageId"]
    # a later message marks the end: everything before it has been delivered
    marker = await publish(b.http, KEY, destination=ROOM, body="marker")
    assert marker[1]["offset"] == 2
    for client, sub in ((on_a, sub_a), (on_b, sub_b)):
        frames = await client.collect(2, sub)
        assert [f.body for f in frames] == [b"once", b"marker"]
        assert [f.get("x-offset") for f in frames] == ["1", "2"]
        assert client.pending(sub) == []
    status, history, _ = await call(a.http, "GET", f"/api/history?destination={ROOM}", token=KEY)
    assert status == 200
    assert [(m["offset"], m["body"]) for m in history["messages"]] == [(1, "once"), (2, "marker")]


async def test_degraded_relays_answer_503(start_relay, redis_server) -> None:
    a = start_relay("relay-a", extra=API_ARGS)
    redis_server.stop()
    wait_for(lambda: not a.ready(), timeout=20, what="relay-a degraded")
    status, answer = await publish(a.http, KEY, destination=ROOM, body="lost?")
    assert status == 503
    assert "Redis" in answer["error"]
    status, answer, _ = await call(a.http, "GET", f"/api/history?destination={ROOM}", token=KEY)
    assert status == 503
    status, answer, _ = await call(a.http, "GET", "/api/users/alice", token=KEY)
    assert status == 503
    # the user changes too: nothing kept, nobody asked (docs/api.md)
    for action, payload in (("subscribe", {"destination": ROOM}), ("disconnect", {})):
        status, answer, _ = await call(a.http, "POST", f"/api/users/alice/{action}", payload, KEY)
        assert status == 503, (action, answer)
        assert answer["error"]


async def test_past_the_in_flight_bound_a_publish_is_a_429(start_relay, redis_server) -> None:
    """With Redis stalled, the first publish is held (until Redis or the relay's
    timeout answers): a second one meanwhile is past ``--api-max-inflight 1``."""
    a = start_relay("relay-a", extra=[*API_ARGS, "--api-max-inflight", "1"])
    redis_server.pause()
    try:
        answers = await asyncio.gather(
            *(
                call(a.http, "POST", "/api/publish", {"destination": ROOM, "body": str(i)}, KEY)
                for i in range(2)
            )
        )
    finally:
        redis_server.resume()
    statuses = sorted(status for status, _, _ in answers)
    assert statuses in ([200, 429], [429, 503])
    refused, headers = next((answer, h) for status, answer, h in answers if status == 429)
    assert "in flight" in refused["error"]
    assert headers["retry-after"] == "1"


async def test_cli_publish_through_redis_and_through_the_api(
    start_relay, stomp_clients, redis_server
) -> None:
    a = start_relay("relay-a", extra=API_ARGS)
    client = await stomp_clients(a, name="watcher")
    sub = await client.subscribe(ROOM)
    code, out, err = await run_cli(
        "publish",
        "--redis-url",
        redis_server.url,
        ROOM,
        "from a script",
        "--idempotency-key",
        "job-1",
        "--header",
        "x-job=1",
    )
    assert code == 0, err
    first = json.loads(out)
    assert first["offset"] == 1
    frame = await client.next_message(sub)
    assert frame.body == b"from a script"
    assert frame.get("x-sender") == "server"
    assert frame.get("x-job") == "1"
    assert frame.get("x-sender-session") is None

    # the same key through a relay's API: the first result, nothing delivered
    code, out, err = await run_cli(
        "publish", "--api", a.http, "--api-key", KEY, ROOM, "again", "--idempotency-key", "job-1"
    )
    assert code == 0, err
    assert json.loads(out) == first
    code, out, err = await run_cli(
        "publish", "--api", a.http, ROOM, "-", stdin=b"from stdin", env={"API_KEY": KEY}
    )
    assert code == 0, err
    assert json.loads(out)["offset"] == 2
    frame = await client.next_message(sub)
    assert frame.body == b"from stdin"
    assert client.pending(sub) == []

    # refusals: a reserved header (2), a wrong key (2), no relay there (1), no Redis given (2)
    code, _, err = await run_cli(
        "publish", "--redis-url", redis_server.url, ROOM, "x", "--header", "x-sender=me"
    )
    assert code == 2
    assert "x-sender" in err
    assert "Traceback" not in err
    code, _, err = await run_cli("publish", "--api", a.http, "--api-key", "wrong", ROOM, "x")
    assert code == 2
    assert "401" in err
    code, _, err = await run_cli("publish", "--api", "http://127.0.0.1:9", ROOM, "x")
    assert code == 1
    assert "Traceback" not in err
    code, _, err = await run_cli("publish", ROOM, "x", "--header", "nonsense")
    assert code == 2
    assert "NAME=VALUE" in err


async def test_publish_to_a_user_reaches_each_of_its_sessions_once(
    start_relay, stomp_clients, stompjs_clients
) -> None:
    """alice on relay-a (raw STOMP) and relay-b (stomp.js), carol on relay-a: a
    publish to alice's queue, and its retry with the same key through the other
    relay, reach each alice session once and carol never."""
    a = start_relay("relay-a", extra=API_ARGS)
    b = start_relay("relay-b", extra=API_ARGS)
    alice_a = await stomp_clients(a, login="alice", name="alice@a")
    inbox = await alice_a.subscribe("/user/queue/messages")
    carol = await stomp_clients(a, login="carol", name="carol@a")
    carol_inbox = await carol.subscribe("/user/queue/messages")
    js = await stompjs_clients()
    await js.connect(b.ws_url, login="alice")
    await js.subscribe("/user/queue/messages", sub_id="inbox", receipt="r-inbox")
    await js.expect("receipt", lambda e: e["receipt_id"] == "r-inbox")

    status, first = await publish(
        a.http, KEY, destination="/user/alice/queue/messages", body="shipped", idempotencyKey="o-1"
    )
    assert status == 200, first
    assert first["offset"] == 1
    status, again = await publish(
        b.http, KEY, destination="/user/alice/queue/messages", body="shipped", idempotencyKey="o-1"
    )
    assert (status, again) == (200, first)
    await publish(b.http, KEY, destination="/user/alice/queue/messages", body="marker")

    frames = await alice_a.collect(2, inbox)
    assert [f.body for f in frames] == [b"shipped", b"marker"]
    assert frames[0].get("destination") == "/user/queue/messages"
    assert frames[0].get("x-sender") == "server"
    assert frames[0].get("x-sender-session") is None
    assert frames[0].get("x-offset") == "1"
    assert frames[0].get("x-epoch") == first["epoch"]
    event = await js.expect("message", lambda e: e["subscription"] == "inbox")
    assert event["body"] == "shipped"
    assert event["headers"]["destination"] == "/user/queue/messages"
    assert event["headers"]["x-sender"] == "server"
    assert "x-sender-session" not in event["headers"]
    marker = await js.expect("message", lambda e: e["subscription"] == "inbox")
    assert marker["body"] == "marker"
    assert alice_a.pending(inbox) == []
    assert carol.received(carol_inbox) == []

    # the inbox's history, and its own-queue spelling is not a destination to publish to
    status, history, _ = await call(
        a.http, "GET", "/api/history?destination=/user/alice/queue/messages", token=KEY
    )
    assert status == 200
    assert [m["body"] for m in history["messages"]] == ["shipped", "marker"]
    status, answer = await publish(a.http, KEY, destination="/user/queue/messages", body="x")
    assert (status, answer["field"]) == (400, "destination")


async def test_a_users_sessions_on_every_relay(start_relay, stomp_clients) -> None:
    a = start_relay("relay-a", extra=API_ARGS)
    b = start_relay("relay-b", extra=API_ARGS)
    on_a = await stomp_clients(a, login="a/lice", name="alice@a")
    await on_a.join("lobby", "alice")
    on_b = await stomp_clients(b, login="a/lice", name="alice@b")

    status, user, _ = await call(b.http, "GET", "/api/users/a%2Flice", token=KEY)
    assert status == 200
    assert user["user"] == "a/lice"
    assert user["online"] is True
    sessions = {s["sessionId"]: s for s in user["sessions"]}
    assert set(sessions) == {on_a.session_id, on_b.session_id}
    assert sessions[on_a.session_id]["serverId"] == "relay-a"
    assert sessions[on_a.session_id]["rooms"] == ["lobby"]
    assert sessions[on_b.session_id]["serverId"] == "relay-b"
    assert sessions[on_b.session_id]["rooms"] == []
    assert all(isinstance(s["connectedAt"], int) for s in user["sessions"])

    await on_a.disconnect()

    async def only_b() -> None:
        _, user, _ = await call(a.http, "GET", "/api/users/a%2Flice", token=ADMIN)
        assert [s["sessionId"] for s in user["sessions"]] == [on_b.session_id]

    await eventually(only_b, what="alice's session on relay-a gone from the registry")
    status, user, _ = await call(a.http, "GET", "/api/users/nobody", token=KEY)
    assert (status, user) == (200, {"user": "nobody", "online": False, "sessions": []})


async def test_the_example_back_end_posts_into_a_room_and_dms_a_user(
    start_relay, stomp_clients
) -> None:
    a = start_relay("relay-a", extra=API_ARGS)
    watcher = await stomp_clients(a, login="watcher", name="watcher")
    room = await watcher.subscribe(ROOM)
    alice = await stomp_clients(a, login="alice", name="alice")
    inbox = await alice.subscribe("/user/queue/messages")
    code, out, err = await run_cli_script(
        "examples/backend.py", "--relay", a.http, "--api-key", KEY, "--user", "alice"
    )
    assert code == 0, err
    steps = {line["step"]: line for line in map(json.loads, out.splitlines())}
    assert steps["room"]["offset"] == 1
    assert steps["retry"]["same"] is True
    assert steps["history"]["bodies"] == ["the shop opens at nine"]
    notice = await watcher.next_message(room)
    assert notice.body == b"the shop opens at nine"
    assert notice.get("x-sender") == "server"
    assert notice.get("x-kind") == "notice"
    dm = await alice.next_message(inbox)
    assert dm.body == b"alice, your order has shipped"
    assert dm.get("x-offset") == str(steps["dm"]["offset"])
    # the retry delivered nothing: a later message is the next one alice gets
    await publish(a.http, KEY, destination="/user/alice/queue/messages", body="later")
    assert (await alice.next_message(inbox)).body == b"later"


async def run_cli_script(path: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        path,
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_kick_through_a_relays_api_needs_the_admin_token(start_relay, stomp_clients) -> None:
    """``stomprelay kick --api``: the API key does not open the operator route; the
    admin token ends the user's sessions."""
    a = start_relay("relay-a", extra=API_ARGS)
    mallory = await stomp_clients(a, login="mallory", name="mallory")
    code, _, err = await run_cli("kick", "mallory", "--api", a.http, "--admin-token", KEY)
    assert code == 1
    assert "403" in err
    code, out, err = await run_cli("kick", "mallory", "--api", a.http, "--admin-token", ADMIN)
    assert code == 0, err
    assert json.loads(out)["user"] == "mallory"
    await mallory.wait_closed()
    assert mallory.errors


async def test_the_api_key_subscribes_and_disconnects_a_user(start_relay, stomp_clients) -> None:
    """The server-side subscription and disconnect routes, with the back-ends' key."""
    from stomprelay.usersubs import subscription_id

    a = start_relay("relay-a", extra=API_ARGS)
    b = start_relay("relay-b", extra=API_ARGS)
    alice_a = await stomp_clients(a, login="alice", name="alice@a")
    alice_b = await stomp_clients(b, login="alice", name="alice@b")
    path = "/api/users/alice/subscribe"
    assert (await call(a.http, "POST", path, {"destination": ROOM}))[0] == 401
    status, answer, _ = await call(a.http, "POST", "/api/users/%00/subscribe", {}, KEY)
    assert (status, answer["field"]) == (400, "user")
    status, answer, _ = await call(a.http, "POST", path, {"destination": "/nowhere"}, KEY)
    assert (status, answer["field"]) == (400, "destination")
    status, answer, _ = await call(a.http, "POST", path, {"destination": ROOM}, KEY)
    assert status == 200, answer
    assert answer["sessions"] == 2
    assert answer["subscription"] == subscription_id(ROOM)
    await publish(b.http, KEY, destination=ROOM, body="to alice")
    for alice in (alice_a, alice_b):
        assert (await alice.next_message(subscription_id(ROOM))).body == b"to alice"

    status, answer, _ = await call(
        b.http, "POST", "/api/users/alice/disconnect", {"reason": "account closed"}, KEY
    )
    assert (status, answer["sessions"]) == (200, 2)
    for alice in (alice_a, alice_b):
        await alice.wait_closed()
        assert alice.errors[0].get("message") == "session ended by server"
        assert alice.errors[0].body == b"account closed"
