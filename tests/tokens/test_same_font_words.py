"""Unread body text in one font must not become one visual token (issue 10).

Different words printed in one font (a document scan, a credits block) look alike at 16 px: the
whole-crop correlation of 'their' and 'they' or 'more' and 'there' is as high as that of two
jittered crops of one word. Built to break the grouping: 20 common words, 8 copies each, drawn
small (cap height 9-11 px) on paper-tinted patches of the real photos in tests/fixtures/scenetext,
cut with a box whose every edge is jittered by a pixel, nothing read. Before the block check in
``tokens.visual`` these pages fell into 5-10 mixed tokens each, one of them holding 16 words.
"""

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from auditors.measure.instances import crop_fingerprint, crop_patch
from auditors.tokens.grouping import TokenSettings, assign_tokens

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "scenetext"
WORDS = ["the", "and", "for", "with", "from", "that", "this", "have", "were", "they",
         "which", "their", "about", "would", "there", "other", "been", "more", "some", "time"]
COLUMNS = ["path", "instance", "text", "text_conf", "fingerprint", "aspect", "patch", "word"]


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [cv2.imread(str(p))[:, :, ::-1].copy() for p in sorted(DATA.glob("*.jpg"))]


def _printed(rng: np.random.Generator, photos: list[np.ndarray], word: str, font: int, scale: float) -> np.ndarray:
    """``word`` printed dark on a paper-tinted patch of a random real photo, cut with a jittered box."""
    photo = photos[rng.integers(len(photos))]
    (tw, th), base = cv2.getTextSize(word, font, scale, 1)
    h, w = th + base + 10, tw + 10
    y, x = rng.integers(0, photo.shape[0] - h), rng.integers(0, photo.shape[1] - w)
    canvas = (photo[y : y + h, x : x + w].astype(np.float32) * 0.35 + 160).astype(np.uint8)
    cv2.putText(canvas, word, (5, 5 + th), font, scale, (20, 20, 20), 1, cv2.LINE_AA)
    j = rng.integers(-1, 2, 4)
    return canvas[max(0, 4 + j[1]) : min(h, 6 + th + base + j[3]), max(0, 4 + j[0]) : min(w, 6 + tw + j[2])]


def _page(photos, font: int, scale: float | tuple[float, float], words=WORDS, copies: int = 8, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for word in words:
        for c in range(copies):
            s = scale if isinstance(scale, float) else float(rng.uniform(*scale))
            crop = _printed(rng, photos, word, font, s)
            rows.append((f"{word}{c}.png", 0, None, np.nan, crop_fingerprint(crop), crop.shape[1] / crop.shape[0], crop_patch(crop), word))
    return pd.DataFrame(rows, columns=COLUMNS)


def _mixed(inst: pd.DataFrame, tokens: pd.Series) -> list[dict[str, int]]:
    groups = inst.groupby(tokens.values)["word"].agg(lambda s: s.value_counts().to_dict())
    return [g for g in groups if len(g) > 1]


def test_different_words_in_one_font_are_separate_tokens(photos):
    inst = _page(photos, cv2.FONT_HERSHEY_SIMPLEX, 0.5)
    tokens = assign_tokens(inst, TokenSettings())
    assert not _mixed(inst, tokens), _mixed(inst, tokens)
    # ... while the copies of a word still group: most words get a reportable token (>= 3 images)
    biggest = inst.groupby("word").apply(lambda d: tokens[d.index].value_counts().max())
    assert (biggest >= 3).sum() >= 15, biggest.to_dict()


@pytest.mark.parametrize("font,scale", [
    (cv2.FONT_HERSHEY_SIMPLEX, 0.4),
    (cv2.FONT_HERSHEY_PLAIN, 1.0),
    pytest.param(cv2.FONT_HERSHEY_DUPLEX, 0.45, marks=pytest.mark.xfail(
        strict=True, reason="known residual: in this bold font 'more' and 'there' still form one token (8 + 8 crops)")),
])
def test_smaller_and_other_fonts_rarely_mix_words(photos, font, scale):
    """Smaller text and other fonts: the residual the block check leaves, measured and bounded
    (at most 2 mixed tokens and 3% of the crops in a token of another word; before: 5-10 mixed
    tokens and a quarter of the crops or more)."""
    inst = _page(photos, font, scale)
    tokens = assign_tokens(inst, TokenSettings())
    mixed = _mixed(inst, tokens)
    strays = sum(sum(g.values()) - max(g.values()) for g in mixed)
    assert len(mixed) <= 2 and strays <= 0.03 * len(inst), mixed


def test_one_mark_in_that_font_stays_one_token_through_jitter_and_scale(photos):
    """The same word as a recurring mark: box jitter, new background and +-10% scale on every copy."""
    inst = _page(photos, cv2.FONT_HERSHEY_SIMPLEX, (0.45, 0.55), words=["SALE"], copies=40, seed=3)
    tokens = assign_tokens(inst, TokenSettings())
    assert tokens.nunique() == 1 and tokens.iloc[0].startswith("visual:"), tokens.value_counts()
