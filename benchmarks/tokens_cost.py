"""Cost of "which text?": recognition on top of detection, and token grouping, per 1,000 images.

Usage:  .venv/bin/python benchmarks/tokens_cost.py [--images 60] [--repeats 3]

Measures on the demo posters (96x144) and on real scene-text photos at 512 px:
  detect        TextDetector with regions.text.read = false (the default)
  detect+read   TextDetector with read = true (EasyOCR's recogniser on every box)
and token grouping (string + visual fingerprints, class association) on a synthetic instance
table of 1,000 images x 10 instances. Numbers are medians of interleaved repeats in one process;
each pass runs without the region cache so both sides do their full work.

``--grouping-scale`` (issue 10) instead times visual grouping of 1,500 ... 12,000 jittered crops of one
real mark (the PARKING sign of scenetext01.jpg, every box edge moved by up to 3 px, brightness,
contrast, noise, 30-60% size, nothing read): tokens found (should be 1) and time per crop relative
to the smallest size in the same run (near-linear: ratios near 1).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditors.config.schema import TextRegionConfig  # noqa: E402
from auditors.data.decoding import load_rgb  # noqa: E402
from auditors.regions.text import TextDetector  # noqa: E402
from auditors.tokens.grouping import TokenSettings, assign_tokens, token_table  # noqa: E402

SCENETEXT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "scenetext"


def _demo_posters(n: int) -> list[np.ndarray]:
    from auditors.demo.assets import prepare_demo

    assets = prepare_demo()
    files = sorted(assets.audit_dir.rglob("*.png"))[:n]
    return [load_rgb(f) for f in files]


def _scenetext(n: int, side: int = 512) -> list[np.ndarray]:
    out = []
    for f in sorted(SCENETEXT.glob("*.*")):
        if f.suffix.lower() not in (".jpg", ".png"):
            continue
        img = load_rgb(f)
        scale = side / max(img.shape[:2])
        out.append(cv2.resize(img, (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale))), interpolation=cv2.INTER_AREA))
    return (out * (n // max(len(out), 1) + 1))[:n]


def _time_detector(images: list[np.ndarray], read: bool) -> tuple[float, int]:
    det = TextDetector(TextRegionConfig(read=read), cache=None)
    t = time.perf_counter()
    regions = det.detect(images, [f"bench-{i}-{read}" for i in range(len(images))])
    return time.perf_counter() - t, sum(len(r.polygons) for r in regions)


def _synthetic_instances(n_images: int = 1000, per_image: int = 10, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(300)]
    rows, images = [], []
    for i in range(n_images):
        cls = f"c{i % 5}"
        images.append((f"img{i}", cls, "ok"))
        for k in range(per_image):
            readable = rng.random() < 0.7
            fp = f"{int(rng.integers(0, 2**63)):016x}"
            rows.append((f"img{i}", k, str(rng.choice(words)) if readable else None, 0.9 if readable else 0.1, fp, float(rng.uniform(0.5, 4)), rng.random() * 0.1, rng.random() * 0.05))
    inst = pd.DataFrame(rows, columns=["path", "instance", "text", "text_conf", "fingerprint", "aspect", "mass", "area"])
    return inst, pd.DataFrame(images, columns=["path", "label", "cam_status"])


def _jittered_mark(n: int, seed: int = 1) -> pd.DataFrame:
    """The jittered crops of the real 'PARKING' sign the grouping test uses (one generator for both)."""
    from tests.tokens.test_visual_grouping import jittered_logo

    return jittered_logo(n, seed=seed)


def grouping_scale(sizes: tuple[int, ...] = (1500, 3000, 6000, 12000)) -> None:
    base = None
    for n in sizes:
        inst = _jittered_mark(n)
        t = time.perf_counter()
        tokens = assign_tokens(inst, TokenSettings())
        dt = time.perf_counter() - t
        per = dt / n
        base = base or per
        print(f"visual grouping: {n} jittered crops of one mark -> {tokens.nunique()} token(s) in {dt:.1f} s "
              f"({per * 1e3:.2f} ms/crop, {per / base:.2f}x the per-crop time at {sizes[0]})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--grouping-scale", action="store_true", help="only the visual-grouping scaling run")
    args = ap.parse_args()
    if args.grouping_scale:
        grouping_scale()
        return
    sets = {"demo posters 96x144": _demo_posters(args.images), "scene text 512px": _scenetext(args.images // 2)}
    for name, images in sets.items():
        _time_detector(images[:2], False), _time_detector(images[:2], True)  # warm-up: load both networks
        times = {False: [], True: []}
        boxes = {}
        for _ in range(args.repeats):
            for read in (False, True):
                dt, nb = _time_detector(images, read)
                times[read].append(dt)
                boxes[read] = nb
        det, both = statistics.median(times[False]), statistics.median(times[True])
        per_k = lambda s: s / len(images) * 1000  # noqa: E731
        print(f"{name}: {len(images)} images, {boxes[True]} boxes | detect {per_k(det):.0f} s/1k images | "
              f"detect+read {per_k(both):.0f} s/1k images | recognition adds {per_k(both - det):.0f} s/1k "
              f"({(both / det - 1) * 100:.0f}%)")
    inst, imgs = _synthetic_instances()
    t = time.perf_counter()
    inst["token"] = assign_tokens(inst, TokenSettings())
    table = token_table(inst, imgs, "label", TokenSettings())
    dt = time.perf_counter() - t
    print(f"token grouping + table: 1000 images x 10 instances -> {len(table)} tokens in {dt:.2f} s")


if __name__ == "__main__":
    main()
