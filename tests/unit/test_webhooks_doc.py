"""docs/webhooks.md's signature checks (Python and Node) accept the relay's signatures
and refuse a changed body, another secret and an old timestamp."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from stomprelay.httpclient import signature

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
BODY = '{"events":[{"id":"x:room.joined","type":"room.joined","roomId":"é"}]}'.encode()


def snippet(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, f"one {language} block expected"
    return blocks[0]


def cases() -> list[tuple[str, str, bytes, bool]]:
    now = int(time.time())
    good = signature("s3cret", BODY, now)
    return [
        ("s3cret", good, BODY, True),
        ("s3cret", good, BODY.replace(b"joined", b"left"), False),
        ("other", good, BODY, False),
        ("s3cret", signature("s3cret", BODY, now - 3600), BODY, False),
        ("s3cret", "garbage", BODY, False),
    ]


def test_python_snippet() -> None:
    scope: dict[str, Any] = {}
    exec(snippet("python"), scope)
    for secret, header, body, expected in cases():
        assert scope["verify"](secret, header, body) is expected, header


def test_node_snippet(tmp_path: Path) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not on PATH")
    (tmp_path / "verify.js").write_text(snippet("js"))
    runs = [[s, h, b.hex(), e] for s, h, b, e in cases()]
    script = (
        "const { verify } = require('./verify.js');\n"
        f"const runs = {json.dumps(runs)};\n"
        "const got = runs.map(([s, h, b]) => verify(s, h, Buffer.from(b, 'hex')));\n"
        "console.log(JSON.stringify(got));\n"
    )
    (tmp_path / "run.js").write_text(script)
    out = subprocess.run(
        ["node", "run.js"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == [e for *_, e in cases()]
