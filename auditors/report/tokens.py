"""The "Text the model uses" section: recurring tokens, their class association, attention and
effect, with crops and before/after examples of flagged ones.

Whether a token is flagged is the gate's decision (:mod:`auditors.analysis.gate`); its status
words follow :func:`auditors.analysis.gate.token_status` (the gate's token rule, per finding).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from auditors.analysis.gate import token_status
from auditors.analysis.token_rules import entry_verdict
from auditors.audit.summary import Summary, TokenEntry
from auditors.measure.gallery import GalleryItem
from auditors.report.facts import ci_level, counterfactual_on, has_section, token_limits
from auditors.report.formatting import (
    DASH, as_dict, fmt_ci, fmt_dec, fmt_float, fmt_int, fmt_p, fmt_pct, fmt_text, fmt_threshold, interval,
    level_class, lift_level, num, pct_words, sort_key,
)
from auditors.report.images import (
    after_text, as_rgb_uint8, cam_like, display_scale, edit_panel, heatmap_overlay, mask_polygons,
    outline_polygons, png_data_uri, resize,
)
from auditors.report.plots import effect_plot, plot_axis, plot_domain
from auditors.report.tokens_text import flagged_tokens, token_entries, token_label, token_sentence

__all__ = ["MAX_TOKEN_GALLERIES", "TOKEN_STATUS", "build_tokens", "token_crop_uri", "listed"]

#: Flagged tokens that get an example gallery; more would bloat the file (5 panels per example).
MAX_TOKEN_GALLERIES = 8
MAX_TOKEN_EXAMPLES = 3
MAX_TOKEN_CROPS = 4
#: Crops are shown 28 px tall; encoding them up to twice that keeps them sharp on high-DPI screens.
CROP_MAX_H, CROP_MAX_W = 56, 200
TOKEN_PLOT_W = 110
SHARE_W, SHARE_H = 84, 9

TOKEN_STATUS = {
    "flagged": ("tag-bad", "\u2691 fails gate", "A finding the gate fails on: the model depends on the token, or it is tied to "
                "one class and over-attended (or tokens.fail_on_association is on)"),
    "reported": ("tag-warn", "reported", "A finding that does not fail the gate under this config: tied to one class in "
                 "the data, but the model neither attends to it nor was shown to need it"),
    "ok": ("tag-ok", "ok", "Neither finding: not tied to one class, and not shown to be needed"),
}

#: The two findings as the report names them (summary.json ``tokens[].associated`` / ``dependent``).
FINDING_WORDS = {"associated": "association", "dependent": "dependence"}
FINDING_LONG = {"associated": "data association (the token is tied to a class in this data)",
                "dependent": "model dependence (removing the token costs confidence beyond a placebo)"}


def token_crop_uri(crop: Any) -> str | None:
    """A token crop as a small inline PNG (shrunk, never enlarged); None when unusable."""
    rgb = as_rgb_uint8(crop)
    if rgb is None:
        return None
    h, w = rgb.shape[:2]
    return png_data_uri(resize(rgb, min(1.0, CROP_MAX_H / h, CROP_MAX_W / w)))


def listed(value: Any) -> list:
    """A list of items from a list, tuple, stacked array or a single item (None: empty)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray) and value.ndim == 4:
        return list(value)
    return [value]


def _token_crops(crops: Any, label: str) -> list[dict[str, str]]:
    out = []
    for crop in listed(crops)[:MAX_TOKEN_CROPS]:
        uri = token_crop_uri(crop)
        if uri:
            out.append({"src": uri, "alt": f"Example of {label}"})
    return out


def _base_rates(summary: Summary) -> dict[str, float]:
    """Each class's share of all audited images (the Fisher test's baseline)."""
    counts = {k: num(v.n) for k, v in summary.classes.items()}
    total = sum(v for v in counts.values() if v)
    return {k: v / total for k, v in counts.items() if v and total > 0}


def _share_bar(t: TokenEntry, base: dict[str, float], flagged: bool) -> dict[str, Any] | None:
    """Stacked bar of the token's images by class: top class first (coloured), the rest grey,
    with a tick at the top class's share of all images (what no association would give)."""
    shares = [(str(k), num(v)) for k, v in as_dict(t.get("class_shares")).items() if (num(v) or 0) > 0]
    if not shares:
        return None
    top = str(t.get("top_class")) if t.get("top_class") is not None else None
    shares.sort(key=lambda kv: (kv[0] != top, -kv[1]))
    total = sum(v for _, v in shares)
    scale = SHARE_W / max(total, 1.0)
    segs, x = [], 0.0
    for i, (name, v) in enumerate(shares):
        width = v * scale
        cls = ("top-bad" if flagged else "top") if name == top else ("rest-a" if i % 2 else "rest-b")
        segs.append({"x": round(x, 1), "w": round(max(width, 0.5), 1), "cls": cls, "title": f"{name}: {fmt_pct(v, 0)}"})
        x += width
    rate = base.get(top) if top is not None else None
    title = ", ".join(f"{k} {pct_words(v)}" for k, v in shares)
    if rate is not None:
        title += f" (class '{top}' is {pct_words(rate)} of all images)"
    return {"w": SHARE_W, "h": SHARE_H, "segs": segs, "title": title,
            "tick": round(rate * SHARE_W, 1) if rate is not None else None,
            "base": pct_words(rate) if rate is not None else ""}


def _token_row(rank: int, t: TokenEntry, crops: Any, limits: dict, flagged: bool, base: dict[str, float],
               domain: tuple[float, float] | None) -> dict[str, Any]:
    lab = token_label(t)
    key = str(t.get("token"))
    lift, effect, ci = t.get("lift"), t.get("effect"), t.get("effect_ci")
    status, why = token_status({**t.to_dict(), "flagged": flagged}, limits)
    v = entry_verdict({**t.to_dict(), "flagged": flagged}, limits)
    tag_cls, tag_text, tag_title = TOKEN_STATUS[status]
    level = level_class(effect, ci, limits["effect"])
    n_inst, removed, placebo = num(t.get("n_instances")), t.get("flip_rate_removed"), t.get("flip_rate_placebo")
    p = num(t.get("p_value"))
    share = t.get("class_share")
    return {
        "rank": rank,
        "key": key,
        "kind": lab["kind"],
        "label": lab["label"],
        "hash": lab["hash"],
        "sort_label": (lab["label"] + " " + lab["hash"]).strip(),
        "crops": _token_crops(crops, f"'{lab['label']}'" if lab["kind"] == "text" else f"the unreadable mark #{lab['hash']}"),
        "n_images": {"text": fmt_int(t.get("n_images")), "sort": sort_key(t.get("n_images")),
                     "sub": f"{fmt_int(n_inst)} instance{'' if n_inst == 1 else 's'}" if n_inst is not None else ""},
        "top_class": fmt_text(t.get("top_class")),
        "share": {"text": fmt_pct(share, 0), "sort": sort_key(share)},
        "bar": _share_bar(t, base, flagged),
        "p": _association_cell(p, num(t.get("q_value")), v.associated, limits),
        "lift": {"text": fmt_float(lift), "sort": sort_key(lift), "cls": f"num lift {lift_level(lift, limits['lift'])}".strip(),
                 "sub": (f"{fmt_pct(t.get('mass'))} on {fmt_pct(t.get('area'))}"
                         if num(t.get("mass")) is not None and num(t.get("area")) is not None else "")},
        "effect": {"text": fmt_dec(effect), "sort": sort_key(effect), "cls": f"num lift {level}".strip(),
                   "sub": fmt_ci(ci, fmt_dec) if num(effect) is not None else "", "tested": num(effect) is not None,
                   **_dependence_words(num(t.get("effect_q_value")), v.dependent, num(effect) is not None, limits)},
        "plot": effect_plot(effect, ci, limits["effect"], domain, level, f"'{lab['label']}'", TOKEN_PLOT_W)
        if domain is not None else None,
        "flips": {"text": fmt_pct(removed, 0), "sort": sort_key(removed),
                  "sub": f"placebo {fmt_pct(placebo, 0)}" if num(placebo) is not None else ""},
        "risk": {"text": fmt_float(t.get("risk"), 1 if (num(t.get("risk")) or 0) >= 10 else 2),
                 "sort": sort_key(t.get("risk"))},
        "status": status,
        "status_sort": {"flagged": "0", "reported": "1", "ok": "2"}[status],
        "tag": {"cls": tag_cls, "text": tag_text, "title": tag_title},
        "why": why,
        "findings": v.findings,
        "finding_chips": [
            {"key": k, "text": FINDING_WORDS[k], "fails": fails,
             "title": f"{FINDING_LONG[k]}: {'fails the gate' if fails else 'reported, does not fail the gate under this config'}"}
            for k, on, fails in (("dependent", v.dependent, v.dependence_fails), ("associated", v.associated, v.association_fails))
            if on
        ],
    }


def _association_cell(p: float | None, q: float | None, associated: bool, limits: dict) -> dict[str, str]:
    """The data-association finding: the omnibus test's BH q-value across tokens (its p-value where an
    older run recorded no q-value), marked when the token is associated."""
    shown = q if q is not None else p
    what = "q" if q is not None else "p"
    title = f"{what} = {shown:.3g}" if shown is not None else ""
    if q is not None and p is not None:
        title = f"omnibus class test: p = {p:.3g}, BH q = {q:.3g} across tokens"
    if limits["p_value"] is not None and shown is not None:
        title += f" ({'associated' if associated else 'not associated'}: threshold {limits['p_value']:g})"
    return {"text": fmt_p(shown), "sort": sort_key(shown), "title": title, "cls": "num assoc" if associated else "num",
            "sub": "associated" if associated else ""}


def _dependence_words(q: float | None, dependent: bool, tested: bool, limits: dict) -> dict[str, str]:
    """The model-dependence finding under the effect: its BH q-value and whether it fired."""
    if not tested:
        return {"finding": "", "dependent": False}
    return {"finding": f"q {fmt_p(q)}" if q is not None else "", "dependent": dependent}


def _token_panels(item: GalleryItem) -> list[dict[str, str]]:
    """Original, heatmap, heatmap with the token outlined, token removed, placebo (outlined)."""
    rgb = as_rgb_uint8(getattr(item, "image", None))
    if rgb is None:
        return []
    cam = cam_like(getattr(item, "cam", None), rgb.shape[:2])
    polygons = list(getattr(item, "text_polygons", None) or []) or mask_polygons(
        as_dict(getattr(item, "regions", None)).get("token"), rgb.shape[:2]
    )
    scale = display_scale(rgb.shape)
    small = resize(rgb, scale)
    overlay = heatmap_overlay(small, resize(cam, scale))
    panels = [
        {"caption": "Original", "src": png_data_uri(small), "after": "", "flipped": False},
        {"caption": "Grad-CAM", "src": png_data_uri(overlay), "after": "", "flipped": False},
        {"caption": "Token outlined", "src": png_data_uri(outline_polygons(overlay, polygons, scale)),
         "after": "", "flipped": False},
    ]
    edits = as_dict(getattr(item, "edits", None))
    before = fmt_text(item.pred)
    for key, caption, outline in (("token_removed", "Token removed", False), ("token_placebo", "Placebo (outlined)", True)):
        view = as_dict(edits.get(key))
        panel = edit_panel(view, caption, outline) if view else None
        if panel:
            after, flipped = after_text(view, before)
            panels.append({**panel, "after": "\u2192 " + after, "flipped": flipped})
    return panels


def _token_card(item: GalleryItem) -> dict[str, Any]:
    edits = as_dict(getattr(item, "edits", None))
    before = fmt_text(item.pred)
    changes = []
    for key, what in (("token_removed", "Token removed"), ("token_placebo", "Placebo")):
        view = as_dict(edits.get(key))
        if view:
            after, flipped = after_text(view, before)
            changes.append({"label": what, "after": after, "flipped": flipped})
    label = None if item.label is None else str(item.label)
    effect = as_dict(item.metrics).get("token_effect")
    return {
        "path": fmt_text(item.path),
        "label": label if label is not None else DASH,
        "pred": before,
        "mismatch": label is not None and label != before,
        "before": f"{before} {fmt_pct(item.confidence, 0)}",
        "changes": changes,
        "effect": fmt_dec(effect) if num(effect) is not None else "",
        "panels": _token_panels(item),
    }


def build_tokens(summary: Summary, examples: dict | None = None, crops: dict | None = None) -> dict[str, Any] | None:
    """The "Text the model uses" section; None for summaries that predate tokens."""
    if summary.tokens is None:
        return None
    cfg = as_dict(summary.config.get("tokens"))
    ran = cfg.get("enabled") is not False and (not has_section(summary, "regions") or "text" in summary.regions)
    tokens = token_entries(summary)
    flagged = set(flagged_tokens(summary, tokens))
    limits = token_limits(summary)
    examples = {str(k): v for k, v in as_dict(examples).items()}
    crops = {str(k): v for k, v in as_dict(crops).items()}
    has_effects = any(num(t.get("effect")) is not None for t in tokens.values())
    domain = None
    if has_effects:
        points = [0.0] + ([limits["effect"]] if limits["effect"] is not None else [])
        for t in tokens.values():
            if num(t.get("effect")) is not None:
                points += [num(t.get("effect")), *(interval(t.get("effect_ci")) or ())]
        domain = plot_domain(points)
    base = _base_rates(summary)
    rows = [_token_row(i, t, crops.get(k), limits, k in flagged, base, domain)
            for i, (k, t) in enumerate(tokens.items(), start=1)]
    level = ci_level(summary)
    galleries, skipped = [], 0
    for row in rows:
        if row["status"] != "flagged":
            continue
        if len(galleries) >= MAX_TOKEN_GALLERIES:
            skipped += 1
            continue
        items = [it for it in listed(examples.get(row["key"])) if isinstance(it, GalleryItem)]
        row["gallery_id"] = f"token-examples-{row['rank']}"
        galleries.append({
            "id": row["gallery_id"], "rank": row["rank"], "label": row["label"], "kind": row["kind"],
            "hash": row["hash"], "key": row["key"], "crops": row["crops"],
            "sentence": token_sentence(tokens[row["key"]], {}, level),
            "cards": [_token_card(it) for it in items[:MAX_TOKEN_EXAMPLES]],
        })
    for row in rows:
        row.setdefault("gallery_id", "")
    n_tested = sum(1 for t in tokens.values() if num(t.get("effect")) is not None)
    return {
        "ran": ran,
        "rows": rows,
        "has_effects": has_effects,
        "has_crops": any(r["crops"] for r in rows),
        "axis": plot_axis(domain, limits["effect"], TOKEN_PLOT_W) if domain is not None else None,
        "galleries": galleries,
        "skipped_galleries": skipped,
        "n_flagged": len([r for r in rows if r["status"] == "flagged"]),
        "n_tested": n_tested,
        "ci_level": level,
        "limits": {k: fmt_threshold(v) if v is not None else "" for k, v in limits.items()},
        "p_limit": f"{limits['p_value']:g}" if limits["p_value"] is not None else "",
        "dependence_fdr": f"{limits['dependence_fdr']:g}" if limits["dependence_fdr"] is not None else "",
        "fail_on_association": bool(limits["fail_on_association"]),
        "min_images": fmt_int(cfg.get("min_images")) if num(cfg.get("min_images")) is not None else "",
        "effect_tokens": fmt_int(cfg.get("effect_tokens")) if num(cfg.get("effect_tokens")) is not None else "",
        "max_effect_images": fmt_int(cfg.get("max_effect_images")) if num(cfg.get("max_effect_images")) is not None else "",
        "cf_on": counterfactual_on(summary),
    }
