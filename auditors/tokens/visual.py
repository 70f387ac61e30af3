"""Visual grouping: which text-instance crops show the same mark, at any dataset size.

A detector's boxes around one badge differ by a pixel or two at every edge; on a 30x14 px badge
that changes any fixed hash of the crop (a 64-bit difference hash split one demo badge into
tokens of 33, 6 and 3 images). Here two crops are compared *aligned*: the centre of one patch is
slid over the other at three scales and the best normalised cross-correlation is kept, in both
directions, capped by its weakest letter-sized block (different words in one font share most of
their look, never every letter). Only candidate pairs are compared: every crop's nearest
neighbours in a small embedding (KD-tree), joined strongest pair first when a few spread members
of both components agree on average (:class:`_Linker`); then the components' representatives are
compared the same way, so fragments of one mark join. Cost: O(n k log n), no bucket skipped.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from auditors.measure.instances import PATCH_H, PATCH_MAX_W, PATCH_MIN_W

if TYPE_CHECKING:
    from auditors.tokens.pair_store import PairMemo

__all__ = ["decode_patches", "patch_similarity", "visual_components", "hash_components", "UnionFind"]

_SCALES = (0.9, 1.0, 1.1)  # box-edge jitter changes a crop's scale by up to ~10%
_MARGIN_Y, _MARGIN_X = 2, 0.125  # rows / share of columns trimmed off the template: what a jittered box may lose
_EMBED = (6, 18)  # embedding grid (h, w) for candidate search
_DIMS = 12  # PCA dimensions of the embedding (KD-trees stay fast in low dimensions)
_LINK_SAMPLE = 3  # members of each component compared when two components meet
_COHESION_SLACK = 0.08  # a merged component may be this much less coherent than its parts ...
_COHESION_CAP = 0.05  # ... but never has to clear more than the threshold + this
_BLOCK_W = 8  # columns per block (about one letter at PATCH_H = 16)
_BLOCK_SLACK = 1  # pixels a block may move from the whole template's alignment


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
    """Best NCC of ``a``'s centre (at three scales) inside ``b`` (resized to ``a``'s shape), capped
    by the *weakest letter-sized block* at that alignment.

    The whole-crop NCC is dominated by what every word in one font shares (the x-height band,
    stroke width): 'their' and 'they', 'more' and 'there' at 16 px correlate as well as two
    jittered crops of one word. A different word differs somewhere, one letter at least: each
    block of :data:`_BLOCK_W` columns of the template is matched again within
    :data:`_BLOCK_SLACK` pixels of where the whole template matched, and the worst block
    bounds the score. Jittered copies of one mark agree block by block.
    """
    if b.shape != a.shape:  # both resampled to one width, so neither is sharper than the other
        w_m = round((a.shape[1] + b.shape[1]) / 2)
        a = cv2.resize(a, (w_m, a.shape[0]), interpolation=cv2.INTER_LINEAR)
        b = cv2.resize(b, (w_m, a.shape[0]), interpolation=cv2.INTER_LINEAR)
    h_a, w_a = a.shape
    best, found = -1.0, None
    for s in _SCALES:
        h = min(h_a, max(3, round((h_a - 2 * _MARGIN_Y) * s)))
        w = min(w_a, max(3, round(w_a * (1 - 2 * _MARGIN_X) * s)))
        y0, x0 = (h_a - h) // 2, (w_a - w) // 2
        t = a[y0 : y0 + h, x0 : x0 + w]
        if _flat(t):  # a flat template correlates with nothing
            continue
        _, score, _, loc = cv2.minMaxLoc(cv2.matchTemplate(b, t, cv2.TM_CCOEFF_NORMED))
        if score > best:
            best, found = float(score), (t, loc)
    if found is None:
        return best
    t, (lx, ly) = found
    h, w = t.shape
    pad = _BLOCK_SLACK
    for c0, c1 in _block_edges(w):
        block = t[:, c0:c1]
        if c1 - c0 < 2 or _flat(block):  # background between words
            continue
        win = b[max(0, ly - pad) : ly + h + pad, max(0, lx + c0 - pad) : lx + c1 + pad]
        if win.shape[0] < block.shape[0] or win.shape[1] < block.shape[1]:
            continue
        best = min(best, cv2.minMaxLoc(cv2.matchTemplate(win, block, cv2.TM_CCOEFF_NORMED))[1])
    return best


def _flat(patch: np.ndarray) -> bool:
    """Less than 4 grey levels between darkest and brightest pixel (one C call: this runs for
    every template and block of every compared pair)."""
    lo, hi, _, _ = cv2.minMaxLoc(patch)
    return hi - lo < 4.0


@functools.lru_cache(maxsize=PATCH_MAX_W + 1)
def _block_edges(width: int) -> tuple[tuple[int, int], ...]:
    """(start, end) columns of the letter-sized blocks of a template ``width`` wide."""
    edges = np.linspace(0, width, max(1, round(width / _BLOCK_W)) + 1).round().astype(int).tolist()
    return tuple(zip(edges[:-1], edges[1:]))


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
    """Union candidate pairs that ``ok`` accepts *and* whose components' roots ``ok`` accepts
    (the legacy hash grouping; patches use :class:`_Linker`)."""
    joined = 0
    for i, j in pairs.tolist():
        ri, rj = uf.find(i), uf.find(j)
        if ri != rj and ok(i, j) and (ri == i and rj == j or ok(ri, rj)):
            uf.union(ri, rj)
            joined += 1
    return joined


class _Linker:
    """Components that grow by *average* linkage over a few members, strongest pairs first.

    One pair of crops is a noisy witness at 16 px: two different words in one font (a scanned
    page) can correlate as well as two jittered crops of one word, and chaining through such
    pairs (or through one arbitrary 'root') merged whole pages into one token. Here candidate
    pairs are joined from the most similar down, and two components meet only when the mean
    similarity between up to :data:`_LINK_SAMPLE` spread members of each (plus the pair) clears
    the threshold: copies of one mark, all alike, pass; a different word, alike to one copy by
    chance, does not.
    """

    def __init__(self, n: int, sim: callable, threshold: float):
        self.uf = UnionFind(n)
        self.members: dict[int, list[int]] = {}
        self.sim, self.threshold = sim, threshold

    def _sample(self, root: int) -> list[int]:
        m = self.members.get(root, [root])
        if len(m) <= _LINK_SAMPLE:
            return list(m)
        return [m[round(q * (len(m) - 1) / (_LINK_SAMPLE - 1))] for q in range(_LINK_SAMPLE)]

    def _cohesion(self, sample: list[int]) -> float:
        return float(np.mean([self.sim(x, y) for n, x in enumerate(sample) for y in sample[n + 1 :]]))

    def link(self, i: int, j: int) -> bool:
        """Join the components of ``i`` and ``j`` (a pair already above the threshold) if their
        members agree on average."""
        ri, rj = self.uf.find(i), self.uf.find(j)
        if ri == rj:
            return False
        sa, sb = self._sample(ri), self._sample(rj)
        cross = float(np.mean([self.sim(x, y) for x in set(sa) | {i} for y in set(sb) | {j}]))
        need = self.threshold
        within = [self._cohesion(m) for m in (sa, sb) if len(m) >= _LINK_SAMPLE]
        if within:  # the merged component must stay about as coherent as its parts (bounded:
            # pixel-identical copies of one badge are 'perfectly' coherent)
            need = max(need, min(min(within) - _COHESION_SLACK, self.threshold + _COHESION_CAP))
        if cross < need:
            return False
        ma, mb = self.members.pop(ri, [ri]), self.members.pop(rj, [rj])
        self.uf.union(ri, rj)
        self.members[self.uf.find(ri)] = ma + mb
        return True

    def join_strongest_first(self, pairs: np.ndarray) -> int:
        scored = [(self.sim(i, j), i, j) for i, j in pairs.tolist()]
        scored = [t for t in scored if t[0] >= self.threshold]
        scored.sort(key=lambda t: (-t[0], t[1], t[2]))
        return sum(self.link(i, j) for _, i, j in scored)


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
    patches: Sequence[np.ndarray], aspects: np.ndarray, min_similarity: float, max_aspect_ratio: float, k: int = 8,
    rounds: int = 3, memo: PairMemo | None = None,
) -> np.ndarray:
    """Component label (smallest member index) per patch: crops that show the same mark.

    Two crops join when their aspect ratios differ by at most ``max_aspect_ratio`` and their
    aligned similarity is at least ``min_similarity``; components are the transitive closure
    over the candidate pairs, then over nearest components' representatives. ``memo``:
    similarities stored by earlier runs (``tokens.pair_store``); the labels are the same with
    or without it.
    """
    n = len(patches)
    if n == 0:
        return np.zeros(0, int)
    log_aspect = np.log(np.clip(np.asarray(aspects, float), 1e-3, 1e3))
    log_ratio = np.log(max_aspect_ratio)
    if n == 1:
        return np.zeros(1, int)
    cache: dict[tuple[int, int], float] = {}

    def sim(i: int, j: int) -> float:
        """Aligned similarity, -1 across incompatible aspect ratios; each pair computed once."""
        key = (i, j) if i < j else (j, i)
        if key not in cache:
            if abs(log_aspect[i] - log_aspect[j]) > log_ratio:
                cache[key] = -1.0
            else:
                value = memo.get(i, j) if memo is not None else None
                if value is None:
                    value = patch_similarity(patches[i], patches[j])
                    if memo is not None:
                        memo.add(i, j, value)
                cache[key] = value
        return cache[key]

    linker = _Linker(n, sim, min_similarity)
    emb = _embedding(patches, log_aspect)
    cand = _candidates(emb, k)
    cand = np.unique(np.sort(cand, axis=1), axis=0) if len(cand) else cand
    if memo is not None:
        memo.prefetch(cand)
    linker.join_strongest_first(cand)
    uf = linker.uf
    for _ in range(rounds):  # fragments of one mark: compare components through their medoids
        labels = uf.labels()
        roots, inverse = np.unique(labels, return_inverse=True)
        if len(roots) < 2:
            break
        reps = _medoids(emb, inverse, len(roots))
        pairs = np.array([(reps[a], reps[b]) for a, b in _candidates(emb[reps], k).tolist()], int).reshape(-1, 2)
        if memo is not None:
            memo.prefetch(pairs)
        if not linker.join_strongest_first(pairs):
            break
    if memo is not None:
        memo.save()
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
