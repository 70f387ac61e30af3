"""CLI and config surface of the scale features: executor flags, serve arguments, Dask keys."""

from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from auditors.config import config_from_dict
from auditors.errors import CamAuditError, ConfigError
from flows.cli import _executor_overrides, _parser
from flows.serve import build_deployments, parse_interval


def _base(tmp_path, **run):
    return {"name": "x", "dataset": {"root": str(tmp_path)}, "model": {"arch": "resnet18"}, "run": run}


def test_executor_flags_become_run_overrides():
    args = _parser().parse_args(["run", "c.yaml", "--dask-workers", "3"])
    assert _executor_overrides(args) == ["run.executor=dask", "run.dask_workers=3"]
    args = _parser().parse_args(["run", "c.yaml", "--dask-address", "tcp://10.0.0.5:8786", "--workers", "2"])
    assert _executor_overrides(args) == ["run.workers=2", "run.executor=dask", "run.dask_address=tcp://10.0.0.5:8786"]
    assert _executor_overrides(_parser().parse_args(["run", "c.yaml"])) == []


@pytest.mark.parametrize("run, message", [
    ({"dask_workers": 2}, "need executor: dask"),
    ({"executor": "dask", "dask_workers": 2, "dask_address": "tcp://h:1"}, "not both"),
    ({"executor": "dask", "dask_address": "10.0.0.5"}, "tcp://HOST:PORT"),
    ({"executor": "ray"}, "executor"),
])
def test_dask_keys_are_validated(tmp_path, run, message):
    with pytest.raises(CamAuditError) as err:
        config_from_dict(_base(tmp_path, **run))
    assert message in str(err.value) and "run" in str(err.value)


def test_interval_parsing():
    assert parse_interval("90") == timedelta(seconds=90)
    assert parse_interval("15m") == timedelta(minutes=15)
    assert parse_interval("1d") == timedelta(days=1)
    for bad in ("soon", "0", "-5m", "1w"):
        with pytest.raises(ConfigError):
            parse_interval(bad)


def test_serve_validates_schedule_and_names_before_serving(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text(yaml.safe_dump(_base(tmp_path)))
    with pytest.raises(ConfigError, match="not a valid schedule"):
        build_deployments([a], [], "every night", None)
    with pytest.raises(ConfigError, match="distinct names"):
        build_deployments([a, a], [], "0 3 * * *", None)
    with pytest.raises(ConfigError, match="exactly one"):
        build_deployments([a], [], None, None)
    (dep,) = build_deployments([a], ["cam.batch_size=8"], None, "6h")
    assert dep.name == "x" and dep.parameters["config"]["cam"]["batch_size"] == 8
    assert dep.schedules[0].schedule.interval == timedelta(hours=6)
