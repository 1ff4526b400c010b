"""The server API's OpenAPI 3.1 document, served at ``GET /api/openapi.json``.

Written here once, beside nothing else, so that a test can hold the routes the
dispatcher serves (:data:`stomprelay.transport.api_http.ROUTES`) and the paths
this document lists to each other, both ways.
"""

from __future__ import annotations

from stomprelay import __version__

Schema = dict[str, object]


def _obj(required: list[str], **props: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


_STR: Schema = {"type": "string"}
_INT: Schema = {"type": "integer", "minimum": 0}
_ERROR = _obj(
    ["error"],
    error={"type": "string", "description": "what is wrong, in plain language"},
    field={"type": "string", "description": "the request field at fault (400, 413)"},
    unconfirmed={
        "type": "object",
        "description": "503 of a user change: the relays and sessions that did not confirm",
        "properties": {
            "servers": {"type": "array", "items": {"type": "string"}},
            "sessions": {"type": "array", "items": {"type": "string"}},
        },
    },
)
_PUBLISHED = _obj(
    ["destination", "messageId", "offset", "epoch"],
    destination=_STR,
    messageId=_STR,
    offset={**_INT, "description": "the message's offset in the log; 0: not logged"},
    epoch={"type": "string", "description": "the log's epoch; empty when not logged"},
)
_MESSAGE_FIELDS: dict[str, Schema] = {
    "body": {"type": "string", "description": "UTF-8 text body"},
    "bodyBase64": {"type": "string", "description": "a binary body, base64 (instead of body)"},
    "headers": {
        "type": "object",
        "additionalProperties": _STR,
        "description": "the message's own headers; a reserved one (x-sender, ...) is a 400",
    },
    "idempotencyKey": {
        "type": "string",
        "maxLength": 256,
        "description": "a repeat on the same destination answers the first result and "
        "delivers nothing (logged destinations only)",
    },
}
_PUBLISH = _obj(["destination"], destination=_STR, **_MESSAGE_FIELDS)
_BROADCAST = _obj(
    ["destinations"],
    destinations={"type": "array", "items": _STR, "minItems": 1, "maxItems": 100},
    **_MESSAGE_FIELDS,
)
_RESULT: Schema = {
    "oneOf": [
        _PUBLISHED,
        _obj(
            ["destination", "status", "error"],
            destination=_STR,
            status=_INT,
            **{"error": _STR, "field": _STR},
        ),
    ]
}
_HISTORY = _obj(
    ["destination", "epoch", "offset", "messages"],
    destination=_STR,
    epoch={"type": ["string", "null"], "description": "null: the log does not exist (yet)"},
    offset={**_INT, "description": "the log's last offset"},
    messages={
        "type": "array",
        "items": _obj(
            ["offset", "messageId", "headers"],
            offset=_INT,
            messageId=_STR,
            headers={"type": "object", "additionalProperties": _STR},
            body={"type": "string", "description": "a UTF-8 body"},
            bodyBase64={"type": "string", "description": "any other body, base64"},
        ),
    },
)
_USER = _obj(
    ["user", "online", "sessions"],
    user=_STR,
    online={"type": "boolean"},
    sessions={
        "type": "array",
        "items": _obj(
            ["sessionId", "serverId", "connectedAt", "rooms"],
            sessionId=_STR,
            serverId=_STR,
            connectedAt={**_INT, "description": "ms since the epoch"},
            rooms={"type": "array", "items": _STR},
        ),
    },
)
_SUBSCRIBED = _obj(
    ["user", "destination", "subscription"],
    user=_STR,
    destination=_STR,
    subscription={
        "type": "string",
        "description": "server- + 16 hex digits of SHA-256(destination)",
    },
    sessions={**_INT, "description": "sessions subscribed (or unsubscribed) now"},
)
_DISCONNECTED = _obj(["user"], user=_STR, sessions=_INT)
_QUEUE_PARAM: Schema = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "the queue's name: /queue/{name} (a dead-letter queue: {name}.dlq)",
    "schema": _STR,
}
_QUEUE = _obj(
    ["name", "length", "consumers", "pending", "deadLetters"],
    name=_STR,
    length={**_INT, "description": "messages waiting for a consumer"},
    consumers={**_INT, "description": "subscriptions consuming it, on every relay"},
    pending={**_INT, "description": "messages delivered and not yet acknowledged"},
    deadLetters={**_INT, "description": "messages in {name}.dlq"},
)
_USER_PARAM: Schema = {
    "name": "user",
    "in": "path",
    "required": True,
    "description": "the user (JWT sub, or CONNECT login), percent-encoded (%2F for /)",
    "schema": _STR,
}


def _query(name: str, description: str, required: bool = False) -> Schema:
    schema = _STR if name == "destination" else _INT
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _operation(
    summary: str,
    answer: Schema,
    body: Schema | None = None,
    errors: tuple[int, ...] = (400, 401, 403, 503),
    parameters: tuple[Schema, ...] = (),
) -> Schema:
    responses: dict[str, object] = {
        "200": {"description": "done", "content": {"application/json": {"schema": answer}}}
    }
    for status in errors:
        responses[str(status)] = {
            "description": _STATUS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    operation: Schema = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    return operation


_STATUS = {
    400: "a field is wrong (named in field)",
    401: "no valid Bearer key or token",
    403: "this key may not do this (or no key is set and the client is not loopback)",
    404: "no such thing",
    413: "the body is too large",
    429: "too many API requests in flight on this relay; try again",
    503: "Redis is unreachable (the relay is degraded)",
}
_WRITE = (400, 401, 403, 413, 429, 503)


def document() -> Schema:
    """The OpenAPI 3.1 document of every server API route."""
    user_body = _obj(["destination"], destination=_STR)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "stomprelay server API",
            "version": __version__,
            "description": "Back-ends publish, read history and manage users' sessions "
            "(docs/api.md). Bearer --api-key, or --admin-token (operators).",
        },
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/publish": {
                "post": _operation("Publish one message", _PUBLISHED, _PUBLISH, _WRITE)
            },
            "/api/broadcast": {
                "post": _operation(
                    "Publish one message to several destinations",
                    _obj(["results"], results={"type": "array", "items": _RESULT}),
                    _BROADCAST,
                    _WRITE,
                )
            },
            "/api/history": {
                "get": _operation(
                    "Read a destination's log",
                    _HISTORY,
                    errors=(400, 401, 403, 404, 503),
                    parameters=(
                        _query("destination", "a room, topic or user queue", True),
                        _query("since", "messages after this offset (default: the last limit)"),
                        _query("limit", "at most this many (default 100, at most 1000)"),
                    ),
                )
            },
            "/api/users/{user}": {
                "get": _operation(
                    "A user's sessions, on every relay", _USER, parameters=(_USER_PARAM,)
                )
            },
            "/api/users/{user}/subscribe": {
                "post": _operation(
                    "Subscribe every session of the user, now and later",
                    _SUBSCRIBED,
                    user_body,
                    _WRITE,
                    (_USER_PARAM,),
                )
            },
            "/api/users/{user}/unsubscribe": {
                "post": _operation(
                    "End a server-side subscription of the user",
                    _SUBSCRIBED,
                    user_body,
                    _WRITE,
                    (_USER_PARAM,),
                )
            },
            "/api/users/{user}/disconnect": {
                "post": _operation(
                    "End every session of the user (ERROR session ended by server)",
                    _DISCONNECTED,
                    _obj([], reason={"type": "string", "maxLength": 1000}),
                    _WRITE,
                    (_USER_PARAM,),
                )
            },
            "/api/openapi.json": {
                "get": _operation("This document", {"type": "object"}, errors=(401, 403))
            },
            "/api/queues/{name}": {
                "get": _operation(
                    "A /queue/ destination: waiting, consumers, unacknowledged, dead letters",
                    _QUEUE,
                    errors=(400, 401, 403, 404, 503),
                    parameters=(_QUEUE_PARAM,),
                )
            },
        },
    }
