"""What the summary says about how the run was set up, as several report sections need it.

Limits come from :mod:`auditors.analysis.gate` (the gate's own lookup), never re-derived here.
"""

from __future__ import annotations

from auditors.analysis import gate
from auditors.audit.summary import Summary
from auditors.report.formatting import fmt_threshold, num

__all__ = [
    "ci_level", "lift_threshold", "effect_threshold", "counterfactual_on", "gate_limits_text", "token_limits",
    "min_images", "has_section", "norm_lift_threshold",
]


def has_section(summary: Summary, name: str) -> bool:
    """Whether the run recorded section ``name`` at all (older summaries lack later sections)."""
    return name in summary.model_fields_set


def lift_threshold(summary: Summary, region: str) -> float | None:
    """The gate's lift limit for ``region`` (None without a gate section in the config)."""
    cfg = summary.gate_config()
    return gate.limit(cfg, region, "lift") if cfg is not None else None


def norm_lift_threshold(summary: Summary, region: str) -> float | None:
    """The gate's normalised-lift limit for ``region`` (``gate.max_norm_lift``), or None."""
    cfg = summary.gate_config()
    return cfg.max_norm_lift.get(region) if cfg is not None else None


def effect_threshold(summary: Summary, region: str) -> float | None:
    """The gate's counterfactual-effect limit for ``region``."""
    cfg = summary.gate_config()
    return gate.limit(cfg, region, "effect") if cfg is not None else None


def min_images(summary: Summary) -> float | None:
    """``gate.min_images_per_class`` as the run recorded it (None when the config has no gate section)."""
    return num((summary.config.get("gate") or {}).get("min_images_per_class"))


def ci_level(summary: Summary) -> str:
    """"95%" from ``stats.ci``, or "" when the run recorded no coverage."""
    level = num(summary.stats.ci) if summary.stats is not None else None
    if level is None or not 0 < level < 1:
        return ""
    return f"{level * 100:g}%"


def counterfactual_on(summary: Summary) -> bool:
    return summary.counterfactual is not None and summary.counterfactual.enabled


def gate_limits_text(summary: Summary) -> str:
    """E.g. "text lift 2.0, text effect 0.05" (only the limits that apply to this run)."""
    parts = []
    lift = lift_threshold(summary, "text")
    if lift is not None:
        parts.append(f"text lift {fmt_threshold(lift)}")
    effect = effect_threshold(summary, "text")
    if effect is not None and counterfactual_on(summary):
        parts.append(f"text effect {fmt_threshold(effect)}")
    return ", ".join(parts)


def token_limits(summary: Summary) -> dict[str, float | None]:
    """The token rules' settings: {"lift", "effect", "p_value", "dependence_fdr", "fail_on_association"}
    (``tokens.max_*``, ``tokens.dependence_fdr``, ``tokens.fail_on_association``)."""
    tc = summary.tokens_config()
    if tc is None:
        return {"lift": None, "effect": None, "p_value": None, "dependence_fdr": None, "fail_on_association": None}
    return {"lift": tc.max_lift, "effect": tc.max_effect, "p_value": tc.max_p_value,
            "dependence_fdr": tc.dependence_fdr, "fail_on_association": tc.fail_on_association}
