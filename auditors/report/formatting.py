"""Number, text and date formatting for the report.

Numbers are formatted here, not in the template, so a missing, None or NaN value always
shows as an em dash instead of "nan" or a crash.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from auditors.analysis.gate import interval_level, point_level
from auditors.analysis.stats import finite as num
from auditors.analysis.stats import interval
from auditors.audit.summary import Record

__all__ = [
    "DASH", "REGION_NOUNS", "EFFECT_NOUNS", "num", "interval", "fmt_pct", "pct_words", "fmt_float", "fmt_int",
    "fmt_dec", "fmt_ci", "fmt_threshold", "fmt_p", "fmt_text", "fmt_date", "sort_key", "region_label", "plural",
    "sentence_digits", "as_dict", "lift_level", "level_class",
]

DASH = "\u2014"
REGION_NOUNS = {"text": "text", "border": "the image border", "background": "the background"}
#: What "removing <noun>" reads as in sentences about counterfactual edits.
EFFECT_NOUNS = {"text": "the text", "border": "the image border", "background": "the background"}


def fmt_pct(value: Any, digits: int = 1) -> str:
    """Fraction in [0, 1] as a percentage; the report's mass/area/hit-rate unit."""
    v = num(value)
    return DASH if v is None else f"{v * 100:.{digits}f}%"


def pct_words(value: Any) -> str:
    """Percentage for prose: whole numbers, but never claims a small share is 0%."""
    v = num(value)
    if v is None:
        return DASH
    if 0 < v < 0.005:
        return "<1%"
    return f"{v * 100:.0f}%"


def fmt_float(value: Any, digits: int = 2) -> str:
    v = num(value)
    return DASH if v is None else f"{v:.{digits}f}"


def fmt_int(value: Any) -> str:
    v = num(value)
    return DASH if v is None else f"{int(round(v)):,}"


def fmt_dec(value: Any, digits: int = 3) -> str:
    """Small signed quantities (confidence drops, effects): never shows "-0.000"."""
    v = num(value)
    if v is None:
        return DASH
    if round(v, digits) == 0:
        v = 0.0
    return f"{v:.{digits}f}".replace("-", "\u2212")


def fmt_ci(value: Any, fmt: Any = fmt_float) -> str:
    """Interval as "[2.90, 3.95]"; empty string when there is none (nothing to show)."""
    ci = interval(value)
    return "" if ci is None else f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def fmt_threshold(value: Any) -> str:
    """Thresholds are set by people (2.0, 0.25): show them as written, at least one decimal."""
    v = num(value)
    if v is None:
        return DASH
    return f"{v:.1f}" if round(v, 1) == v else f"{v:g}"


def sort_key(value: Any) -> str:
    """Value for a ``data-sort`` attribute; empty for missing so JS sorts it last."""
    v = num(value)
    return "" if v is None else repr(v)


def region_label(region: str) -> str:
    return region.replace("_", " ").capitalize()


def fmt_date(value: Any) -> str:
    """ISO timestamp as 'YYYY-MM-DD HH:MM UTC'; anything unparsable is shown as given."""
    if not value:
        return DASH
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if dt.tzinfo is None:
        return dt.strftime("%Y-%m-%d %H:%M")
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def as_dict(value: Any) -> dict | Record:
    """Treat a missing or malformed mapping (gallery metrics, edits, GX results) as empty;
    summary records pass through (they read by key too)."""
    return value if isinstance(value, (dict, Record)) else {}


def fmt_text(value: Any) -> str:
    """Any value as text; missing (None, NaN) as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return str(value)


def fmt_p(value: Any) -> str:
    """p-values: two or three decimals, small ones as 3.2\u00d710\u207b\u2079 (never rounded to 0)."""
    v = num(value)
    if v is None:
        return DASH
    if v >= 0.01:
        return f"{v:.2f}"
    if v >= 0.001:
        return f"{v:.3f}"
    if v <= 0:
        return "<10\u207b\u00b3\u2070\u2070"
    mantissa, exponent = f"{v:.1e}".split("e")
    sup = str(int(exponent)).translate(str.maketrans("-0123456789", "\u207b\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079"))
    return f"{mantissa}\u00d710{sup}"


def plural(n: int, word: str) -> str:
    plural = word + ("es" if word.endswith("s") else "s")
    return f"{n} {word if n == 1 else plural}"


def sentence_digits(*values: Any) -> int:
    """Two decimals when every number is at least 0.1 in size, else three (0.05 vs 0.053)."""
    nums = [abs(v) for v in map(num, values) if v is not None]
    return 2 if nums and min(nums) >= 0.1 else 3


def lift_level(value: Any, threshold: float | None) -> str:
    """CSS class of a value shown without its interval: the gate's :func:`point_level`."""
    level = point_level(value, threshold)
    return f"lift-{level}" if level else ""


def level_class(value: Any, ci: Any, threshold: float | None) -> str:
    """CSS class of a value with its interval: the gate's :func:`interval_level`."""
    level = interval_level(value, ci, threshold)
    return f"lift-{level}" if level else ""
