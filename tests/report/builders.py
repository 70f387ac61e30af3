"""Inputs for the report tests: summaries built by the real summary builder, galleries, tables.

Summaries of the current format come from :func:`auditors.audit.summary.build_summary` with the
gate decided by :func:`auditors.analysis.gate.decide`, never from hand-written gate results:

- :func:`realistic_summary` aggregates a real small images table (:func:`auditors.audit.finalize.summarise`);
- :func:`cf_summary` / :func:`token_summary` feed the stages' outputs (per-class aggregates with
  chosen intervals, the sanity check, the token table) to the builder, so the sentence tests can
  read exact interval bounds;
- :func:`summary_v01` is summary.json as release 0.1 wrote it (no intervals, counterfactuals,
  sanity or tokens): an old file the report must still render, loaded with ``Summary.model_validate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from auditors.analysis.gate import decide, token_decisions
from auditors.audit.finalize import summarise
from auditors.audit.summary import Summary, build_summary
from auditors.config import AuditConfig, config_from_dict
from auditors.config.schema import TokensConfig
from auditors.regions.build import region_names, region_sources
from auditors.report import write_report
from tests.report.galleries import make_cf_gallery, make_gallery, make_token_crops, make_token_examples

HOSTILE_CLASS = '<script>window.__pwned = 1</script>'
HOSTILE_PATH = 'posters/"><img id="injected" src=x onerror="window.__pwned=2">.jpg'
HOSTILE_TOKEN = "<img src=x onerror=alert(1)>"
CLASSES = ["comedy", "drama", "horror", "western"]
RUN_ID = "20261122T021000Z-1a2b"


# --------------------------------------------------------------------------- configs and tables


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def audit_config(**sections: Any) -> AuditConfig:
    """The demo-like audit config the report tests use; ``sections`` are merged in."""
    data = {
        "name": "demo-shortcut",
        "dataset": {"root": "posters"},
        "model": {"arch": "resnet18", "checkpoint": "/models/posters.pt", "classes": CLASSES,
                  "input_size": [224, 224], "resize": "stretch"},
        "cam": {"method": "gradcam", "target": "predicted"},
        "gate": {"max_text_lift": 2.0, "min_images_per_class": 5},
    }
    return config_from_dict(_merge(data, sections))


def cf_config(**sections: Any) -> AuditConfig:
    """A counterfactual-era config: text, border and a GrabCut background; text removal tested."""
    return audit_config(**_merge({
        "regions": {"background": {"enabled": True, "source": "grabcut", "grabcut_margin": 0.1}},
        "counterfactual": {"enabled": True, "regions": ["text"], "method": "telea", "margin": 2},
        "stats": {"bootstrap": 1000, "ci": 0.95, "seed": 0},
        "gate": {"max_text_effect": 0.05},
    }, sections))


def image_rows(cls: str, n: int, text_mass: float, text_area: float, border_mass: float = 0.1,
               spread: float = 0.1, degenerate: int = 1) -> list[dict[str, Any]]:
    """``n`` audited images of ``cls`` whose means are exactly the given values (the per-image
    values spread symmetrically around them), plus ``degenerate`` images with an all-zero CAM."""
    z = np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(n)
    rows = []
    for i in range(n + degenerate):
        ok = i < n
        t = text_mass * (1 + spread * z[i]) if ok else np.nan
        rows.append({
            "path": f"{cls}/{i:03d}.jpg", "label": cls, "pred": cls, "confidence": 0.9, "target": cls,
            "target_prob": 0.9, "cam_status": "ok" if ok else "zero", "width": 300, "height": 450,
            "content_hash": f"{cls}{i}", "n_text_boxes": 1,
            "text_mass": t, "text_area": text_area if ok else np.nan, "text_lift": t / text_area if ok else np.nan,
            "text_hit": float(i % 5 < 2) if ok else np.nan,
            "border_mass": border_mass if ok else np.nan, "border_area": 0.19 if ok else np.nan,
            "border_lift": border_mass / 0.19 if ok else np.nan, "border_hit": float(i % 20 == 0) if ok else np.nan,
        })
    return rows


def images_v01(summary: dict) -> pd.DataFrame:
    """A per-image table for a release-0.1 summary dict."""
    rows = []
    for cls, stats in summary["classes"].items():
        n = int(stats.get("n") or 0)
        rows += image_rows(cls, max(n - 1, 0), 0.2, 0.1, degenerate=1 if n else 0)
    return pd.DataFrame(rows)


def images_for(summary: Summary) -> pd.DataFrame:
    """A per-image table as large as the summary's classes (for the report's data-quality tiles)."""
    rows = []
    for cls, stats in summary.classes.items():
        n = int(stats.n or 0)
        rows += image_rows(cls, max(n - 1, 0), 0.2, 0.1, degenerate=1 if n else 0)
    return pd.DataFrame(rows)


def validation_result(success: bool = True) -> dict:
    """The shape :func:`auditors.analysis.validation.validate_tables` returns."""
    results = [
        ge_result(True, "expect_column_values_to_not_be_null", "path", 0),
        ge_result(success, "expect_column_values_to_be_between", "text_mass", 0 if success else 3,
                  min_value=0.0, max_value=1.0),
        {"success": True, "expectation_config": {"type": "expect_table_row_count_to_be_between",
                                                 "kwargs": {"min_value": 1}}, "result": {"observed_value": 180}},
    ]
    return {"success": success, "n_expectations": 3, "n_failed": 0 if success else 1, "suites": {"images": {
        "success": success, "results": results,
        "statistics": {"evaluated_expectations": 3, "successful_expectations": 3 if success else 2,
                       "unsuccessful_expectations": 0 if success else 1, "success_percent": 100.0},
    }}}


def ge_result(success: bool, type_: str, column: str | None, unexpected: int | None = None, **kwargs) -> dict:
    """One entry of ExpectationSuiteValidationResult.to_json_dict()['results']."""
    kw = dict(kwargs, batch_id="images-batch")
    if column:
        kw["column"] = column
    result = {} if unexpected is None else {
        "element_count": 180, "unexpected_count": unexpected, "unexpected_percent": 100 * unexpected / 180,
    }
    return {
        "success": success,
        "expectation_config": {"type": type_, "kwargs": kw, "meta": {}, "id": "x"},
        "result": result,
        "exception_info": {"raised_exception": False, "exception_message": None, "exception_traceback": None},
    }


def make_errors(n: int = 2) -> pd.DataFrame:
    rows = [{"path": f"broken/{i:04d}.jpg", "stage": "decode" if i % 3 else "ocr",
             "reason": "cannot identify image file"} for i in range(n)]
    return pd.DataFrame(rows, columns=["path", "stage", "reason"])


# --------------------------------------------------------------------------- summaries


def realistic_summary(classes: dict[str, tuple] | None = None, name: str | None = None,
                      errors: pd.DataFrame | None = None) -> tuple[Summary, pd.DataFrame]:
    """A run aggregated from a real images table: 'horror' fails the text-lift gate (lift 3.70),
    'comedy' is close (1.75), 'drama' is fine, 'western' has too few images to be flagged.

    ``classes``: {name: (n, text_mass, text_area)}. Returns the summary and the images table.
    """
    spec = classes if classes is not None else {
        "comedy": (60, 0.21, 0.12), "drama": (58, 0.08, 0.10), "horror": (60, 0.34, 0.092), "western": (2, 0.02, 0.05),
    }
    cfg = audit_config(**({"name": "x"} if name else {}))
    images = pd.DataFrame([r for c, (n, m, a) in spec.items() for r in image_rows(c, n, m, a)])
    if images.empty:
        images = pd.DataFrame(columns=list(image_rows("x", 1, 0.1, 0.1)[0]))
    errors = make_errors() if errors is None else errors
    summary = summarise(cfg, images, errors, list(spec), "label", validation_result(),
                        run_id=RUN_ID, target_layer="layer4", device="cpu", run_stats={"n_degenerate": 1})
    if name is not None:
        summary.name = name
    return summary, images


def class_stats(n: int, text_mass: float, text_area: float, border_mass: float = 0.1, **extra) -> dict:
    """A class entry of summary.json (without intervals unless added by :func:`with_intervals`)."""
    stats = {
        "n": n,
        "text_mass": text_mass, "text_area": text_area, "text_lift": text_mass / text_area, "text_hit_rate": 0.4,
        "border_mass": border_mass, "border_area": 0.19, "border_lift": border_mass / 0.19, "border_hit_rate": 0.05,
        "flip_rate_text_removed": None, "flip_rate_placebo": None,
        "flagged": False, "flag_reasons": [],
    }
    stats.update(extra)
    return stats


def summary_v01(classes: dict | None = None, passed: bool | None = None) -> dict:
    """summary.json as release 0.1 wrote it: 'horror' fails the text-lift gate, 'comedy' is close, 'drama' is fine."""
    if classes is None:
        classes = {
            "comedy": class_stats(60, 0.21, 0.12),
            "drama": class_stats(58, 0.08, 0.10),
            "horror": class_stats(60, 0.34, 0.092, flagged=True, flag_reasons=["text_lift 3.70 > 2.0"]),
            "western": class_stats(2, 0.02, 0.05),
        }
    flagged = [c for c, s in classes.items() if s.get("flagged")]
    failures = [
        {"class": c, "rule": "max_text_lift", "value": s["text_lift"], "threshold": 2.0}
        for c, s in classes.items() if s.get("flagged")
    ]
    return {
        "name": "demo-shortcut",
        "run_id": "20261122T021000Z-1a2b",
        "created_at": "2026-11-22T02:10:00+00:00",
        "camaudit_version": "0.1.0",
        "config": {
            "name": "demo-shortcut",
            "model": {"arch": "resnet18", "checkpoint": "/models/posters.pt", "input_size": [224, 224],
                      "resize": "stretch", "target_layer": None},
            "cam": {"method": "gradcam", "target": "predicted"},
            "gate": {"max_text_lift": 2.0, "min_images_per_class": 5},
        },
        "n_images": sum(s.get("n") or 0 for s in classes.values()),
        "n_failed": 2,
        "n_degenerate": 1,
        "group_by": "label",
        "regions": ["text", "border"],
        "cam": {"method": "gradcam", "target": "predicted", "target_layer": "layer4", "device": "cpu", "amp": None},
        "classes": classes,
        "overall": {k: v for k, v in class_stats(180, 0.21, 0.105).items() if k not in ("flagged", "flag_reasons")},
        "flagged_classes": flagged,
        "gate": {"passed": (not failures) if passed is None else passed, "failures": failures, "max_text_lift": 2.0},
        "validation": {"success": True, "n_expectations": 3, "n_failed": 0},
        "timing": {"total_s": 12.3, "images_per_s": 15.1},
    }


def with_intervals(stats: dict, regions: tuple[str, ...] = ("text", "border"), width: float = 0.15) -> dict:
    """Add the interval keys analysis/aggregate.py writes (<r>_mass_ci, _area_ci, _lift_ci, _hit_expected)."""
    out = dict(stats)
    for r in regions:
        mass, area, lift = out.get(f"{r}_mass"), out.get(f"{r}_area"), out.get(f"{r}_lift")
        out[f"{r}_hit_expected"] = area
        out[f"{r}_mass_ci"] = None if mass is None else [mass * (1 - width / 2), mass * (1 + width / 2)]
        out[f"{r}_area_ci"] = None if area is None else [area * 0.95, area * 1.05]
        out[f"{r}_lift_ci"] = None if lift is None else [lift * (1 - width), lift * (1 + width)]
    return out


def with_effect(stats: dict, effect: float | None, half: float = 0.05, placebo_drop: float = 0.01,
                flip_removed: float = 0.2, accuracy: float | None = 0.8, region: str = "text") -> dict:
    """Add the counterfactual keys analysis/aggregate.py writes for ``region``."""
    out = dict(stats)
    r = region
    out.update({
        f"n_{r}_edited": out.get("n"),
        f"flip_rate_{r}_removed": flip_removed, f"flip_rate_{r}_placebo": 0.02,
        f"conf_drop_{r}_removed": None if effect is None else effect + placebo_drop,
        f"conf_drop_{r}_placebo": placebo_drop,
        f"{r}_effect": effect,
        f"{r}_effect_ci": None if effect is None else [effect - half, effect + half],
    })
    if r == "text":
        out["flip_rate_text_removed"], out["flip_rate_placebo"] = flip_removed, 0.02
    if accuracy is not None:
        out["accuracy"] = {"original": accuracy, f"{r}_removed": accuracy - flip_removed / 2,
                           f"{r}_placebo": accuracy - 0.01, f"{r}_gap": flip_removed / 2}
    else:
        out["accuracy"] = None
    return out


def cf_classes(update: dict[str, dict] | None = None) -> tuple[dict[str, dict], dict]:
    """Per-class aggregates of a counterfactual run (what analysis/aggregate.py returns) and the
    overall row; ``update`` changes a class's numbers before the gate sees them.

    horror: text lift 3.41 [2.90, 3.95] above the lift limit, and text effect 0.31 [0.22, 0.40]
    above the effect limit. comedy: lift interval straddles 2.0, effect inconclusive.
    drama: fine. western: too few images to be flagged.
    """
    classes = {
        "comedy": with_effect(with_intervals(class_stats(60, 0.21, 0.12)), 0.04, half=0.03),
        "drama": with_effect(with_intervals(class_stats(58, 0.08, 0.10)), -0.004, half=0.012, flip_removed=0.03),
        "horror": with_effect(with_intervals(class_stats(60, 0.3137, 0.092)), 0.31, half=0.09, flip_removed=0.45,
                              accuracy=0.9),
        "western": with_effect(with_intervals(class_stats(2, 0.02, 0.05)), 0.12, half=0.2, accuracy=0.5),
    }
    horror = classes["horror"]
    horror["text_lift"], horror["text_lift_ci"] = 3.41, [2.90, 3.95]
    horror["text_effect_ci"] = [0.22, 0.40]
    for st in classes.values():
        st["background_mass"], st["background_area"], st["background_lift"] = 0.35, 0.5, 0.7
        st["background_hit_rate"], st["background_hit_expected"] = 0.3, 0.5
        st["background_lift_ci"] = [0.6, 0.8]
        del st["flagged"], st["flag_reasons"]  # the gate decides these
    overall = with_effect(with_intervals(class_stats(180, 0.21, 0.105)), 0.11, half=0.04)
    overall.pop("flagged"), overall.pop("flag_reasons")
    overall.update({k: v for k, v in horror.items() if k.startswith("background_")})
    for name, changes in (update or {}).items():
        classes.setdefault(name, {}).update(changes)
    return classes, overall


def sanity_result(model_sensitive: bool | None = True) -> dict:
    """What measure/sanity.py's randomisation check returns."""
    return {
        "n_images": 16, "randomized_layers": ["layer4", "fc"],
        "rank_correlation_mean": 0.33 if model_sensitive is not False else 0.93,
        "rank_correlation_median": 0.40 if model_sensitive is not False else 0.95,
        "max_rank_correlation": 0.8, "model_sensitive": model_sensitive,
        "verdict": {True: "explanations are model-sensitive", False: "explanations not model-sensitive",
                    None: "not determined (all maps constant)"}[model_sensitive],
    }


def built_summary(cfg: AuditConfig, per_class: dict[str, dict], overall: dict, *, sanity: dict | None = None,
                  tokens: list[dict] | None = None, validation: dict | None = None,
                  images: pd.DataFrame | None = None) -> Summary:
    """The real builder on stage outputs, with the gate decided by the real gate."""
    regions = region_names(cfg)
    cf_regions = list(cfg.counterfactual.regions) if cfg.counterfactual.enabled else []
    validation = validation or validation_result()
    gate = decide(per_class, cfg.gate, regions, cf_regions, tokens or [], validation)
    if images is None:
        images = pd.DataFrame({"path": [f"i{i}" for i in range(sum(int(s["n"] or 0) for s in per_class.values()))]})
    return build_summary(
        cfg, run_id=RUN_ID, target_layer="layer4", device="cpu", images=images, errors=make_errors(),
        group_by="label", regions=regions, region_sources=region_sources(cfg), per_class=per_class, overall=overall,
        gate=gate, validation=validation, sanity=sanity, tokens=tokens, run_stats={"n_degenerate": 1},
    )


def cf_summary(model_sensitive: bool | None = True, update: dict[str, dict] | None = None,
               validation: dict | None = None, token_table: list[dict] | None = None, **sections: Any) -> Summary:
    """A run with counterfactuals, intervals, the sanity check and a heuristic region (see :func:`cf_classes`)."""
    per_class, overall = cf_classes(update)
    return built_summary(cf_config(**sections), per_class, overall, sanity=sanity_result(model_sensitive),
                         tokens=token_table, validation=validation)


def token_entry(token: str, n: int, top: str, share: float, p: float, lift: float, effect: float | None = None,
                ci: list | None = None, flips: tuple = (None, None), flagged: bool = False, **extra) -> dict:
    """One entry of the token table as tokens/stage.analyse_tokens summarises it."""
    others = [c for c in ("comedy", "drama", "horror", "western") if c != top]
    rest = round(1 - share, 4)
    shares = {top: share, **({others[0]: round(rest * 0.7, 4), others[1]: round(rest * 0.3, 4)} if rest > 0 else {})}
    area = 0.04
    entry = {
        "token": token, "kind": token.split(":", 1)[0], "example_text": None, "n_images": n, "n_instances": n + n // 5,
        "top_class": top, "class_share": share, "class_shares": shares, "p_value": p,
        "mass": lift * area, "area": area, "lift": lift, "effect": effect, "effect_ci": ci,
        "flip_rate_removed": flips[0], "flip_rate_placebo": flips[1], "risk": 0.0, "flagged": flagged,
    }
    entry.update(extra)
    return entry


def decided(entries: list[dict], tokens: dict | None = None) -> list[dict]:
    """``entries`` with the gate's token decisions (:func:`auditors.analysis.gate.token_decisions`,
    as the token stage applies them): q-values, associated, attended, dependent, findings, flagged.
    Each entry needs ``p_value``, ``lift``, ``n_images`` and ``effect_p_value`` (None: untested)."""
    tc = TokensConfig.model_validate({**TOKENS_CONFIG, **(tokens or {})})
    table = pd.DataFrame({
        "p_value": [np.nan if e["p_value"] is None else e["p_value"] for e in entries],
        "lift": [e["lift"] for e in entries], "n_images": [e["n_images"] for e in entries],
        "effect_p_value": [np.nan if e.get("effect_p_value") is None else e["effect_p_value"] for e in entries],
    })
    d = token_decisions(table, tc)
    out = []
    for e, (_, row) in zip(entries, d.iterrows()):
        fin = lambda v: None if v is None or not np.isfinite(v) else float(v)  # noqa: E731
        out.append({**e, "q_value": fin(row["q_value"]), "effect_q_value": fin(row["effect_q_value"]),
                    "associated": bool(row["associated"]), "attended": bool(row["attended"]),
                    "dependent": bool(row["dependent"]), "finding": row["finding"] if isinstance(row["finding"], str) else None,
                    "findings": row["findings"], "fails_on": row["fails_on"] if isinstance(row["fails_on"], str) else None,
                    "flagged": bool(row["flagged"])})
    return out


def token_entries() -> list[dict]:
    """'NEW' and an unreadable mark are horror shortcuts (associated, attended and needed); 'Studio'
    is attended but spread over classes and not shown to be needed (interval reaches below the
    threshold); a hostile string,
    an untested year and a token with missing numbers are fine. Decided by the real token rules."""
    return decided([
        token_entry("text:new", 38, "horror", 0.95, 3.2e-12, 4.1, 0.31, [0.22, 0.40], (0.42, 0.03),
                    example_text="NEW", risk=183.4, effect_p_value=1e-5),
        token_entry("visual:9f3a7c21e0b4d855", 24, "horror", 0.875, 1.1e-6, 2.6, 0.12, [0.07, 0.18], (0.17, 0.04),
                    risk=61.2, effect_p_value=2e-4),
        token_entry("text:studio", 61, "comedy", 0.36, 0.41, 2.4, 0.08, [0.03, 0.13], (0.05, 0.02),
                    example_text="Studio", risk=9.87, effect_p_value=0.2),
        token_entry("text:imgsrcxonerroralert1", 12, "comedy", 0.5, 0.21, 1.3, 0.01, [-0.02, 0.04], (0.0, 0.0),
                    example_text=HOSTILE_TOKEN, risk=3.1, effect_p_value=0.4),
        token_entry("text:2026", 15, "drama", 0.4, 0.5, 0.9, risk=1.2, example_text="2026"),
        token_entry("text:x", 3, "drama", float("nan"), None, float("nan"), risk=None, class_shares=None,
                    n_instances=None),
    ])


#: The verdict names the finding the gate failed each token on (both here: dependence leads).
NEW_SENTENCE = ("The model depends on token 'NEW' (on 38 images): removing it lowers confidence by 0.31 more than a "
                "placebo (95% interval 0.22\u20130.40; q = 4e-05); it is also over-represented in class 'horror' (95% "
                "of its images, q = 1.6e-11) and the model attends to it 4.1\u00d7 its area, so the config fails on "
                "association too.")
MARK_SENTENCE = ("The model depends on an unreadable mark #9f3a7c21 (on 24 images): removing it lowers confidence by "
                 "0.120 more than a placebo (95% interval 0.070\u20130.180; q = 0.0004); it is also over-represented in "
                 "class 'horror' (88% of its images, q = 2.7e-06) and the model attends to it 2.6\u00d7 its area, so the "
                 "config fails on association too.")


TOKENS_CONFIG = {"enabled": True, "min_images": 3, "min_text_length": 2, "min_text_conf": 0.4, "max_hamming": 6,
                 "top_n": 20, "effect_tokens": 4, "max_effect_images": 64, "max_lift": 2.0, "max_effect": 0.05,
                 "max_p_value": 0.01}


def token_summary(token_table: list[dict] | None = None, **kw: Any) -> Summary:
    """A counterfactual-era run with the token table of :func:`token_entries`."""
    token_table = token_entries() if token_table is None else token_table
    return cf_summary(token_table=token_table, **_merge({"tokens": TOKENS_CONFIG}, kw))


def realistic_report(tmp_path: Path) -> Path:
    summary, images = realistic_summary()
    return write_report(tmp_path, summary, images, make_gallery(), validation_result(), make_errors())


def cf_report(tmp_path: Path, model_sensitive: bool | None = False) -> Path:
    """A counterfactual-era run: intervals, effects, a failed sanity check, edited gallery views."""
    summary = cf_summary(model_sensitive=model_sensitive)
    return write_report(tmp_path, summary, images_for(summary), make_cf_gallery(), validation_result(), make_errors())


def empty_report(tmp_path: Path) -> Path:
    errors = pd.DataFrame(columns=["path", "stage", "reason"])
    summary, images = realistic_summary(classes={}, errors=errors)
    return write_report(tmp_path, summary, images, [], {}, errors)


def token_report(tmp_path: Path) -> Path:
    summary = token_summary()
    examples = {"text:new": make_token_examples("text:new"),
                "visual:9f3a7c21e0b4d855": make_token_examples("visual:9f3a7c21e0b4d855", 2)}
    return write_report(tmp_path, summary, images_for(summary), make_cf_gallery(2), validation_result(), make_errors(),
                        token_examples=examples, token_crops=make_token_crops())
