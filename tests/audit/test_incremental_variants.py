"""Top-k, several layers and saved maps reuse stored per-image results like plain runs.

Real Prefect flow runs, real EasyOCR, the real SQLite store. Each case proves two things:
a grown dataset computes only the new image (counted by the chunk code: summary
``incremental``), and the warm run's files (images.parquet, targets.parquet, cams.npz) equal
those of a cold run over the same images in a fresh cache.
"""

from __future__ import annotations

import json
import sqlite3

import cv2
import numpy as np
import pandas as pd
import pytest

from flows.audit import run_audit
from tests.conftest import draw_word, tiny_audit_config

pytestmark = pytest.mark.usefixtures("prefect_server")

F16_ULP_AT_1 = 2.0**-10  # saved maps are float16 scaled to max 1: one step of float16 just below 1
BASE = {"cam": {"batch_size": 4}, "run": {"chunk_size": 5}, "output": {"gallery_size": 0}}
VARIANTS = {
    "layers": {"cam": {"layers": ["features.1", "features"]}},
    "topk": {"cam": {"target": "topk", "k": 2, "layers": ["features.1"]}},
    "save_cams": {"cam": {"layers": ["features.1"]}, "output": {"save_cams": True}},
    "topk_save_cams": {"cam": {"target": "topk", "k": 2}, "output": {"save_cams": True}},
}


def _poster(path, word: str, shade: int) -> None:
    img = np.full((150, 110, 3), 235, np.uint8)
    img[:, :, 1] = shade
    draw_word(img, word, (10, 60))
    cv2.imwrite(str(path), img[:, :, ::-1])


def _counts(result) -> tuple[int, int]:
    inc = result.summary["incremental"]
    return inc["reused"], inc["computed"]


def _table(result, name: str, keys: list[str]) -> pd.DataFrame:
    return pd.read_parquet(result.run_dir / name).sort_values(keys).reset_index(drop=True)


def _cams(result) -> dict[str, np.ndarray]:
    with np.load(result.run_dir / "cams.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _assert_same_outputs(first, warm, cold, variant: dict) -> None:
    images = _table(warm, "images.parquet", ["path"])
    pd.testing.assert_frame_equal(images, _table(cold, "images.parquet", ["path"]))
    for layer in variant["cam"].get("layers") or []:  # per-layer numbers came back with the reused rows
        assert images[f"border_mass@{layer}"].notna().all() and images[f"text_lift@{layer}"].notna().any(), layer
    if variant["cam"].get("target") == "topk":
        w, c = _table(warm, "targets.parquet", ["path", "target_rank"]), _table(cold, "targets.parquet", ["path", "target_rank"])
        assert len(w) == 2 * 13 and list(w["target_rank"].unique()) == [0, 1]
        pd.testing.assert_frame_equal(w, c)
    else:
        assert not (warm.run_dir / "targets.parquet").exists()
    if variant.get("output", {}).get("save_cams"):
        w, c = _cams(warm), _cams(cold)
        assert set(w) == set(c) and len(w) >= 13
        for k in c:  # the new image shifted the cold run's batches: float32 sums in another order can round
            assert w[k].dtype == np.float16 and w[k].shape == c[k].shape, k  # to the neighbouring float16
            np.testing.assert_allclose(w[k].astype(np.float32), c[k].astype(np.float32), rtol=0, atol=F16_ULP_AT_1, err_msg=k)
        stored = _cams(first)  # every image the warm run reused: its stored bytes, unchanged
        assert all(w[k].tobytes() == stored[k].tobytes() for k in stored)
        topk = variant["cam"].get("target") == "topk"
        assert all(a.ndim == (3 if topk else 2) for a in w.values())
        layers = variant["cam"].get("layers") or []
        assert {k.partition("@")[2] for k in w} == {""} | set(layers)
    else:
        assert not (warm.run_dir / "cams.npz").exists()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_runs_compute_only_the_new_image_and_equal_a_cold_run(poster_folder, tmp_path, name):
    variant = VARIANTS[name]
    cfg = tiny_audit_config(poster_folder, tmp_path, BASE, variant, name=name)
    first = run_audit(cfg)
    assert _counts(first) == (0, 12)
    _poster(poster_folder / "alpha" / "aaa.png", "NEW", 90)  # sorts first: shifts every chunk boundary
    warm = run_audit(cfg)
    assert _counts(warm) == (12, 1), warm.summary["incremental"]
    assert warm.summary["text_detection"].get("text_detected", 0) == 1, "only the new image is OCR'd"
    cold = run_audit(tiny_audit_config(poster_folder, tmp_path, BASE, variant, name=name, cache="cold", out="cold-out"))
    assert _counts(cold) == (0, 13)
    _assert_same_outputs(first, warm, cold, variant)


def test_saved_maps_are_stored_by_runs_that_save_them_and_verified_on_read(poster_folder, tmp_path):
    plain = tiny_audit_config(poster_folder, tmp_path, BASE, name="maps")
    saving = tiny_audit_config(poster_folder, tmp_path, BASE, {"output": {"save_cams": True}}, name="maps")
    assert _counts(run_audit(plain)) == (0, 12)
    # Rows stored without maps cannot serve a save_cams run: recomputed (OCR still reused), then stored with maps.
    second = run_audit(saving)
    assert _counts(second) == (0, 12) and second.summary["incremental"]["incomplete"] == 12
    assert second.summary["text_detection"].get("text_detected", 0) == 0, "OCR results are reused"
    third = run_audit(saving)
    assert _counts(third) == (12, 0)
    assert {k: v.tobytes() for k, v in _cams(second).items()} == {k: v.tobytes() for k, v in _cams(third).items()}
    # ...and the plain run reads the same entries (maps ignored).
    assert _counts(run_audit(plain)) == (12, 0)

    # A map whose bytes were changed in the store (digest no longer matches) is rejected and recomputed.
    db = sqlite3.connect(tmp_path / "cache" / "results.sqlite")
    tampered = 0
    for key, raw in db.execute("SELECT image_hash, payload FROM regions").fetchall():
        payload = json.loads(raw)
        if payload.get("maps") and tampered < 2:
            item = payload["maps"][""]
            head = "ADwA" if item["f16"][:4] != "ADwA" else "AAAA"  # the first two float16 values changed
            item["f16"] = head + item["f16"][4:]
            db.execute("UPDATE regions SET payload = ? WHERE image_hash = ?", (json.dumps(payload), key))
            tampered += 1
    db.commit()
    db.close()
    assert tampered == 2
    fourth = run_audit(saving)
    assert _counts(fourth) == (10, 2) and fourth.summary["incremental"]["rejected"] == 2
    after = _cams(fourth)
    assert after.keys() == _cams(second).keys()
    for k, v in _cams(second).items():  # 2 images recomputed in a smaller batch: float16 rounding at most
        np.testing.assert_allclose(after[k].astype(np.float32), v.astype(np.float32), rtol=0, atol=F16_ULP_AT_1, err_msg=k)
