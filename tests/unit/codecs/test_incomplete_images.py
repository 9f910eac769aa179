"""Images that end early are rejected as invalid_image, cheaply, instead of run padded."""

import io

import pytest
from PIL import Image, ImageFile

from tests.support.pictures import declaring, picture, short_png, truncated_jpeg, truncated_png
from torchkafka.codecs import (
    DEFAULT_LIMITS,
    EncodedImage,
    ImageTooLarge,
    InvalidImage,
    Limits,
    Request,
    decode_image,
    decode_request,
    encode_request,
    encoded_image,
)
from torchkafka.codecs._image import MAX_PIXELS_PER_BYTE, image_from_wire

#: A JPEG of about 600 bytes whose header declares 4096x4096 pixels, and a PNG of about
#: 100 whose complete deflate stream holds one row of 4096x4096.
BOMBS = [
    ("jpeg", lambda: declaring(picture("jpeg", 16, 16, seed=1), 4096, 4096)),
    ("png", lambda: short_png(4096, 4096)),
]


@pytest.mark.parametrize("pad", [False, True], ids=["default", "pillow-told-to-pad"])
@pytest.mark.parametrize(
    ("fmt", "cut"),
    [("jpeg", truncated_jpeg), ("png", truncated_png)],
    ids=["jpeg-cut-mid-scan", "png-idat-cut"],
)
def test_a_file_cut_short_raises_whatever_pillow_is_told(
    monkeypatch: pytest.MonkeyPatch, fmt: str, cut, pad: bool
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pad)
    image = encoded_image(cut(picture(fmt, 64, 48, seed=2)))
    with pytest.raises(InvalidImage, match="truncated") as raised:
        decode_image(image)
    assert raised.value.reason == "invalid_image"


@pytest.mark.parametrize(("fmt", "bomb"), BOMBS, ids=[fmt for fmt, _ in BOMBS])
def test_a_file_too_short_for_its_pixels_fails_before_pillow_decodes(
    monkeypatch: pytest.MonkeyPatch, fmt: str, bomb
) -> None:
    data = bomb()
    assert len(data) < 1000
    image = EncodedImage(fmt, data, 4096, 4096)

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("Pillow was asked to decode the bomb")

    monkeypatch.setattr(Image, "open", never)
    with pytest.raises(InvalidImage, match=r"4096x4096 pixels .* ends early") as raised:
        decode_image(image)
    assert raised.value.reason == "invalid_image"


@pytest.mark.parametrize(("fmt", "bomb"), BOMBS, ids=[fmt for fmt, _ in BOMBS])
def test_the_gate_rejects_a_file_too_short_for_its_pixels(fmt: str, bomb) -> None:
    request = Request(id="bomb", inputs={"x": EncodedImage(fmt, bomb(), 4096, 4096)})
    with pytest.raises(InvalidImage, match=r"^\$\.inputs\['x'\]\.data: 4096x4096 .* ends early"):
        decode_request(encode_request(request))


def test_a_header_over_the_pixel_limit_is_too_large_however_short_the_file() -> None:
    jpeg = picture("jpeg", 16, 16, seed=1)
    huge = declaring(jpeg, 20000, 20000)
    with pytest.raises(ImageTooLarge):
        image_from_wire({"format": "jpeg", "data": huge}, DEFAULT_LIMITS)
    with pytest.raises(InvalidImage, match=r"20000x20000 pixels .* ends early"):
        decode_image(EncodedImage("jpeg", huge, 20000, 20000))
    within = declaring(jpeg, 9000, 9000)  # over the default limit, under a raised one
    with pytest.raises(InvalidImage, match="ends early"):
        image_from_wire({"format": "jpeg", "data": within}, Limits(max_image_pixels=1 << 27))


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


@pytest.mark.parametrize(
    ("fmt", "image", "options"),
    [
        ("png", Image.new("1", (2048, 2048), 1), {"optimize": True}),
        ("png", Image.new("L", (2048, 2048), 7), {"compress_level": 9}),
        ("jpeg", Image.new("L", (2048, 2048), 128), {"progressive": True, "optimize": True}),
        ("jpeg", Image.new("RGB", (2048, 2048), (9, 9, 9)), {"optimize": True, "quality": 1}),
    ],
    ids=["png-1-bit-flat", "png-grey-flat", "jpeg-grey-progressive-flat", "jpeg-rgb-flat"],
)
def test_the_most_compressible_honest_files_pass(
    fmt: str, image: Image.Image, options: dict[str, object]
) -> None:
    data = save(image, fmt, **options)
    assert 2048 * 2048 / len(data) < MAX_PIXELS_PER_BYTE[fmt] / 2, "the bound has a 2x margin"
    decoded = image_from_wire({"format": fmt, "data": data}, DEFAULT_LIMITS)
    assert decode_image(decoded).shape == (3, 2048, 2048)
