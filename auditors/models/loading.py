"""Model loading from the three supported sources, frozen and in eval mode on a chosen device.

A process-wide cache keeps one loaded model per (spec, device): chunk tasks in the same worker
process reuse it instead of unpickling weights for every chunk. The entry is keyed by the
weights' fingerprint too, so a checkpoint overwritten in place is reloaded, never served stale.
"""

from __future__ import annotations

import hashlib
import importlib
import threading
from pathlib import Path

import torch
from torch import nn

from auditors.config.schema import ModelConfig
from auditors.errors import ConfigError

__all__ = ["select_device", "load_model", "get_model", "model_fingerprint"]

_CACHE: dict[tuple[str, str], tuple[str, nn.Module]] = {}  # (spec, device) -> (fingerprint, model)
_LOCK = threading.Lock()
_DIGESTS: dict[str, tuple[tuple, bytes]] = {}  # path -> (stat stamp, sha256 of the file)


def select_device(spec: str = "auto") -> torch.device:
    """Resolve ``auto`` to CUDA when usable, else CPU; reject devices that are not there."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"cam.device: {spec!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"cam.device: {spec!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("cam.device: 'mps' requested but MPS is not available")
    return dev


def _build_from_factory(spec: str) -> nn.Module:
    if ":" not in spec:
        raise ConfigError(f"model.factory: expected 'module:callable', got {spec!r}")
    mod_name, fn_name = spec.split(":", 1)
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConfigError(f"model.factory: cannot import module {mod_name!r} ({exc})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"model.factory: {mod_name!r} has no callable {fn_name!r}")
    model = fn()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.factory: {spec} returned {type(model).__name__}, not an nn.Module")
    return model


def _build_from_arch(arch: str, num_classes: int | None) -> nn.Module:
    import torchvision  # here: about a second of start-up that factory and TorchScript models never need

    available = torchvision.models.list_models(module=torchvision.models)
    if arch not in available:
        raise ConfigError(f"model.arch: unknown torchvision model {arch!r} (e.g. {', '.join(sorted(available)[:6])}, ...)")
    kwargs = {"weights": None}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return torchvision.models.get_model(arch, **kwargs)


def _not_a_file(key: str, path: Path) -> ConfigError:
    """'not found' or, for a FIFO/device/directory, what it is instead (torch.load would block on a FIFO)."""
    if path.exists():
        from auditors.safe_io import file_kind

        return ConfigError(f"{key} {path}: not a regular file ({file_kind(path.stat().st_mode)})")
    return ConfigError(f"{key}: file not found: {path}")


def _one_line(exc: Exception) -> str:
    """torch's weights-only refusal spans a dozen lines; keep the one that says what was refused."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    pick = next((ln for ln in lines if "Unsupported global" in ln or "WeightsUnpickler error" in ln), lines[0] if lines else "")
    return (pick[:300] + "...") if len(pick) > 300 else pick or type(exc).__name__


def _load_state_dict(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise _not_a_file("model.checkpoint", path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, unsafe globals
        raise ConfigError(f"model.checkpoint {path}: cannot load as a weights-only state_dict ({_one_line(exc)})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"model.checkpoint {path}: expected a state_dict, got {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise ConfigError(f"model.checkpoint {path}: does not match the model ({' '.join(first)})") from None


def load_model(cfg: ModelConfig, device: torch.device) -> nn.Module:
    """Build or load the model, load weights, freeze parameters, eval mode, move to device."""
    if cfg.torchscript is not None:
        path = Path(cfg.torchscript)
        if not path.is_file():
            raise _not_a_file("model.torchscript", path)
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ConfigError(f"model.torchscript {path}: cannot load ({exc})") from None
    elif cfg.factory is not None:
        model = _build_from_factory(cfg.factory)
    else:
        model = _build_from_arch(cfg.arch, len(cfg.classes) if cfg.classes else None)
    if cfg.checkpoint is not None:
        _load_state_dict(model, Path(cfg.checkpoint))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device)


def get_model(cfg: ModelConfig, device: torch.device) -> nn.Module:
    """Process-wide cached :func:`load_model` (one copy per worker process and device).

    Keyed by the weights' fingerprint: when the files change, the model is loaded again and the
    old copy dropped (one entry per spec and device, however often a checkpoint is rewritten).
    """
    key = (cfg.model_dump_json(), str(device))
    fingerprint = model_fingerprint(cfg)
    with _LOCK:
        cached = _CACHE.get(key)
        if cached is None or cached[0] != fingerprint:
            _CACHE[key] = (fingerprint, load_model(cfg, device))
        return _CACHE[key][1]


def _file_digest(path: Path) -> bytes:
    """sha256 of a weight file, memoised per (inode, size, mtime, ctime).

    Every engine and model lookup asks for the fingerprint (a checkpoint rewritten in place must
    be reloaded); hashing 45 MB each time cost about 0.1 s per call. ``st_ctime_ns`` changes on
    any write or ``utime`` and cannot be set back, so a same-size rewrite with a restored mtime
    is still seen.
    """
    st = path.stat()
    stamp = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    with _LOCK:
        hit = _DIGESTS.get(stamp[0])
        if hit is not None and hit[0] == stamp:
            return hit[1]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    with _LOCK:
        _DIGESTS[stamp[0]] = (stamp, h.digest())
    return h.digest()


def model_fingerprint(cfg: ModelConfig) -> str:
    """Hash of the model spec and weight-file contents: part of the chunk cache key."""
    h = hashlib.sha256(cfg.model_dump_json().encode())
    for p in (cfg.checkpoint, cfg.torchscript):
        if p is not None and Path(p).is_file():
            h.update(_file_digest(Path(p)))
    return h.hexdigest()[:32]
