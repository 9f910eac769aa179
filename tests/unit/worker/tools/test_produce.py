"""Request generation, token-bucket pacing (on a fake clock) and producing them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.support.fake_producer import FakeProducer
from torchkafka.client import RequestSender
from torchkafka.codecs import EncodedImage, decode_request
from torchkafka.worker.tools import RequestFactory, produce_requests
from torchkafka.worker.tools._produce import Pacer, image_inputs


class FakeClock:
    """Time that passes only when slept; ``overshoot`` makes every sleep late (or early)."""

    def __init__(self, overshoot: float = 0.0) -> None:
        self.now = 0.0
        self.overshoot = overshoot
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "a pacer must not ask for a zero or negative sleep"
        self.sleeps.append(seconds)
        self.now += seconds + self.overshoot


def send_times(pacer: Pacer, clock: FakeClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        pacer.wait()
        times.append(clock.now)
    return times


def test_pacer_spaces_sends_one_interval_apart_with_a_burst_of_one() -> None:
    clock = FakeClock()
    pacer = Pacer(10, burst=1, clock=clock, sleep=clock.sleep)
    assert send_times(pacer, clock, 5) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert clock.sleeps == pytest.approx([0.1] * 4)


def test_pacer_sends_a_burst_after_idling_without_sleeping_then_paces_again() -> None:
    clock = FakeClock()
    pacer = Pacer(100, burst=5, clock=clock, sleep=clock.sleep)
    clock.now = 10.0  # idle for long: the bucket fills to the burst, not beyond
    times = send_times(pacer, clock, 7)
    assert times[:5] == [10.0] * 5
    assert times[5:] == pytest.approx([10.01, 10.02])


def test_pacer_default_burst_is_50_ms_of_sends_and_at_least_one() -> None:
    assert Pacer(1000).burst == 50
    assert Pacer(2).burst == 1


def test_pacer_keeps_the_long_run_rate_when_every_sleep_is_late() -> None:
    clock = FakeClock(overshoot=0.0007)  # timer slack: each sleep 0.7 ms late
    pacer = Pacer(1000, clock=clock, sleep=clock.sleep)
    times = send_times(pacer, clock, 2000)
    # Late wake-ups are made up from the bucket: 2000 sends in 2 s, not in 3.4 s.
    assert times[-1] == pytest.approx(1.999, abs=0.002)


def test_pacer_never_sends_early_when_sleep_returns_early() -> None:
    clock = FakeClock()

    def early_sleep(seconds: float) -> None:  # e.g. a producer poll that served a delivery
        clock.sleep(seconds / 3)

    pacer = Pacer(10, burst=1, clock=clock, sleep=early_sleep)
    times = send_times(pacer, clock, 3)
    assert times[1] >= 0.1 - 1e-9
    assert times[2] >= 0.2 - 1e-9
    assert len(clock.sleeps) > 2


@pytest.mark.parametrize(("rate", "burst"), [(0, None), (-1, None), (10, 0.5)])
def test_pacer_rejects_a_rate_or_burst_it_cannot_honour(rate: float, burst: float | None) -> None:
    with pytest.raises(ValueError, match="must be"):
        Pacer(rate, burst)


def test_request_factory_numbers_ids_cycles_inputs_and_stamps_sent_ms() -> None:
    inputs = [torch.zeros(2), torch.ones(2), torch.full((2,), 2.0)]
    factory = RequestFactory("run", inputs, "pixels", clock_ms=lambda: 1_000.5)
    requests = [factory(n) for n in range(5)]
    assert [r.id for r in requests] == [f"run-{n}" for n in range(5)]
    assert [r.inputs["pixels"] for r in requests] == [inputs[n % 3] for n in range(5)]
    assert all(r.meta == {"sent_ms": 1_000.5} and r.deadline_ms is None for r in requests)


def test_request_factory_deadline_is_relative_to_when_the_request_is_built() -> None:
    now = iter([5_000.7, 9_000.2])
    factory = RequestFactory("p", [torch.zeros(1)], deadline_ms=250, clock_ms=lambda: next(now))
    assert [factory(0).deadline_ms, factory(1).deadline_ms] == [5_250, 9_250]


def test_request_factory_needs_an_input() -> None:
    with pytest.raises(ValueError, match="at least one input"):
        RequestFactory("p", [])


def image_bytes(fmt: str, size: tuple[int, int] = (4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, format=fmt)
    return buffer.getvalue()


def test_image_inputs_reads_jpeg_and_png_files_by_name_and_skips_others(tmp_path: Path) -> None:
    (tmp_path / "b.PNG").write_bytes(image_bytes("PNG"))
    (tmp_path / "a.jpg").write_bytes(image_bytes("JPEG", (5, 6)))
    (tmp_path / "notes.txt").write_text("not an image")
    images = image_inputs(tmp_path)
    assert all(isinstance(image, EncodedImage) for image in images)
    assert [(i.format, i.width, i.height) for i in images if isinstance(i, EncodedImage)] == [
        ("jpeg", 5, 6),
        ("png", 4, 3),
    ]


def test_image_inputs_says_which_file_or_folder_is_unusable(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no \.jpg, \.jpeg or \.png files"):
        image_inputs(tmp_path)
    with pytest.raises(ValueError, match="is not a folder"):
        image_inputs(tmp_path / "missing")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(ValueError, match=r"broken\.png"):
        image_inputs(tmp_path)


def test_produce_requests_sends_count_requests_keyed_by_id() -> None:
    producer = FakeProducer(capacity=3)
    sender = RequestSender(producer, "requests")  # type: ignore[arg-type]
    factory = RequestFactory("job", [torch.arange(4, dtype=torch.int32)])
    elapsed_s = produce_requests(sender, factory, 10, progress=False)
    assert elapsed_s >= 0
    assert sender.stats.delivered == 10
    requests = [decode_request(value) for _, _, value in producer.delivered]
    assert [key for _, key, _ in producer.delivered] == [r.id.encode() for r in requests]
    assert [r.id for r in requests] == [f"job-{n}" for n in range(10)]
    tensors = [r.inputs["x"] for r in requests]
    assert all(isinstance(t, torch.Tensor) and t.tolist() == [0, 1, 2, 3] for t in tensors)
    assert all(isinstance(r.meta["sent_ms"], float) for r in requests)
