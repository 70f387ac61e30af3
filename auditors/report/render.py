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
from dataclasses import dataclass, field
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

__all__ = ["REPORT_NAME", "ReportInputs", "as_inputs", "as_summary", "build_context", "render_report", "write_report"]

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


@dataclass(frozen=True)
class ReportInputs:
    """Everything a report is made from, in one place (the report functions used to repeat this list).

    ``summary``: the typed summary or a loaded summary.json; ``images``: images.parquet;
    ``gallery``: the most region-reliant images; ``validation``: validate_tables' result;
    ``errors``: errors.csv rows; ``token_examples`` / ``token_crops`` (keyed by token, as the token
    stage returns them): before/after examples of flagged tokens and small crops;
    ``pointing_misses``: the biggest pointing-game misses, worst first; ``failures``: the most
    confident mistakes per class, with both maps.
    """

    summary: Summary | Mapping[str, Any]
    images: pd.DataFrame | None = None
    gallery: list[GalleryItem] = field(default_factory=list)
    validation: dict | None = None
    errors: pd.DataFrame | None = None
    token_examples: dict[str, list[GalleryItem]] | None = None
    token_crops: dict[str, list[np.ndarray]] | None = None
    pointing_misses: list[GalleryItem] | None = None
    failures: list[FailureItem] | None = None


def as_inputs(first: ReportInputs | Summary | Mapping[str, Any], *args: Any, **kwargs: Any) -> ReportInputs:
    """A :class:`ReportInputs`: given one, or built from the positional/keyword list the report
    functions always took (``summary, images, gallery, validation, errors, token_examples=...``)."""
    if isinstance(first, ReportInputs):
        if args or kwargs:
            raise TypeError("pass either a ReportInputs or the report's inputs one by one, not both")
        return first
    return ReportInputs(first, *args, **kwargs)


def build_context(inputs: ReportInputs) -> dict[str, Any]:
    """Everything the template shows, already formatted (the template only lays it out)."""
    summary, images, gallery, errors = inputs.summary, inputs.images, inputs.gallery or [], inputs.errors
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
        "verdict": build_verdict(summary, inputs.validation),
        "table": build_class_table(summary),
        "charts": build_charts(summary, images),  # workflows-report: inline SVG charts
        "failures": build_failures(summary, inputs.failures),  # workflows-report: failure analysis
        "gallery": label_heatmaps(build_gallery(gallery, regions, {r: lift_threshold(summary, r) for r in regions or ["text"]},
                                                edit_order=cf_regions), heatmap_name(summary)),
        "heatmap_name": heatmap_name(summary),
        "depth": depth_panel(summary),  # cam.layers
        "counterfactual": counterfactual,
        "tokens": build_tokens(summary, inputs.token_examples, inputs.token_crops),
        "sanity": build_sanity(summary),
        "pointing": build_pointing(summary, inputs.pointing_misses),
        "history": build_history(summary),
        "methods": build_methods(summary),
        "counts": build_counts(summary, images, errs["total"]),
        "cam_status": cam_status_counts(images),
        "errors": errs,
        "validation": build_validation(inputs.validation),
        "regions": regions,
        "run_files": [{"name": n, "what": w} for n, w in RUN_FILES + ((FAILURES_FILE,) if summary.failures else ())]
        + export_files(summary),
        "max_error_rows": MAX_ERROR_ROWS,
    }


def render_report(inputs: ReportInputs | Summary | Mapping[str, Any], *args: Any, **kwargs: Any) -> str:
    """The report as an HTML string (write_report without touching the disk).

    Takes a :class:`ReportInputs`, or its fields one by one as before
    (``render_report(summary, images, gallery, validation, errors, token_examples=...)``).
    """
    inputs = as_inputs(inputs, *args, **kwargs)
    env = _environment()
    script = env.get_template("_sort.js.j2").render()
    context = build_context(inputs)
    return env.get_template("report.html.j2").render(**context, script=Markup(script), csp=_csp(script))


def write_report(run_dir: Path, inputs: ReportInputs | Summary | Mapping[str, Any], *args: Any, **kwargs: Any) -> Path:
    """Write ``run_dir/report.html`` atomically (a reader never sees half a report); return it.

    ``inputs``: a :class:`ReportInputs`, or its fields one by one as before
    (``write_report(run_dir, summary, images, gallery, validation, errors, token_examples=...)``).
    """
    html = render_report(as_inputs(inputs, *args, **kwargs))
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / REPORT_NAME
    tmp = out.with_name(f".{REPORT_NAME}.{os.getpid()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    return out
