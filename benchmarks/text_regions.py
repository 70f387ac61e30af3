"""Text-region throughput on real scene-text photos: EasyOCR readtext vs camaudit's provider.

    .venv/bin/python benchmarks/text_regions.py [--repeats 3] [--canvas 1024] [--out FILE]

Cases: the 17 photos of tests/fixtures/scenetext at longest side 224, 512 and original size
(51 images). Baseline: ``easyocr.Reader.readtext`` with its defaults, one image at a time
(what a script would do). camaudit: :class:`TextDetector` (detection only, capped canvas,
same-size canvases batched, threads fixed), fed chunks of 32 images like the pipeline.

Reported: images/s of each (median over interleaved repeats: the machine is shared), box
recall of camaudit against the baseline (a baseline box is found when a camaudit box
overlaps it with IoU >= 0.5), and a warm-cache pass against a cold one.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from auditors.config.schema import TextRegionConfig  # noqa: E402
from auditors.data.geometry import polygons_to_mask  # noqa: E402
from auditors.data.decoding import load_rgb  # noqa: E402
from auditors.regions.cache import RegionCache  # noqa: E402
from auditors.regions.text import TextDetector  # noqa: E402

SCENETEXT = ROOT / "tests" / "fixtures" / "scenetext"
SIZES = (224, 512, None)
THREADS = 2
CHUNK = 32


def load_cases(folder: Path) -> list[tuple[str, np.ndarray]]:
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in (".jpg", ".png"))
    cases = []
    for size in SIZES:
        for f in files:
            img = load_rgb(f)
            if size is not None:
                s = size / max(img.shape[:2])
                interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
                img = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))), interpolation=interp)
            cases.append((f"{f.name}@{size or 'orig'}", np.ascontiguousarray(img)))
    return cases


def baseline_pass(reader, cases) -> tuple[float, list[list[np.ndarray]]]:
    boxes = []
    t0 = time.perf_counter()
    for _, img in cases:
        res = reader.readtext(img)
        boxes.append([np.asarray(r[0], np.float64).reshape(-1, 2) for r in res])
    return time.perf_counter() - t0, boxes


def detect_pass(reader, cases, canvas: int) -> float:
    """Ablation: EasyOCR's own detection only, at camaudit's canvas, one image at a time."""
    t0 = time.perf_counter()
    for _, img in cases:
        reader.detect(img, canvas_size=canvas)
    return time.perf_counter() - t0


def camaudit_pass(cfg: TextRegionConfig, cases, cache: RegionCache | None, keys) -> tuple[float, list[list[np.ndarray]], dict]:
    det = TextDetector(cfg, cache)
    det.settings_key  # weights hash is memoised per process: not part of the per-image cost
    polys = []
    t0 = time.perf_counter()
    for start in range(0, len(cases), CHUNK):
        part = cases[start : start + CHUNK]
        regions = det.detect([img for _, img in part], keys[start : start + CHUNK])
        polys += [r.polygons for r in regions]
    return time.perf_counter() - t0, polys, dict(det.stats)


def iou(a: np.ndarray, b: np.ndarray, hw: tuple[int, int]) -> float:
    """Polygon IoU, rasterised on the bounding window of both (exact enough at pixel scale)."""
    pts = np.vstack([a, b])
    x0, y0 = np.floor(pts.min(0)).astype(int) - 1
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
    size = (y1 - y0, x1 - x0)
    ma = polygons_to_mask([a - [x0, y0]], size)
    mb = polygons_to_mask([b - [x0, y0]], size)
    union = (ma | mb).sum()
    return float((ma & mb).sum() / union) if union else 0.0


def recall(base: list[list[np.ndarray]], ours: list[list[np.ndarray]], cases) -> tuple[int, int, int, int]:
    """(baseline boxes found, baseline boxes, camaudit boxes matching a baseline box, camaudit boxes)."""
    found = total = matched = n_ours = 0
    for bs, os_, (_, img) in zip(base, ours, cases, strict=True):
        hw = img.shape[:2]
        total += len(bs)
        n_ours += len(os_)
        found += sum(any(iou(b, o, hw) >= 0.5 for o in os_) for b in bs)
        matched += sum(any(iou(b, o, hw) >= 0.5 for b in bs) for o in os_)
    return found, total, matched, n_ours


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--canvas", type=int, default=1024)
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--data", type=Path, default=SCENETEXT)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "text_regions_cpu.txt")
    args = ap.parse_args()

    torch.set_num_threads(THREADS)
    cases = load_cases(args.data)
    keys = [f"bench-{i}" for i in range(len(cases))]
    cfg = TextRegionConfig(canvas_size=args.canvas, threads=THREADS, precision=args.precision)
    from easyocr import Reader  # the baseline: a plain Reader with detector + recogniser, defaults

    import easyocr_en_models

    baseline = Reader(["en"], gpu=False, model_storage_directory=easyocr_en_models.model_dir(),
                      user_network_directory=tempfile.mkdtemp(), download_enabled=False, verbose=False)
    # Warm-up (first calls allocate, load and pick kernels): not timed.
    baseline.readtext(cases[0][1])
    camaudit_pass(cfg, cases[:2], None, keys[:2])

    base_t, det_t, ours_t, cold_t, warm_t = [], [], [], [], []
    base_boxes = our_boxes = None
    stats = {}
    for rep in range(args.repeats):
        t, base_boxes = baseline_pass(baseline, cases)
        base_t.append(t)
        det_t.append(detect_pass(baseline, cases, cfg.canvas_size))
        t, our_boxes, _ = camaudit_pass(cfg, cases, None, keys)
        ours_t.append(t)
        with tempfile.TemporaryDirectory() as tmp:
            cache = RegionCache(Path(tmp) / "regions.sqlite")
            t, _, _ = camaudit_pass(cfg, cases, cache, keys)
            cold_t.append(t)
            t, warm_boxes, stats = camaudit_pass(cfg, cases, RegionCache(Path(tmp) / "regions.sqlite"), keys)
            warm_t.append(t)
            assert stats["cached"] == len(cases) and stats["detected"] == 0, stats
        print(f"repeat {rep + 1}: baseline {base_t[-1]:.1f} s, easyocr detect {det_t[-1]:.1f} s, camaudit {ours_t[-1]:.1f} s, "
              f"cold+cache {cold_t[-1]:.1f} s, warm {warm_t[-1] * 1000:.1f} ms", flush=True)

    n = len(cases)
    found, total, matched, n_ours = recall(base_boxes, our_boxes, cases)
    per_size = []
    for k, size in enumerate(SIZES):
        sl = slice(k * n // len(SIZES), (k + 1) * n // len(SIZES))
        f, t, _, _ = recall(base_boxes[sl], our_boxes[sl], cases[sl])
        per_size.append(f"{size or 'original'}: {f}/{t}")
    b, d, o, c, w = (statistics.median(x) for x in (base_t, det_t, ours_t, cold_t, warm_t))
    lines = [
        "camaudit text regions benchmark (CPU)",
        f"machine: {platform.processor() or platform.machine()}, torch threads {THREADS}, torch {torch.__version__}, "
        f"{args.repeats} interleaved repeats, medians",
        f"cases: {n} = {n // len(SIZES)} scene-text photos x longest side 224, 512, original ({args.data})",
        f"baseline: easyocr.Reader.readtext defaults (canvas 2560, detection + recognition), one image at a time",
        f"camaudit: TextDetector detection only, canvas_size={cfg.canvas_size}, precision={TextDetector(cfg).precision}, "
        f"batch_size={cfg.batch_size}, chunks of {CHUNK}, min_score={cfg.min_score}, min_size={cfg.min_size}",
        "",
        f"{'':28s}{'total s':>10s}{'images/s':>10s}",
        f"{'baseline readtext':28s}{b:10.2f}{n / b:10.2f}",
        f"{'easyocr detect, same canvas':28s}{d:10.2f}{n / d:10.2f}   (ablation: no recognition, canvas {cfg.canvas_size}, unbatched fp32)",
        f"{'camaudit (no cache)':28s}{o:10.2f}{n / o:10.2f}",
        f"{'camaudit cold (fills cache)':28s}{c:10.2f}{n / c:10.2f}",
        f"{'camaudit warm cache':28s}{w:10.4f}{n / w:10.1f}",
        "",
        f"speed-up vs baseline: {b / o:.2f}x (goal >= 3x); of which recognition + canvas cap {b / d:.2f}x, "
        f"camaudit's driver (batched, BN folded, channels-last, {TextDetector(cfg).precision}) {d / o:.2f}x",
        f"box recall vs baseline (IoU >= 0.5): {found}/{total} = {found / max(total, 1):.3f} (goal >= 0.95); "
        f"by size {', '.join(per_size)}",
        f"camaudit boxes matching a baseline box: {matched}/{n_ours}",
        f"warm cache vs cold: {c / w:.0f}x faster (goal >= 50x)",
        f"all runs (s): baseline {[round(x, 2) for x in base_t]}, easyocr detect {[round(x, 2) for x in det_t]}, camaudit {[round(x, 2) for x in ours_t]}, "
        f"cold {[round(x, 2) for x in cold_t]}, warm {[round(x, 4) for x in warm_t]}",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
