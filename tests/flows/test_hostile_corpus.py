"""A hostile-input corpus, generated here (no committed binaries), each case with its documented outcome.

Outcomes (README, "What camaudit guarantees"): a per-file problem is recorded in errors.csv with
its stage and reason and the run goes on; a problem that stops the run is exit status 2 with one
clear message; an audit that cannot be judged is exit status 4 (gate.status "inconclusive"),
never PASSED. Nothing here may hang, and nothing may end in exit status 3 (a crash).

Cases are grouped so that one real flow run checks many per-file cases at once.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from auditors.config.schema import DatasetConfig
from auditors.data.discovery import discover
from flows.cli import EXIT_BAD_INPUT, EXIT_INCONCLUSIVE, main
from tests.conftest import build_tiny_cnn, draw_word

CLASSES = ["alpha", "beta", "gamma"]


# --------------------------------------------------------------------------- builders


def _poster(path: Path, seed: int, size: tuple[int, int] = (72, 56)) -> Path:
    rng = np.random.default_rng(seed)
    img = np.full((*size, 3), 230, np.uint8)
    img[:, :, seed % 3] = rng.integers(100, 200)
    draw_word(img, "AB", (5, 30), scale=0.6)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", img[:, :, ::-1])
    path.write_bytes(buf.tobytes())
    return path


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG header announcing ``width`` x ``height`` pixels (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _image_folder(root: Path, per_class: int = 3) -> Path:
    for ci, cls in enumerate(CLASSES):
        for i in range(per_class):
            _poster(root / cls / f"{i}.png", ci * 10 + i)
    return root


def _config(tmp_path: Path, root: Path, **over) -> dict:
    ckpt = tmp_path / "tiny.pt"
    if not ckpt.exists():
        torch.save(build_tiny_cnn().state_dict(), ckpt)
    data = {
        "name": "hostile",
        "dataset": {"root": str(root)},
        "model": {"factory": "tests.conftest:build_tiny_cnn", "checkpoint": str(ckpt), "input_size": [48, 48],
                  "classes": CLASSES},
        "cam": {"batch_size": 4},
        "regions": {"text": {"enabled": False}},
        "tokens": {"enabled": False},
        "sanity": {"enabled": False},
        "stats": {"bootstrap": 100},
        "output": {"dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"), "gallery_size": 2},
        "run": {"chunk_size": 16, "cache": False},
        # a few images per class: the corpus tests input handling, not the default class-size floor (10)
        "gate": {"min_images_per_class": 2},
    }
    for key, value in over.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _run_dir(tmp_path: Path, name: str = "hostile") -> Path:
    runs = sorted(p for p in (tmp_path / "out" / name).iterdir() if p.is_dir())  # index.html sits beside runs
    assert runs, "no run folder was written"
    return runs[-1]


def _errors(run: Path) -> dict[str, tuple[str, str]]:
    df = pd.read_csv(run / "errors.csv", dtype=str, keep_default_na=False)
    return {p: (s, r) for p, s, r in zip(df["path"], df["stage"], df["reason"])}


# --------------------------------------------------------------------------- images, names, manifests: one real run

#: (case id, manifest path, expected stage, expected words in the reason). Documented outcome:
#: recorded in errors.csv, the run goes on and audits every other image.
RECORDED = [
    ("image-fifo", "alpha/pipe.png", "load", "FIFO"),
    ("image-zero-byte", "alpha/zero.png", "load", "zero-byte"),
    ("image-truncated", "alpha/trunc.png", "load", "truncated"),
    ("image-not-an-image", "beta/fake.jpg", "load", "not an image"),
    ("image-decompression-bomb", "beta/bomb.png", "load", "too large"),
    ("image-directory", "beta/adir.png", "load", "directory"),
    ("image-missing", "beta/missing.png", "load", "not found"),
    ("image-symlink-loop", "gamma/loop.png", "discover", "symlink loop"),
    ("image-dangling-symlink", "gamma/dangling.png", "load", "not found"),
    ("path-dotdot-escape", "../outside.png", "discover", "escapes dataset.root"),
    ("path-absolute", "/etc/passwd", "discover", "escapes dataset.root"),
    ("path-symlink-escape", "gamma/escape.png", "discover", "escapes dataset.root"),
    ("manifest-duplicate-row", "alpha/0.png", "discover", "listed twice"),
    ("manifest-unknown-label", "gamma/unknown.png", "discover", "unknown label"),
    ("name-html-injection", "alpha/<img src=x onerror=alert(1)>zero.png", "load", "zero-byte"),
]
#: File names the filesystem allows: audited like any other (never a crash, never escaped wrongly).
ODD_NAMES = ["sp ace.png", "new\nline.png", "ünï©ødé.png", "-dash.png", "quo\"te'.png", "<img src=x onerror=alert(1)>.png", "%s%n.png"]


def _hostile_manifest_dataset(tmp_path: Path) -> tuple[Path, Path]:
    root = _image_folder(tmp_path / "data", per_class=2)
    (root / "alpha" / "zero.png").write_bytes(b"")
    (root / "alpha" / "<img src=x onerror=alert(1)>zero.png").write_bytes(b"")
    good = (root / "alpha" / "0.png").read_bytes()
    (root / "alpha" / "trunc.png").write_bytes(good[: len(good) // 2])
    os.mkfifo(root / "alpha" / "pipe.png")
    (root / "beta" / "fake.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    (root / "beta" / "bomb.png").write_bytes(_png_claiming(30000, 30000))
    (root / "beta" / "adir.png").mkdir()
    os.symlink("loop.png", root / "gamma" / "loop.png")
    os.symlink("nowhere.png", root / "gamma" / "dangling.png")
    _poster(tmp_path / "outside.png", 99)
    os.symlink(tmp_path / "outside.png", root / "gamma" / "escape.png")
    _poster(root / "gamma" / "unknown.png", 98)
    for i, name in enumerate(ODD_NAMES):
        _poster(root / "alpha" / name, 50 + i)
    rows = [(f"{c}/{i}.png", c) for c in CLASSES for i in range(2)]
    rows += [(p, "delta" if case == "manifest-unknown-label" else "alpha") for case, p, _, _ in RECORDED]
    rows += [(f"alpha/{n}", "alpha") for n in ODD_NAMES]
    rows += [("", "alpha")]  # empty path
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(manifest, index=False)
    return root, manifest


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_hostile_files_are_recorded_and_the_run_goes_on(tmp_path, capsys):
    root, manifest = _hostile_manifest_dataset(tmp_path)
    cfg = _write_yaml(tmp_path / "c.yaml", _config(tmp_path, root, dataset={"root": str(root), "manifest": str(manifest)},
                                                   gate={"min_audited_fraction": 0.0}))
    started = time.monotonic()
    code, out, err = _cli(["run", cfg, "--quiet"], capsys)
    assert code in (0, 1), (out, err)  # the audit completed; a FIFO no longer hangs it
    assert "Traceback" not in err
    run = _run_dir(tmp_path)
    errors = _errors(run)
    for case, path, stage, words in RECORDED:
        assert path in errors, f"{case}: {path!r} not recorded"
        assert errors[path][0] == stage and words in errors[path][1], (case, errors[path])
    assert errors["<manifest row %d>" % (6 + len(RECORDED) + len(ODD_NAMES))][1] == "empty path"
    images = pd.read_parquet(run / "images.parquet")
    audited = set(images["path"])
    assert {f"{c}/{i}.png" for c in CLASSES for i in range(2)} <= audited
    assert {f"alpha/{n}" for n in ODD_NAMES} <= audited, "odd but legal file names are audited"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_images"] == len(images) == 6 + len(ODD_NAMES)
    assert summary["gate"]["status"] in ("passed", "failed")
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "<img src=x onerror" not in html and "&lt;img src=x onerror" in html  # shown, escaped
    csp = html.split('http-equiv="Content-Security-Policy" content="', 1)[1].split('"', 1)[0]
    assert "default-src &#39;none&#39;" in csp and "http" not in csp  # strict CSP, no external source
    assert time.monotonic() - started < 600


# --------------------------------------------------------------------------- ImageFolder trees


def test_image_folder_records_special_files_links_and_undecodable_names(tmp_path):
    root = _image_folder(tmp_path / "data", per_class=1)
    os.mkfifo(root / "alpha" / "fifo.png")
    os.symlink("loop.png", root / "alpha" / "loop.png")
    os.symlink("missing.png", root / "beta" / "dangling.png")
    os.symlink(root / "gamma", root / "beta" / "linked")
    bad_name = os.fsencode(str(root / "gamma")) + b"/bad\xff.png"
    with open(bad_name, "wb") as f:
        f.write((root / "alpha" / "0.png").read_bytes())
    sock_dir = Path(f"/tmp/ca-{os.getpid()}-{threading.get_ident() % 1000}")
    sock_dir.mkdir(exist_ok=True)
    try:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(sock_dir / "s.png"))
        os.symlink(sock_dir / "s.png", root / "gamma" / "sock.png")
        index = discover(DatasetConfig(root=root))
    finally:
        sock.close()
        (sock_dir / "s.png").unlink(missing_ok=True)
        sock_dir.rmdir()
    reasons = {e["path"]: (e["stage"], e["reason"]) for e in index.errors}
    expected = {
        "alpha/fifo.png": "FIFO",
        "alpha/loop.png": "symlink loop",
        "beta/dangling.png": "dangling symlink",
        "beta/linked": "symlinked folder",
        "gamma/bad\\xff.png": "not valid UTF-8",
        "gamma/sock.png": "socket",
    }
    for path, words in expected.items():
        assert path in reasons and reasons[path][0] == "discover" and words in reasons[path][1], (path, reasons.get(path))
    assert sorted(e.path for e in index.entries) == ["alpha/0.png", "beta/0.png", "gamma/0.png"]


# --------------------------------------------------------------------------- datasets that cannot be judged


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    "case",
    ["dataset-all-fail", "dataset-empty-listing", "dataset-majority-fail", "checkpoint-nan-weights"],
)
def test_audits_that_cannot_be_judged_exit_4_and_never_pass(case, tmp_path, capsys):
    root = tmp_path / "data"
    over: dict = {}
    if case == "dataset-all-fail":
        for c in CLASSES:
            (root / c).mkdir(parents=True)
            (root / c / "x.png").write_bytes(b"not a png")
        words = "no image could be audited"
    elif case == "dataset-empty-listing":
        for c in CLASSES:
            (root / c).mkdir(parents=True)
        words = "listing is empty"
    elif case == "dataset-majority-fail":
        _image_folder(root, per_class=1)
        for c in CLASSES:
            for i in range(2):
                (root / c / f"bad{i}.png").write_bytes(b"")
        words = "only 3 of 9 listed images"
    else:
        _image_folder(root, per_class=2)
        state = build_tiny_cnn().state_dict()
        state["fc.weight"][:] = float("nan")
        torch.save(state, tmp_path / "nan.pt")
        over = {"model": {"checkpoint": str(tmp_path / "nan.pt")}}
        words = "non-finite predictions"
    data = _config(tmp_path, root, **over)
    code, out, err = _cli(["run", _write_yaml(tmp_path / "c.yaml", data), "--quiet"], capsys)
    assert code == EXIT_INCONCLUSIVE, (out, err)
    assert "PASSED" not in out and "INCONCLUSIVE" in out and words in out
    run = _run_dir(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    gate = summary["gate"]
    assert gate["status"] == "inconclusive" and gate["passed"] is False
    assert any(words in r for r in gate["inconclusive_reasons"])
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "CANNOT JUDGE" in html and "verdict-inconclusive" in html and ">PASS<" not in html


# --------------------------------------------------------------------------- configs, manifests, checkpoints: exit 2


def _malicious_checkpoint(path: Path, marker: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"fc.weight": Payload()}, path, pickle_module=pickle)


#: (case id, how to build it, words the one-line message must contain). Documented outcome: exit 2.
def _stop_cases(tmp_path: Path, root: Path) -> list[tuple[str, list[str], str]]:
    base = _config(tmp_path, root)
    cfg = _write_yaml(tmp_path / "base.yaml", base)
    cases: list[tuple[str, list[str], str]] = []

    def add(case: str, text: str | bytes | None, words: str, extra: list[str] | None = None) -> None:
        path = tmp_path / f"{case}.yaml"
        if isinstance(text, bytes):
            path.write_bytes(text)
        elif text is not None:
            path.write_text(text, encoding="utf-8")
        cases.append((case, [path if text is not None else cfg, *(extra or [])], words))

    plain = yaml.safe_dump(base)
    add("config-duplicate-key", plain + "name: again\n", "duplicate key 'name'")
    laughs = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(9)
    )
    add("config-billion-laughs", plain + laughs, "more than 100000 nodes")
    add("config-latin1-bytes", plain.encode("utf-8") + b"# caf\xe9\n", "expected UTF-8")
    add("config-python-tag", plain + "x: !!python/object/apply:os.system ['true']\n", "constructor")
    add("config-not-a-mapping", "- just\n- a list\n", "top level must be a mapping")
    add("config-unknown-gate-region", None, "'logo' is not a region (known:", ["--set", "gate.max_lift={logo: 2}"])
    add("config-unknown-cf-region", None, "'txt' is not an enabled region",
        ["--set", "counterfactual.enabled=true", "--set", "counterfactual.regions=[txt]"])
    add("config-unknown-target-class", None, "or a class name (['alpha', 'beta', 'gamma'])",
        ["--set", "cam.target=delta"])
    add("config-unknown-priority", None, "not regions (known:", ["--set", "regions.priority=[text, logo]"])
    add("config-nan-mean", None, "model.mean: must be finite", ["--set", "model.mean=[.nan, 0.4, 0.4]"])
    add("config-duplicate-classes", None, "more than once", ["--set", "model.classes=[alpha, alpha, beta]"])
    add("set-recursive-alias", None, "recursive YAML alias", ["--set", "name=&a [*a]"])
    add("set-bad-key", None, "expected key.path=value", ["--set", "cam"])
    add("layer-fc", None, "has no spatial map", ["--set", "model.target_layer=fc"])
    add("layer-avgpool", None, "1x1 map", ["--set", "model.target_layer=pool"])
    add("cam-layers-fc", None, "cam.layers 'fc': output", ["--set", "cam.layers=[features, fc]"])
    add("cam-layers-avgpool", None, "cam.layers 'pool': output", ["--set", "cam.layers=[pool]"])

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    cases.append(("config-fifo", [fifo], "not a regular file"))

    m = tmp_path / "nopath.csv"
    m.write_text("file,label\na.png,alpha\n")
    add("manifest-no-path-column", None, "missing required column 'path'", ["--set", f"dataset.manifest={m}"])
    m = tmp_path / "empty.csv"
    m.write_bytes(b"")
    add("manifest-empty-file", None, "cannot read", ["--set", f"dataset.manifest={m}"])
    m = tmp_path / "latin1.csv"
    m.write_bytes(b"path,label\ncaf\xe9.png,alpha\n")
    add("manifest-latin1", None, "cannot read", ["--set", f"dataset.manifest={m}"])
    m = tmp_path / "dupcols.csv"
    m.write_text("path,label,label\na.png,alpha,beta\n")
    add("manifest-duplicate-columns", None, "duplicate column", ["--set", f"dataset.manifest={m}"])
    m = tmp_path / "pipe.csv"
    os.mkfifo(m)
    add("manifest-fifo", None, "not a regular file", ["--set", f"dataset.manifest={m}"])

    marker = tmp_path / "pwned"
    _malicious_checkpoint(tmp_path / "evil.pt", marker)
    add("checkpoint-pickle-payload", None, "weights-only", ["--set", f"model.checkpoint={tmp_path / 'evil.pt'}"])
    good = (tmp_path / "tiny.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(good[: len(good) // 2])
    add("checkpoint-truncated", None, "cannot load", ["--set", f"model.checkpoint={tmp_path / 'trunc.pt'}"])
    os.mkfifo(tmp_path / "pipe.pt")
    add("checkpoint-fifo", None, "not a regular file", ["--set", f"model.checkpoint={tmp_path / 'pipe.pt'}"])
    return cases


def test_inputs_that_stop_the_run_exit_2_with_one_clear_line(tmp_path, capsys):
    root = _image_folder(tmp_path / "data", per_class=1)
    for case, args, words in _stop_cases(tmp_path, root):
        done: list[tuple[int, str, str]] = []
        worker = threading.Thread(target=lambda: done.append(_cli(["validate", *args], capsys)), daemon=True)
        worker.start()
        worker.join(60)
        assert done, f"{case}: validate hung"
        code, out, err = done[0]
        assert code == EXIT_BAD_INPUT, (case, code, out, err)
        assert words in err, (case, err)
        assert "Traceback" not in err and err.count("\n") <= 3, (case, err)
    assert not (tmp_path / "pwned").exists(), "a pickle payload in a checkpoint ran code"


def test_utf16_config_with_bom_is_read(tmp_path, capsys):
    root = _image_folder(tmp_path / "data", per_class=1)
    path = tmp_path / "u16.yaml"
    path.write_bytes(b"\xff\xfe" + yaml.safe_dump(_config(tmp_path, root)).encode("utf-16-le"))
    code, out, err = _cli(["validate", path], capsys)
    assert code == 0 and "config ok: hostile" in out, err


def test_maps_too_coarse_to_localise_warn_but_validate(tmp_path, capsys):
    root = _image_folder(tmp_path / "data", per_class=1)
    data = _config(tmp_path, root, model={"factory": None, "checkpoint": None, "arch": "resnet18", "input_size": [64, 64]})
    code, out, err = _cli(["validate", _write_yaml(tmp_path / "c.yaml", data)], capsys)
    assert code == 0, err
    assert "warning: target-layer map is only 2x2" in out


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("key", ["dir", "cache_dir"])
def test_output_paths_that_are_files_exit_2(key, tmp_path, capsys):
    root = _image_folder(tmp_path / "data", per_class=1)
    (tmp_path / "blocker").write_text("a file, not a folder")
    data = _config(tmp_path, root)
    data["output"][key] = str(tmp_path / "blocker")
    code, out, err = _cli(["run", _write_yaml(tmp_path / "c.yaml", data), "--quiet"], capsys)
    assert code == EXIT_BAD_INPUT and f"output.{key}" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("summary.json"))


@pytest.mark.usefixtures("prefect_server")
def test_run_refuses_a_target_layer_without_a_spatial_map(tmp_path, capsys):
    """Before: ``fc`` ran, 0 images audited, exit 0 "PASSED"."""
    root = _image_folder(tmp_path / "data", per_class=1)
    data = _config(tmp_path, root, model={"target_layer": "fc"})
    code, out, err = _cli(["run", _write_yaml(tmp_path / "c.yaml", data), "--quiet"], capsys)
    assert code == EXIT_BAD_INPUT and "has no spatial map" in err and "PASSED" not in out, (out, err)


# --------------------------------------------------------------------------- signals and killed runs


def test_killed_runs_parts_are_swept_but_live_runs_are_not(tmp_path):
    import subprocess
    import sys

    from auditors.audit.stale import sweep_stale_parts

    audit_dir = tmp_path / "out" / "hostile"
    script = (
        "import sys, time; from pathlib import Path; from auditors.audit.stale import hold_run_lock\n"
        "d = Path(sys.argv[1]); hold_run_lock(d); (d / 'parts').mkdir(); (d / 'parts' / 'chunk-000000.parquet').write_bytes(b'x')\n"
        "print('ready', flush=True); time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = {}
    for name in ("killed", "alive"):
        procs[name] = subprocess.Popen([sys.executable, "-c", script, str(audit_dir / name)], stdout=subprocess.PIPE, env=env)
        assert procs[name].stdout.readline().strip() == b"ready"
    procs["killed"].kill()  # SIGKILL: no handler runs, the kernel drops the lock
    procs["killed"].wait()
    try:
        removed = sweep_stale_parts(audit_dir)
        assert removed == [audit_dir / "killed" / "parts"]
        assert not (audit_dir / "killed" / "parts").exists()
        assert (audit_dir / "alive" / "parts" / "chunk-000000.parquet").exists(), "a live run's parts were removed"
    finally:
        procs["alive"].kill()
        procs["alive"].wait()


def _uvicorn_children(pid: int) -> list[int]:
    """Descendant processes of ``pid`` (from /proc)."""
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_stops_the_temporary_prefect_server_and_removes_parts(tmp_path, signame):
    """SIGTERM (a scheduler's stop) or SIGINT (Ctrl-C) mid-run: exit 143 / 130, no orphaned
    temporary Prefect server, no parts/ left."""
    import signal
    import subprocess
    import sys

    root = _image_folder(tmp_path / "data", per_class=4)
    slow = tmp_path / "slowmodel.py"
    # Every forward on real images (not the constant pre-flight probes) takes 3 s: 6 chunks of 2 images
    # keep the run busy for well over half a minute after its first part file appears.
    slow.write_text(
        "import time, torch\nfrom tests.conftest import TinyCNN\n"
        "class Slow(TinyCNN):\n    def forward(self, x):\n"
        "        if float(x.float().std()) > 0:\n            time.sleep(3.0)\n"
        "        return super().forward(x)\n"
        "def build():\n    torch.manual_seed(0)\n    return Slow(3)\n"
    )
    data = _config(tmp_path, root, model={"factory": "slowmodel:build", "checkpoint": None}, cam={"batch_size": 1},
                   run={"chunk_size": 2, "cache": False})
    cfg = _write_yaml(tmp_path / "c.yaml", data)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the ephemeral server is the point
    env.update(PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]), str(tmp_path)]),
               PREFECT_HOME=str(tmp_path / "prefect-home"))
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(cfg), "--quiet"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 400
        parts = None
        while time.monotonic() < deadline and proc.poll() is None:
            found = list((tmp_path / "out" / "hostile").glob("*/parts/chunk-*.parquet"))
            if found:
                parts = found[0].parent
                break
            time.sleep(0.2)
        assert parts is not None, "the run never wrote a part before it ended"
        servers = _uvicorn_children(proc.pid)
        assert servers, "expected a temporary Prefect server process"
        sig = getattr(signal, signame)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + sig, err
    assert f"stopped by {signame}".encode() in err and b"Traceback" not in err
    time.sleep(1)
    alive = [p for p in servers if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]]
    assert not alive, f"orphaned server processes: {alive}"
    assert not parts.exists()


# --------------------------------------------------------------------------- the gate's decision, unit level


def test_inconclusive_wins_over_passed_and_failed_and_never_passes():
    from auditors.analysis.gate import gate_status, judge_inconclusive
    from auditors.config.schema import GateConfig
    from auditors.report.verdict import build_verdict

    gate = GateConfig()
    # classes at the default gate.min_images_per_class (10): each could be flagged
    ok = dict(n_listed=20, n_audited=20, n_degenerate=0, n_nonfinite=0, class_sizes={"a": 10, "b": 10}, gate=gate)
    assert judge_inconclusive(**ok) == []
    assert judge_inconclusive(**{**ok, "n_degenerate": 11})  # > max_degenerate_fraction 0.5
    assert judge_inconclusive(**{**ok, "n_degenerate": 10}) == []  # exactly at the limit: judged
    assert judge_inconclusive(**{**ok, "n_nonfinite": 1})  # any NaN prediction (max_nonfinite_fraction 0)
    assert judge_inconclusive(**{**ok, "n_audited": 8})  # 40 % < min_audited_fraction
    assert judge_inconclusive(**{**ok, "class_sizes": {"a": 9, "b": 9}})  # no class big enough to be flagged
    assert judge_inconclusive(**{**ok, "class_sizes": {"a": 0, "b": 0}})
    for passed in (True, False):
        g = gate_status({"passed": passed, "failures": []}, ["no image could be audited"])
        assert g["status"] == "inconclusive" and g["passed"] is False
    assert gate_status({"passed": True, "failures": []}, [])["status"] == "passed"
    from auditors.audit.summary import Summary

    verdict = build_verdict(Summary.model_validate(
        {"name": "x", "run_id": "r", "camaudit_version": "0", "config": {}, "n_images": 10, "gate": g}))
    assert verdict.status == "inconclusive" and verdict.title == "CANNOT JUDGE"
    assert verdict.reasons == ["no image could be audited"]
