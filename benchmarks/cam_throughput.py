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
    """{(batch, impl): [(wall s, process CPU s) per image, one per round]} from interleaved rounds.

    Process CPU time (all threads) is kept beside wall time: on a machine shared with other
    jobs it is far less sensitive to their load than wall time is.
    """
    base = build_model(arch, device)
    fns = {name: make_impl(name, copy.deepcopy(base), device, size) for name in impls}
    del base
    inputs = {(b, cl): make_input(b, size, device, cl) for b in batches for cl in (False, True)}
    times: dict[tuple[int, str], list[tuple[float, float]]] = {(b, n): [] for b in batches for n in impls}
    for b in batches:  # warm-up: one call each (oneDNN primitives, allocator pools)
        for n in impls:
            fns[n](inputs[b, n in CHANNELS_LAST])
    for r in range(repeats):
        order = impls[r % len(impls):] + impls[: r % len(impls)]
        for b in batches:
            for n in order:
                x = inputs[b, n in CHANNELS_LAST]
                _sync(device)
                w0, c0 = time.perf_counter(), time.process_time()
                fns[n](x)
                _sync(device)
                times[b, n].append(((time.perf_counter() - w0) / b, (time.process_time() - c0) / b))
        print(f"  {arch}: round {r + 1}/{repeats} done", file=sys.stderr, flush=True)
    return times


# ------------------------------------------------------------------ memory (fresh subprocess each)
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_probe(arch: str, impl: str, batch: int, size: int, device: torch.device) -> dict:
    """Runs in the subprocess. Baseline = model + input. Returns

    - ``delta_mib``: peak over set-up (camaudit's probe forward included) and 2 calls, above baseline;
    - ``call_mib``: peak of the 2nd call above the memory in use just before it (working memory);
    - ``held_mib``: memory still in use between calls (caches, a graph kept alive, ...).
    """
    model = build_model(arch, device)
    x = make_input(batch, size, device, impl in CHANNELS_LAST)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn = make_impl(impl, model, device, size)
        fn(x)
        torch.cuda.synchronize(device)
        peak1, before2 = torch.cuda.max_memory_allocated(device), torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn(x)
        torch.cuda.synchronize(device)
        peak2 = torch.cuda.max_memory_allocated(device)
        how = "cuda max_allocated"
    else:
        clear = Path("/proc/self/clear_refs")

        def reset_peak() -> None:
            clear.write_text("5")  # VmHWM := current RSS (Linux >= 4.0)

        try:
            reset_peak()
            how = "VmHWM after clear_refs"
        except OSError:
            reset_peak = lambda: None  # noqa: E731
            how = "VmHWM without reset (the baseline may hide part of the peak)"
        base = _status_kib("VmRSS") * 1024
        fn = make_impl(impl, model, device, size)
        fn(x)
        peak1, before2 = _status_kib("VmHWM") * 1024, _status_kib("VmRSS") * 1024
        reset_peak()
        fn(x)
        peak2 = _status_kib("VmHWM") * 1024
    mib = 2.0**20
    return {
        "delta_mib": (max(peak1, peak2) - base) / mib,
        "call_mib": (peak2 - before2) / mib,
        "held_mib": (before2 - base) / mib,
        "how": how,
    }


def _probe_env() -> dict[str, str]:
    """glibc keeps freed blocks below its (adaptive, up to 32 MiB) mmap threshold in the heap,
    so RSS would follow allocator history rather than live tensors. A fixed 64 KiB threshold
    sends every tensor-sized block to mmap, returned to the OS on free."""
    return {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}


def measure_memory(arch: str, impls: list[str], batches: list[int], size: int, device: str) -> dict:
    out = {}
    for b in batches:
        for n in impls:
            cmd = [sys.executable, __file__, "--_probe", arch, n, str(b), "--size", str(size), "--device", device,
                   "--threads", str(torch.get_num_threads())]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False, env=_probe_env())
            if res.returncode != 0:
                print(res.stderr[-2000:], file=sys.stderr)
                out[b, n] = None
                continue
            out[b, n] = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"  {arch}: memory b={b} {n}: {out[b, n]['delta_mib']:.0f} MiB", file=sys.stderr, flush=True)
    return out


# ------------------------------------------------------------------ report
def _fwd_of(name: str) -> str:
    return "forward_cl" if name in CHANNELS_LAST else "forward"


def report(arch: str, batches: list[int], impls: list[str], times: dict, mem: dict, emit: Callable[[str], None]) -> list:
    """Per-image median and min wall time; ratios are medians of *paired* per-round ratios (each
    call vs the plain forward of the same round), which cancels most drift from other jobs' load."""
    rows = []
    emit(f"\n## {arch}")
    emit(
        f"{'batch':>5}  {'implementation':<18} {'ms/img':>8} {'min':>7} {'x fwd':>6} {'x best':>6} {'cpu x':>6}"
        f" {'peak MiB':>9} {'call MiB':>9} {'held MiB':>9} {'x fwd mem':>9}"
    )

    def paired(ts: list, refs: list[list], k: int) -> float:
        if not refs:
            return float("nan")
        return statistics.median(t[k] / min(r[k] for r in rs) for t, *rs in zip(ts, *refs))

    for b in batches:
        for n in impls:
            ts = times[b, n]
            own = [times[b, f] for f in (_fwd_of(n), "forward") if (b, f) in times][:1]
            both = [times[b, f] for f in ("forward", "forward_cl") if (b, f) in times]
            wall = [t[0] for t in ts]
            x_fwd, x_best, cpu_x = paired(ts, own, 0), paired(ts, both, 0), paired(ts, own, 1)
            m = mem.get((b, n))
            mf = mem.get((b, _fwd_of(n))) or mem.get((b, "forward"))
            x_mem = m["delta_mib"] / mf["delta_mib"] if m and mf and mf["delta_mib"] > 0 else None
            mem_s = (
                f"{m['delta_mib']:9.0f} {m['call_mib']:9.0f} {m['held_mib']:9.0f}" if m else f"{'-':>9} {'-':>9} {'-':>9}"
            )
            emit(
                f"{b:>5}  {n:<18} {statistics.median(wall) * 1e3:8.1f} {min(wall) * 1e3:7.1f} "
                f"{x_fwd:6.2f} {x_best:6.2f} {cpu_x:6.2f} {mem_s} "
                + (f"{x_mem:9.2f}" if x_mem is not None else f"{'-':>9}")
            )
            rows.append({"arch": arch, "batch": b, "impl": n, "x_fwd": x_fwd, "x_best": x_best, "cpu_x": cpu_x,
                         "mem": m, "x_mem": x_mem, "times": ts})
    return rows


def goals(rows: list, emit: Callable[[str], None]) -> None:
    """The issue's goals, checked against this run (paired-ratio medians)."""
    by = {(r["arch"], r["batch"], r["impl"]): r for r in rows}
    emit("\n## goals (this run)")

    def line(ok: bool, text: str) -> None:
        emit(f"[{'PASS' if ok else 'MISS'}] {text}")

    for (arch, b, impl), r in sorted(by.items()):
        if impl in ("camaudit", "camaudit_cl") and b >= 8:
            line(r["x_fwd"] <= 1.05, f"{arch} b={b} {impl}: {r['x_fwd']:.3f}x its plain forward "
                 f"(CPU time {r['cpu_x']:.3f}x), {r['x_best']:.3f}x the best plain forward (goal <= 1.05x)")
    for impl, goal in (("pgc", 3.0), ("captum", 1.1), ("captum_frozen", 1.1)):
        for mine in ("camaudit", "camaudit_cl"):
            cam, other = by.get(("resnet50", 32, mine)), by.get(("resnet50", 32, impl))
            if cam and other:  # paired: the two calls of the same round
                q = statistics.median(o[0] / c[0] for o, c in zip(other["times"], cam["times"]))
                qc = statistics.median(o[1] / c[1] for o, c in zip(other["times"], cam["times"]))
                line(q >= goal, f"resnet50 b=32: {mine} is {q:.2f}x faster than {impl} (CPU time {qc:.2f}x; goal >= {goal}x)")
    for (arch, b, impl), r in sorted(by.items()):
        if impl.startswith("camaudit") and r["x_mem"] is not None:
            m = r["mem"]
            f = by[arch, b, _fwd_of(impl)]["mem"]
            line(r["x_mem"] <= 1.1, f"{arch} b={b} {impl}: peak memory {r['x_mem']:.2f}x plain forward's "
                 f"(+{m['delta_mib'] - f['delta_mib']:.0f} MiB; per-call working memory "
                 f"{m['call_mib'] / max(f['call_mib'], 1e-9):.2f}x; goal <= 1.1x)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    p.add_argument("--repeats", type=int, default=5, help="timed interleaved rounds (after one warm-up)")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-implementation memory subprocesses")
    p.add_argument("--quick", action="store_true", help="smoke run: resnet18, batches 1 8, 3 rounds, memory at the largest batch")
    p.add_argument("--save", type=Path, help="also write the printed report to this file")
    p.add_argument("--_probe", nargs=3, metavar=("ARCH", "IMPL", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
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
    emit("# ms/img: median (min) wall time per image. x fwd: median over rounds of (call / plain forward of the")
    emit("#   same round, batch & memory format); x best: same, vs the faster of the two plain forwards of that")
    emit("#   round; cpu x: like x fwd but with process CPU time (less sensitive to other jobs on the machine)")
    emit("# peak MiB: fresh subprocess per row, set-up + 2 calls, peak above the model+input baseline "
         + ("(CUDA max allocated)" if device.type == "cuda" else "(RSS VmHWM; glibc mmap threshold fixed at 64 KiB)"))
    emit("#   call MiB: 2nd call's peak above the memory in use before it; held MiB: in use between calls;")
    emit("#   x fwd mem: peak MiB vs the plain forward's, same format")
    for n in args.impls:
        emit(f"#   {n:<18} {IMPLS[n]}")
    if args.repeats < 5:
        emit(f"# WARNING: {args.repeats} rounds is a smoke test; on a shared machine ratios need >= 5 rounds")
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
        raw = [{k: v for k, v in r.items()} for r in rows]
        args.save.with_suffix(".json").write_text(json.dumps(raw, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
