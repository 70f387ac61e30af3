"""SIGKILL a real ``camaudit run`` during text detection, during the CAM stage and during finalize;
the same command again completes, reuses the finished work and writes the uninterrupted run's rows."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import TinyCNN, tiny_audit_data
from tests.live_prefect import ROOT, cli_env, live_server

pytestmark = pytest.mark.slow


class SlowCNN(TinyCNN):
    """TinyCNN whose forward takes 0.25 s: the CAM stage lasts long enough to be killed in."""

    def forward(self, x):
        time.sleep(0.25)
        return super().forward(x)


def build_slow_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return SlowCNN(3)


@pytest.fixture(scope="module")
def api_url(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("prefect-live")) as url:
        yield url


_BASE = {
    "model": {"factory": "tests.audit.test_resume:build_slow_cnn"},
    "cam": {"batch_size": 2},
    "regions": {"text": {"batch_size": 1}},
    "run": {"chunk_size": 4},
    "tokens": {"enabled": True},
    "gate": {"min_images_per_class": 2},  # 4 images per class: judged, so the exit status is 0 or 1
}


def _config(root: Path, tmp: Path, tag: str) -> Path:
    data = tiny_audit_data(root, tmp, _BASE, name="resume", out=f"{tag}/out", cache=f"{tag}/cache")
    path = tmp / f"{tag}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _count(db: Path, table: str = "regions") -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _run(config: Path, env: dict, home: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config), "--quiet"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _finished_run(out: Path) -> Path:
    done = sorted(p.parent for p in out.glob("resume/*/summary.json"))
    assert done, f"no finished run under {out}"
    return done[-1]


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before the kill point: {proc.stdout.read().decode()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("kill point not reached")
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _rows(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "images.parquet").sort_values("path").reset_index(drop=True)


def test_sigkill_during_ocr_cam_and_finalize_then_rerun_completes_reuses_and_matches(poster_folder, tmp_path, api_url):
    env = cli_env(api_url, tmp_path / "home")
    base = _run(_config(poster_folder, tmp_path, "baseline"), env, tmp_path)
    out, _ = base.communicate(timeout=600)
    assert base.returncode in (0, 1), out.decode()[-3000:]
    base_run = _finished_run(tmp_path / "baseline" / "out")
    expected = _rows(base_run)
    expected_inst = _instances(base_run)
    for stage in ("ocr", "cam", "finalize"):
        _kill_and_rerun(stage, poster_folder, tmp_path, env, expected, expected_inst)


def _instances(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / "text_instances.parquet").sort_values(["path", "instance"]).reset_index(drop=True)


def _kill_and_rerun(stage: str, root: Path, tmp_path: Path, env: dict, expected: pd.DataFrame, expected_inst: pd.DataFrame) -> None:
    cfg = _config(root, tmp_path, stage)
    cache = tmp_path / stage / "cache"
    regions_db, results_db = cache / "text_regions.sqlite", cache / "results.sqlite"
    runs = tmp_path / stage / "out" / "resume"
    ready = {
        "ocr": lambda: _count(regions_db) >= 1 and _count(results_db) == 0,
        "cam": lambda: 1 <= _count(results_db) < 12,
        "finalize": lambda: any(runs.glob("*/images.parquet")) and not any(runs.glob("*/summary.json")),
    }[stage]
    _kill_when(_run(cfg, env, tmp_path), ready)
    assert not any(runs.glob("*/summary.json")), f"{stage}: the kill landed after the run finished"
    stored_before = _count(results_db)

    again = _run(cfg, env, tmp_path)
    out, _ = again.communicate(timeout=600)
    assert again.returncode in (0, 1), out.decode()[-3000:]
    run = _finished_run(tmp_path / stage / "out")
    summary = json.loads((run / "summary.json").read_text())
    pd.testing.assert_frame_equal(_rows(run), expected, obj=f"{stage}: images.parquet")
    pd.testing.assert_frame_equal(_instances(run), expected_inst, obj=f"{stage}: text_instances.parquet")
    assert summary["n_images"] == 12 and summary["n_failed"] == 0
    assert summary["incremental"]["reused"] == stored_before, f"{stage}: every row stored before the kill is reused"
    if stage == "ocr":
        assert stored_before == 0 and summary["text_detection"]["text_cached"] >= 1, "detections stored before the kill are reused"
    if stage == "cam":
        assert 1 <= stored_before < 12
    if stage == "finalize":
        rows = {k: summary["incremental"][k] for k in ("reused", "computed", "rejected")}  # failure rows: own keys
        assert rows == {"reused": 12, "computed": 0, "rejected": 0}
