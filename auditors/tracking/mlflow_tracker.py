"""MLflow: one MLflow run per audit run, through ``MlflowClient`` (no global tracking state, so
two audits in one process never log into each other's run)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

from auditors.config.schema import MlflowTrackingConfig
from auditors.tracking.common import RunPayload

__all__ = ["MlflowTracker"]

_BATCH = 100  # MLflow's log_batch limits: 1000 metrics, 100 params, 100 tags per call


class MlflowTracker:
    name = "mlflow"

    def __init__(self, settings: MlflowTrackingConfig):
        self.settings = settings

    def log(self, payload: RunPayload) -> dict[str, Any]:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        s = self.settings
        client = MlflowClient(tracking_uri=s.tracking_uri)
        exp = client.get_experiment_by_name(s.experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(s.experiment, artifact_location=s.artifact_location)
        run = client.create_run(exp_id, run_name=s.run_name or f"{payload.name}-{payload.run_id}",
                                tags=payload.tags)
        rid = run.info.run_id
        try:
            now = int(time.time() * 1000)
            params = [Param(k, v) for k, v in payload.params.items()]
            metrics = [Metric(k, v, now, 0) for k, v in payload.metrics.items()]
            for i in range(0, max(len(params), len(metrics)), _BATCH):
                client.log_batch(rid, metrics=metrics[i: i + _BATCH], params=params[i: i + _BATCH])
            client.log_batch(rid, tags=[RunTag("camaudit.run_dir", str(payload.run_dir))])
            for f in payload.files:
                client.log_artifact(rid, str(f))
            if payload.gallery:
                with tempfile.TemporaryDirectory(prefix="camaudit-mlflow-") as tmp:
                    for stem, rgb, _caption in payload.gallery:
                        cv2.imwrite(str(Path(tmp) / f"{stem}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                    client.log_artifacts(rid, tmp, artifact_path="gallery")
        except Exception:
            client.set_terminated(rid, status="FAILED")
            raise
        client.set_terminated(rid, status="FINISHED")
        return {"run_id": rid, "experiment_id": exp_id, "tracking_uri": s.tracking_uri}
