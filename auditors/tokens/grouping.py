"""Recurring text tokens: group text instances across the dataset and rank them by risk.

Real shortcuts are small recurring marks (a studio logo, a rating sticker, a badge word). One
mark is one token whether OCR reads it, misreads it or cannot read it: crops are grouped by
aligned visual similarity (``tokens.visual``), and reads of one visual group that are a few
edits apart are merged; the class association is an omnibus test (no class picked first).
"""

from __future__ import annotations

import math
import re
import zlib
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd

from auditors.analysis.stats import association_pvalue
from auditors.tokens.pair_store import PairMemo, PairSimilarities
from auditors.tokens.visual import decode_patches, hash_components, visual_components

__all__ = ["TokenSettings", "normalise_text", "edit_ratio", "assign_tokens", "token_table"]


@dataclass(frozen=True)
class TokenSettings:
    min_text_length: int = 2
    min_text_conf: float = 0.4
    max_hamming: int = 6  # legacy instances without a patch: fingerprint bits two crops may differ by
    max_aspect_ratio: float = 1.35  # two crops of one mark differ in aspect ratio at most by this factor
    min_images: int = 3
    max_visual_distance: float = 0.25  # 1 - aligned similarity within which two crops are one mark
    max_edit_distance: float = 0.34  # edits / length within which two reads of one mark are merged


def normalise_text(s: str | None) -> str:
    """Fold case, accents, punctuation and whitespace: 'New!' and ' NEW ' are one token."""
    if not s:
        return ""
    s = unicodedata.normalize("NFKD", s)
    s = "".join(ch for ch in s if not unicodedata.combining(ch))
    return re.sub(r"[\W_]+", "", s.casefold())


def edit_ratio(a: str, b: str) -> float:
    """Levenshtein distance / length of the longer string (0: equal, 1: nothing in common)."""
    if a == b:
        return 0.0
    if not a or not b:
        return 1.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1] / max(len(a), len(b))


def _visual_labels(instances: pd.DataFrame, s: TokenSettings, pairs: PairSimilarities | None = None) -> np.ndarray:
    """Visual component per instance (patch similarity; legacy hash grouping where no patch)."""
    n = len(instances)
    aspects = instances["aspect"].to_numpy(float)
    labels = np.arange(n)
    stored = instances["patch"].tolist() if "patch" in instances else [None] * n
    patches, ok = decode_patches(stored)
    if ok.any():
        idx = np.flatnonzero(ok)
        memo = PairMemo(pairs, [stored[i] for i in idx]) if pairs is not None else None
        labels[idx] = idx[visual_components([patches[i] for i in idx], aspects[idx], 1.0 - s.max_visual_distance,
                                            s.max_aspect_ratio, memo=memo)]
    if (~ok).any():
        idx = np.flatnonzero(~ok)
        labels[idx] = idx[hash_components(instances["fingerprint"].iloc[idx].tolist(), aspects[idx], s.max_hamming, s.max_aspect_ratio)]
    return labels


def _canonical(strings: pd.Series, max_edit: float) -> dict[str, str]:
    """Map each read string of one visual mark to the most frequent string within ``max_edit``.

    'NEW' read 30 times, 'NEN' 4 and 'NE' twice on crops that look alike are one mark. A
    different word that happens to look alike keeps its own token: its string is far from every
    canon ('images' vs 'smaller'), or it is about as frequent as the near one ('then'/'them').
    """
    counts = strings.value_counts()
    ranked = sorted(counts.index, key=lambda t: (-counts[t], -len(t), t))
    canon: dict[str, str] = {}
    heads: list[str] = []
    for t in ranked:
        # A misread is rarer than the reading: only a string read at least twice as often absorbs
        # a near string ('Title 10' and 'Title 11', each once, stay two tokens).
        head = next((h for h in heads if counts[h] >= 2 * counts[t] and edit_ratio(t, h) <= max_edit), None)
        if head is None:
            heads.append(t)
            head = t
        canon[t] = head
    return canon


def assign_tokens(instances: pd.DataFrame, s: TokenSettings, pairs: PairSimilarities | None = None) -> pd.Series:
    """Token key per instance: one token per mark, whether it was read or not.

    Instances are first grouped visually (aligned crops, ``tokens.visual``). Within a visual
    group, reads within ``max_edit_distance`` of the group's most frequent read are that read
    (``text:new`` for NEW/NEN/NE), unread crops join it too; a group nobody read is
    ``visual:<first member's fingerprint>``. Identical reads are one token across groups.
    ``pairs``: crop similarities stored by earlier runs (same tokens, fewer comparisons).
    """
    norm = instances["text"].fillna("").map(normalise_text)
    conf = instances["text_conf"].fillna(0.0)
    readable = ((norm.str.len() >= s.min_text_length) & (conf >= s.min_text_conf)).to_numpy()
    labels = _visual_labels(instances, s, pairs)
    norm_v = norm.to_numpy(object)
    fp = instances["fingerprint"].astype(str).to_numpy(object)
    keys = np.where(readable, "text:" + norm.astype(str).to_numpy(object), "visual:" + fp)
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        read = members[readable[members]]
        if len(read) == 0:
            keys[members] = "visual:" + fp[members.min()]
            continue
        canon = _canonical(pd.Series(norm_v[read]), s.max_edit_distance)
        keys[read] = ["text:" + canon[t] for t in norm_v[read]]
        dominant = canon[pd.Series(norm_v[read]).value_counts().index[0]]
        keys[members[~readable[members]]] = "text:" + dominant
    return pd.Series(keys, index=instances.index, dtype="object")


def _association(images_with: pd.Series, base: pd.Series, seed: int) -> tuple[str | None, float, dict[str, float], float]:
    """Most over-represented class (descriptive), its share, all shares, and an omnibus p-value.

    The p-value tests whether the token's class mix differs from the dataset's *at all*
    (``association_pvalue``): no class is picked before the test, so it is not inflated by
    post-selection. ``class_share`` and ``class_shares`` share one denominator: the token's
    images with a known class.
    """
    counts = images_with.value_counts()
    total_with, total = int(counts.sum()), int(base.sum())
    if total_with == 0 or total == 0:
        return None, math.nan, {}, math.nan
    enrichment = {c: (counts.get(c, 0) / total_with) / (base[c] / total) for c in base.index if base[c] > 0}
    top = max(enrichment, key=enrichment.get)
    shares = {str(c): round(float(v) / total_with, 4) for c, v in counts.items()}
    p = association_pvalue(np.array([int(counts.get(c, 0)) for c in base.index]), base.to_numpy(), seed=seed)
    return top, int(counts.get(top, 0)) / total_with, shares, p


def token_table(instances: pd.DataFrame, images: pd.DataFrame, group_by: str, s: TokenSettings) -> pd.DataFrame:
    """One row per token seen on >= ``min_images`` images: frequency, class association, attention.

    ``instances`` must carry a ``token`` column. Per image, a token's mass and area are summed
    over its instances; lift is the ratio of the means over the token's images.
    """
    if instances.empty:
        return pd.DataFrame(columns=["token", "n_images", "n_instances", "top_class", "class_share", "class_shares", "p_value", "mass", "area", "lift", "example_text"])
    base = images[group_by].value_counts()
    per_image = (
        instances.groupby(["token", "path"], sort=False)
        .agg(mass=("mass", "sum"), area=("area", "sum"), n=("instance", "size"), text=("text", "first"))
        .reset_index()
    )
    cls = images.set_index("path")[group_by]
    per_image["cls"] = per_image["path"].map(cls)
    rows = []
    for token, g in per_image.groupby("token", sort=False):
        if len(g) < s.min_images:
            continue
        top, share, shares, p = _association(g["cls"].dropna(), base, seed=zlib.crc32(str(token).encode()))
        mass, area = g["mass"].mean(), g["area"].mean()
        rows.append(
            {
                "token": token,
                "n_images": int(len(g)),
                "n_instances": int(g["n"].sum()),
                "top_class": top,
                "class_share": share,
                "class_shares": shares,
                "p_value": p,
                "mass": float(mass),
                "area": float(area),
                "lift": float(mass / area) if area > 0 else math.nan,
                "example_text": next((t for t in g["text"] if isinstance(t, str) and t), None),
            }
        )
    return pd.DataFrame(rows)
