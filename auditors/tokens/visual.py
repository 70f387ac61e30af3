"""Visual grouping: which text-instance crops show the same mark, at any dataset size.

A detector's boxes around one badge differ by a pixel or two at every edge; on a 30x14 px badge
that changes any fixed hash of the crop (a 64-bit difference hash split one demo badge into
tokens of 33, 6 and 3 images). Here two crops are compared *aligned*: the centre of one patch is
slid over the other at three scales and the best normalised cross-correlation is kept, in both
directions. Only candidate pairs are compared: every crop's nearest neighbours in a small
embedding (KD-tree), joined with a union-find; then the components' representatives are
compared the same way, so fragments of one mark join. Cost: O(n k log n), no bucket skipped.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

import cv2
import numpy as np

from auditors.measure.instances import PATCH_H, PATCH_MAX_W, PATCH_MIN_W

__all__ = ["decode_patches", "patch_similarity", "visual_components", "hash_components", "UnionFind"]

_SCALES = (0.9, 1.0, 1.1)  # box-edge jitter changes a crop's scale by up to ~10%
_MARGIN_Y, _MARGIN_X = 2, 0.125  # rows / share of columns trimmed off the template: what a jittered box may lose
_EMBED = (6, 18)  # embedding grid (h, w) for candidate search
_DIMS = 12  # PCA dimensions of the embedding (KD-trees stay fast in low dimensions)


class UnionFind:
    """Disjoint sets over 0..n-1 with path halving; roots are the smallest member."""

    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, i: int) -> int:
        p = self.parent
        while p[i] != i:
            p[i] = p[p[i]]
            i = int(p[i])
        return int(i)

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True

    def labels(self) -> np.ndarray:
        return np.array([self.find(i) for i in range(len(self.parent))])


def decode_patches(values: Sequence[object]) -> tuple[list[np.ndarray | None], np.ndarray]:
    """Float32 ``PATCH_H x w`` patches (None where missing or malformed) and a validity mask."""
    out: list[np.ndarray | None] = []
    for v in values:
        patch = None
        if isinstance(v, str) and v:
            try:
                raw = base64.b64decode(v, validate=True)
            except ValueError:
                raw = b""
            w = len(raw) // PATCH_H
            if raw and len(raw) == PATCH_H * w and PATCH_MIN_W <= w <= PATCH_MAX_W:
                patch = np.frombuffer(raw, np.uint8).reshape(PATCH_H, w).astype(np.float32)
        out.append(patch)
    return out, np.array([p is not None for p in out], bool)


def _one_way(a: np.ndarray, b: np.ndarray) -> float:
    """Best NCC of ``a``'s centre (at three scales) anywhere inside ``b`` (resized to ``a``'s width)."""
    h_a, w_a = a.shape
    if b.shape != a.shape:
        b = cv2.resize(b, (w_a, h_a), interpolation=cv2.INTER_AREA)
    best = -1.0
    for s in _SCALES:
        h = min(h_a, max(3, round((h_a - 2 * _MARGIN_Y) * s)))
        w = min(w_a, max(3, round(w_a * (1 - 2 * _MARGIN_X) * s)))
        y0, x0 = (h_a - h) // 2, (w_a - w) // 2
        t = a[y0 : y0 + h, x0 : x0 + w]
        if float(t.max()) - float(t.min()) < 4.0:  # a flat template correlates with nothing
            continue
        best = max(best, float(cv2.matchTemplate(b, t, cv2.TM_CCOEFF_NORMED).max()))
    return best


def patch_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Aligned similarity in [-1, 1]: the worse of the two directions, so a crop is not 'similar'
    to a longer one merely because it appears inside it ('found' in 'found it')."""
    return min(_one_way(a, b), _one_way(b, a))


def _embedding(patches: Sequence[np.ndarray], log_aspect: np.ndarray) -> np.ndarray:
    """Blurred, contrast-normalised small grid, reduced by PCA, plus log aspect ratio."""
    n = len(patches)
    small = np.stack([cv2.resize(p, (_EMBED[1], _EMBED[0]), interpolation=cv2.INTER_AREA) for p in patches]).reshape(n, -1)
    small = small - small.mean(axis=1, keepdims=True)
    small /= np.linalg.norm(small, axis=1, keepdims=True) + 1e-6
    if n > _DIMS:
        rng = np.random.default_rng(0)
        fit = small[rng.choice(n, size=min(n, 4000), replace=False)]
        mean = fit.mean(axis=0)
        centred = fit - mean
        _, vecs = np.linalg.eigh(centred.T @ centred)  # PCA: top eigenvectors of the scatter matrix
        small = (small - mean) @ vecs[:, ::-1][:, :_DIMS]
    return np.column_stack([small, log_aspect])


def _candidates(points: np.ndarray, k: int) -> np.ndarray:
    """(i, j) pairs: each point with its ``k`` nearest neighbours (KD-tree)."""
    from scipy.spatial import cKDTree

    n = len(points)
    k = min(k + 1, n)
    _, idx = cKDTree(points).query(points, k=k)
    idx = idx.reshape(n, k)
    i = np.repeat(np.arange(n), k)
    j = idx.reshape(-1)
    keep = i != j
    return np.column_stack([i[keep], j[keep]])


def _join(uf: UnionFind, pairs: np.ndarray, ok: callable) -> int:
    """Union candidate pairs that ``ok`` accepts *and* whose components' roots ``ok`` accepts.

    The second check stops chaining: without it, small same-font words drift from one to the
    next (a-b, b-c, ...) into one component; with it every member of a component is similar to
    its root, while one mark's jittered crops, all similar to each other, still join.
    """
    joined = 0
    for i, j in pairs.tolist():
        ri, rj = uf.find(i), uf.find(j)
        if ri != rj and ok(i, j) and (ri == i and rj == j or ok(ri, rj)):
            uf.union(ri, rj)
            joined += 1
    return joined


def _medoids(emb: np.ndarray, inverse: np.ndarray, n_groups: int) -> np.ndarray:
    """Per component, the member nearest the component's mean embedding (vectorised)."""
    sums = np.zeros((n_groups, emb.shape[1]))
    np.add.at(sums, inverse, emb)
    means = sums / np.bincount(inverse, minlength=n_groups)[:, None]
    dist = np.linalg.norm(emb - means[inverse], axis=1)
    order = np.lexsort((dist, inverse))  # by component, nearest first
    first = np.flatnonzero(np.r_[True, np.diff(inverse[order]) != 0])
    return order[first]


def visual_components(
    patches: Sequence[np.ndarray], aspects: np.ndarray, min_similarity: float, max_aspect_ratio: float, k: int = 8, rounds: int = 3
) -> np.ndarray:
    """Component label (smallest member index) per patch: crops that show the same mark.

    Two crops join when their aspect ratios differ by at most ``max_aspect_ratio`` and their
    aligned similarity is at least ``min_similarity``; components are the transitive closure
    over the candidate pairs, then over nearest components' representatives.
    """
    n = len(patches)
    if n == 0:
        return np.zeros(0, int)
    log_aspect = np.log(np.clip(np.asarray(aspects, float), 1e-3, 1e3))
    log_ratio = np.log(max_aspect_ratio)
    uf = UnionFind(n)

    def ok(i: int, j: int) -> bool:
        return abs(log_aspect[i] - log_aspect[j]) <= log_ratio and patch_similarity(patches[i], patches[j]) >= min_similarity

    if n == 1:
        return np.zeros(1, int)
    emb = _embedding(patches, log_aspect)
    _join(uf, _candidates(emb, k), ok)
    for _ in range(rounds):  # fragments of one mark: compare components through their medoids
        labels = uf.labels()
        roots, inverse = np.unique(labels, return_inverse=True)
        if len(roots) < 2:
            break
        reps = _medoids(emb, inverse, len(roots))
        joined = 0
        for a, b in _candidates(emb[reps], k).tolist():
            ra, rb = reps[a], reps[b]
            if uf.find(ra) != uf.find(rb) and ok(ra, rb):
                uf.union(ra, rb)
                joined += 1
        if not joined:
            break
    return uf.labels()


def hash_components(fingerprints: Sequence[str], aspects: np.ndarray, max_hamming: int, max_aspect_ratio: float, k: int = 8) -> np.ndarray:
    """Legacy grouping for instances without a patch: 64-bit hashes within ``max_hamming`` bits.

    Same candidate search (nearest neighbours on the bits, whose squared distance *is* the
    Hamming distance), so no pair is skipped for being in a large bucket.
    """
    n = len(fingerprints)
    if n < 2:
        return np.zeros(n, int)
    bits = np.array([[(int(f, 16) >> b) & 1 for b in range(64)] if isinstance(f, str) else [0] * 64 for f in fingerprints], float)
    log_aspect = np.log(np.clip(np.asarray(aspects, float), 1e-3, 1e3))
    uf = UnionFind(n)

    def ok(i: int, j: int) -> bool:
        return abs(log_aspect[i] - log_aspect[j]) <= np.log(max_aspect_ratio) and int(np.abs(bits[i] - bits[j]).sum()) <= max_hamming

    _join(uf, _candidates(bits, k), ok)
    return uf.labels()
