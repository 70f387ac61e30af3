"""Batched CRAFT text detection with real per-box scores (EasyOCR's detector, our driver).

Why not ``Reader.detect``: it runs one image at a time, throws the score map away (so boxes
have no confidence), and its post-processing scans the whole score map once per component.
This module feeds EasyOCR's own CRAFT network batches of same-size canvases, keeps the score
map to score each box, and reproduces EasyOCR's box construction and line grouping exactly
(same thresholds, same integer rounding, EasyOCR's own ``group_text_box``), so at the same
canvas its fp32 boxes equal ``Reader.detect``'s to a pixel (folding batch norm into the
convolutions changes float rounding, nothing else).
"""

from __future__ import annotations

import copy
import math
from collections import defaultdict
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from auditors.data.geometry import clip_polygon, polygons_to_mask

__all__ = ["DetectParams", "Detection", "CraftRunner", "prepare_canvas", "boxes_from_maps"]

_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255.0


@dataclass(frozen=True)
class DetectParams:
    """EasyOCR ``detect`` settings (its defaults) plus camaudit's box-score filter."""

    canvas_size: int = 1024
    text_threshold: float = 0.7
    low_text: float = 0.4
    link_threshold: float = 0.4
    min_size: int = 20
    min_score: float = 0.0
    slope_ths: float = 0.1
    ycenter_ths: float = 0.5
    height_ths: float = 0.5
    width_ths: float = 0.5
    add_margin: float = 0.1


@dataclass
class Detection:
    """Text boxes of one image in original pixel coordinates.

    ``horizontal`` are EasyOCR ``[x_min, x_max, y_min, y_max]`` boxes (ints), ``free`` its
    rotated quads; ``polygons`` is both as (4, 2) float arrays, clipped to the image, and
    ``scores`` the mean CRAFT text score of each box's text pixels (see :func:`box_scores`).
    """

    horizontal: list[list[int]] = field(default_factory=list)
    free: list[list[list[float]]] = field(default_factory=list)
    polygons: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)


def prepare_canvas(img: np.ndarray, canvas_size: int) -> tuple[np.ndarray, float]:
    """Resize (never enlarge) so the longest side fits ``canvas_size``; pad to multiples of 32.

    Same arithmetic as EasyOCR's ``resize_aspect_ratio`` with ``mag_ratio=1``, except that a
    big reduction (< 1/2) uses area interpolation: linear sampling of a 10000 px photo onto a
    1024 canvas aliases thin strokes away. Returns the normalised float32 HxWx3 canvas and
    the scale (canvas px per original px).
    """
    h, w = img.shape[:2]
    ratio = min(canvas_size, max(h, w)) / max(h, w)
    th, tw = max(1, int(h * ratio)), max(1, int(w * ratio))
    interp = cv2.INTER_AREA if ratio < 0.5 else cv2.INTER_LINEAR
    proc = img if (th, tw) == (h, w) else cv2.resize(img, (tw, th), interpolation=interp)
    h32, w32 = th + (-th) % 32, tw + (-tw) % 32
    canvas = np.zeros((h32, w32, 3), np.float32)
    canvas[:th, :tw] = proc
    canvas -= _MEAN  # padding becomes normalised black, as in EasyOCR
    canvas /= _STD
    return canvas, ratio


def _component_boxes(
    textmap: np.ndarray, linkmap: np.ndarray, p: DetectParams
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """EasyOCR's ``getDetBoxes_core`` on per-component crops (O(pixels), not O(components x pixels)).

    Returns the boxes (heat-map coordinates), the label image and a bool map of the text
    pixels of kept components (the pixels whose scores make a box's score).
    """
    img_h, img_w = textmap.shape
    text_score = textmap > p.low_text
    link_score = linkmap > p.link_threshold
    comb = (text_score | link_score).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(comb, connectivity=4)
    link_only = link_score & ~text_score
    kept_text = np.zeros_like(text_score)
    boxes: list[np.ndarray] = []
    for k in range(1, n):
        size = int(stats[k, cv2.CC_STAT_AREA])
        if size < 10:
            continue
        x, y = int(stats[k, cv2.CC_STAT_LEFT]), int(stats[k, cv2.CC_STAT_TOP])
        w, h = int(stats[k, cv2.CC_STAT_WIDTH]), int(stats[k, cv2.CC_STAT_HEIGHT])
        comp = labels[y : y + h, x : x + w] == k
        if textmap[y : y + h, x : x + w][comp].max() < p.text_threshold:
            continue
        kept_text[y : y + h, x : x + w] |= comp & text_score[y : y + h, x : x + w]
        niter = int(math.sqrt(size * min(w, h) / (w * h)) * 2)
        sx, sy = max(x - niter, 0), max(y - niter, 0)
        ex, ey = min(x + w + niter + 1, img_w), min(y + h + niter + 1, img_h)
        seg = ((labels[sy:ey, sx:ex] == k) & ~link_only[sy:ey, sx:ex]).astype(np.uint8) * 255
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (1 + niter, 1 + niter))
        seg = cv2.dilate(seg, kernel)
        ys, xs = np.nonzero(seg)
        pts = np.stack([xs + sx, ys + sy], axis=1)
        box = cv2.boxPoints(cv2.minAreaRect(pts))
        bw, bh = np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[1] - box[2])
        if abs(1 - max(bw, bh) / (min(bw, bh) + 1e-5)) <= 0.1:  # align diamond shapes
            l, r, t, b = pts[:, 0].min(), pts[:, 0].max(), pts[:, 1].min(), pts[:, 1].max()
            box = np.array([[l, t], [r, t], [r, b], [l, b]], dtype=np.float32)
        start = box.sum(axis=1).argmin()  # clockwise from top-left
        boxes.append(np.roll(box, 4 - start, 0))
    return boxes, labels, kept_text


def box_scores(polygons: list[np.ndarray], textmap: np.ndarray, text_pixels: np.ndarray, scale: float) -> list[float]:
    """Mean CRAFT text score over the text pixels each box covers.

    The region score of a pixel is CRAFT's probability that it is inside a character; a box's
    score averages it over the character pixels the box holds (the gaps between letters and
    EasyOCR's margin would otherwise dilute it with background). Bounded below by
    ``low_text``; near 1 for crisp print, ~0.5 for faint or blurred text. ``scale`` maps
    original pixels to heat-map pixels.
    """
    hh, hw = textmap.shape
    out = []
    for poly in polygons:
        q = np.asarray(poly, np.float64) * scale
        x0, y0 = max(int(np.floor(q[:, 0].min())), 0), max(int(np.floor(q[:, 1].min())), 0)
        x1, y1 = min(int(np.ceil(q[:, 0].max())) + 1, hw), min(int(np.ceil(q[:, 1].max())) + 1, hh)
        if x1 <= x0 or y1 <= y0:
            out.append(0.0)
            continue
        inside = polygons_to_mask([q - [x0, y0]], (y1 - y0, x1 - x0))
        sel = inside & text_pixels[y0:y1, x0:x1]
        out.append(float(textmap[y0:y1, x0:x1][sel].mean()) if sel.any() else 0.0)
    return out


def boxes_from_maps(
    textmap: np.ndarray, linkmap: np.ndarray, ratio: float, hw: tuple[int, int], p: DetectParams
) -> Detection:
    """Score maps of one canvas -> EasyOCR-identical boxes in original coordinates, scored."""
    from easyocr.utils import group_text_box

    boxes, _, text_pixels = _component_boxes(textmap, linkmap, p)
    to_orig = 2.0 / ratio  # heat map is half the canvas resolution
    polys = [(np.asarray(b, np.float64) * to_orig).astype(np.int32).reshape(-1) for b in boxes]
    horizontal, free = group_text_box(polys, p.slope_ths, p.ycenter_ths, p.height_ths, p.width_ths, p.add_margin, True)
    if p.min_size:
        horizontal = [b for b in horizontal if max(b[1] - b[0], b[3] - b[2]) > p.min_size]
        free = [q for q in free if max(np.ptp([c[0] for c in q]), np.ptp([c[1] for c in q])) > p.min_size]
    h, w = hw
    polygons = [np.array([[b[0], b[2]], [b[1], b[2]], [b[1], b[3]], [b[0], b[3]]], np.float64) for b in horizontal]
    polygons += [np.asarray(q, np.float64).reshape(4, 2) for q in free]
    # EasyOCR's margin can push boxes past the edges: keep the part inside the image.
    polygons = [clip_polygon(q, w, h) for q in polygons]
    scores = box_scores(polygons, textmap, text_pixels, 1.0 / to_orig)
    keep = [i for i, s in enumerate(scores) if s >= p.min_score and len(polygons[i]) >= 3]
    nh = len(horizontal)
    return Detection(
        horizontal=[[int(v) for v in horizontal[i]] for i in keep if i < nh],
        free=[[[float(c) for c in pt] for pt in free[i - nh]] for i in keep if i >= nh],
        polygons=[polygons[i] for i in keep],
        scores=[scores[i] for i in keep],
    )


def _fuse_conv_bn(net: torch.nn.Module) -> torch.nn.Module:
    """Fold every Conv2d -> BatchNorm2d pair (eval mode) into one conv: fewer passes over memory."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for mod in net.modules():
        names = list(mod._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = mod._modules[a], mod._modules[b]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                mod._modules[a] = fuse_conv_bn_eval(conv, bn)
                mod._modules[b] = torch.nn.Identity()
    return net


def bf16_supported() -> bool:
    """True when this CPU runs bf16 convolutions natively (AVX512-BF16/AMX); elsewhere bf16 is slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return False


class CraftRunner:
    """EasyOCR's CRAFT network prepared for throughput: BN folded, channels-last, optional bf16.

    ``precision="bf16"`` stores the weights and runs the whole net in bfloat16 (CPU with native
    bf16, or CUDA): same maps as autocast without re-casting 80 MB of weights per call. Scores
    move by ~1e-2, boxes by a pixel at most, so precision is part of the cache key.
    """

    def __init__(self, detector: torch.nn.Module, device: torch.device, precision: str = "fp32"):
        net = detector.module if isinstance(detector, torch.nn.DataParallel) else detector
        net = _fuse_conv_bn(copy.deepcopy(net).eval())
        for prm in net.parameters():
            prm.requires_grad_(False)
        self.device = device
        self.precision = precision
        self.channels_last = device.type == "cpu"
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        net = net.to(device=device, dtype=self.dtype)
        self.net = net.to(memory_format=torch.channels_last) if self.channels_last else net

    def _forward(self, canvases: list[np.ndarray]) -> np.ndarray:
        """(N, H, W, 3) canvases -> (N, H/2, W/2, 2) text/link maps as float32 numpy."""
        x = torch.from_numpy(np.stack(canvases)).permute(0, 3, 1, 2)  # NHWC memory = channels-last
        x = x.to(self.device, self.dtype)
        if not self.channels_last:
            x = x.contiguous()
        with torch.inference_mode():
            y, _ = self.net(x)
        return y.float().cpu().numpy()

    def detect(
        self, images: list[np.ndarray], p: DetectParams, batch_size: int = 4, max_batch_pixels: int = 3_000_000
    ) -> list[Detection]:
        """Detect text in RGB uint8 images. Canvases of equal size share a forward pass.

        Grouping by the padded canvas size keeps every image's result identical to running it
        alone (no extra padding is ever added); ``max_batch_pixels`` bounds activation memory
        (CRAFT keeps ~1 KB of activations per canvas pixel).
        """
        prepared = [prepare_canvas(img, p.canvas_size) for img in images]
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, (canvas, _) in enumerate(prepared):
            groups[canvas.shape[:2]].append(i)
        out: list[Detection | None] = [None] * len(images)
        for (ch, cw), members in groups.items():
            step = max(1, min(batch_size, max_batch_pixels // (ch * cw)))
            for start in range(0, len(members), step):
                part = members[start : start + step]
                maps = self._forward([prepared[i][0] for i in part])
                for i, m in zip(part, maps, strict=True):
                    out[i] = boxes_from_maps(m[..., 0], m[..., 1], prepared[i][1], images[i].shape[:2], p)
        return out  # type: ignore[return-value]
