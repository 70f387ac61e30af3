"""How tokens read in sentences and labels ("Token 'NEW' (on 38 images, 95% in class 'horror'): ...").

Used by the verdict's findings and by the token section.
"""

from __future__ import annotations

from auditors.audit.summary import Failure, Summary, TokenEntry
from auditors.report.formatting import (
    DASH, as_dict, fmt_dec, fmt_int, interval, num, pct_words, sentence_digits,
)

__all__ = ["MAX_LABEL", "token_entries", "flagged_tokens", "token_label", "token_sentence"]

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


def token_sentence(t: TokenEntry | dict, failure: Failure | dict, level: str = "") -> str:
    """E.g. "Token 'NEW' (on 38 images, 95% in class 'horror'): removing just this text lowers
    confidence by 0.31 more than a placebo (95% interval 0.22–0.40); the model attends to it
    4.1× its area." ``failure`` (a gate failure of rule "token") fills in what ``t`` lacks;
    ``level`` names the interval's coverage ("95%")."""
    t, failure = as_dict(t), as_dict(failure)
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
    effect = num(t.get("effect")) if num(t.get("effect")) is not None else num(failure.get("effect"))
    ci = interval(t.get("effect_ci"))
    lo = ci[0] if ci else num(failure.get("lower"))
    if effect is not None:
        d = sentence_digits(effect, lo, ci[1] if ci else None)
        change = (f"raises confidence by {fmt_dec(-effect, d)} more" if effect < 0
                  else f"lowers confidence by {fmt_dec(effect, d)} more")
        name = f"{level} interval" if level else "interval"
        if ci:
            detail = f" ({name} {fmt_dec(ci[0], d)}\u2013{fmt_dec(ci[1], d)})"
        elif lo is not None:
            detail = f" (interval lower bound {fmt_dec(lo, d)})"
        else:
            detail = ""
        parts.append(f"removing just this {noun} {change} than a placebo{detail}")
    lift = num(t.get("lift")) if num(t.get("lift")) is not None else num(failure.get("value"))
    if lift is not None:
        parts.append(f"the model attends to it {lift:.1f}\u00d7 its area")
    return f"{head}: {'; '.join(parts)}." if parts else f"{head}: flagged."
