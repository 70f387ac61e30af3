"""The demo's cached assets: posters on disk and two checkpoints, built once per seed and published atomically."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch

from auditors.demo.posters import (
    BADGE_CLASS, CACHE_VERSION, CLASSES, INPUT_SIZE, NORM_MEAN, NORM_STD, Poster, render_split,
)
from auditors.demo.training import _labels, _train_all, accuracy, preprocess

__all__ = ["DemoAssets", "prepare_demo", "demo_config"]


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
