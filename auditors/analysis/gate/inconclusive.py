"""Whether the audit could be judged at all (issue 12): "inconclusive" instead of a gate that
passed because there was nothing it could flag."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from auditors.config.schema import GateConfig

__all__ = ["GATE_STATUSES", "judge_inconclusive", "inconclusive_reasons", "gate_status"]


# --- hardening (issue 12): "the audit could not judge" ------------------------------------------
# A gate that found nothing to flag is not a gate that passed: with no audited images, NaN
# predictions or all-zero maps there is nothing it *could* have flagged. These checks decide
# whether the numbers can be judged at all; when they cannot, the gate's status is
# "inconclusive" (CLI exit 4), ``passed`` is False, and PASSED is never printed.

GATE_STATUSES = ("passed", "failed", "inconclusive")


def judge_inconclusive(
    *,
    n_listed: int,
    n_audited: int,
    n_degenerate: int,
    n_nonfinite: int,
    class_sizes: dict[str, int],
    gate: GateConfig,
) -> list[str]:
    """Reasons the audit cannot be judged (empty when it can).

    ``n_listed``: images that discovery handed to the audit; ``n_audited``: rows written;
    ``n_degenerate``: rows whose map is zero or non-finite; ``n_nonfinite``: rows whose
    predictions or map are not finite (a broken model or preprocessing); ``class_sizes``:
    audited images per gated class.
    """
    reasons: list[str] = []
    if n_listed == 0:
        reasons.append("the dataset listing is empty: no image was found to audit")
    elif n_audited == 0:
        reasons.append(f"no image could be audited ({n_listed} listed, all failed; see errors.csv)")
    else:
        if n_audited < gate.min_audited_images:
            reasons.append(f"only {n_audited} image(s) audited (gate.min_audited_images = {gate.min_audited_images})")
        share = n_audited / n_listed
        if share < gate.min_audited_fraction:
            reasons.append(
                f"only {n_audited} of {n_listed} listed images ({share:.0%}) could be audited "
                f"(gate.min_audited_fraction = {gate.min_audited_fraction:g}; see errors.csv)"
            )
        if n_nonfinite / n_audited > gate.max_nonfinite_fraction:
            reasons.append(
                f"{n_nonfinite} of {n_audited} images have non-finite predictions or maps (NaN/inf: broken weights or "
                f"preprocessing; gate.max_nonfinite_fraction = {gate.max_nonfinite_fraction:g})"
            )
        if n_degenerate / n_audited > gate.max_degenerate_fraction:
            reasons.append(
                f"{n_degenerate} of {n_audited} heatmaps are degenerate (all zero or non-finite; "
                f"gate.max_degenerate_fraction = {gate.max_degenerate_fraction:g})"
            )
        if class_sizes and max(class_sizes.values()) < gate.min_images_per_class:
            reasons.append(
                f"no class has at least {gate.min_images_per_class} usable audited image(s) (gate.min_images_per_class; "
                "degenerate maps do not count), so no class could be flagged"
            )
    return reasons


def inconclusive_reasons(images: pd.DataFrame, n_listed: int, per_class: dict[str, dict], gate: GateConfig) -> list[str]:
    """:func:`judge_inconclusive` on an images table (columns confidence, target_prob, cam_status)."""
    usable = np.ones(len(images), bool)
    for col in ("confidence", "target_prob"):
        if col in images:
            usable &= np.isfinite(pd.to_numeric(images[col], errors="coerce").to_numpy(dtype=float))
    status = images["cam_status"].astype(str) if "cam_status" in images else pd.Series(["ok"] * len(images))
    return judge_inconclusive(
        n_listed=n_listed,
        n_audited=len(images),
        n_degenerate=int((status != "ok").to_numpy().sum()),
        n_nonfinite=int((~usable | (status == "nonfinite").to_numpy()).sum()),
        class_sizes={c: int(s.get("n") or 0) for c, s in per_class.items()},
        gate=gate,
    )


def gate_status(gate_result: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    """Add ``status`` and ``inconclusive_reasons`` to a gate result (additive keys).

    Inconclusive wins over passed *and* failed: flags computed from unusable numbers mean nothing.
    ``passed`` is False whenever the status is not "passed".
    """
    status = "inconclusive" if reasons else ("passed" if gate_result["passed"] else "failed")
    return {**gate_result, "passed": status == "passed", "status": status, "inconclusive_reasons": list(reasons)}
# --- end hardening ------------------------------------------------------------------------------
