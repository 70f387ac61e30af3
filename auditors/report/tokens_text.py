"""How tokens read in sentences and labels ("Token 'NEW' (on 38 images, 95% in class 'horror'): ...").

Used by the verdict's findings and by the token section.
"""

from __future__ import annotations

from typing import Any

from auditors.analysis.token_rules import entry_fails_on
from auditors.audit.summary import Failure, Record, Summary, TokenEntry
from auditors.report.formatting import (
    DASH, as_dict, fmt_dec, fmt_int, interval, num, pct_words, sentence_digits,
)

__all__ = ["MAX_LABEL", "token_entries", "flagged_tokens", "token_label", "token_sentence", "failing_findings"]

MAX_LABEL = 40


def token_entries(summary: Summary) -> dict[str, TokenEntry]:
    """``summary.tokens`` by token key, in rank order (entries without a key are skipped)."""
    return {t.token: t for t in summary.tokens or [] if t.token}


def flagged_tokens(summary: Summary, tokens: dict[str, TokenEntry]) -> list[str]:
    """Token keys flagged in ``flagged_tokens`` or on their own entry, in rank order."""
    keys = [k for k in summary.flagged_tokens if k]
    keys += [k for k, t in tokens.items() if t.flagged and k not in keys]
    order = list(tokens)
    return sorted(dict.fromkeys(keys), key=lambda k: order.index(k) if k in order else len(order))


def _token_kind(t: TokenEntry | dict) -> str:
    key = str(t.get("token") or "")
    kind = t.get("kind") if t.get("kind") in ("text", "visual") else key.split(":", 1)[0]
    return kind if kind in ("text", "visual") else "text"


def _clip(text: str, n: int = MAX_LABEL) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def token_label(t: TokenEntry | dict) -> dict[str, str]:
    """How a token reads: {"kind", "label", "hash"}.

    Text tokens show an example of the text as OCR read it (else the normalised string);
    visual tokens read "unreadable mark" with a short hash of their fingerprint.
    """
    key = str(t.get("token") or "")
    body = key.split(":", 1)[1] if ":" in key else key
    kind = _token_kind(t)
    if kind == "visual":
        return {"kind": kind, "label": "unreadable mark", "hash": body[:8]}
    example = t.get("example_text")
    text = example if isinstance(example, str) and example.strip() else body
    return {"kind": kind, "label": _clip(text) or DASH, "hash": ""}


def _token_name(t: TokenEntry | dict) -> tuple[str, str]:
    """Sentence subject and the noun for "removing just this ...": ("Token 'NEW'", "text")."""
    lab = token_label(t)
    if lab["kind"] == "visual":
        return (f"An unreadable mark #{lab['hash']}" if lab["hash"] else "An unreadable mark"), "mark"
    return f"Token '{lab['label']}'", "text"


def _q(value: Any) -> str:
    q = num(value)
    return f"q = {q:.2g}" if q is not None else ""


def failing_findings(t: TokenEntry | dict, failure: Failure | dict) -> list[str]:
    """The finding(s) the gate failed this token on ("dependence", "association"): the gate
    failure's ``fails_on`` where recorded, else read from the token entry
    (:func:`auditors.analysis.token_rules.entry_fails_on`); [] for entries that predate the two
    findings (nothing to name)."""
    t, failure = as_dict(t), as_dict(failure)
    keys = failure.get("fails_on")
    if isinstance(keys, (list, tuple)) and keys:
        return [str(k) for k in keys]
    recorded = isinstance(t.get("fails_on"), str) or any(t.get(k) is not None for k in ("associated", "dependent"))
    if not recorded or not (t.get("flagged") or failure.get("rule") == "token"):
        return []
    entry = t.to_dict() if isinstance(t, Record) else dict(t)
    return entry_fails_on({**entry, "flagged": True})


def _effect_clause(t: dict, failure: dict, noun: str, level: str, q: str = "") -> str:
    """"removing just this text lowers confidence by 0.31 more than a placebo (95% interval 0.22–0.40)"."""
    effect = num(t.get("effect")) if num(t.get("effect")) is not None else num(failure.get("effect"))
    if effect is None:
        return ""
    ci = interval(t.get("effect_ci"))
    lo = ci[0] if ci else num(failure.get("lower"))
    d = sentence_digits(effect, lo, ci[1] if ci else None)
    change = (f"raises confidence by {fmt_dec(-effect, d)} more" if effect < 0
              else f"lowers confidence by {fmt_dec(effect, d)} more")
    name = f"{level} interval" if level else "interval"
    extra = f"; {q}" if q else ""
    if ci:
        detail = f" ({name} {fmt_dec(ci[0], d)}\u2013{fmt_dec(ci[1], d)}{extra})"
    elif lo is not None:
        detail = f" (interval lower bound {fmt_dec(lo, d)}{extra})"
    else:
        detail = f" ({q})" if q else ""
    return f"removing just this {noun} {change} than a placebo{detail}"


def _named_sentence(t: dict, failure: dict, fails_on: list[str], level: str) -> str:
    """The sentence of a token failed on a named finding: dependence leads ("The model depends on
    token 'NEW' ..."), association says the class, its share and q-value and why it fails."""
    who, noun = _token_name(t)
    subject = who[0].lower() + who[1:]
    n = num(t.get("n_images"))
    on = f"on {fmt_int(n)} image{'' if n == 1 else 's'}" if n is not None else ""
    cls = t.get("top_class", failure.get("class"))
    share = num(t.get("class_share"))
    lift = num(t.get("lift")) if num(t.get("lift")) is not None else num(failure.get("value"))
    attended = f"the model attends to it {lift:.1f}\u00d7 its area" if lift is not None else ""
    why = ("attended" if t.get("attended") or (t.get("attended") is None and lift is not None)
           else "tokens.fail_on_association")
    evidence = [f"{pct_words(share)} of its images" if share is not None else "", _q(t.get("q_value"))]
    evidence = [p for p in evidence if p]
    over = f"over-represented in class '{cls}'" + (f" ({', '.join(evidence)})" if evidence else "")
    if "dependence" in fails_on:
        eq = _q(t.get("effect_q_value") if t.get("effect_q_value") is not None else failure.get("effect_q_value"))
        effect = _effect_clause(t, failure, noun, level, eq)
        head = f"The model depends on {subject}" + (f" ({on})" if on else "")
        body = (effect.replace(f"removing just this {noun}", "removing it") if effect
                else "removing it costs confidence beyond a placebo" + (f" ({eq})" if eq else ""))
        if "association" in fails_on:
            tail = f"; it is also {over}" + (f" and {attended}" if why == "attended" and attended else "")
            tail += ", so the config fails on association too"
        else:
            tail = f"; {attended}" if attended else ""
        return f"{head}: {body}{tail}."
    head = f"{who}" + (f" ({on})" if on else "") + f" is {over}"
    if why == "attended":
        reason = f"{attended}, so the config fails on association (data association + attention)" if attended else \
            "it is attended, so the config fails on association"
    else:
        reason = "the config fails on association alone (tokens.fail_on_association)"
    effect = _effect_clause(t, failure, noun, level)
    extra = f"; {effect}, not shown to exceed tokens.max_effect" if effect and t.get("dependent") is False else ""
    return f"{head} and {reason}{extra}."


def token_sentence(t: TokenEntry | dict, failure: Failure | dict, level: str = "") -> str:
    """The token's finding in words. A token the gate failed on a recorded finding names it
    (:func:`_named_sentence`): "The model depends on token 'NEW' (on 38 images): removing it lowers
    confidence by 0.31 more than a placebo (95% interval 0.22–0.40, q = 1e-05); ..." or "Token 'Y'
    ... is over-represented in class 'C' (95% of its images, q = 3e-12) and ... so the config fails
    on association". Older entries read as before: "Token 'NEW' (on 38 images, 95% in class
    'horror'): removing just this text lowers confidence by 0.31 more than a placebo (95% interval
    0.22–0.40); the model attends to it 4.1× its area." ``failure`` (a gate failure of rule
    "token") fills in what ``t`` lacks; ``level`` names the interval's coverage ("95%")."""
    t, failure = as_dict(t), as_dict(failure)
    fails_on = failing_findings(t, failure)
    if fails_on:
        return _named_sentence(t, failure, fails_on, level)
    who, noun = _token_name(t)
    context = []
    n = num(t.get("n_images"))
    if n is not None:
        context.append(f"on {fmt_int(n)} image{'' if n == 1 else 's'}")
    cls = t.get("top_class", failure.get("class"))
    share = num(t.get("class_share"))
    if cls is not None:
        context.append(f"{pct_words(share)} in class '{cls}'" if share is not None else f"mostly in class '{cls}'")
    head = f"{who} ({', '.join(context)})" if context else who
    parts = []
    effect = _effect_clause(t, failure, noun, level)
    if effect:
        parts.append(effect)
    lift = num(t.get("lift")) if num(t.get("lift")) is not None else num(failure.get("value"))
    if lift is not None:
        parts.append(f"the model attends to it {lift:.1f}\u00d7 its area")
    return f"{head}: {'; '.join(parts)}." if parts else f"{head}: flagged."
