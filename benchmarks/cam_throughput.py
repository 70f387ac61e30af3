"""Grad-CAM throughput and peak memory: camaudit vs a plain forward, pytorch-grad-cam and Captum.

Timing: all implementations run interleaved in one process (round-robin, order rotated every
round) after one warm-up call each, so load from other processes hits them alike; per-image
medians are reported. Ratios are against the plain ``inference_mode`` forward of the same batch
and memory format ("x fwd") and against the faster of the two plain forwards ("x best").

Peak memory: every (arch, batch, implementation) runs in a fresh subprocess (``ru_maxrss`` never
goes down, and freed memory kept by the allocator would hide later peaks). The subprocess builds
the model, resets the kernel's peak-RSS mark (``/proc/self/clear_refs``), runs two calls and
reports VmHWM minus the RSS before the first call. On CUDA: ``max_memory_allocated`` delta.

    python benchmarks/cam_throughput.py --archs resnet18 --batches 1 8 --repeats 5 --quick
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from auditors.cam import CamEngine  # noqa: E402

IMPLS = {
    "forward": "plain inference_mode forward (the floor)",
    "forward_cl": "plain inference_mode forward, channels_last",
    "camaudit": "camaudit Grad-CAM, default (closed-form gradient where the head is GAP+linear)",
    "camaudit_cl": "camaudit Grad-CAM, channels_last=True",
    "camaudit_autograd": "camaudit Grad-CAM, gradient='autograd' (general path: one small backward)",
    "pgc": "pytorch-grad-cam 1.5.7 GradCAM (trainable params: it fails on frozen ones)",
    "captum": "Captum 0.9.0 LayerGradCam, trainable params (default usage)",
    "captum_frozen": "Captum 0.9.0 LayerGradCam, frozen params",
}
CHANNELS_LAST = {"forward_cl", "camaudit_cl"}


# ------------------------------------------------------------------ implementations
def build_model(arch: str, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, arch)().eval().to(device)


def make_impl(name: str, model: nn.Module, device: torch.device, size: int) -> Callable[[Tensor], object]:
    """Return f(x) for implementation ``name``; ``model`` is a fresh, trainable model it may own."""
    frozen = model.requires_grad_(False) if name not in ("pgc", "captum") else model
    if name in ("forward", "forward_cl"):
        if name == "forward_cl":
            model.to(memory_format=torch.channels_last)

        def forward(x: Tensor) -> Tensor:
            with torch.inference_mode():
                return model(x)

        return forward
    if name.startswith("camaudit"):
        engine = CamEngine(
            frozen,
            "layer4",
            input_size=(size, size),
            channels_last=name == "camaudit_cl",
            gradient="autograd" if name == "camaudit_autograd" else "auto",
        )
        return lambda x: engine.compute(x).maps
    if name == "pgc":
        from pytorch_grad_cam import GradCAM

        cam = GradCAM(model=model, target_layers=[model.layer4])  # one object reused, as in a dataset loop
        return lambda x: cam(input_tensor=x, targets=None)
    if name.startswith("captum"):
        from captum.attr import LayerGradCam

        lgc = LayerGradCam(model, model.layer4)
        return lambda x: lgc.attribute(x, target=torch.zeros(len(x), dtype=torch.long, device=x.device))
    raise ValueError(f"unknown implementation {name!r}; choose from {sorted(IMPLS)}")


def make_input(batch: int, size: int, device: torch.device, channels_last: bool) -> Tensor:
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch)).to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ timing
def time_arch(arch: str, impls: list[str], batches: list[int], repeats: int, size: int, device: torch.device) -> dict:
    """{(batch, impl): [seconds per image, ...]} from interleaved rounds."""
    base = build_model(arch, device)
    fns = {name: make_impl(name, copy.deepcopy(base), device, size) for name in impls}
    del base
    inputs = {(b, cl): make_input(b, size, device, cl) for b in batches for cl in (False, True)}
    times: dict[tuple[int, str], list[float]] = {(b, n): [] for b in batches for n in impls}
    for b in batches:  # warm-up: one call each (oneDNN primitives, allocator pools)
        for n in impls:
            fns[n](inputs[b, n in CHANNELS_LAST])
    for r in range(repeats):
        order = impls[r % len(impls):] + impls[: r % len(impls)]
        for b in batches:
            for n in order:
                x = inputs[b, n in CHANNELS_LAST]
                _sync(device)
                t0 = time.perf_counter()
                fns[n](x)
                _sync(device)
                times[b, n].append((time.perf_counter() - t0) / b)
        print(f"  {arch}: round {r + 1}/{repeats} done", file=sys.stderr, flush=True)
    return times


# ------------------------------------------------------------------ memory (fresh subprocess each)
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_probe(arch: str, impl: str, batch: int, size: int, device: torch.device) -> dict:
    """Runs in the subprocess: peak memory of two calls of ``impl`` above the pre-call baseline."""
    fn = make_impl(impl, build_model(arch, device), device, size)
    x = make_input(batch, size, device, impl in CHANNELS_LAST)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        for _ in range(2):
            fn(x)
        torch.cuda.synchronize(device)
        return {"delta_mib": (torch.cuda.max_memory_allocated(device) - base) / 2**20, "how": "cuda max_allocated"}
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        how = "VmHWM after clear_refs"
    except OSError:
        how = "VmHWM (no reset: baseline may hide part of the peak)"
    base = _status_kib("VmRSS")
    for _ in range(2):
        fn(x)
    return {"delta_mib": (_status_kib("VmHWM") - base) / 1024, "how": how}


def measure_memory(arch: str, impls: list[str], batches: list[int], size: int, device: str) -> dict:
    out = {}
    for b in batches:
        for n in impls:
            cmd = [sys.executable, __file__, "--_probe", arch, n, str(b), "--size", str(size), "--device", device]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                print(res.stderr[-2000:], file=sys.stderr)
                out[b, n] = None
                continue
            out[b, n] = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"  {arch}: memory b={b} {n}: {out[b, n]['delta_mib']:.0f} MiB", file=sys.stderr, flush=True)
    return out


# ------------------------------------------------------------------ report
def report(arch: str, batches: list[int], impls: list[str], times: dict, mem: dict, emit: Callable[[str], None]) -> list:
    rows = []
    emit(f"\n## {arch}")
    emit(f"{'batch':>5}  {'implementation':<18} {'ms/img':>8} {'x fwd':>6} {'x best':>6} {'peak MiB':>9} {'x fwd mem':>9}")
    for b in batches:
        med = {n: statistics.median(times[b, n]) for n in impls}
        fwd = {False: med.get("forward"), True: med.get("forward_cl")}
        best = min(v for v in fwd.values() if v is not None) if any(fwd.values()) else None
        for n in impls:
            own = fwd[n in CHANNELS_LAST] or fwd[False]
            m = mem.get((b, n))
            mf = mem.get((b, "forward_cl" if n in CHANNELS_LAST else "forward")) or mem.get((b, "forward"))
            mem_s = f"{m['delta_mib']:9.0f}" if m else f"{'-':>9}"
            memx = f"{m['delta_mib'] / mf['delta_mib']:9.2f}" if m and mf and mf["delta_mib"] > 0 else f"{'-':>9}"
            emit(
                f"{b:>5}  {n:<18} {med[n] * 1e3:8.1f} "
                f"{(med[n] / own if own else float('nan')):6.2f} {(med[n] / best if best else float('nan')):6.2f} "
                f"{mem_s} {memx}"
            )
            rows.append({"arch": arch, "batch": b, "impl": n, "median_s": med[n], "mem": m})
    return rows


def goals(rows: list, emit: Callable[[str], None]) -> None:
    """The issue's goals, checked against this run's medians."""
    by = {(r["arch"], r["batch"], r["impl"]): r for r in rows}
    emit("\n## goals (this run)")

    def line(ok: bool | None, text: str) -> None:
        emit(f"[{'PASS' if ok else 'MISS' if ok is not None else 'n/a '}] {text}")

    for (arch, b, impl), r in sorted(by.items()):
        if impl in ("camaudit", "camaudit_cl") and b >= 8:
            fwd = by.get((arch, b, "forward_cl" if impl == "camaudit_cl" else "forward"))
            best = min((by[k]["median_s"] for k in [(arch, b, "forward"), (arch, b, "forward_cl")] if k in by), default=None)
            if fwd:
                q = r["median_s"] / fwd["median_s"]
                line(q <= 1.05, f"{arch} b={b} {impl}: {q:.3f}x its plain forward (goal <= 1.05x); {r['median_s'] / best:.3f}x the best plain forward")
    for b in sorted({k[1] for k in by}):
        if b != 32:
            continue
        cam = by.get(("resnet50", b, "camaudit"))
        for impl, goal in (("pgc", 3.0), ("captum", 1.1), ("captum_frozen", 1.1)):
            other = by.get(("resnet50", b, impl))
            if cam and other:
                q = other["median_s"] / cam["median_s"]
                line(q >= goal, f"resnet50 b={b}: camaudit is {q:.2f}x faster than {impl} (goal >= {goal}x)")
    for (arch, b, impl), r in sorted(by.items()):
        if impl.startswith("camaudit") and r["mem"]:
            f = by.get((arch, b, "forward_cl" if impl == "camaudit_cl" else "forward"))
            if f and f["mem"] and f["mem"]["delta_mib"] > 0:
                q = r["mem"]["delta_mib"] / f["mem"]["delta_mib"]
                line(q <= 1.1, f"{arch} b={b} {impl}: peak memory {q:.2f}x plain forward's (goal <= 1.1x)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=5, help="timed interleaved rounds (after one warm-up)")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--no-memory", action="store_true", help="skip the per-implementation memory subprocesses")
    p.add_argument("--quick", action="store_true", help="smoke run: resnet18, batches 1 8, 3 rounds, memory at the largest batch")
    p.add_argument("--save", type=Path, help="also write the printed report to this file")
    p.add_argument("--_probe", nargs=3, metavar=("ARCH", "IMPL", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args._probe:
        arch, impl, b = args._probe
        print(json.dumps(memory_probe(arch, impl, int(b), args.size, device)))
        return 0
    if args.quick:
        args.archs, args.repeats = (["resnet18"] if args.archs == p.get_default("archs") else args.archs), min(args.repeats, 3)
        args.batches = [1, 8] if args.batches == p.get_default("batches") else args.batches
    mem_batches = [max(args.batches)] if args.quick else args.batches

    lines: list[str] = []

    def emit(s: str) -> None:
        print(s, flush=True)
        lines.append(s)

    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    emit(f"# cam_throughput  torch {torch.__version__}  torchvision {torchvision.__version__}  device {device}"
         + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else f" ({cpu}, {torch.get_num_threads()} threads)"))
    emit(f"# random weights, {args.size} px, batches {args.batches}, {args.repeats} interleaved rounds after warm-up; "
         f"per-image medians; load average at start {os.getloadavg()[0]:.1f}")
    emit("# x fwd: vs plain forward of same batch & memory format; x best: vs the faster plain forward")
    emit("# peak MiB: fresh subprocess per row, peak above the pre-call baseline over 2 calls "
         + ("(CUDA max allocated)" if device.type == "cuda" else "(RSS, VmHWM)") + "; x fwd mem: vs plain forward, same format")
    for n in args.impls:
        emit(f"#   {n:<18} {IMPLS[n]}")
    rows = []
    t_start = time.time()
    for arch in args.archs:
        times = time_arch(arch, args.impls, args.batches, args.repeats, args.size, device)
        mem = {} if args.no_memory else measure_memory(arch, args.impls, mem_batches, args.size, str(device))
        rows += report(arch, args.batches, args.impls, times, mem, emit)
    goals(rows, emit)
    emit(f"\n# wall time {time.time() - t_start:.0f} s; load average at end {os.getloadavg()[0]:.1f}")
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
