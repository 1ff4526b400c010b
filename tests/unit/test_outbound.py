"""The send side of a STOMP socket (transport/outbound.py), with no socket: a
transport's buffer is the send queue; past it frames wait within the limits."""

from __future__ import annotations

from typing import Any

from stomprelay.settings import Settings
from stomprelay.transport.outbound import SendQueue, slow_consumer_error


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered


def queue(**settings: Any) -> tuple[SendQueue, Any]:
    return SendQueue(Settings(**settings)), FakeTransport()


def test_writes_go_straight_to_the_transport_in_one_write() -> None:
    out, transport = queue()
    assert out.write(transport, [b"a", b"b"])
    assert out.write(transport, [b"c"])
    assert transport.written == [b"ab", b"c"]
    assert not out.paused
    assert out.due() is None


def test_paused_frames_wait_and_go_out_in_one_write_on_resume() -> None:
    out, transport = queue(send_timeout=5.0)
    out.pause(100.0)
    assert out.paused
    assert out.due() == 105.0
    assert out.write(transport, [b"a"])
    assert out.write(transport, [b"b", b"c"])
    assert transport.written == []
    assert not out.timed_out(104.9)
    assert out.timed_out(105.0)
    out.resume(transport)
    assert transport.written == [b"abc"]
    assert not out.paused
    assert not out.timed_out(200.0)


def test_over_the_frame_or_byte_limit_is_a_slow_consumer() -> None:
    out, transport = queue(send_queue_frames=2, send_queue_bytes=1000)
    out.pause(0.0)
    assert out.write(transport, [b"a", b"b"])
    assert not out.write(transport, [b"c"])  # a third frame waiting
    out, transport = queue(send_queue_frames=100, send_queue_bytes=1000)
    out.pause(0.0)
    transport.buffered = 990
    assert out.write(transport, [b"x" * 10])
    assert not out.write(transport, [b"y"])  # what the transport holds counts too


def test_clear_drops_the_backlog_and_says_whether_it_was_paused() -> None:
    out, transport = queue()
    assert not out.clear()
    out.pause(1.0)
    out.write(transport, [b"a"])
    assert out.clear()
    out.resume(transport)
    assert transport.written == []


def test_the_slow_consumer_error_names_the_limits() -> None:
    error = slow_consumer_error(
        Settings(send_queue_frames=7, send_queue_bytes=99, send_timeout=1.5)
    )
    assert error.message == "Slow consumer"
    assert "7 frames" in error.detail
    assert "99 bytes" in error.detail
    assert "1.5 s" in error.detail
