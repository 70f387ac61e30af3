"""Against a real ``prefect server start`` on loopback: an audit on a 2-process Dask LocalCluster
equals the single-process audit, and ``camaudit serve`` registers a scheduled deployment whose
run (triggered through Prefect's API) writes the report and publishes its artifacts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from prefect.settings import PREFECT_API_URL, temporary_settings

from auditors.config import config_from_dict
from flows.audit import run_audit
from tests.conftest import tiny_audit_data
from tests.live_prefect import ROOT, cli_env, live_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api_url(tmp_path_factory):
    with live_server(tmp_path_factory.mktemp("prefect-live")) as url:
        yield url


_BASE = {"cam": {"batch_size": 2}, "run": {"chunk_size": 3}, "tokens": {"enabled": True}}


def _data(root: Path, tmp: Path, name: str, **over) -> dict:
    return tiny_audit_data(root, tmp, _BASE, over, name=name, cache=f"cache-{name}")


def test_dask_local_cluster_gives_the_single_process_rows(poster_folder, tmp_path, api_url, monkeypatch):
    # Worker processes import the model factory from this checkout.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("DASK_LOGGING__DISTRIBUTED", "error")
    with temporary_settings({PREFECT_API_URL: api_url}):
        single = run_audit(config_from_dict(_data(poster_folder, tmp_path, "single")))
        dask = run_audit(config_from_dict(_data(poster_folder, tmp_path, "dask", run={"executor": "dask", "dask_workers": 2})))
    rows = lambda r: pd.read_parquet(r.run_dir / "images.parquet").sort_values("path").reset_index(drop=True)  # noqa: E731
    assert dask.summary["executor"]["kind"] == "dask" and dask.summary["n_images"] == 12
    counts = {k: dask.summary["incremental"][k] for k in ("reused", "computed", "rejected")}  # failure rows: own keys
    assert counts == {"reused": 0, "computed": 12, "rejected": 0}
    pd.testing.assert_frame_equal(rows(single), rows(dask))
    inst = lambda r: pd.read_parquet(r.run_dir / "text_instances.parquet").sort_values(["path", "instance"]).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(inst(single), inst(dask))
    assert dask.summary["classes"] == single.summary["classes"]


def test_dask_refuses_workers_with_other_weights(poster_folder, tmp_path, api_url, monkeypatch):
    """model.arch without a checkpoint has random weights in every process: refused, not mixed."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    data = _data(poster_folder, tmp_path, "random", run={"executor": "dask", "dask_workers": 1, "retries": 0},
                 model={"factory": None, "checkpoint": None, "arch": "resnet18", "input_size": [64, 64]},
                 tokens={"enabled": False})
    with temporary_settings({PREFECT_API_URL: api_url}):
        result = run_audit(config_from_dict(data))
    errors = pd.read_csv(result.run_dir / "errors.csv")
    assert result.summary["n_images"] == 0 and len(errors) == 12
    assert errors["reason"].str.contains("different weights").all()


def _wait_for_deployment(url: str, name: str, timeout: float = 180) -> object:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        while True:
            try:
                return client.read_deployment_by_name(name)
            except ObjectNotFound:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


def test_serve_registers_a_scheduled_deployment_whose_run_writes_the_report(poster_folder, tmp_path, api_url):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment

    configs = []
    for name in ("served-a", "served-b"):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(_data(poster_folder, tmp_path, name)))
        configs.append(str(path))
    env = cli_env(api_url, tmp_path / "home")
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", *configs, "--cron", "0 3 * * *"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deployment = _wait_for_deployment(api_url, "camaudit-audit/served-a")
        _wait_for_deployment(api_url, "camaudit-audit/served-b")
        assert deployment.schedules and deployment.schedules[0].schedule.cron == "0 3 * * *"
        with temporary_settings({PREFECT_API_URL: api_url}):
            run = run_deployment("camaudit-audit/served-a", timeout=600)
            assert run.state.is_completed(), (run.state, (tmp_path / "serve.log").read_text()[-3000:])
            with get_client(sync_client=True) as client:
                arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        reports = list((tmp_path / "out" / "served-a").glob("*/report.html"))
        assert len(reports) == 1, "one report on disk for the triggered run"
        by_key = {a.key: a for a in arts}  # Prefect stores a link artifact as markdown: tell them apart by key
        assert set(by_key) == {"camaudit-served-a-classes", "camaudit-served-a-verdict", "camaudit-served-a-report"}
        table, verdict, link = (by_key[f"camaudit-served-a-{k}"] for k in ("classes", "verdict", "report"))
        assert table.type == "table" and all(c in table.data for c in ("alpha", "beta", "gamma", "text_lift"))
        assert "gate" in verdict.data and "served-a" in verdict.data
        assert f"({reports[0].resolve().as_uri()})" in link.data
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_serve_without_a_server_says_how_to_start_one(tmp_path):
    env = cli_env(None, tmp_path / "home")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "dataset": {"root": str(tmp_path)}, "model": {"arch": "resnet18"}}))
    out = subprocess.run([sys.executable, "-m", "flows.cli", "serve", str(path), "--cron", "0 3 * * *"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "prefect server start" in out.stderr and "PREFECT_API_URL" in out.stderr
