"""Robust image decoding: every odd file a real dataset holds becomes RGB uint8 or an InputError.

Why not ``cv2.imread``: it returns ``None`` without a reason, ignores EXIF orientation and
silently decodes truncated JPEGs with grey bottoms. PIL tells us what went wrong.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from auditors.safe_io import MAX_IMAGE_BYTES, UnsafeFile, read_regular_file
from auditors.errors import InputError

__all__ = ["load_rgb", "content_hash", "MAX_PIXELS"]

# Refuse decompression bombs explicitly instead of relying on PIL's warning.
MAX_PIXELS = 250_000_000
ImageFile.LOAD_TRUNCATED_IMAGES = False


def content_hash(data: bytes) -> str:
    """Stable key of an image's bytes (used by the text-region cache)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode (L, LA, P, RGBA, I;16, I, F, CMYK, 1) to an RGB uint8 array."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if img.mode.startswith("I;16"):
            lo, hi = 0.0, 65535.0
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        arr8 = np.clip((arr - lo) * scale, 0, 255).astype(np.uint8)
        return np.repeat(arr8[..., None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        # Composite on white: transparent posters are designed to be seen on a light page.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def load_rgb(path: Path | str, data: bytes | None = None) -> np.ndarray:
    """Decode ``path`` (or its already-read ``data``) to an HxWx3 RGB uint8 array.

    EXIF orientation is applied. Raises :class:`InputError` naming the file and the problem.
    """
    path = Path(path)
    if data is None:
        try:  # regular files only, never blocks (a FIFO would hang read_bytes forever)
            data = read_regular_file(path, MAX_IMAGE_BYTES)
        except UnsafeFile as exc:
            raise InputError(str(path), exc.reason) from None
    if len(data) == 0:
        raise InputError(str(path), "zero-byte file")
    import io

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > MAX_PIXELS:
                    raise InputError(str(path), f"image too large ({w}x{h} pixels > {MAX_PIXELS})")
                if w < 1 or h < 1:
                    raise InputError(str(path), f"empty image ({w}x{h})")
                img.load()
                img = ImageOps.exif_transpose(img)
                arr = _to_rgb_uint8(img)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(str(path), "not an image (unrecognised format)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InputError(str(path), f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc)
        if "truncated" in msg.lower() or isinstance(exc, EOFError):
            raise InputError(str(path), f"truncated or corrupt image data ({msg})") from None
        raise InputError(str(path), f"cannot decode image ({msg})") from None
    return arr
