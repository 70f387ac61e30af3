"""Recurring tokens: string grouping, visual grouping of an unreadable logo, class association."""

import cv2
import numpy as np
import pandas as pd

from auditors.measure.instances import crop_fingerprint, polygon_crop
from auditors.tokens.grouping import TokenSettings, assign_tokens, normalise_text, token_table


def test_normalise_text_folds_case_accents_punctuation_and_space():
    assert normalise_text(" New! ") == normalise_text("NEW") == normalise_text("n-e-w") == "new"
    assert normalise_text("Café") == "cafe" and normalise_text(None) == ""


def _logo(rng, size):
    """A drawn star-in-circle logo (no letters), at a given size with colour jitter."""
    img = np.full((40, 40, 3), 255, np.uint8)
    cv2.circle(img, (20, 20), 17, (30, 30, 160), -1)
    pts = np.array([[20, 5], [25, 17], [36, 17], [27, 25], [31, 36], [20, 29], [9, 36], [13, 25], [4, 17], [15, 17]])
    cv2.fillPoly(img, [pts], (240, 220, 40))
    img = np.clip(img.astype(int) + rng.integers(-12, 12, 3), 0, 255).astype(np.uint8)
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def _instances(rows):
    return pd.DataFrame(rows, columns=["path", "instance", "text", "text_conf", "fingerprint", "aspect", "mass", "area"])


def test_unreadable_logo_stamped_on_many_images_groups_into_one_token():
    rng = np.random.default_rng(0)
    rows = []
    for i in range(30):
        poster = rng.integers(0, 255, (120, 90, 3), np.uint8)  # noisy poster background
        size = int(rng.integers(22, 34))
        x, y = int(rng.integers(0, 90 - size)), int(rng.integers(0, 120 - size))
        poster[y : y + size, x : x + size] = _logo(rng, size)
        poly = np.array([[x, y], [x + size, y], [x + size, y + size], [x, y + size]], float)
        crop = polygon_crop(poster, poly, pad=0)
        rows.append((f"img{i}.png", 0, None, np.nan, crop_fingerprint(crop), crop.shape[1] / crop.shape[0], 0.1, 0.05))
        # plus a random title word crop on every image, which must not join the logo
        word = np.full((20, 70, 3), 250, np.uint8)
        cv2.putText(word, "".join(rng.choice(list("ABCDEFGHKMNPRSTW"), 5)), (2, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 2)
        rows.append((f"img{i}.png", 1, None, np.nan, crop_fingerprint(word), 3.5, 0.02, 0.1))
    inst = _instances(rows)
    tokens = assign_tokens(inst, TokenSettings(max_hamming=6))
    logo_tokens = tokens[inst["instance"] == 0]
    assert logo_tokens.nunique() == 1 and logo_tokens.iloc[0].startswith("visual:")
    assert not set(tokens[inst["instance"] == 1]) & set(logo_tokens), "title words never join the logo token"


def test_readable_strings_group_by_text_and_token_table_finds_the_class():
    rows, images = [], []
    for i in range(40):
        cls = "horror" if i < 20 else "comedy"
        images.append((f"p{i}", cls, "ok"))
        rows.append((f"p{i}", 0, f"Title {i}", 0.9, f"{i:016x}", 3.0, 0.05, 0.1))
        if cls == "horror" and i % 10:  # the badge on 18 of 20 horror posters ...
            rows.append((f"p{i}", 1, "NEW!" if i % 2 else "new", 0.8, "ffff000000000000", 1.5, 0.3, 0.03))
    rows.append(("p25", 1, "New", 0.7, "ffff000000000000", 1.5, 0.01, 0.03))  # ... and one comedy poster
    inst = _instances(rows)
    inst["token"] = assign_tokens(inst, TokenSettings())
    imgs = pd.DataFrame(images, columns=["path", "label", "cam_status"])
    table = token_table(inst, imgs, "label", TokenSettings(min_images=3))
    assert list(table["token"]) == ["text:new"], "titles are unique per image and never reach min_images"
    row = table.iloc[0]
    assert row["n_images"] == 19 and row["top_class"] == "horror"
    assert abs(row["class_share"] - 18 / 19) < 1e-9 and row["p_value"] < 1e-4
    assert abs(row["lift"] - (18 * 0.3 + 0.01) / 19 / 0.03) < 1e-9
