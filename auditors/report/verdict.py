"""The verdict banner: PASS/FAIL/FLAGGED and one plain sentence per gate finding.

The decisions are the gate's (summary.json ``gate``, decided in :mod:`auditors.analysis.gate`);
this module only puts them into words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from auditors.audit.summary import Gate, Record, Summary
from auditors.report.facts import ci_level, gate_limits_text, lift_threshold
from auditors.report.formatting import (
    EFFECT_NOUNS, REGION_NOUNS, as_dict, fmt_dec, fmt_float, fmt_int, fmt_threshold, interval, num, pct_words,
    plural, sentence_digits,
)
from auditors.report.history import regression_sentence
from auditors.report.tokens_text import flagged_tokens, token_entries, token_sentence

__all__ = ["Verdict", "build_verdict"]


@dataclass
class Verdict:
    """What the banner says: a status word, a headline and one sentence per finding."""

    status: str  # pass | flagged | fail | nodata
    title: str
    headline: str
    findings: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Reasons not to trust the numbers at all (shown as a prominent box below the banner).
    warnings: list[str] = field(default_factory=list)
    #: The gate's decision rule in words, when the summary records one.
    rule: str = ""


def _lift_sentence(who: str, region: str, value: Any, lower: Any, threshold: Any, stats: Record, level: str) -> str:
    mass, area = stats.get(f"{region}_mass"), stats.get(f"{region}_area")
    noun = REGION_NOUNS.get(region, region.replace("_", " "))
    ci = interval(stats.get(f"{region}_lift_ci"))
    lo = num(lower) if num(lower) is not None else (ci[0] if ci else None)
    if lo is not None and ci is not None:
        name = f"{level} interval" if level else "interval"
        limit = (f"lift {fmt_float(value)}, {name} {fmt_float(lo)}\u2013{fmt_float(ci[1])}; "
                 f"limit {fmt_threshold(threshold)}")
    elif num(lower) is not None:
        limit = f"lift {fmt_float(value)}, lower bound {fmt_float(lower)} > {fmt_threshold(threshold)}"
    else:
        limit = f"lift {fmt_float(value)} > {fmt_threshold(threshold)}"
    if num(mass) is not None and num(area) is not None:
        return (
            f"{who}: {pct_words(mass)} of the heatmap falls on {noun} covering "
            f"{pct_words(area)} of the image ({limit})."
        )
    return f"{who}: attention on {noun} is too concentrated ({limit})."


def _effect_sentence(who: str, region: str, value: Any, lower: Any, threshold: Any, stats: Record, level: str) -> str:
    """E.g. "Class 'horror': removing the text lowers confidence by 0.31 more than ..."."""
    noun = EFFECT_NOUNS.get(region, f"the {region.replace('_', ' ')} region")
    ci = interval(stats.get(f"{region}_effect_ci"))
    lo = num(lower) if num(lower) is not None else (ci[0] if ci else None)
    hi = ci[1] if ci else None
    d = sentence_digits(value, lo, hi)
    v = num(value)
    if v is not None and v < 0:
        change = f"raises confidence by {fmt_dec(-v, d)} more"
    else:
        change = f"lowers confidence by {fmt_dec(value, d)} more"
    if lo is not None and hi is not None:
        name = f"{level} interval" if level else "interval"
        detail = f"{name} {fmt_dec(lo, d)}\u2013{fmt_dec(hi, d)}; threshold {fmt_threshold(threshold)}"
    elif lo is not None:
        detail = f"interval lower bound {fmt_dec(lo, d)}; threshold {fmt_threshold(threshold)}"
    else:
        detail = f"threshold {fmt_threshold(threshold)}"
    return f"{who}: removing {noun} {change} than removing an equal-area placebo region ({detail})."


def _validation_sentence(summary: Summary, value: Any) -> str:
    total = num(summary.validation.n_expectations) if summary.validation is not None else None
    failed = fmt_int(value) + (f" of {fmt_int(total)}" if total is not None else "")
    if num(value) is None:
        return "Data validation failed, so the numbers below may be unreliable (see Data quality)."
    return (
        f"Data validation: {failed} expectations on the result tables did not hold, so the numbers "
        "below may be unreliable (see Data quality)."
    )


def _finding_sentence(cls: Any, rule: str, value: Any, threshold: Any, stats: Record | None,
                      lower: Any, summary: Summary) -> str:
    """One failed rule in plain words, e.g. "Class 'horror': 34% of the heatmap falls on text ..."."""
    stats = stats if stats is not None else Record()
    who = f"Class '{cls}'" if cls is not None else "Whole run"
    level = ci_level(summary)
    m = re.fullmatch(r"max_(\w+)_(lift|effect)", rule or "")
    if m and m.group(2) == "lift":
        return _lift_sentence(who, m.group(1), value, lower, threshold, stats, level)
    if m:
        return _effect_sentence(who, m.group(1), value, lower, threshold, stats, level)
    if rule == "validation" and cls is None:
        return _validation_sentence(summary, value)
    pretty = (rule or "rule").replace("_", " ")
    return f"{who}: {pretty} is {fmt_float(value)} (limit {fmt_threshold(threshold)})."


def _findings(summary: Summary) -> list[dict[str, str]]:
    """Gate failures first; flagged classes and tokens the gate did not list keep their own reasons."""
    classes = summary.classes
    tokens = token_entries(summary)
    out: list[dict[str, str]] = []
    covered: set[str] = set()
    covered_tokens: set[str] = set()
    for f in summary.gate.failures if summary.gate is not None else []:
        cls = f.class_
        if f.rule == "token":
            key = str(f.token or "")
            out.append({"sentence": token_sentence(tokens.get(key, {"token": key}), f, ci_level(summary)),
                        "rule": f.rule, "token": key})
            covered_tokens.add(key)
            continue
        if f.rule.startswith("regression_"):  # against a baseline run (auditors/report/history.py)
            out.append({"sentence": regression_sentence(f), "rule": f.rule})
            covered.add(str(cls))
            continue
        stats = classes.get(cls) if cls is not None else summary.overall
        sentence = _finding_sentence(cls, f.rule, f.value, f.threshold, stats, lower=f.lower, summary=summary)
        out.append({"sentence": sentence, "rule": f.rule})
        if cls is not None:
            covered.add(str(cls))
    flagged = list(summary.flagged_classes)
    flagged += [c for c, st in classes.items() if st.flagged and c not in flagged]
    for cls in flagged:
        if str(cls) in covered:
            continue
        reasons = classes[cls].flag_reasons if cls in classes else []
        text = "; ".join(str(r) for r in reasons) or "flagged"
        out.append({"sentence": f"Class '{cls}': {text}.", "rule": ""})
    for key in flagged_tokens(summary, tokens):
        if key not in covered_tokens:
            out.append({"sentence": token_sentence(tokens.get(key, {"token": key}), {}, ci_level(summary)),
                        "rule": "", "token": key})
    return out


def _validation_note(summary: Summary, validation: dict) -> str | None:
    """A one-liner when the result tables themselves failed validation."""
    val = summary.validation
    success = val.success if val is not None else as_dict(validation).get("success")
    if success is False:
        if val is not None:
            return (
                f"Data validation failed: {fmt_int(val.n_failed)} of {fmt_int(val.n_expectations)} expectations "
                "did not hold, so the numbers below may be unreliable."
            )
        return "Data validation failed, so the numbers below may be unreliable."
    return None


def _sanity_warnings(summary: Summary) -> list[str]:
    """The randomisation check failed: the heatmaps say little about what the model learned."""
    sanity = summary.sanity
    if sanity is None or sanity.model_sensitive is not False:
        return []
    text = "Explanations not model-sensitive: heatmaps barely change when the top layers are re-initialised"
    mean, limit = num(sanity.rank_correlation_mean), num(sanity.max_rank_correlation)
    if mean is not None:
        bound = f", limit {fmt_threshold(limit)}" if limit is not None else ""
        text += f" (mean rank correlation with the randomised model {fmt_float(mean)}{bound})"
    return [text + " \u2014 do not trust the mass metrics."]


def build_verdict(summary: Summary, validation: dict | None = None) -> Verdict:
    """PASS only when the gate passed; FAIL when it failed; FLAGGED/NO DATA otherwise.

    ``validation``: the full Great Expectations result, consulted when the summary has no
    validation section."""
    gate = summary.gate or Gate()
    passed = gate.passed
    findings = _findings(summary)
    n_images = num(summary.n_images)
    has_validation_finding = any(f["rule"] == "validation" for f in findings)
    notes = [] if has_validation_finding else [n for n in [_validation_note(summary, validation or {})] if n]
    flagged = len(findings)
    if n_images is not None and n_images == 0:
        verdict = Verdict("nodata", "NO DATA", "No images were audited, so the gate decided nothing.")
    elif passed is False:
        verdict = Verdict("fail", "FAIL", plural(flagged, "finding") + " blocked the release gate.")
    elif findings:
        noun = "finding" if any("token" in f for f in findings) else "class"
        verdict = Verdict("flagged", "FLAGGED", plural(flagged, noun) + " flagged for review.")
        if passed is None:
            notes.append("No release gate result was recorded for this run.")
    elif passed is True:
        limits = gate_limits_text(summary)
        if limits and gate.rule:
            extra = f" (limits: {limits})"
        elif lift_threshold(summary, "text") is not None:
            extra = f" (text lift \u2264 {fmt_threshold(lift_threshold(summary, 'text'))})"
        else:
            extra = ""
        verdict = Verdict("pass", "PASS", f"Every class passed the release gate{extra}.")
    else:
        verdict = Verdict("flagged", "NO GATE", "No release gate result was recorded for this run.")
    verdict.findings = findings
    verdict.notes = notes
    verdict.warnings = _sanity_warnings(summary)
    verdict.rule = gate.rule if gate.rule.strip() else ""
    return verdict
