"""The commit watermark never passes an unacknowledged offset and skips gaps."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torchkafka.worker.pipeline import OffsetTracker

P0 = ("requests", 0)
P1 = ("requests", 1)


def test_commit_point_is_one_past_the_contiguous_acked_prefix() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.track(P0, offset)
    assert tracker.ack(P0, 11)
    assert tracker.committable() == {}
    assert tracker.ack(P0, 10)
    assert tracker.committable() == {P0: 12}
    assert tracker.committable() == {}  # only what advanced since the last call
    assert tracker.pending(P0) == 1
    assert tracker.ack(P0, 12)
    assert tracker.committable() == {P0: 13}
    assert tracker.pending(P0) == 0


def test_untracked_offsets_do_not_hold_the_watermark() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    tracker.track(P0, 5)
    tracker.track(P0, 9)  # 6-8: transaction markers or compacted away
    tracker.ack(P0, 9)
    assert tracker.committable() == {}
    tracker.ack(P0, 5)
    assert tracker.committable() == {P0: 10}


def test_partitions_advance_independently() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    tracker.track(P0, 0)
    tracker.track(P1, 100)
    tracker.ack(P1, 100)
    assert tracker.committable() == {P1: 101}
    assert tracker.pending(P0) == 1
    assert tracker.pending(P1) == 0


def test_offsets_must_increase_per_partition() -> None:
    tracker: OffsetTracker[int] = OffsetTracker()
    tracker.track(0, 7)
    tracker.track(1, 3)
    with pytest.raises(ValueError, match="not above the last tracked"):
        tracker.track(0, 7)


def test_acks_that_are_not_in_flight_change_nothing() -> None:
    tracker: OffsetTracker[int] = OffsetTracker()
    tracker.track(0, 1)
    tracker.track(0, 3)
    assert not tracker.ack(0, 2)  # never tracked
    assert not tracker.ack(9, 1)  # unknown partition
    assert tracker.ack(0, 1)
    assert not tracker.ack(0, 1)  # twice
    assert tracker.committable() == {0: 2}
    assert tracker.pending(0) == 1


def test_revoke_returns_final_points_and_forgets() -> None:
    tracker: OffsetTracker[int] = OffsetTracker()
    for partition in (0, 1, 2):
        tracker.track(partition, 0)
        tracker.track(partition, 1)
    tracker.ack(0, 0)
    tracker.ack(1, 0)
    assert tracker.committable() == {0: 1, 1: 1}
    tracker.ack(1, 1)
    # Already-returned points are returned again; a partition with none is left out.
    assert tracker.revoke([0, 1, 2, 3]) == {0: 1, 1: 2}
    assert tracker.committable() == {}
    assert tracker.pending(0) == 0
    assert not tracker.ack(0, 1)  # a late ack after revoke
    tracker.track(0, 1)  # assigned again: starts clean
    assert tracker.pending(0) == 1


def reference_commit(tracked: list[int], acked: set[int]) -> int | None:
    """One past the longest acknowledged prefix of ``tracked``, or None."""
    point = None
    for offset in tracked:
        if offset not in acked:
            break
        point = offset + 1
    return point


@st.composite
def offset_streams(draw: st.DrawFn) -> dict[int, list[int]]:
    """Per partition, ascending offsets with random gaps."""
    partitions = draw(st.integers(1, 3))
    streams = {}
    for partition in range(partitions):
        start = draw(st.integers(0, 1000))
        steps = draw(st.lists(st.integers(1, 4), max_size=40))
        offsets = [start]
        for step in steps:
            offsets.append(offsets[-1] + step)
        streams[partition] = offsets
    return streams


@given(streams=offset_streams(), data=st.data())
def test_random_interleavings_never_pass_an_unacked_offset(
    streams: dict[int, list[int]], data: st.DataObject
) -> None:
    tracker: OffsetTracker[int] = OffsetTracker()
    tracked: dict[int, list[int]] = {p: [] for p in streams}
    acked: dict[int, set[int]] = {p: set() for p in streams}
    committed: dict[int, int] = {}
    for _ in range(2 * sum(map(len, streams.values()))):  # one track and one ack each
        to_track = [p for p in streams if len(tracked[p]) < len(streams[p])]
        to_ack = [(p, o) for p in streams for o in tracked[p] if o not in acked[p]]
        if to_ack and (not to_track or data.draw(st.booleans())):
            partition, offset = data.draw(st.sampled_from(to_ack))
            assert tracker.ack(partition, offset)
            acked[partition].add(offset)
        else:
            partition = data.draw(st.sampled_from(to_track))
            tracker.track(partition, streams[partition][len(tracked[partition])])
            tracked[partition].append(streams[partition][len(tracked[partition])])
        if data.draw(st.booleans()):
            for partition, point in tracker.committable().items():
                unacked = [o for o in tracked[partition] if o not in acked[partition]]
                assert all(point <= o for o in unacked)
                assert point == reference_commit(tracked[partition], acked[partition])
                assert point > committed.get(partition, -1)
                committed[partition] = point
        for partition in streams:
            assert tracker.pending(partition) == len(tracked[partition]) - len(acked[partition])
    committed.update(tracker.committable())
    assert committed == {p: offsets[-1] + 1 for p, offsets in streams.items()}
    assert tracker.revoke(streams) == committed


def test_many_in_flight_offsets_stay_fast() -> None:
    tracker: OffsetTracker[int] = OffsetTracker()
    count = 200_000
    for offset in range(count):
        tracker.track(0, offset)
    for offset in range(count - 1, -1, -1):  # worst order: the head is acked last
        tracker.ack(0, offset)
    assert tracker.committable() == {0: count}
