"""The HTML bias report: one self-contained file a launch reviewer can open anywhere.

CSS, JS and every image are inlined so nothing is fetched from the network, and a
Content-Security-Policy with a hash of our one script makes that hold even for a string we
failed to escape. Links to the run's data files are relative, so they resolve whenever the
run folder is kept together. All user-controlled text (paths, class names, rule names) goes
through Jinja2 autoescape.

Each section is built by its own module from the typed :class:`Summary` (verdict, classes,
counterfactual, sanity, history, gallery, tokens, quality, settings); this module puts them into
the template (``templates/report.html.j2``). Sections a run did not record (an older
summary.json) are left out.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from auditors.audit.summary import Summary
from auditors.measure.gallery import GalleryItem
from auditors.report.charts import build_charts
from auditors.report.classes import build_class_table, listed_classes
from auditors.report.counterfactual import build_counterfactual
from auditors.report.facts import lift_threshold
from auditors.report.failures import build_failures
from auditors.measure.failures import FailureItem
from auditors.report.formatting import fmt_date, fmt_text
from auditors.report.gallery import build_gallery
from auditors.report.pointing import build_pointing
from auditors.report.history import build_history
from auditors.report.quality import MAX_ERROR_ROWS, build_counts, build_errors, build_validation, cam_status_counts
from auditors.report.sanity import build_sanity
from auditors.report.settings import build_methods, build_settings
from auditors.report.tokens import build_tokens
from auditors.report.variants import depth_panel, export_files, heatmap_name, label_heatmaps
from auditors.report.verdict import build_verdict

__all__ = ["REPORT_NAME", "as_summary", "build_context", "render_report", "write_report"]

REPORT_NAME = "report.html"
TEMPLATE_DIR = Path(__file__).parent / "templates"

RUN_FILES: tuple[tuple[str, str], ...] = (
    ("summary.json", "settings, per-class metrics and the gate decision"),
    ("images.parquet", "one row per audited image with its region metrics"),
    ("errors.csv", "every image that could not be audited, with the stage and reason"),
    ("validation.json", "full Great Expectations validation results"),
)
FAILURES_FILE = ("failures.parquet", "one row per misclassified image: region masses for the predicted and the true class")


def as_summary(summary: Summary | Mapping[str, Any]) -> Summary:
    """The typed summary; a mapping (a loaded summary.json) is validated into one."""
    return summary if isinstance(summary, Summary) else Summary.model_validate(dict(summary))


@functools.lru_cache(maxsize=1)
def _environment() -> Environment:
    # autoescape=True, not select_autoescape(): our template is named *.html.j2, which
    # select_autoescape's extension check would treat as "not HTML" and leave unescaped.
    return Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _csp(script: str) -> str:
    """Nothing may load from anywhere but inline data; only our own script may run."""
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )


def build_context(
    summary: Summary | Mapping[str, Any],
    images: pd.DataFrame | None,
    gallery: list[GalleryItem],
    validation: dict | None,
    errors: pd.DataFrame | None,
    token_examples: dict[str, list[GalleryItem]] | None = None,
    token_crops: dict[str, list[np.ndarray]] | None = None,
    pointing_misses: list[GalleryItem] | None = None,
    failures: list[FailureItem] | None = None,
) -> dict[str, Any]:
    """Everything the template shows, already formatted (the template only lays it out)."""
    summary = as_summary(summary)
    regions = list(summary.regions)
    errs = build_errors(errors)
    counterfactual = build_counterfactual(listed_classes(summary)[0])  # a 1000-class model: audited classes only
    cf_regions = [b["region"] for b in counterfactual["blocks"]] if counterfactual else []
    return {
        "name": fmt_text(summary.name),
        "run_id": fmt_text(summary.run_id),
        "created_at": fmt_date(summary.created_at),
        "version": fmt_text(summary.camaudit_version),
        "settings": build_settings(summary),
        "verdict": build_verdict(summary, validation),
        "table": build_class_table(summary),
        "charts": build_charts(summary, images),  # workflows-report: inline SVG charts
        "failures": build_failures(summary, failures),  # workflows-report: failure analysis
        "gallery": label_heatmaps(build_gallery(gallery, regions, {r: lift_threshold(summary, r) for r in regions or ["text"]},
                                                edit_order=cf_regions), heatmap_name(summary)),
        "heatmap_name": heatmap_name(summary),
        "depth": depth_panel(summary),  # cam.layers
        "counterfactual": counterfactual,
        "tokens": build_tokens(summary, token_examples, token_crops),
        "sanity": build_sanity(summary),
        "pointing": build_pointing(summary, pointing_misses),
        "history": build_history(summary),
        "methods": build_methods(summary),
        "counts": build_counts(summary, images, errs["total"]),
        "cam_status": cam_status_counts(images),
        "errors": errs,
        "validation": build_validation(validation),
        "regions": regions,
        "run_files": [{"name": n, "what": w} for n, w in RUN_FILES + ((FAILURES_FILE,) if summary.failures else ())]
        + export_files(summary),
        "max_error_rows": MAX_ERROR_ROWS,
    }


def render_report(
    summary: Summary | Mapping[str, Any],
    images: pd.DataFrame | None,
    gallery: list[GalleryItem],
    validation: dict | None,
    errors: pd.DataFrame | None,
    token_examples: dict[str, list[GalleryItem]] | None = None,
    token_crops: dict[str, list[np.ndarray]] | None = None,
    pointing_misses: list[GalleryItem] | None = None,
    failures: list[FailureItem] | None = None,
) -> str:
    """The report as an HTML string (write_report without touching the disk)."""
    env = _environment()
    script = env.get_template("_sort.js.j2").render()
    context = build_context(summary, images, gallery, validation, errors, token_examples, token_crops, pointing_misses,
                            failures)
    return env.get_template("report.html.j2").render(**context, script=Markup(script), csp=_csp(script))


def write_report(
    run_dir: Path,
    summary: Summary | Mapping[str, Any],
    images: pd.DataFrame,
    gallery: list[GalleryItem],
    validation: dict,
    errors: pd.DataFrame,
    token_examples: dict[str, list[GalleryItem]] | None = None,
    token_crops: dict[str, list[np.ndarray]] | None = None,
    pointing_misses: list[GalleryItem] | None = None,
    failures: list[FailureItem] | None = None,
) -> Path:
    """Write ``run_dir/report.html`` atomically (a reader never sees half a report); return it.

    ``token_examples`` / ``token_crops`` (keyed by token, as the token stage returns them) feed
    the "Text the model uses" section: before/after examples of flagged tokens and small crops.
    ``pointing_misses``: the biggest pointing-game misses (regions.expected), worst first.
    ``failures``: the most confident mistakes per class (failure analysis), with both maps.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    html = render_report(summary, images, gallery, validation, errors, token_examples, token_crops, pointing_misses, failures)
    out = run_dir / REPORT_NAME
    tmp = out.with_name(f".{REPORT_NAME}.{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out
