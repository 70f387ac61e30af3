"""Background = the image minus its foreground; the foreground from user data or GrabCut.

With user masks or boxes the background is exact. Without them, GrabCut started from a
centred rectangle guesses the foreground: it is a *heuristic* (it assumes a centred subject
and a background unlike it), labelled as such in ``RegionBuilder.describe()``, and cached by
image content because it costs ~50 ms per image.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from auditors.config.schema import BackgroundRegionConfig
from auditors.errors import ConfigError
from auditors.regions.base import Region, RegionFailure
from auditors.regions.cache import RegionCache
from auditors.regions.manifest import ManifestRows
from auditors.regions.masks import MaskSource

__all__ = ["BackgroundProvider", "grabcut_foreground"]

_GRABCUT_VERSION = 1


def grabcut_foreground(img: np.ndarray, margin: float, iterations: int, max_side: int) -> np.ndarray:
    """Bool foreground mask (on a copy at most ``max_side`` px) from GrabCut on a centred rectangle.

    Deterministic: OpenCV's RNG is re-seeded for each image. Raises RegionFailure when the
    image is too small to leave any background outside the rectangle.
    """
    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    small = img if s == 1.0 else cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    mx, my = max(1, round(sw * margin)), max(1, round(sh * margin))
    if sw - 2 * mx < 1 or sh - 2 * my < 1:
        raise RegionFailure(f"image {w}x{h} is too small for GrabCut (needs at least 3x3 pixels)")
    mask = np.zeros((sh, sw), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    bgr = np.ascontiguousarray(small[:, :, ::-1])
    cv2.grabCut(bgr, mask, (mx, my, sw - 2 * mx, sh - 2 * my), bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


class BackgroundProvider:
    """Background regions for images; ``stats`` counts GrabCut runs and cache hits."""

    def __init__(self, cfg: BackgroundRegionConfig, root: Path, rows: Callable[[], ManifestRows], cache: RegionCache | None):
        self.cfg = cfg
        self.cache = cache
        self.source = None if cfg.source == "grabcut" else MaskSource("background", "regions.background", cfg, root, rows)
        self.stats = {"grabcut": 0, "cached": 0}

    @property
    def heuristic(self) -> bool:
        return self.cfg.source == "grabcut"

    def describe(self) -> dict[str, Any]:
        if self.source is not None:
            return {**self.source.describe(), "foreground": True}
        c = self.cfg
        return {
            "source": "grabcut",
            "heuristic": True,
            "from": f"OpenCV GrabCut from a centred rectangle (margin {c.grabcut_margin}, {c.grabcut_iterations} "
            f"iterations, at most {c.grabcut_max_side} px); a guess, not ground truth",
        }

    @property
    def settings_key(self) -> str:
        c = self.cfg
        s = {"provider": "grabcut", "v": _GRABCUT_VERSION, "cv2": cv2.__version__,
             "margin": c.grabcut_margin, "iterations": c.grabcut_iterations, "max_side": c.grabcut_max_side}
        return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:24]

    def regions(self, images: list[np.ndarray], paths: list[str], hashes: list[str]) -> list[Region]:
        """One background Region per image; a failure becomes ``Region.failed`` with the reason."""
        if self.source is not None:
            out = []
            for img, path in zip(images, paths, strict=True):
                try:
                    polys, mask = self.source.foreground(path, img.shape[:2])
                    out.append(Region("background", polygons=polys, scores=[1.0] * len(polys), mask=mask, complement=True))
                except RegionFailure as exc:
                    out.append(Region.failed("background", str(exc)))
                except ConfigError:
                    raise  # the config, not this image, is wrong
                except Exception as exc:  # an odd file must cost its image only
                    out.append(Region.failed("background", f"{type(exc).__name__}: {exc}"))
            return out
        return self._grabcut(images, hashes)

    def _grabcut(self, images: list[np.ndarray], hashes: list[str]) -> list[Region]:
        cached: dict[str, dict[str, Any]] = {}
        if self.cache is not None:
            try:
                cached = self.cache.get_many(hashes, self.settings_key)
            except Exception:  # the cache may cost work, never the run
                cached = {}
        masks: dict[str, np.ndarray | str] = {}
        for key, payload in cached.items():
            try:
                masks[key] = _decode_mask(payload)
                self.stats["cached"] += 1
            except (KeyError, ValueError, TypeError, cv2.error):
                pass
        fresh: dict[str, dict[str, Any]] = {}
        for img, key in zip(images, hashes, strict=True):
            if key in masks:
                continue
            c = self.cfg
            try:
                fg = grabcut_foreground(img, c.grabcut_margin, c.grabcut_iterations, c.grabcut_max_side)
            except RegionFailure as exc:
                masks[key] = str(exc)
                continue
            except cv2.error as exc:
                masks[key] = f"GrabCut failed ({str(exc).strip().splitlines()[-1]})"
                continue
            except Exception as exc:  # never the batch for one image
                masks[key] = f"GrabCut failed ({type(exc).__name__}: {exc})"
                continue
            self.stats["grabcut"] += 1
            masks[key] = fg
            fresh[key] = _encode_mask(fg)
        if fresh and self.cache is not None:
            try:
                self.cache.put_many(fresh, self.settings_key)
            except Exception:
                pass
        out = []
        for key in hashes:
            m = masks[key]
            out.append(Region.failed("background", m) if isinstance(m, str) else Region("background", mask=m, complement=True))
        return out


def _encode_mask(mask: np.ndarray) -> dict[str, Any]:
    ok, png = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    return {"mask_png": base64.b64encode(png.tobytes()).decode("ascii")}


def _decode_mask(payload: dict[str, Any]) -> np.ndarray:
    data = np.frombuffer(base64.b64decode(payload["mask_png"]), np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ValueError("undecodable mask")
    return img > 0
