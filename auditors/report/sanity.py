"""The sanity-check panel: do the heatmaps change when the model is randomised (Adebayo et al.)?"""

from __future__ import annotations

from typing import Any

from auditors.audit.summary import Summary
from auditors.report.facts import has_section
from auditors.report.formatting import DASH, fmt_float, fmt_int, fmt_text, fmt_threshold, num

__all__ = ["build_sanity"]


def build_sanity(summary: Summary) -> dict[str, Any] | None:
    """The randomisation-check panel; None for summaries that predate it."""
    if not has_section(summary, "sanity"):
        return None
    s = summary.sanity
    if s is None:
        return {"ran": False, "status": "none", "tag": "not run", "verdict": "", "facts": []}
    status = {True: "ok", False: "bad"}.get(s.model_sensitive, "none")
    layers = [str(x) for x in s.randomized_layers or []]
    limit = num(s.max_rank_correlation)
    facts = [
        ("Images sampled", fmt_int(s.n_images)),
        ("Re-initialised layers", ", ".join(layers) or DASH),
        ("Mean rank correlation", fmt_float(s.rank_correlation_mean)),
        ("Median rank correlation", fmt_float(s.rank_correlation_median)),
        ("Limit (mean)", f"\u2264 {fmt_threshold(limit)}" if limit is not None else DASH),
    ]
    mean = num(s.get("rank_correlation_mean"))
    if status == "ok" and mean is not None:
        bound = f" \u2264 {fmt_threshold(limit)}" if limit is not None else ""
        verdict = (f"Heatmaps change when the top layers are randomised (mean rank correlation {fmt_float(mean)}"
                   f"{bound}), so they reflect what the model learned.")
    elif status == "bad" and mean is not None:
        bound = f" > {fmt_threshold(limit)}" if limit is not None else ""
        verdict = ("Heatmaps of the randomised model rank pixels almost like the trained model's "
                   f"(mean rank correlation {fmt_float(mean)}{bound}): they describe the image more than the model.")
    else:
        verdict = fmt_text(s.get("verdict")) if s.get("verdict") else ""
    return {
        "ran": True,
        "status": status,
        "tag": {"ok": "model-sensitive", "bad": "not model-sensitive", "none": "not determined"}[status],
        "verdict": verdict,
        "facts": [{"label": k, "value": v} for k, v in facts],
    }
