"""Codec benchmark: stomprelay's sans-I/O codec beside stomp.py's and stomper's.

Prints frames per second for parsing and serialising the same workload with
each codec, in the same run, plus a correctness check of each on a body with
blank lines and a header that needs STOMP 1.2 escaping. Run: ``make bench``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from stomprelay.stomp.frames import Frame, PreparedMessage, encode_frame
from stomprelay.stomp.parser import FrameParser

FRAMES = 20_000
CHUNK = 4096
HEADERS = (
    ("destination", "/topic/room/lobby"),
    ("content-type", "application/json;charset=utf-8"),
    ("x-trace", "4bf92f3577b34da6a3ce929d0e0e4736"),
    ("x-user", "alice"),
)
BODY = b'{"message": "' + b"hello world " * 14 + b'"}'


def best_of(runs: int, fn: Callable[[], int]) -> float:
    """Best frames/second over ``runs`` runs (the least disturbed one)."""
    best = 0.0
    for _ in range(runs):
        start = time.perf_counter()
        count = fn()
        elapsed = time.perf_counter() - start
        best = max(best, count / elapsed)
    return best


def ours_parse(stream: bytes) -> Callable[[], int]:
    def run() -> int:
        parser = FrameParser(version="1.2")
        count = 0
        for i in range(0, len(stream), CHUNK):
            parser.feed(stream[i : i + CHUNK])
            while parser.next_frame() is not None:
                count += 1
        return count

    return run


def ours_serialize() -> int:
    for _ in range(FRAMES):
        encode_frame("SEND", HEADERS, BODY, "1.2")
    return FRAMES


def ours_fanout() -> int:
    message = PreparedMessage("/topic/room/lobby", "m-1", HEADERS[1:], BODY)
    for i in range(FRAMES):
        message.render("1.2", f"sub-{i % 50}")
    return FRAMES


def main() -> None:
    frame_bytes = Frame("SEND", HEADERS, BODY).serialize("1.2")
    stream = frame_bytes * FRAMES
    rows: list[tuple[str, str, float]] = [
        ("parse (4 KiB chunks)", "stomprelay", best_of(3, ours_parse(stream))),
        ("serialize", "stomprelay", best_of(3, ours_serialize)),
        ("MESSAGE per subscriber", "stomprelay PreparedMessage", best_of(3, ours_fanout)),
    ]
    checks: list[tuple[str, str]] = []
    tricky = Frame("SEND", (("destination", "/q"), ("x-note", "a:b\nc")), b"line1\n\nline3")
    parser = FrameParser(version="1.2")
    parser.feed(tricky.serialize("1.2"))
    got = parser.next_frame()
    exact = (
        got is not None
        and got.body == tricky.body
        and [h for h in got.headers if h[0] != "content-length"] == list(tricky.headers)
    )
    checks.append(("stomprelay", "exact" if exact else f"WRONG: {got!r}"))

    try:
        import stomp.utils as stomp_utils  # stomp.py

        # stomp.py's transport strips the NUL before parse_frame sees a frame.
        unterminated = frame_bytes[:-1]

        def stomppy_parse() -> int:
            for _ in range(FRAMES):
                stomp_utils.parse_frame(unterminated)
            return FRAMES

        def stomppy_serialize() -> int:
            headers = dict(HEADERS)
            for _ in range(FRAMES):
                stomp_utils.convert_frame(stomp_utils.Frame("SEND", headers, BODY))
            return FRAMES

        rows.append(("parse (whole frames)", "stomp.py", best_of(3, stomppy_parse)))
        rows.append(("serialize", "stomp.py", best_of(3, stomppy_serialize)))
        parsed = stomp_utils.parse_frame(tricky.serialize("1.2")[:-1])
        exact = parsed.body == tricky.body and parsed.headers.get("x-note") == "a:b\nc"
        checks.append(("stomp.py", "exact" if exact else f"WRONG: {parsed!r}"))
    except ImportError:
        rows.append(("parse", "stomp.py", float("nan")))

    try:
        import stomper

        text = frame_bytes.decode()

        def stomper_parse() -> int:
            for _ in range(FRAMES):
                stomper.unpack_frame(text)
            return FRAMES

        def stomper_serialize() -> int:
            for _ in range(FRAMES):
                f = stomper.Frame()
                f.cmd = "SEND"
                f.headers = dict(HEADERS)
                f.body = BODY.decode()
                f.pack()
            return FRAMES

        rows.append(("parse (whole frames)", "stomper", best_of(3, stomper_parse)))
        rows.append(("serialize", "stomper", best_of(3, stomper_serialize)))
        got = stomper.unpack_frame(tricky.serialize("1.2").decode())
        exact = got["body"] == tricky.body.decode() and got["headers"].get("x-note") == "a:b\nc"
        checks.append(("stomper", "exact" if exact else f"WRONG: body={got['body']!r}"))
    except ImportError:
        rows.append(("parse", "stomper (pip install stomper)", float("nan")))

    print(f"{FRAMES} SEND frames, {len(frame_bytes)} bytes each; best of 3 runs")
    print(f"{'operation':<26} {'codec':<28} {'frames/s':>12}")
    for operation, codec, rate in rows:
        print(f"{operation:<26} {codec:<28} {rate:>12,.0f}")
    print("round trip of a body with a blank line and a header holding ':' and a newline:")
    for codec, verdict in checks:
        print(f"  {codec:<12} {verdict}")


if __name__ == "__main__":
    main()
