"""The bus reader's room lanes (stomprelay.cluster.lanes): each lane's order is its
arrival order whatever the interleaving, a quiet lane is served within one round
while a flooded one has a backlog, and the bound is the bound."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from stomprelay.cluster.keys import hash_tag
from stomprelay.cluster.lanes import Lanes

#: Rooms' channels (two share the tag "a"), a user's, and untagged ones (one lane).
CHANNELS = [
    "stomp:broadcast:room:{a}",
    "stomp:event:join:{a}",
    "stomp:broadcast:room:{b}",
    "stomp:broadcast:user:{alice}",
    "stomp:system:control",
    "stomp:server:r1",
]


def recorder() -> tuple[list[tuple[str, bytes | None]], Lanes]:
    got: list[tuple[str, bytes | None]] = []
    return got, Lanes(lambda channel, data: got.append((channel, data)), quantum=3)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("put"), st.sampled_from(CHANNELS), st.booleans()),
            st.tuples(st.just("run"), st.integers(0, 10), st.just(False)),
        ),
        max_size=200,
    )
)
def test_each_lane_keeps_its_arrival_order(steps: list[tuple[str, object, bool]]) -> None:
    got, lanes = recorder()
    sent: list[tuple[str, bytes | None]] = []
    for n, (what, arg, confirm) in enumerate(steps):
        if what == "put":
            assert isinstance(arg, str)
            item = (arg, None if confirm else str(n).encode())
            lanes.put(*item)
            sent.append(item)
        else:
            assert isinstance(arg, int)
            before = len(got)
            assert lanes.run(arg) == len(got) - before <= arg
    while lanes.backlog:
        lanes.run(7)
    assert sorted(got, key=repr) == sorted(sent, key=repr)
    assert lanes.bytes == 0
    for tag in {hash_tag(channel) for channel in CHANNELS}:
        assert [i for i in got if hash_tag(i[0]) == tag] == [
            i for i in sent if hash_tag(i[0]) == tag
        ]


def test_a_quiet_lane_is_served_within_one_round_of_a_flood() -> None:
    got, lanes = recorder()
    flood, calm = "stomp:broadcast:room:{flood}", "stomp:broadcast:room:{calm}"
    for n in range(1000):
        lanes.put(flood, b"%d" % n)
    lanes.run(10)
    lanes.put(calm, b"hello")
    # the flood's lane gets its quantum (3), then the quiet lane's turn comes
    lanes.run(4)
    assert got[-1] == (calm, b"hello")
    assert len(got) == 14
    assert lanes.backlog == 1000 - 13


def test_the_read_ahead_bound() -> None:
    got: list[tuple[str, bytes | None]] = []
    lanes = Lanes(lambda channel, data: got.append((channel, data)), limit=5, limit_bytes=100)
    for _ in range(4):
        lanes.put("stomp:broadcast:room:{a}", b"x")
    assert not lanes.full
    lanes.put("stomp:broadcast:room:{b}", b"x")
    assert lanes.full
    lanes.run(1)
    assert not lanes.full
    lanes.put("stomp:broadcast:room:{c}", b"y" * 100)
    assert lanes.full
    assert lanes.bytes == 104
    assert lanes.clear() == 5
    assert not lanes.full
    assert lanes.bytes == 0
    assert lanes.run() == 0
