"""Calibration data: rows from a .pt tensor or a folder of equal-sized images."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.support import tiny_models
from torchkafka.worker._errors import StartupError
from torchkafka.worker.model import load_calibration


def write_image(path: Path, width: int, height: int, seed: int) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def test_tensor_file_rows(tmp_path) -> None:
    data = torch.randn(5, 3, 4)
    torch.save(data, tmp_path / "calibration.pt")
    rows = load_calibration(tmp_path / "calibration.pt")
    assert len(rows) == 5
    assert all(torch.equal(row, data[i]) for i, row in enumerate(rows))


def test_image_folder_rows_in_name_order(tmp_path) -> None:
    second = write_image(tmp_path / "b.png", 6, 4, seed=2)
    first = write_image(tmp_path / "a.png", 6, 4, seed=1)
    write_image(tmp_path / "c.JPG", 6, 4, seed=3)
    (tmp_path / "notes.txt").write_text("not an image")
    rows = load_calibration(tmp_path)
    assert [row.shape for row in rows] == [(3, 4, 6)] * 3
    assert all(row.dtype == torch.uint8 for row in rows)
    assert torch.equal(rows[0], torch.from_numpy(first).permute(2, 0, 1))  # PNG is lossless
    assert torch.equal(rows[1], torch.from_numpy(second).permute(2, 0, 1))


def test_images_of_different_sizes(tmp_path) -> None:
    write_image(tmp_path / "a.png", 6, 4, seed=1)
    write_image(tmp_path / "b.png", 5, 4, seed=2)
    with pytest.raises(StartupError, match=r"differ in size \(\[3, 4, 6\] and \[3, 4, 5\]"):
        load_calibration(tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("data.pt", {"rows": torch.zeros(2)}, "must hold one tensor \\[N, ...\\], not dict"),
        ("data.pt", torch.tensor(1.0), "not a 0-d tensor"),
        ("data.pt", torch.zeros(0, 3), "holds no inputs"),
        ("data.pt", tiny_models.Payload(), r"cannot load calibration tensor .*weights_only=True"),
        ("data.npy", torch.zeros(2), r"neither a \.pt file nor a folder"),
    ],
)
def test_bad_tensor_files(tmp_path, name, content, message) -> None:
    torch.save(content, tmp_path / name)
    with pytest.raises(StartupError, match=message):
        load_calibration(tmp_path / name)
    assert tiny_models.UNPICKLED == []


def test_bad_folders(tmp_path) -> None:
    with pytest.raises(StartupError, match="holds no inputs"):
        load_calibration(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(StartupError, match=r"cannot read calibration image .*broken\.png"):
        load_calibration(tmp_path)


def test_missing_path(tmp_path) -> None:
    with pytest.raises(StartupError, match=r"neither a \.pt file nor a folder"):
        load_calibration(tmp_path / "absent.pt")
