"""The embedded demo: a seeded synthetic movie-poster dataset and two small CNNs trained on it.

Why: ``camaudit demo`` must show, offline and in minutes on a laptop CPU, what the audit is
for. The posters carry genre cues (palette and shapes, deliberately noisy), a random title
word on every poster, and a small "NEW" badge. In the *biased* split the badge almost always
comes with one genre (the badge class); in the *control* split it is independent of the label.
A model trained on the biased split takes the shortcut and looks at the badge; the control
model has no reason to read text. Auditing both on data drawn like the biased training set
shows the difference as text lift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

__all__ = [
    "CLASSES", "BADGE_CLASS", "INPUT_SIZE", "POSTER_SIZE", "NORM_MEAN", "NORM_STD", "BADGE_WORD", "Poster",
    "render_poster", "render_split", "badge_rate",
]

CLASSES: list[str] = ["comedy", "drama", "horror"]
BADGE_CLASS: str = "horror"
INPUT_SIZE: tuple[int, int] = (128, 128)  # (H, W) the model sees; posters are stretched to it
POSTER_SIZE: tuple[int, int] = (144, 96)  # (H, W) of the saved originals
NORM_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
NORM_STD: tuple[float, float, float] = (0.25, 0.25, 0.25)

CACHE_VERSION = "v1"
BADGE_WORD = "NEW"
#: P(badge | class) in the biased split (badge class, other classes) and in the control split.
BIASED_BADGE_RATE: tuple[float, float] = (0.95, 0.05)
CONTROL_BADGE_RATE: float = 0.35
#: Share of posters whose palette/shapes come from a random genre (so ~20% look like another
#: genre): the honest cue then tops out near 80% accuracy while the badge alone tells the badge
#: class apart at ~95% in the biased split, which is what makes the shortcut worth taking.
CUE_NOISE: float = 0.3

TITLE_WORDS: tuple[str, ...] = (
    "NIGHT", "RIVER", "STORM", "GOLD", "HOME", "STONE", "WINTER", "SUMMER", "GHOST", "HEART",
    "CITY", "OCEAN", "FIRE", "DREAM", "SHADOW", "LIGHT", "ROAD", "FOREST", "SILENCE", "ECHO",
    "MIRROR", "GARDEN", "TRAIN", "ISLAND", "SECRET", "FAMILY", "PARTY", "WEDDING", "WOLF", "MOON",
)

Split = Literal["biased", "control"]


#: genre -> (two background colours RGB, shape colour RGB); jittered per poster.
_PALETTES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]] = {
    "comedy": ((250, 200, 60), (240, 120, 40), (60, 170, 230)),
    "drama": ((70, 90, 140), (150, 160, 180), (120, 210, 200)),
    "horror": ((60, 10, 20), (10, 10, 10), (170, 20, 30)),
}


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int = 35) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)  # type: ignore[return-value]


def _background(rng: np.random.Generator, style: str, h: int, w: int) -> np.ndarray:
    """Vertical gradient between the style's two colours: a global, position-free genre cue."""
    top, bottom, _ = _PALETTES[style]
    top, bottom = np.array(_jitter(rng, top), np.float32), np.array(_jitter(rng, bottom), np.float32)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    img = top * (1 - t) + bottom * t
    return np.repeat(img, w, axis=1).clip(0, 255).astype(np.uint8)


def _draw_shapes(rng: np.random.Generator, img: np.ndarray, style: str) -> None:
    """Scatter the style's shapes (circles / bars / spikes) over the poster."""
    h, w = img.shape[:2]
    colour = _jitter(rng, _PALETTES[style][2], 40)
    for _ in range(int(rng.integers(3, 7))):
        cx, cy = int(rng.integers(0, w)), int(rng.integers(0, h))
        if style == "comedy":
            cv2.circle(img, (cx, cy), int(rng.integers(6, 16)), colour, -1, cv2.LINE_AA)
        elif style == "drama":
            bw, bh = int(rng.integers(20, 50)), int(rng.integers(3, 7))
            cv2.rectangle(img, (cx, cy), (cx + bw, cy + bh), colour, -1)
        else:
            s = int(rng.integers(8, 18))
            pts = np.array([[cx, cy - s], [cx - s // 2, cy + s], [cx + s // 2, cy + s]], np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)


def _text_size(text: str, font: int, scale: float, thickness: int) -> tuple[int, int, int]:
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    return tw, th, base


def _draw_title(rng: np.random.Generator, img: np.ndarray) -> tuple[int, int, int, int]:
    """A random word on a neutral plate (black-on-white or white-on-black, genre-independent).

    Returns the plate box (x0, y0, x1, y1). The plate keeps the title legible for OCR on any
    background and carries no genre colour, so a model has no honest reason to look at it.
    """
    h, w = img.shape[:2]
    word = TITLE_WORDS[int(rng.integers(len(TITLE_WORDS)))]
    font = cv2.FONT_HERSHEY_DUPLEX
    scale, thick = 0.45, 1
    tw, th, base = _text_size(word, font, scale, thick)
    while tw > w - 12:
        scale -= 0.05
        tw, th, base = _text_size(word, font, scale, thick)
    pad = 3
    x0 = int(rng.integers(4, max(5, w - tw - 2 * pad - 4)))
    y0 = int(rng.integers(int(h * 0.45), h - th - base - 2 * pad - 4))
    x1, y1 = x0 + tw + 2 * pad, y0 + th + base + 2 * pad
    dark_on_light = bool(rng.integers(2))
    plate, ink = ((240, 240, 235), (15, 15, 15)) if dark_on_light else ((15, 15, 20), (245, 245, 245))
    cv2.rectangle(img, (x0, y0), (x1, y1), plate, -1)
    cv2.putText(img, word, (x0 + pad, y0 + pad + th), font, scale, ink, thick, cv2.LINE_AA)
    return x0, y0, x1, y1


def _draw_badge(rng: np.random.Generator, img: np.ndarray) -> tuple[int, int, int, int]:
    """The shortcut: a bright green "NEW" tag in the top-right corner. Returns its box."""
    h, w = img.shape[:2]
    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1
    tw, th, base = _text_size(BADGE_WORD, font, scale, thick)
    pad = 3
    bw, bh = tw + 2 * pad, th + base + 2 * pad
    # Inset past the audit's default 5% border frame, so the badge reads as text, not border.
    x1 = w - 8 - int(rng.integers(0, 3))
    y0 = 9 + int(rng.integers(0, 3))
    x0, y1 = x1 - bw, y0 + bh
    cv2.rectangle(img, (x0, y0), (x1, y1), (60, 230, 90), -1)
    cv2.putText(img, BADGE_WORD, (x0 + pad, y0 + pad + th), font, scale, (10, 10, 10), thick, cv2.LINE_AA)
    return x0, y0, x1, y1


@dataclass(frozen=True)
class Poster:
    """A rendered poster with its ground truth (boxes are x0, y0, x1, y1 in poster pixels)."""

    image: np.ndarray  # RGB uint8, POSTER_SIZE
    label: int
    badge: bool
    badge_box: tuple[int, int, int, int] | None
    title_box: tuple[int, int, int, int]


def render_poster(rng: np.random.Generator, label: int, badge: bool) -> Poster:
    """One poster of genre ``label``; with P=CUE_NOISE its visual style is a random genre's."""
    h, w = POSTER_SIZE
    style_idx = int(rng.integers(len(CLASSES))) if rng.random() < CUE_NOISE else label
    style = CLASSES[style_idx]
    img = _background(rng, style, h, w)
    _draw_shapes(rng, img, style)
    title_box = _draw_title(rng, img)
    badge_box = _draw_badge(rng, img) if badge else None
    return Poster(img, label, badge, badge_box, title_box)


def badge_rate(split: Split, label: int) -> float:
    """P(badge | genre) in a split: tied to the badge class when biased, flat in the control."""
    if split == "control":
        return CONTROL_BADGE_RATE
    return BIASED_BADGE_RATE[0] if CLASSES[label] == BADGE_CLASS else BIASED_BADGE_RATE[1]


def render_split(rng: np.random.Generator, split: Split, n_per_class: int) -> list[Poster]:
    """``n_per_class`` posters per genre; exactly round(rate * n) of each genre carry the badge.

    Exact counts (randomly placed) rather than coin flips keep the control split's badge
    truly independent of the label even for small ``n``.
    """
    posters = []
    for label in range(len(CLASSES)):
        n_badge = round(badge_rate(split, label) * n_per_class)
        flags = rng.permutation(np.arange(n_per_class) < n_badge)
        posters.extend(render_poster(rng, label, bool(flag)) for flag in flags)
    return posters
