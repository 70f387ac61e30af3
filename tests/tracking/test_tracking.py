"""Experiment trackers against real stores: a local MLflow SQLite store and W&B offline files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from auditors.config import config_from_dict
from auditors.errors import ConfigError
from flows.audit import run_audit
from tests.conftest import build_tiny_cnn
from tests.tracking.wandb_log import records

REPO = Path(__file__).resolve().parents[2]


def _config(root, tmp_path, tracking):
    ckpt = tmp_path / "tiny.pt"
    torch.save(build_tiny_cnn().state_dict(), ckpt)
    return config_from_dict({
        "name": "tiny",
        "dataset": {"root": str(root)},
        "model": {"factory": "tests.conftest:build_tiny_cnn", "checkpoint": str(ckpt), "input_size": [64, 64]},
        "cam": {"batch_size": 6},
        "tokens": {"enabled": False},
        "sanity": {"enabled": False},
        "output": {"dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"), "gallery_size": 3},
        "run": {"chunk_size": 12},
        "tracking": tracking,
    })


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
def test_mlflow_and_wandb_log_the_same_run(poster_folder, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = _config(poster_folder, tmp_path, {
        "mlflow": {"tracking_uri": uri, "experiment": "audits", "artifact_location": str(tmp_path / "mlartifacts")},
        "wandb": {"project": "camaudit-test", "mode": "offline"},
    })
    result = run_audit(cfg)
    summary = result.summary
    tracked = json.loads((result.run_dir / "tracking.json").read_text())
    assert "error" not in tracked["mlflow"] and "error" not in tracked["wandb"], tracked

    # --- MLflow: read back through a fresh client on the same SQLite store.
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("audits")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id == tracked["mlflow"]["run_id"]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["name"] == "tiny" and run.data.params["cam.batch_size"] == "6"
    assert run.data.params["model.input_size"] == "[64, 64]"
    assert run.data.tags["camaudit.gate"] == ("passed" if summary["gate"]["passed"] else "failed")
    assert run.data.tags["camaudit.run_id"] == result.run_dir.name
    for cls, stats in summary["classes"].items():
        assert run.data.metrics[f"class/{cls}/text_lift"] == pytest.approx(stats["text_lift"])
        assert run.data.metrics[f"class/{cls}/n"] == stats["n"]
        assert run.data.metrics[f"class/{cls}/text_lift_ci_low"] == pytest.approx(stats["text_lift_ci"][0])
    assert run.data.metrics["n_images"] == summary["n_images"] == 12
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "report.html", "validation.json", "gallery"} <= names
    pngs = [a.path for a in client.list_artifacts(run.info.run_id, "gallery")]
    assert len(pngs) == 3 and all(p.endswith(".png") for p in pngs)
    local = client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path / "dl"))
    assert Path(local).read_bytes() == (result.run_dir / "summary.json").read_bytes()

    # --- W&B offline: the run's transaction log and media files on disk.
    offline = list((tmp_path / "out" / "tiny" / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    recs = list(records(next(offline[0].glob("run-*.wandb"))))
    kinds = [r.WhichOneof("record_type") for r in recs]
    assert "exit" in kinds and "artifact" in kinds
    run_rec = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    config = {i.key: json.loads(i.value_json) for i in run_rec.config.update}
    assert config["name"] == "tiny" and config["cam"]["batch_size"] == 6
    assert list(run_rec.tags) == [f"gate:{'passed' if summary['gate']['passed'] else 'failed'}"]
    history = {i.key or "/".join(i.nested_key): i.value_json for r in recs if r.WhichOneof("record_type") == "history"
               for i in r.history.item}
    for cls, stats in summary["classes"].items():
        assert json.loads(history[f"class/{cls}/text_lift"]) == pytest.approx(stats["text_lift"])
    assert json.loads(history["gallery/_type"]) == "images/separated" and json.loads(history["gallery/count"]) == 3
    media = [offline[0] / "files" / f for f in json.loads(history["gallery/filenames"])]
    assert len(media) == 3 and all(m.is_file() and m.stat().st_size > 100 for m in media)
    art = next(r.artifact for r in recs if r.WhichOneof("record_type") == "artifact")
    assert {m.path for m in art.manifest.contents} == {"summary.json", "report.html", "validation.json"}


@pytest.mark.parametrize("extra", ["mlflow", "wandb"])
def test_missing_extra_is_a_config_error_naming_it(tmp_path, extra):
    """The package made unimportable in a fresh interpreter (sys.modules[name] = None): exit 2."""
    cfg = tmp_path / "a.yaml"
    tracking = {"mlflow": "{tracking_uri: 'sqlite:///x.db'}", "wandb": "{project: p}"}[extra]
    cfg.write_text(f"name: a\ndataset: {{root: {tmp_path}}}\nmodel: {{arch: resnet18}}\ntracking:\n  {extra}: {tracking}\n")
    code = textwrap.dedent(f"""
        import sys
        sys.modules[{extra!r}] = None
        from flows.cli import main
        sys.exit(main(["validate", {str(cfg)!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    assert f"tracking.{extra}" in proc.stderr and f"pip install 'camaudit[{extra}]'" in proc.stderr


def test_installed_extras_validate(tmp_path):
    cfg = config_from_dict({"name": "a", "dataset": {"root": str(tmp_path)}, "model": {"arch": "resnet18"},
                            "tracking": {"mlflow": {"tracking_uri": "sqlite:///x.db"}, "wandb": {"project": "p"}}})
    assert cfg.tracking.wandb.mode == "offline" and cfg.tracking.mlflow.experiment == "camaudit"
    with pytest.raises(ConfigError, match=r"tracking.wandb.mode"):
        config_from_dict({"name": "a", "dataset": {"root": str(tmp_path)}, "model": {"arch": "resnet18"},
                          "tracking": {"wandb": {"project": "p", "mode": "cloud"}}})


@pytest.mark.slow
def test_a_failing_tracker_is_reported_and_the_audit_stands(tmp_path, capsys):
    """A store that cannot be opened (its "folder" is a file): the error is returned, nothing raises."""
    from auditors.tracking import track_run

    (tmp_path / "not-a-dir").write_text("x")
    cfg = config_from_dict({"name": "a", "dataset": {"root": str(tmp_path)}, "model": {"arch": "resnet18"},
                            "tracking": {"mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'not-a-dir' / 'x.db'}",
                                                     "artifact_location": str(tmp_path / "artifacts")}}})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text("{}")
    summary = {"name": "a", "run_id": "r1", "n_images": 1, "gate": {"passed": True}, "classes": {"c": {"n": 1, "text_lift": 1.0}}}
    out = track_run(cfg, run_dir, summary, [])
    assert set(out) == {"mlflow"} and "error" in out["mlflow"]
    assert "mlflow tracking failed" in capsys.readouterr().err
