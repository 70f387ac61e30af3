"""The embedded demo: a seeded synthetic movie-poster dataset and two small CNNs trained on it.

Why: ``camaudit demo`` must show, offline and in minutes on a laptop CPU, what the audit is
for. The posters carry genre cues (palette and shapes, deliberately noisy), a random title
word on every poster, and a small "NEW" badge. In the *biased* split the badge almost always
comes with one genre (the badge class); in the *control* split it is independent of the label.
A model trained on the biased split takes the shortcut and looks at the badge; the control
model has no reason to read text. Auditing both on data drawn like the biased training set
shows the difference as text lift.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch import nn

from auditors.geometry import placement_for, warp_image
from auditors.threads import torch_threads

__all__ = [
    "CLASSES",
    "BADGE_CLASS",
    "INPUT_SIZE",
    "POSTER_SIZE",
    "NORM_MEAN",
    "NORM_STD",
    "BADGE_WORD",
    "DemoAssets",
    "Poster",
    "build_demo_cnn",
    "prepare_demo",
    "demo_config",
    "render_poster",
    "render_split",
    "badge_rate",
    "preprocess",
    "init_model",
    "train_model",
]

CLASSES: list[str] = ["comedy", "drama", "horror"]
BADGE_CLASS: str = "horror"
INPUT_SIZE: tuple[int, int] = (128, 128)  # (H, W) the model sees; posters are stretched to it
POSTER_SIZE: tuple[int, int] = (144, 96)  # (H, W) of the saved originals
NORM_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
NORM_STD: tuple[float, float, float] = (0.25, 0.25, 0.25)

CACHE_VERSION = "v1"
BADGE_WORD = "NEW"
#: P(badge | class) in the biased split (badge class, other classes) and in the control split.
BIASED_BADGE_RATE: tuple[float, float] = (0.95, 0.05)
CONTROL_BADGE_RATE: float = 0.35
#: Share of posters whose palette/shapes come from a random genre (so ~20% look like another
#: genre): the honest cue then tops out near 80% accuracy while the badge alone tells the badge
#: class apart at ~95% in the biased split, which is what makes the shortcut worth taking.
CUE_NOISE: float = 0.3

TITLE_WORDS: tuple[str, ...] = (
    "NIGHT", "RIVER", "STORM", "GOLD", "HOME", "STONE", "WINTER", "SUMMER", "GHOST", "HEART",
    "CITY", "OCEAN", "FIRE", "DREAM", "SHADOW", "LIGHT", "ROAD", "FOREST", "SILENCE", "ECHO",
    "MIRROR", "GARDEN", "TRAIN", "ISLAND", "SECRET", "FAMILY", "PARTY", "WEDDING", "WOLF", "MOON",
)

Split = Literal["biased", "control"]

# --------------------------------------------------------------------------------------------
# Poster rendering
# --------------------------------------------------------------------------------------------

#: genre -> (two background colours RGB, shape colour RGB); jittered per poster.
_PALETTES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]] = {
    "comedy": ((250, 200, 60), (240, 120, 40), (60, 170, 230)),
    "drama": ((70, 90, 140), (150, 160, 180), (120, 210, 200)),
    "horror": ((60, 10, 20), (10, 10, 10), (170, 20, 30)),
}


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int = 35) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)  # type: ignore[return-value]


def _background(rng: np.random.Generator, style: str, h: int, w: int) -> np.ndarray:
    """Vertical gradient between the style's two colours: a global, position-free genre cue."""
    top, bottom, _ = _PALETTES[style]
    top, bottom = np.array(_jitter(rng, top), np.float32), np.array(_jitter(rng, bottom), np.float32)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = top * (1 - t) + bottom * t
    return np.repeat(img, w, axis=1).clip(0, 255).astype(np.uint8)


def _draw_shapes(rng: np.random.Generator, img: np.ndarray, style: str) -> None:
    """Scatter the style's shapes (circles / bars / spikes) over the poster."""
    h, w = img.shape[:2]
    colour = _jitter(rng, _PALETTES[style][2], 40)
    for _ in range(int(rng.integers(3, 7))):
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        if style == "comedy":
            cv2.circle(img, (cx, cy), int(rng.integers(6, 16)), colour, -1, cv2.LINE_AA)
        elif style == "drama":
            bw, bh = int(rng.integers(20, 50)), int(rng.integers(3, 7))
            cv2.rectangle(img, (cx, cy), (cx + bw, cy + bh), colour, -1)
        else:
            s = int(rng.integers(8, 18))
            pts = np.array([[cx, cy - s], [cx - s // 2, cy + s], [cx + s // 2, cy + s]], np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)


def _text_size(text: str, font: int, scale: float, thickness: int) -> tuple[int, int, int]:
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    return tw, th, base


def _draw_title(rng: np.random.Generator, img: np.ndarray) -> tuple[int, int, int, int]:
    """A random word on a neutral plate (black-on-white or white-on-black, genre-independent).

    Returns the plate box (x0, y0, x1, y1). The plate keeps the title legible for OCR on any
    background and carries no genre colour, so a model has no honest reason to look at it.
    """
    h, w = img.shape[:2]
    word = TITLE_WORDS[int(rng.integers(len(TITLE_WORDS)))]
    font = cv2.FONT_HERSHEY_DUPLEX
    scale, thick = 0.45, 1
    tw, th, base = _text_size(word, font, scale, thick)
    while tw > w - 12:
        scale -= 0.05
        tw, th, base = _text_size(word, font, scale, thick)
    pad = 3
    x0 = int(rng.integers(4, max(5, w - tw - 2 * pad - 4)))
    y0 = int(rng.integers(int(h * 0.45), h - th - base - 2 * pad - 4))
    x1, y1 = x0 + tw + 2 * pad, y0 + th + base + 2 * pad
    dark_on_light = bool(rng.integers(2))
    plate, ink = ((240, 240, 235), (15, 15, 15)) if dark_on_light else ((15, 15, 20), (245, 245, 245))
    cv2.rectangle(img, (x0, y0), (x1, y1), plate, -1)
    cv2.putText(img, word, (x0 + pad, y0 + pad + th), font, scale, ink, thick, cv2.LINE_AA)
    return x0, y0, x1, y1


def _draw_badge(rng: np.random.Generator, img: np.ndarray) -> tuple[int, int, int, int]:
    """The shortcut: a bright green "NEW" tag in the top-right corner. Returns its box."""
    h, w = img.shape[:2]
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    tw, th, base = _text_size(BADGE_WORD, font, scale, thick)
    pad = 3
    bw, bh = tw + 2 * pad, th + base + 2 * pad
    # Inset past the audit's default 5% border frame, so the badge reads as text, not border.
    x1 = w - 8 - int(rng.integers(0, 3))
    y0 = 9 + int(rng.integers(0, 3))
    x0, y1 = x1 - bw, y0 + bh
    cv2.rectangle(img, (x0, y0), (x1, y1), (60, 230, 90), -1)
    cv2.putText(img, BADGE_WORD, (x0 + pad, y0 + pad + th), font, scale, (10, 10, 10), thick, cv2.LINE_AA)
    return x0, y0, x1, y1


@dataclass(frozen=True)
class Poster:
    """A rendered poster with its ground truth (boxes are x0, y0, x1, y1 in poster pixels)."""

    image: np.ndarray  # RGB uint8, POSTER_SIZE
    label: int
    badge: bool
    badge_box: tuple[int, int, int, int] | None
    title_box: tuple[int, int, int, int]


def render_poster(rng: np.random.Generator, label: int, badge: bool) -> Poster:
    """One poster of genre ``label``; with P=CUE_NOISE its visual style is a random genre's."""
    h, w = POSTER_SIZE
    style_idx = int(rng.integers(len(CLASSES))) if rng.random() < CUE_NOISE else label
    style = CLASSES[style_idx]
    img = _background(rng, style, h, w)
    _draw_shapes(rng, img, style)
    title_box = _draw_title(rng, img)
    badge_box = _draw_badge(rng, img) if badge else None
    return Poster(img, label, badge, badge_box, title_box)


def badge_rate(split: Split, label: int) -> float:
    """P(badge | genre) in a split: tied to the badge class when biased, flat in the control."""
    if split == "control":
        return CONTROL_BADGE_RATE
    return BIASED_BADGE_RATE[0] if CLASSES[label] == BADGE_CLASS else BIASED_BADGE_RATE[1]


def render_split(rng: np.random.Generator, split: Split, n_per_class: int) -> list[Poster]:
    """``n_per_class`` posters per genre; exactly round(rate * n) of each genre carry the badge.

    Exact counts (randomly placed) rather than coin flips keep the control split's badge
    truly independent of the label even for small ``n``.
    """
    posters = []
    for label in range(len(CLASSES)):
        n_badge = round(badge_rate(split, label) * n_per_class)
        flags = rng.permutation(np.arange(n_per_class) < n_badge)
        posters.extend(render_poster(rng, label, bool(flag)) for flag in flags)
    return posters


# --------------------------------------------------------------------------------------------
# Model and preprocessing
# --------------------------------------------------------------------------------------------


def build_demo_cnn(num_classes: int = len(CLASSES)) -> nn.Module:
    """Four conv blocks (128 px -> 16x16 map) -> global average pool -> linear.

    The last block's output (module ``0``, the ``features`` stack) is what CAM auto-detection
    picks; 16x16 keeps the badge (about a third of the width, an eighth of the height)
    resolvable in the heatmap. Narrow widths keep a CPU training run to seconds.
    """

    def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    features = nn.Sequential(*block(3, 8, 2), *block(8, 16, 2), *block(16, 32, 2), *block(32, 48, 1))
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, num_classes))


def preprocess(images: list[np.ndarray]) -> torch.Tensor:
    """RGB uint8 posters -> normalised NCHW float, exactly as the audit pipeline does it."""
    batch = np.stack([warp_image(img, placement_for(img.shape[:2], INPUT_SIZE, "stretch")) for img in images])
    x = torch.from_numpy(batch).float().div_(255.0)
    x = (x - torch.tensor(NORM_MEAN)) / torch.tensor(NORM_STD)
    return x.permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------

EPOCHS = 12
BATCH_SIZE = 32
LEARNING_RATE = 3e-3


def _labels(posters: list[Poster]) -> torch.Tensor:
    return torch.tensor([p.label for p in posters], dtype=torch.long)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in eval mode, in chunks to bound memory."""
    model.eval()
    correct = sum(int((model(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(256), y.split(256)))
    return correct / max(1, len(y))


def init_model(seed: int) -> nn.Module:
    """Seeded initial weights. Uses torch's global RNG, so call it from one thread at a time."""
    torch.manual_seed(seed)
    return build_demo_cnn(len(CLASSES))


def train_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int | None = None) -> nn.Module:
    """AdamW + one-cycle schedule on in-memory tensors.

    Only a private generator is used (for shuffling), never the global RNG, so two models can
    train in parallel threads and still get the same weights on every run.
    """
    epochs = EPOCHS if epochs is None else epochs
    opt = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=1e-4)
    steps = epochs * ((len(y) + BATCH_SIZE - 1) // BATCH_SIZE)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LEARNING_RATE, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(BATCH_SIZE):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def _train_all(jobs: dict[str, tuple[torch.Tensor, torch.Tensor]], seed: int) -> dict[str, tuple[nn.Module, float]]:
    """Train one model per job, in parallel threads with one intra-op thread each.

    Why not one model at a time with all cores: these convolutions are too small to scale
    across cores, and on a busy machine torch's multi-threaded kernels spin-wait (measured
    here: 2 threads 10x slower than 1 under load). One thread per model is robust and uses
    both cores. Returns name -> (trained model, seconds).
    """
    models = {name: init_model(seed) for name in jobs}  # main thread: deterministic init

    def run(name: str) -> tuple[nn.Module, float]:
        torch.set_num_threads(1)  # intra-op setting is per thread with OpenMP
        t0 = time.perf_counter()
        return train_model(models[name], *jobs[name], seed=seed), time.perf_counter() - t0

    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    with torch_threads(1), ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-train") as pool:
        futures = {name: pool.submit(run, name) for name in jobs}
        return {name: f.result() for name, f in futures.items()}


# --------------------------------------------------------------------------------------------
# Cached assets
# --------------------------------------------------------------------------------------------


@dataclass
class DemoAssets:
    """Everything ``camaudit demo`` audits: the poster folder and the two checkpoints."""

    root: Path
    audit_dir: Path
    shortcut_checkpoint: Path
    control_checkpoint: Path
    classes: list[str] = field(default_factory=lambda: list(CLASSES))
    badge_class: str = BADGE_CLASS
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path) -> DemoAssets:
        """Assets of a finished cache folder (one holding the DONE marker)."""
        meta = json.loads((root / "metrics.json").read_text())
        return cls(
            root=root,
            audit_dir=root / "audit",
            shortcut_checkpoint=root / "shortcut.pt",
            control_checkpoint=root / "control.pt",
            classes=list(meta["classes"]),
            badge_class=meta["badge_class"],
            metrics=meta,
        )


def _default_cache_dir(seed: int, n_train_per_class: int, n_audit_per_class: int) -> Path:
    from platformdirs import user_cache_dir

    name = f"{CACHE_VERSION}-seed{seed}-train{n_train_per_class}-audit{n_audit_per_class}"
    return Path(user_cache_dir("camaudit")) / "demo" / name


def _write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def save_audit_set(posters: list[Poster], audit_dir: Path) -> None:
    """ImageFolder layout: audit_dir/<class>/<class>_<i>.png."""
    counters = {c: 0 for c in CLASSES}
    for c in CLASSES:
        (audit_dir / c).mkdir(parents=True, exist_ok=True)
    for p in posters:
        c = CLASSES[p.label]
        _write_png(audit_dir / c / f"{c}_{counters[c]:04d}.png", p.image)
        counters[c] += 1


def _badge_rates(posters: list[Poster]) -> dict[str, float]:
    rates = {}
    for i, c in enumerate(CLASSES):
        flags = [p.badge for p in posters if p.label == i]
        rates[c] = round(sum(flags) / max(1, len(flags)), 4)
    return rates


def _build(tmp: Path, seed: int, n_train_per_class: int, n_audit_per_class: int) -> None:
    """Generate, train and write every file of the cache into ``tmp`` (DONE last)."""
    seeds = np.random.SeedSequence(seed).spawn(5)
    n_val = max(1, n_train_per_class // 4)
    t0 = time.perf_counter()
    biased = render_split(np.random.default_rng(seeds[0]), "biased", n_train_per_class)
    control = render_split(np.random.default_rng(seeds[1]), "control", n_train_per_class)
    val_biased = render_split(np.random.default_rng(seeds[2]), "biased", n_val)
    val_control = render_split(np.random.default_rng(seeds[3]), "control", n_val)
    audit = render_split(np.random.default_rng(seeds[4]), "biased", n_audit_per_class)
    save_audit_set(audit, tmp / "audit")
    timings = {"generate_s": time.perf_counter() - t0}

    x_audit, y_audit = preprocess([p.image for p in audit]), _labels(audit)
    splits = {"shortcut": (biased, val_biased), "control": (control, val_control)}
    jobs = {name: (preprocess([p.image for p in train]), _labels(train)) for name, (train, _) in splits.items()}
    t1 = time.perf_counter()
    trained = _train_all(jobs, seed)
    timings["train_total_s"] = time.perf_counter() - t1
    metrics: dict[str, Any] = {"models": {}}
    for name, (model, seconds) in trained.items():
        timings[f"train_{name}_s"] = seconds
        torch.save(model.state_dict(), tmp / f"{name}.pt")
        val = splits[name][1]
        metrics["models"][name] = {
            "train_accuracy": accuracy(model, *jobs[name]),
            "val_accuracy": accuracy(model, preprocess([p.image for p in val]), _labels(val)),
            "audit_accuracy": accuracy(model, x_audit, y_audit),
        }
    metrics.update(
        classes=list(CLASSES),
        badge_class=BADGE_CLASS,
        seed=seed,
        n_train_per_class=n_train_per_class,
        n_audit_per_class=n_audit_per_class,
        badge_rates={"shortcut_train": _badge_rates(biased), "control_train": _badge_rates(control), "audit": _badge_rates(audit)},
        timings={k: round(v, 3) for k, v in timings.items()},
    )
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (tmp / "DONE").write_text("ok\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (PermissionError), or a platform without signals
        return True
    return True


def _remove_stale_temps(root: Path) -> None:
    """Delete temp folders left by builds that were killed (their process is gone)."""
    for tmp in root.parent.glob(f".{root.name}.tmp-*"):
        pid = tmp.name.rsplit(".tmp-", 1)[-1].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, root: Path) -> None:
    """Move a finished build into place; losing a race to another finished build is fine."""
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()  # an empty folder (e.g. made by the caller) is ours to fill
    try:
        os.rename(tmp, root)
    except OSError:
        if not (root / "DONE").is_file():
            raise FileExistsError(f"demo cache folder {root} exists and is not a finished demo cache") from None


def prepare_demo(
    cache_dir: Path | None = None,
    seed: int = 0,
    n_train_per_class: int = 200,
    n_audit_per_class: int = 40,
) -> DemoAssets:
    """Return the demo assets, generating and training them on first use (~10 s on 2 cores).

    The cache is built in a temporary sibling folder whose DONE marker is written last, then
    renamed into place, so an interrupted run never leaves a half cache behind. A non-empty
    ``cache_dir`` without DONE is refused rather than deleted: it may be someone's data.
    """
    root = Path(cache_dir) if cache_dir is not None else _default_cache_dir(seed, n_train_per_class, n_audit_per_class)
    if (root / "DONE").is_file():
        return DemoAssets.load(root)
    if root.is_dir() and any(root.iterdir()):
        raise FileExistsError(f"demo cache folder {root} exists and is not a finished demo cache")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(root)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _build(tmp, seed, n_train_per_class, n_audit_per_class)
        _publish(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoAssets.load(root)


def demo_config(assets: DemoAssets, which: Literal["shortcut", "control"], out_dir: Path) -> dict[str, Any]:
    """Audit config for one of the two demo models (a plain dict, validated by the caller)."""
    if which not in ("shortcut", "control"):
        raise ValueError(f"which must be 'shortcut' or 'control', got {which!r}")
    ckpt = assets.shortcut_checkpoint if which == "shortcut" else assets.control_checkpoint
    return {
        "name": f"demo-{which}",
        "dataset": {"root": str(assets.audit_dir)},
        "model": {
            "factory": "auditors.demo:build_demo_cnn",
            "checkpoint": str(ckpt),
            "classes": list(assets.classes),
            "input_size": list(INPUT_SIZE),
            "mean": list(NORM_MEAN),
            "std": list(NORM_STD),
            "resize": "stretch",
        },
        "cam": {"method": "gradcam", "target": "predicted", "batch_size": 32, "device": "auto"},
        # Reading the text groups the badge by its word; the removal margin covers the badge's plate.
        "regions": {"text": {"enabled": True, "read": True}, "border": {"enabled": True, "width": 0.05}},
        "counterfactual": {"enabled": True, "margin": 4},
        "gate": {"max_text_lift": 2.0, "max_text_effect": 0.05},
        "output": {"dir": str(out_dir)},
    }
