"""Cost of the CAM variants against one layer / the predicted target, in ONE run.

Variants (resnet18, random weights): the engine's default (one layer, predicted class:
closed-form gradient, one ``inference_mode`` forward), the same with ``gradient='autograd'``,
``cam.layers: [layer2, layer3, layer4]``, ``cam.target: topk`` with k=3, both together, and
``guided_gradcam``. Each is timed twice: the engine call alone, and the audit's CAM stage (engine
+ upsampling + region metrics for every map it returns: 3 regions, each layer and each rank),
which is what an audit pays per batch besides decoding and text detection.

Timing: all variants run interleaved in one process (round-robin, order rotated every round)
after one warm-up call each, so load from other processes hits them alike. Reported: median
wall time per image, and the median over rounds of (variant / baseline of the same round).

    python benchmarks/cam_variants.py --batch 8 --size 224 --rounds 7 [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from auditors.cam import CamEngine  # noqa: E402
from auditors.measure.metrics import region_metrics, upsample_maps  # noqa: E402

LAYERS = ["layer2", "layer3", "layer4"]
VARIANTS = {
    "one_layer": "target layer4, predicted class (default engine: closed-form gradient)",
    "one_layer_autograd": "target layer4, predicted class, gradient='autograd'",
    "layers3": "cam.layers [layer2, layer3, layer4], predicted class",
    "topk3": "cam.target topk, k=3, layer4",
    "topk3_autograd": "cam.target topk, k=3, layer4, gradient='autograd'",
    "layers3_topk3": "cam.layers x3 and topk k=3",
    "guided": "cam.method guided_gradcam, predicted class",
}
BASELINE = "one_layer"


def make(name: str, model: torch.nn.Module, size: int, masks: Tensor) -> tuple[Callable, Callable]:
    """(engine call, engine + region metrics of every map) for variant ``name``."""
    kw: dict = {"input_size": (size, size)}
    if name.endswith("_autograd"):
        kw["gradient"] = "autograd"
    if name.startswith("layers3"):
        kw["layers"] = LAYERS
    if name == "guided":
        kw["method"] = "guided_gradcam"
    engine = CamEngine(model, "layer4", **kw)
    k = 3 if "topk3" in name else None

    def call(x: Tensor):
        return engine.compute_topk(x, k) if k else engine.compute(x)

    def stage(x: Tensor):
        out = call(x)
        maps = [out.maps, *out.layer_maps.values()] if name.startswith("layers3") else [out.maps]
        for m in maps:
            for rank in range(m.shape[1] if k else 1):
                mm = m[:, rank] if k else m
                region_metrics(upsample_maps(mm, (size, size)), masks)
        return out

    return call, stage


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval().to(device).requires_grad_(False)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(device)
    masks = torch.zeros(args.batch, 3, args.size, args.size, dtype=torch.bool, device=device)
    masks[:, 0, 20:60, 10:150] = True  # a "text" box
    masks[:, 1, :12] = True  # a "border" strip
    masks[:, 2, 100:] = True  # a "background" half

    fns: dict[str, Callable] = {}
    for name in VARIANTS:
        call, stage = make(name, model, args.size, masks)
        fns[f"{name}|engine"], fns[f"{name}|stage"] = call, stage
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for f in fns.values():  # warm-up
        f(x)
    sync()
    times: dict[str, list[float]] = {n: [] for n in fns}
    cpu_times: dict[str, list[float]] = {n: [] for n in fns}
    names = list(fns)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fns[n](x)
            sync()
            times[n].append(time.perf_counter() - t0)
            cpu_times[n].append(time.process_time() - c0)

    rows = []
    for n in names:
        variant, part = n.split("|")
        base = times[f"{BASELINE}|{part}"]
        rows.append({
            "variant": variant, "part": part,
            "ms_per_img": 1000 * statistics.median(times[n]) / args.batch,
            "x_base": statistics.median(t / b for t, b in zip(times[n], base)),
            "x_autograd": statistics.median(t / b for t, b in zip(times[n], times[f"one_layer_autograd|{part}"])),
            "cpu_x_base": statistics.median(t / b for t, b in zip(cpu_times[n], cpu_times[f"{BASELINE}|{part}"])),
        })
    cpu = platform.processor() or platform.machine()
    header = (
        f"# cam_variants  torch {torch.__version__}  device {device} ({cpu}, {torch.get_num_threads()} threads)  "
        f"resnet18 random weights, {args.size} px, batch {args.batch}, {args.rounds} interleaved rounds; "
        f"load average at start {os.getloadavg()[0]:.1f}\n"
        "# ms/img: median wall time per image; x base: median over rounds of (variant / one_layer, same round, same part);\n"
        "#   cpu x base: like x base with process CPU time (less sensitive to other jobs on the machine);\n"
        "#   x autograd: the same vs one_layer_autograd. engine = CamEngine call; stage = engine + upsample + region\n"
        "#   metrics (3 regions) for every map returned (each layer, each rank)\n"
        + "".join(f"#   {k:<20} {v}\n" for k, v in VARIANTS.items())
    )
    lines = [header, f"{'variant':<20} {'part':<7} {'ms/img':>8} {'x base':>7} {'cpu x base':>10} {'x autograd':>10}"]
    lines += [f"{r['variant']:<20} {r['part']:<7} {r['ms_per_img']:8.1f} {r['x_base']:7.2f} {r['cpu_x_base']:10.2f} {r['x_autograd']:10.2f}"
              for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"cam_variants_{device.type}"
    (args.out / f"{stem}.txt").write_text(text)
    (args.out / f"{stem}.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
