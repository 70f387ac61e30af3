"""Weights & Biases: one W&B run per audit run; heatmap overlays as ``wandb.Image``.

``mode: offline`` writes everything under ``<dir>/wandb/offline-run-*`` (no network); sync it
later with ``wandb sync``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from auditors.config.schema import WandbTrackingConfig
from auditors.tracking.common import RunPayload

__all__ = ["WandbTracker"]


class WandbTracker:
    name = "wandb"

    def __init__(self, settings: WandbTrackingConfig, default_dir: Path):
        self.settings = settings
        self.dir = Path(settings.dir or default_dir)

    def log(self, payload: RunPayload) -> dict[str, Any]:
        import wandb

        s = self.settings
        self.dir.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=s.project, entity=s.entity, mode=s.mode, dir=str(self.dir),
            name=f"{payload.name}-{payload.run_id}", job_type="camaudit-audit", config=payload.config,
            tags=[f"gate:{payload.tags['camaudit.gate']}"], reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        try:
            images = [wandb.Image(rgb, caption=caption) for _stem, rgb, caption in payload.gallery[: s.max_images]]
            run.log({**payload.metrics, **({"gallery": images} if images else {})})
            run.summary.update({**payload.tags, **payload.metrics})
            artifact = wandb.Artifact(name=f"camaudit-{payload.name}", type="camaudit-run",
                                      metadata={"run_id": payload.run_id, "gate": payload.tags["camaudit.gate"]})
            for f in payload.files:
                artifact.add_file(str(f))
            run.log_artifact(artifact)
            out = {"run_id": run.id, "project": s.project, "mode": s.mode, "dir": str(Path(run.dir).parent)}
        except Exception:
            run.finish(exit_code=1)
            raise
        run.finish()
        return out
