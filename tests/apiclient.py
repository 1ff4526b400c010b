"""A minimal client of the relay's server API (docs/api.md) for tests: one request,
its status, its JSON answer and its headers, from a worker thread."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from email.message import Message
from typing import Any


def call_sync(
    base: str,
    method: str,
    path: str,
    body: object = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any, Message]:
    """``base`` is ``http://127.0.0.1:PORT``; ``body`` goes as JSON, ``raw`` as it is."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(f"{base}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, payload, answer_headers = response.status, response.read(), response.headers
    except urllib.error.HTTPError as err:
        status, payload, answer_headers = err.code, err.read(), err.headers
    return status, json.loads(payload) if payload else None, answer_headers


async def call(
    base: str,
    method: str,
    path: str,
    body: object = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any, Message]:
    return await asyncio.to_thread(call_sync, base, method, path, body, token, headers, raw)


async def publish(base: str, token: str | None, **fields: Any) -> tuple[int, Any]:
    """``POST /api/publish`` with these fields; status and answer."""
    status, answer, _ = await call(base, "POST", "/api/publish", fields, token)
    return status, answer
