"""Pictures for the report tests: poster-like images with heatmaps, galleries with counterfactual
edits, token crops and before/after token examples (all synthetic, drawn with OpenCV)."""

from __future__ import annotations

import cv2
import numpy as np

from auditors.measure.gallery import GalleryItem


def make_poster(seed: int, size: int = 224) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """A poster-like image with a title, its text box and a heatmap that sits on the title."""
    rng = np.random.default_rng(seed)
    top, bottom = rng.integers(40, 220, 3), rng.integers(0, 120, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    img = ((1 - t) * top + t * bottom).repeat(size, axis=1).astype(np.uint8)
    cx, cy = int(rng.integers(70, 150)), int(rng.integers(110, 170))
    cv2.circle(img, (cx, cy), 38, tuple(int(v) for v in rng.integers(120, 255, 3)), -1, cv2.LINE_AA)
    y0 = int(rng.integers(24, 60))
    cv2.putText(img, "TITLE", (30, y0 + 28), cv2.FONT_HERSHEY_DUPLEX, 1.4, (255, 255, 255), 2, cv2.LINE_AA)
    box = np.array([[24, y0], [160, y0], [160, y0 + 36], [24, y0 + 36]], dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    cam = np.exp(-(((xx - 92) / 55.0) ** 2 + ((yy - y0 - 18) / 22.0) ** 2))
    cam += 0.35 * np.exp(-(((xx - cx) / 30.0) ** 2 + ((yy - cy) / 30.0) ** 2))
    cam = (cam / cam.max()).astype(np.float32)
    return img, [box], cam


def make_gallery(n: int = 4, path: str | None = None) -> list[GalleryItem]:
    items = []
    for i in range(n):
        img, boxes, cam = make_poster(i)
        mask = np.zeros(img.shape[:2], bool)
        x0, y0 = boxes[0].min(axis=0).astype(int)
        x1, y1 = boxes[0].max(axis=0).astype(int)
        mask[y0:y1, x0:x1] = True
        items.append(GalleryItem(
            path=path or f"horror/poster_{i:03d}.jpg", label="horror", pred="horror" if i % 2 == 0 else "comedy",
            confidence=0.97 - 0.1 * i, score=0.6 - 0.05 * i,
            metrics={"text_mass": 0.6 - 0.05 * i, "text_area": 0.12, "text_lift": (0.6 - 0.05 * i) / 0.12,
                     "border_mass": 0.05, "border_lift": 0.3},
            image=img, cam=cam, regions={"text": mask}, text_polygons=boxes,
        ))
    return items


def inpaint(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return cv2.inpaint(img, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)


def make_cf_gallery(n: int = 3) -> list[GalleryItem]:
    """Gallery items with text-removed and placebo views, as pipeline._counterfactuals builds them."""
    items = make_gallery(n)
    for i, item in enumerate(items):
        mask = item.regions["text"]
        placebo = np.roll(mask, 110, axis=0)  # same area, lower in the image, off the title
        flipped = i == 0
        item.edits = {
            "text_removed": {"image": inpaint(item.image, mask), "mask": mask,
                             "pred": "comedy" if flipped else item.pred, "confidence": 0.21 if flipped else 0.6},
            "text_placebo": {"image": inpaint(item.image, placebo), "mask": placebo,
                             "pred": item.pred, "confidence": float(item.confidence) - 0.02},
        }
    return items


def badge(text: str, fg=(255, 255, 255), bg=(200, 30, 30), h: int = 30) -> np.ndarray:
    """A sticker-like crop (RGB) with ``text`` on it, sized to the text."""
    (w, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.7, 2)
    img = np.full((h, w + 12, 3), bg, np.uint8)
    cv2.putText(img, text, (6, (h + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.7, fg, 2, cv2.LINE_AA)
    return img


def mark(size: int = 34) -> np.ndarray:
    img = np.full((size, size, 3), 245, np.uint8)
    cv2.circle(img, (size // 2, size // 2), size // 2 - 3, (20, 60, 140), -1, cv2.LINE_AA)
    cv2.line(img, (8, size - 9), (size - 8, 9), (250, 210, 40), 3, cv2.LINE_AA)
    return img


def make_token_crops() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(3)
    new = [badge("NEW", bg=tuple(int(v) for v in rng.integers(150, 230, 3) * [1, 0.2, 0.2])) for _ in range(4)]
    return {
        "text:new": new,
        "visual:9f3a7c21e0b4d855": [mark(34), mark(40), mark(28)],
        "text:studio": [badge("Studio", fg=(30, 30, 30), bg=(230, 230, 220)), badge("STUDIO", bg=(40, 40, 40))],
        "text:imgsrcxonerroralert1": [badge("<img>", bg=(60, 90, 60))],
        "text:2026": [np.zeros((0, 5, 3), np.uint8), None, badge("2026", bg=(90, 90, 90), h=120)],  # broken ones skipped
    }


def make_token_examples(token: str = "text:new", n: int = 3) -> list[GalleryItem]:
    """Before/after examples as token_effects.token_effect builds them: the token is a badge."""
    items = []
    for i in range(n):
        img, _, cam = make_poster(10 + i)
        sticker = badge("NEW", h=26) if token.startswith("text:") else cv2.resize(mark(30), (30, 30))
        y, x = 180, 150
        img[y:y + sticker.shape[0], x:x + sticker.shape[1]] = sticker[:, : 224 - x]
        poly = np.array([[x, y], [x + sticker.shape[1], y], [x + sticker.shape[1], y + sticker.shape[0]], [x, y + sticker.shape[0]]],
                        np.float64)
        mask = np.zeros(img.shape[:2], bool)
        mask[y - 2:y + sticker.shape[0] + 2, x - 2:min(224, x + sticker.shape[1] + 2)] = True
        yy, xx = np.mgrid[0:224, 0:224]
        cam = np.maximum(0.4 * cam, np.exp(-(((xx - x - 20) / 22.0) ** 2 + ((yy - y - 13) / 16.0) ** 2))).astype(np.float32)
        placebo = np.roll(mask, (-120, -110), axis=(0, 1))
        flipped = i == 0
        items.append(GalleryItem(
            path=f"horror/poster_{i + 10:03d}.jpg", label="horror", pred="horror", confidence=0.93 - 0.05 * i,
            score=0.3, metrics={"token_effect": 0.3 - 0.05 * i}, image=img, cam=cam,
            regions={"token": mask}, text_polygons=[poly],
            edits={
                "token_removed": {"image": inpaint(img, mask), "mask": mask,
                                  "pred": "comedy" if flipped else "horror", "confidence": 0.31 + 0.1 * i},
                "token_placebo": {"image": inpaint(img, placebo), "mask": placebo, "pred": "horror",
                                  "confidence": 0.9 - 0.05 * i},
            },
        ))
    return items
