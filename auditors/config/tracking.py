"""The ``tracking:`` section: optional experiment trackers (MLflow, W&B), checked for their extras at config time."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from auditors.config.base import _Strict


# --- experiment trackers (issue 11) ---
_TRACKER_EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}


def _require_extra(module: str) -> None:
    """Fail at config time (exit 2) when a tracker's optional extra is not installed."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ValueError(f"needs the optional extra: pip install 'camaudit[{_TRACKER_EXTRAS[module]}]' ({module} is not installed)")


class MlflowTrackingConfig(_Strict):
    tracking_uri: str = Field(description="MLflow tracking URI, e.g. sqlite:///mlflow.db, file:./mlruns or http://host:5000.")
    experiment: str = Field(default="camaudit", min_length=1, description="Experiment name (created when missing).")
    run_name: str | None = Field(default=None, description="MLflow run name; default: <name>-<run-id>.")
    artifact_location: str | None = Field(
        default=None, description="Artifact root of a newly created experiment (e.g. a folder); default: MLflow's."
    )

    @model_validator(mode="after")
    def _installed(self) -> MlflowTrackingConfig:
        _require_extra("mlflow")
        return self


class WandbTrackingConfig(_Strict):
    project: str = Field(min_length=1, description="W&B project.")
    mode: Literal["offline", "online", "disabled"] = Field(
        default="offline", description="offline writes the run under dir/wandb/ (sync later with `wandb sync`)."
    )
    entity: str | None = None
    dir: Path | None = Field(default=None, description="Where wandb/ is written; default: the audit's output folder.")
    max_images: int = Field(default=12, ge=0, description="Gallery heatmap overlays logged as wandb.Image.")

    @model_validator(mode="after")
    def _installed(self) -> WandbTrackingConfig:
        _require_extra("wandb")
        return self


class TrackingConfig(_Strict):
    """Optional experiment trackers, called once after the run's outputs are written."""

    mlflow: MlflowTrackingConfig | None = None
    wandb: WandbTrackingConfig | None = None
