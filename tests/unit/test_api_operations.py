"""The server API's operations without sockets: request checks, message ids, the
route matcher and the idempotent publish over the in-memory backends."""

from __future__ import annotations

import base64

import pytest

from stomprelay.api import ApiError, Message, ServerApi, message_id
from stomprelay.cluster.history import HistoryPolicy
from stomprelay.factory import build_backends
from stomprelay.settings import Limits, Settings
from stomprelay.transport.api_http import ROUTES, match

SETTINGS = Settings(limits=Limits(max_frame_size=100))


def test_message_ids_come_from_destination_and_key() -> None:
    one = message_id("/topic/room/a", "k")
    assert one == message_id("/topic/room/a", "k")
    assert one != message_id("/topic/room/b", "k")
    assert one != message_id("/topic/room/a", "k2")
    assert message_id("/topic/room/a", None) != message_id("/topic/room/a", None)


def test_a_body_up_to_twice_the_frame_size() -> None:
    assert Message.of({"body": "x" * 200}, SETTINGS).body == b"x" * 200
    with pytest.raises(ApiError) as refused:
        Message.of({"body": "x" * 201}, SETTINGS)
    assert (refused.value.status, refused.value.field) == (413, "body")
    with pytest.raises(ApiError) as refused:
        Message.of({"bodyBase64": base64.b64encode(b"x" * 201).decode()}, SETTINGS)
    assert (refused.value.status, refused.value.field) == (413, "bodyBase64")


def test_headers_keep_their_order_and_refuse_reserved_names() -> None:
    message = Message.of({"body": "", "headers": {"b": "2", "a": "1"}}, SETTINGS)
    assert message.headers == (("b", "2"), ("a", "1"))
    for name in ("x-sender", "X-Sender-Session", "destination", "x-recipient", "message-id"):
        with pytest.raises(ApiError) as refused:
            Message.of({"body": "", "headers": {name: "v"}}, SETTINGS)
        assert refused.value.field == "headers"
        assert name in refused.value.error


def test_an_error_answers_its_field_and_extra_fields() -> None:
    error = ApiError(503, "relay-b did not confirm", extra={"unconfirmed": {"servers": ["b"]}})
    assert error.as_json() == {
        "error": "relay-b did not confirm",
        "unconfirmed": {"servers": ["b"]},
    }
    assert ApiError(400, "bad", "destination").as_json() == {
        "error": "bad",
        "field": "destination",
    }


@pytest.mark.parametrize(
    ("path", "found"),
    [
        ("/api/publish", ("/api/publish", "")),
        ("/api/users/a%2Fb", ("/api/users/{user}", "a%2Fb")),
        ("/api/users/alice/subscribe", ("/api/users/{user}/subscribe", "alice")),
        ("/api/users//subscribe", None),
        ("/api/users/a/b/subscribe", ("/api/users/{user}/subscribe", "a/b")),
        ("/api/users/a/b", None),
        ("/api/users/alice/kick", None),
        ("/api/users", None),
        ("/api/publish/", None),
    ],
)
def test_the_route_matcher(path: str, found: tuple[str, str] | None) -> None:
    assert match(path) == found
    if found is not None:
        assert found[0] in {template for _, template in ROUTES}


async def test_an_idempotent_publish_over_memory_answers_the_first_result() -> None:
    settings = Settings()
    backends = build_backends(settings)
    api = ServerApi(backends, HistoryPolicy.of(settings), settings)
    message = Message.of({"body": "hi", "idempotencyKey": "k"}, settings)
    first = await api.publish("/topic/room/a", message, "server")
    again = await api.publish(
        "/topic/room/a", Message.of({"body": "other", "idempotencyKey": "k"}, settings), "server"
    )
    assert again == first
    assert first["offset"] == 1
    history = await api.history("/topic/room/a", None, 10)
    assert [m["body"] for m in history["messages"]] == ["hi"]
    later = await api.publish("/user/al%69ce/queue/q", Message.of({"body": "dm"}, settings), "s")
    assert later["offset"] == 1
    inbox = await api.history("/user/alice/queue/q", 0, 10)
    assert [m["body"] for m in inbox["messages"]] == ["dm"]
    user = await api.user("alice")
    assert user == {"user": "alice", "online": False, "sessions": []}
