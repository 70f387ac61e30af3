"""Recurring text tokens: group text instances across the dataset and rank them by risk.

Real shortcuts are small recurring marks (a studio logo, a rating sticker, a badge word). They
are grouped by their normalised recognised string when OCR reads them, and otherwise by a
visual fingerprint, so a logo OCR cannot read still forms one token.
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

__all__ = ["TokenSettings", "normalise_text", "assign_tokens", "token_table"]


@dataclass(frozen=True)
class TokenSettings:
    min_text_length: int = 2
    min_text_conf: float = 0.4
    max_hamming: int = 6  # fingerprint bits two crops of one mark may differ by
    max_aspect_ratio: float = 1.35  # ... and their aspect ratios at most by this factor
    min_images: int = 3


def normalise_text(s: str | None) -> str:
    """Fold case, accents, punctuation and whitespace: 'New!' and ' NEW ' are one token."""
    if not s:
        return ""
    s = unicodedata.normalize("NFKD", s)
    s = "".join(ch for ch in s if not unicodedata.combining(ch))
    return re.sub(r"[\W_]+", "", s.casefold())


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _visual_groups(fingerprints: list[str], aspects: np.ndarray, s: TokenSettings) -> list[int]:
    """Cluster 64-bit hashes within ``max_hamming`` bits (and similar aspect ratio).

    Candidates come from 8 bands of 8 bits: by pigeonhole, two hashes within 7 bits share at
    least one band exactly, so no pair within ``max_hamming`` <= 7 is missed, without the
    quadratic all-pairs comparison.
    """
    n = len(fingerprints)
    values = np.array([int(f, 16) for f in fingerprints], dtype=np.uint64)
    uf = _UnionFind(n)
    for band in range(8):
        buckets: dict[int, list[int]] = {}
        keys = (values >> np.uint64(band * 8)) & np.uint64(0xFF)
        for i, k in enumerate(keys.tolist()):
            buckets.setdefault(k, []).append(i)
        for members in buckets.values():
            if len(members) < 2 or len(members) > 5000:
                continue
            m = np.array(members)
            for a_pos, a in enumerate(members[:-1]):
                rest = m[a_pos + 1 :]
                dist = np.array([bin(int(x)).count("1") for x in (values[rest] ^ values[a])])
                ratio = np.maximum(aspects[rest], aspects[a]) / np.maximum(np.minimum(aspects[rest], aspects[a]), 1e-6)
                for b in rest[(dist <= s.max_hamming) & (ratio <= s.max_aspect_ratio)]:
                    uf.union(a, int(b))
    return [uf.find(i) for i in range(n)]


def assign_tokens(instances: pd.DataFrame, s: TokenSettings) -> pd.Series:
    """Token key per instance: ``text:<normalised>`` when read reliably, else ``visual:<id>``."""
    norm = instances["text"].fillna("").map(normalise_text)
    conf = instances["text_conf"].fillna(0.0)
    readable = (norm.str.len() >= s.min_text_length) & (conf >= s.min_text_conf)
    keys = pd.Series("text:" + norm, index=instances.index, dtype="object")
    unread = instances.index[~readable]
    if len(unread):
        groups = _visual_groups(instances.loc[unread, "fingerprint"].tolist(), instances.loc[unread, "aspect"].to_numpy(float), s)
        roots = pd.Series(groups, index=unread)
        # Name a visual token after its first member's fingerprint: stable across runs.
        first_fp = instances.loc[unread, "fingerprint"].groupby(roots.values).transform("first")
        keys.loc[unread] = "visual:" + first_fp.astype(str)
    return keys


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
