"""Audit configuration: the YAML schema, validated with pydantic.

Unknown keys are errors (``extra="forbid"``) so that a typo such as ``batchsize`` never
silently falls back to a default. Every error names the dotted key that caused it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from auditors.config.base import _Strict

# Sections with modules of their own, re-exported: ``auditors.config.schema`` stays the one place to import from.
from auditors.config.regions import (
    REFERENCE_REGIONS, REGION_BUILTINS, BackgroundRegionConfig, BorderRegionConfig, CustomRegionConfig,
    ExpectedRegionConfig, RegionsConfig, TextRegionConfig, _MaskSource,
)
from auditors.config.tracking import MlflowTrackingConfig, TrackingConfig, WandbTrackingConfig


__all__ = [
    "AuditConfig", "DatasetConfig", "ModelConfig", "CamConfig", "CounterfactualConfig", "TokensConfig", "StatsConfig",
    "SanityConfig", "GateConfig", "OutputConfig", "RunConfig", "REFERENCE_REGIONS", "REGION_BUILTINS",
    "BackgroundRegionConfig", "BorderRegionConfig", "CustomRegionConfig", "ExpectedRegionConfig", "RegionsConfig",
    "TextRegionConfig", "_MaskSource", "MlflowTrackingConfig", "TrackingConfig", "WandbTrackingConfig",
]


class DatasetConfig(_Strict):
    root: Path = Field(description="Folder holding the images (ImageFolder layout unless a manifest is given).")
    manifest: Path | None = Field(
        default=None, description="CSV or Parquet with columns `path` (relative to root) and optional `label`."
    )
    extensions: list[str] = Field(
        default=[".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"],
        description="File suffixes treated as images when walking an ImageFolder tree.",
    )
    limit: int | None = Field(default=None, ge=1, description="Audit only the first N images (smoke runs).")


class ModelConfig(_Strict):
    arch: str | None = Field(default=None, description="torchvision builder name, e.g. resnet18.")
    checkpoint: Path | None = Field(default=None, description="state_dict loaded with weights_only=True.")
    torchscript: Path | None = Field(default=None, description="TorchScript file (alternative to arch).")
    factory: str | None = Field(default=None, description="'module:callable' returning an nn.Module.")
    classes: list[str] | None = Field(default=None, description="Index -> class name.")
    input_size: tuple[int, int] = Field(default=(224, 224), description="(height, width) the model sees.")
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize: Literal["stretch", "center_crop", "letterbox"] = Field(
        default="stretch",
        description="How originals become input_size: stretch, resize-shorter-side + centre crop, or pad.",
    )
    target_layer: str | None = Field(default=None, description="Dotted module name; null = auto-detect.")
    reshape: Literal["auto", "none", "vit", "swin"] = Field(
        default="auto",
        description="Token/NHWC activations to NCHW maps: auto (ViT token layers and torchvision Swin stages detected), "
        "vit (tokens, grid read from the token count), swin (NHWC), none.",
    )

    @field_validator("input_size")
    @classmethod
    def _positive_size(cls, v: tuple[int, int]) -> tuple[int, int]:
        if min(v) < 8:
            raise ValueError("input_size must be at least 8x8")
        if max(v) > 8192:  # hardening: a 1e8 x 1e8 input would exhaust memory in the first forward pass
            raise ValueError("input_size must be at most 8192x8192")
        return v

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if not v:
                raise ValueError("model.classes is empty (omit it to use the dataset's folder names)")
            dup = sorted({c for c in v if v.count(c) > 1})
            if dup:
                raise ValueError(f"model.classes lists {dup} more than once (index -> name must be one-to-one)")
        return v

    @field_validator("mean", "std")
    @classmethod
    def _finite(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        import math

        if not all(math.isfinite(x) for x in v):
            raise ValueError(f"must be finite numbers, got {list(v)}")
        return v

    @field_validator("std")
    @classmethod
    def _nonzero_std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError("std entries must be > 0")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        sources = [n for n in ("arch", "torchscript", "factory") if getattr(self, n)]
        if len(sources) != 1:
            raise ValueError(
                "exactly one of model.arch, model.torchscript, model.factory must be set "
                f"(got {sources or 'none'})"
            )
        if self.torchscript and self.checkpoint:
            raise ValueError("model.checkpoint cannot be combined with model.torchscript")
        return self


class CamConfig(_Strict):
    method: Literal["gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "cam", "negcam", "guided_gradcam"] = Field(
        default="gradcam", description="guided_gradcam = Grad-CAM x guided backprop, a full-resolution map."
    )
    target: str = Field(default="predicted", description="predicted | label | topk | <class name>")
    k: int = Field(default=3, ge=1, le=100, description="target: topk: the k most likely classes per image, one pass.")
    layers: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Extra layers whose maps come from the same forward; adds <region>_mass@<layer> and "
        "<region>_lift@<layer> columns. null = the target layer only.",
    )
    batch_size: int = Field(default=32, ge=1)
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        default="auto", description="Autocast on CUDA; auto = bf16 where supported. Ignored on CPU."
    )
    channels_last: bool = Field(
        default=False, description="Run the model in channels_last memory format (often 10-40% faster on CPU)."
    )
    pointing_tolerance: int = Field(
        default=0, ge=0, description="Pixels (model input space) the argmax may miss a region by."
    )

    @field_validator("layers")
    @classmethod
    def _distinct_layers(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            if any(not n or n != n.strip() for n in v):
                raise ValueError("layers must be non-empty dotted module names")
            if len(set(v)) != len(v):
                raise ValueError(f"layers lists a layer twice: {v}")
        return v


class CounterfactualConfig(_Strict):
    enabled: bool = False
    method: Literal["telea", "ns"] = Field(default="telea", description="OpenCV inpainting: Telea or Navier-Stokes.")
    radius: int = Field(default=3, ge=1, le=50, description="Inpainting neighbourhood radius (model-input pixels).")
    margin: int = Field(default=2, ge=0, le=50, description="Dilate the removed mask by this many pixels first.")
    regions: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Regions to intervene on (each with its own matched placebo); null = every enabled region "
        "except background (its placebo would have to remove the foreground).",
    )
    seed: int = Field(default=0, description="Seed of the placebo placement (mixed with each image's hash).")
    placebo_tries: int = Field(default=200, ge=1, description="Placement attempts per image (one per piece and orientation).")
    placebo_max_overlap: float = Field(
        default=0.0, ge=0.0, le=0.25,
        description="Largest share of the removed (dilated) region a placebo may cover; images without such a "
        "placebo are recorded (<r>_placebo_status) and left out of effects.",
    )

    def intervened(self, enabled_regions: list[str]) -> list[str]:
        """Regions to intervene on, given the enabled ones: ``regions``, or all but background
        (a background's placebo would have to remove the foreground)."""
        if not self.enabled:
            return []
        if self.regions is not None:
            return list(self.regions)
        return [r for r in enabled_regions if r != "background"]


class TokensConfig(_Strict):
    """Which text? Group text instances into recurring tokens and test the riskiest ones."""

    enabled: bool = Field(default=True, description="Needs regions.text; recognition (regions.text.read) groups by string.")
    min_images: int = Field(default=3, ge=2, description="A token must appear on at least this many images.")
    min_text_length: int = Field(default=2, ge=1, description="Shorter recognised strings group visually instead.")
    min_text_conf: float = Field(default=0.4, ge=0.0, le=1.0, description="Less confident reads group visually instead.")
    max_hamming: int = Field(default=6, ge=0, le=7, description="Fingerprint bits two crops of one mark may differ by.")
    top_n: int = Field(default=20, ge=1, description="Tokens listed in summary.json and the report.")
    effect_tokens: int = Field(default=5, ge=0, description="Riskiest tokens whose removal is tested (needs counterfactual.enabled).")
    max_effect_images: int = Field(default=64, ge=2, description="Images per token used for its effect.")
    max_lift: float = Field(default=2.0, gt=0.0, description="Flag a class-associated token attended more than this.")
    max_effect: float = Field(default=0.05, description="Flag a class-associated token whose effect's lower bound exceeds this.")
    max_p_value: float = Field(
        default=0.01, gt=0.0, le=1.0,
        description="Class association: Benjamini-Hochberg q-value (omnibus test across classes, over all tokens) below this.",
    )
    # issue 10: association (data) and dependence (model) are separate findings.
    fail_on_association: bool = Field(
        default=False, description="Fail the gate on a class-associated token even when the model neither attends nor needs it."
    )
    dependence_fdr: float = Field(
        default=0.025, gt=0.0, le=0.5,
        description="A token is model-dependent when its removal effect exceeds max_effect at this BH false-discovery rate.",
    )
    max_visual_distance: float = Field(
        default=0.25, gt=0.0, le=2.0, description="1 - aligned crop similarity (NCC) within which two crops are one visual mark."
    )
    max_edit_distance: float = Field(
        default=0.34, ge=0.0, le=1.0, description="Read strings this close (edits / length) that also look alike are one mark."
    )


class StatsConfig(_Strict):
    bootstrap: int = Field(default=1000, ge=100, description="Bootstrap resamples for every interval.")
    ci: float = Field(default=0.95, gt=0.5, lt=1.0, description="Interval coverage.")
    seed: int = 0


class SanityConfig(_Strict):
    enabled: bool = True
    n_images: int = Field(default=16, ge=2, le=512, description="Images used for the randomisation check.")
    max_rank_correlation: float = Field(
        default=0.8, gt=0.0, le=1.0, description="Above this, maps are called 'not model-sensitive'."
    )


class GateConfig(_Strict):
    max_text_lift: float = Field(default=2.0, gt=0.0, description="Flag when the lift interval's lower bound exceeds this.")
    max_text_effect: float = Field(
        default=0.05, description="Flag when the lower bound of the text effect (confidence drop vs placebo) exceeds this."
    )
    max_lift: dict[str, float] = Field(default={}, description="Optional lift thresholds of other regions, by name.")
    max_effect: dict[str, float] = Field(default={}, description="Optional effect thresholds of other regions, by name.")
    max_norm_lift: dict[str, float] = Field(
        default={}, description="Optional normalised-lift thresholds (0..1, comparable across target layers), by region."
    )
    min_images_per_class: int = Field(
        default=10, ge=1,
        description=(
            "Classes with fewer audited images are reported but never flagged: below 6 images no one-sided 2.5% test "
            "is possible (sign test: 0.5^5 > 0.025), and the percentile bootstrap's lower bound exceeds the true mean "
            "far too often on few images (measured, skewed data: 15% at 2 images, 4% at 4-6, nominal 2.5% from 8-10)."
        ),
    )
    fdr: float = Field(
        default=0.025, gt=0.0, le=0.5,
        description="Benjamini-Hochberg level across the class x region x rule grid (0.025: one cell = the 95% interval rule).",
    )
    # hardening (issue 12): when the gate cannot judge, its status is "inconclusive" (exit 4)
    min_audited_images: int = Field(default=1, ge=1, description="Fewer audited images: the gate cannot judge.")
    min_audited_fraction: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Share of listed images that must be audited, else the gate cannot judge."
    )
    max_degenerate_fraction: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Share of all-zero/non-finite heatmaps above which the gate cannot judge."
    )
    max_nonfinite_fraction: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Share of images with NaN/inf predictions or maps above which the gate cannot judge."
    )
    # --- regression against an earlier run of the same audit (history; issue 13) ---
    baseline: str | None = Field(
        default=None,
        pattern=r"^(previous|[A-Za-z0-9][A-Za-z0-9._-]*)$",
        description="Regression rule: 'previous' (the last finished run of this audit) or a run id under "
        "<output.dir>/<name>/; null = off (the report still shows the change against the previous run).",
    )
    max_lift_increase: float = Field(
        default=0.5, ge=0.0, description="Fail a class whose text lift rose by more than this (difference interval's lower bound)."
    )
    max_effect_increase: float = Field(
        default=0.05, ge=0.0, description="Fail a class whose text effect rose by more than this (difference interval's lower bound)."
    )

    @field_validator("max_lift", "max_effect", "max_norm_lift")
    @classmethod
    def _no_reference_regions(cls, v: dict[str, float]) -> dict[str, float]:
        named = [r for r in v if r in REFERENCE_REGIONS]
        if named:
            raise ValueError(f"{named} is where the evidence should be (pointing game): high attention there is good, "
                             "so it cannot be a shortcut threshold")
        return v


class OutputConfig(_Strict):
    dir: Path = Path("reports")
    gallery_size: int = Field(default=12, ge=0, description="Most text-reliant images shown in the report.")
    failures_per_class: int = Field(
        default=3, ge=0, description="Most confident mistakes per true class shown in the report (0: no failure analysis)."
    )
    cache_dir: Path | None = Field(
        default=None, description="Text-region and task cache; default: the user cache dir."
    )
    save_cams: bool = Field(default=False, description="Write cams.npz: each image's map(s) as float16, keyed by path.")


class RunConfig(_Strict):
    chunk_size: int = Field(default=256, ge=1, description="Images per chunk (unit of scheduling and retry).")
    retries: int = Field(default=1, ge=0, description="Prefect retries for a failed chunk.")
    cache: bool = Field(
        default=True,
        description="Reuse per-image results stored by earlier audits (keyed by image content, model weights, "
        "settings and versions); false recomputes every image and refreshes the store.",
    )
    workers: int = Field(default=1, ge=1, description="Chunks in flight at once (threads, executor local).")
    executor: Literal["local", "dask"] = Field(
        default="local", description="Where chunks run: local threads, or Dask workers through prefect-dask."
    )
    dask_address: str | None = Field(
        default=None, description="executor dask: scheduler address of an existing cluster, e.g. tcp://10.0.0.5:8786."
    )
    dask_workers: int | None = Field(
        default=None, ge=1, description="executor dask: start a LocalCluster of this many worker processes."
    )

    @model_validator(mode="after")
    def _dask_keys(self) -> RunConfig:
        if self.executor != "dask" and (self.dask_address or self.dask_workers):
            raise ValueError("dask_address / dask_workers need executor: dask")
        if self.dask_address and self.dask_workers:
            raise ValueError("set either dask_address (an existing cluster) or dask_workers (a local one), not both")
        if self.dask_address is not None and not re.match(r"^[a-z]+://[^\s]+$", self.dask_address):
            raise ValueError(f"dask_address {self.dask_address!r} must look like tcp://HOST:PORT")
        return self


class AuditConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    dataset: DatasetConfig
    model: ModelConfig
    cam: CamConfig = CamConfig()
    regions: RegionsConfig = RegionsConfig()
    counterfactual: CounterfactualConfig = CounterfactualConfig()
    tokens: TokensConfig = TokensConfig()
    stats: StatsConfig = StatsConfig()
    sanity: SanityConfig = SanityConfig()
    gate: GateConfig = GateConfig()
    output: OutputConfig = OutputConfig()
    run: RunConfig = RunConfig()
    tracking: TrackingConfig = TrackingConfig()

    def counterfactual_regions(self) -> list[str]:
        """Regions intervened on: ``counterfactual.regions``, or every enabled one but background."""
        return self.counterfactual.intervened(self.regions.enabled_names())

    # --- hardening (issue 12): every name a key refers to must exist --------------------------
    @model_validator(mode="after")
    def _names_exist(self) -> AuditConfig:
        """A rule or list naming a region that does not exist would be silently ignored: refuse it.

        Gate rules may name a known region that is switched off in this run (one config, several
        runs), like ``max_text_lift`` with text off; a name that is no region at all is a typo.
        """
        enabled = self.regions.enabled_names()
        known = [*REGION_BUILTINS, *self.regions.custom]
        for key, limits in (("max_lift", self.gate.max_lift), ("max_effect", self.gate.max_effect)):
            for name in limits:
                if name == "text":
                    raise ValueError(f"gate.{key}.text: use gate.max_text_{key[4:]} for the text region")
                if name not in known:
                    raise ValueError(f"gate.{key}.{name}: {name!r} is not a region (known: {known}; enabled: {enabled})")
        if self.counterfactual.enabled:
            for name in self.counterfactual.regions or []:
                if name not in enabled:
                    raise ValueError(f"counterfactual.regions: {name!r} is not an enabled region (enabled: {enabled})")
        return self
    # --- end hardening ------------------------------------------------------------------------

    def resolve_paths(self, base: Path) -> AuditConfig:
        """Return a copy whose relative input paths are made absolute against ``base``."""
        data = self.model_dump()

        def fix(p: Any) -> Any:
            if p is None:
                return None
            try:
                p = Path(p).expanduser()
            except RuntimeError:  # "~nosuchuser/...": kept literally, then reported as not found
                p = Path(p)
            return p if p.is_absolute() else (base / p)

        data["dataset"]["root"] = fix(data["dataset"]["root"])
        data["dataset"]["manifest"] = fix(data["dataset"]["manifest"])
        for key in ("checkpoint", "torchscript"):
            data["model"][key] = fix(data["model"][key])
        data["output"]["cache_dir"] = fix(data["output"]["cache_dir"])
        data["regions"]["background"]["masks_dir"] = fix(data["regions"]["background"]["masks_dir"])
        for key in ("masks_dir", "annotations"):
            data["regions"]["expected"][key] = fix(data["regions"]["expected"][key])
        for custom in data["regions"]["custom"].values():
            custom["masks_dir"] = fix(custom["masks_dir"])
        return AuditConfig.model_validate(data)

    def public_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings) for summary.json."""
        return self.model_dump(mode="json")
