"""Saved CAM maps (``output.save_cams``) as data in the per-image result store: float16 bytes,
base64 in JSON, a digest checked on read. No pickle, no ``np.load``: nothing read back runs code.

Why store them at all: a save_cams run must write every image's maps to cams.npz, and without
them in the store it had to recompute every image every night. The maps are small (target-layer
resolution, e.g. 7x7 for a resnet18 at 224 px: 98 bytes, ~200 as base64 JSON with the digest; k times
that for top-k, once more per ``cam.layers`` entry) next to an entry's 1.5-50 KB (row, regions, text
instances with their patches). They are stored
only by runs that save maps; a save_cams run that finds a row without them recomputes that image.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import numpy as np

__all__ = ["encode_maps", "decode_maps", "maps_ok"]

_DTYPE = np.dtype("<f2")


def _digest(raw: bytes, shape: list[int]) -> str:
    return hashlib.blake2b(repr(shape).encode() + b"|" + raw, digest_size=12).hexdigest()


def encode_maps(maps: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """member suffix -> ``{"shape", "f16", "digest"}`` (float16 little-endian, base64)."""
    out = {}
    for suffix, m in maps.items():
        a = np.ascontiguousarray(m, dtype=_DTYPE)
        raw = a.tobytes()
        shape = [int(d) for d in a.shape]
        out[suffix] = {"shape": shape, "f16": base64.b64encode(raw).decode("ascii"), "digest": _digest(raw, shape)}
    return out


def _decode_one(item: Any) -> np.ndarray | None:
    if not isinstance(item, dict) or item.keys() != {"shape", "f16", "digest"}:
        return None
    shape, text, digest = item["shape"], item["f16"], item["digest"]
    if not (isinstance(shape, list) and 2 <= len(shape) <= 3
            and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 16 for d in shape)):
        return None
    if not isinstance(text, str) or not isinstance(digest, str):
        return None
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    if len(raw) != int(np.prod(shape)) * _DTYPE.itemsize or _digest(raw, shape) != digest:
        return None
    a = np.frombuffer(raw, dtype=_DTYPE).reshape(shape).astype(np.float16)
    if not np.isfinite(a).all():  # saved maps are finite (scaled to max 1, NaN as 0)
        return None
    return a


def decode_maps(stored: Any, suffixes: set[str], k: int | None) -> dict[str, np.ndarray] | None:
    """The maps of one entry, or None when anything does not match: the member suffixes this run
    saves, the encoding, the digest, value range, and (top-k) ``k`` maps per member."""
    if not isinstance(stored, dict) or set(stored) != suffixes:
        return None
    out = {}
    for suffix, item in stored.items():
        a = _decode_one(item)
        if a is None or (a.ndim == 3) != (k is not None) or (k is not None and a.shape[0] != k):
            return None
        out[suffix] = a
    return out


def maps_ok(stored: Any, suffixes: set[str], k: int | None) -> bool:
    return decode_maps(stored, suffixes, k) is not None
