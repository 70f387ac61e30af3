"""Every odd file a dataset holds either decodes to RGB uint8 or raises an InputError."""

import io

import numpy as np
import pytest
from PIL import Image

from auditors.errors import InputError
from auditors.data.decoding import load_rgb


def _save(img: Image.Image, path, fmt="PNG", **kw):
    img.save(path, format=fmt, **kw)
    return path


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)  # wide image, left half red
    arr[:, :20] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = _save(img, tmp_path / "rot.jpg", "JPEG", exif=exif, quality=95)
    out = load_rgb(path)
    assert out.shape == (40, 20, 3), "EXIF rotation should make the wide image tall"
    assert out[:20, :, 0].mean() > 200 and out[20:, :, 0].mean() < 60


@pytest.mark.parametrize(
    "mode, make",
    [
        ("L", lambda: Image.new("L", (8, 6), 128)),
        ("RGBA", lambda: Image.new("RGBA", (8, 6), (255, 0, 0, 0))),
        ("P", lambda: Image.new("RGB", (8, 6), (0, 255, 0)).convert("P")),
        ("I;16", lambda: Image.fromarray(np.full((6, 8), 65535, np.uint16))),
        ("1", lambda: Image.new("1", (8, 6), 1)),
    ],
)
def test_modes_become_rgb_uint8(tmp_path, mode, make):
    out = load_rgb(_save(make(), tmp_path / f"{mode.replace(';', '')}.png"))
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3)


def test_transparent_pixels_composite_on_white(tmp_path):
    out = load_rgb(_save(Image.new("RGBA", (4, 4), (255, 0, 0, 0)), tmp_path / "t.png"))
    assert (out == 255).all()


def test_sixteen_bit_keeps_its_range(tmp_path):
    arr = np.array([[0, 65535]], np.uint16)
    out = load_rgb(_save(Image.fromarray(arr), tmp_path / "16.png"))
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 255


def test_bad_files_raise_input_errors_naming_the_problem(tmp_path):
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image at all")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(buf, "JPEG")
    (tmp_path / "trunc.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    cases = {"zero.png": "zero-byte", "text.jpg": "not an image", "trunc.jpg": "truncated", "missing.png": "not found"}
    for name, reason in cases.items():
        with pytest.raises(InputError) as err:
            load_rgb(tmp_path / name)
        assert reason in err.value.reason and name in str(err.value)
