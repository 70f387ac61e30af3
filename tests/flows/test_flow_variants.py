"""Real flow runs with the CAM variants: top-k targets, cam.layers, regions.parquet and cams.npz."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from auditors.config import config_from_dict
from auditors.data.geometry import placement_for
from auditors.measure.metrics import region_metrics, upsample_maps
from auditors.regions import Region
from flows.audit import run_audit
from tests.conftest import build_tiny_cnn

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

LAYERS = ["features.0", "features"]


def _logo_masks(root, tmp_path):
    """Half-resolution masks (resize_masks) for the alpha posters only: the rest are missing."""
    masks = tmp_path / "logo"
    for path in sorted((root / "alpha").glob("*.png")):
        m = np.zeros((75, 55), np.uint8)
        m[10:21, 5:16] = 255
        (masks / "alpha").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(masks / "alpha" / path.name), m)
    return masks


@pytest.fixture(scope="module")
def variant_run(tmp_path_factory):
    from tests.conftest import draw_word

    tmp_path = tmp_path_factory.mktemp("variants")
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for ci, cls in enumerate(["alpha", "beta", "gamma"]):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            img = np.full((150, 110, 3), 235, np.uint8)
            img[:, :, ci] = rng.integers(120, 200)
            draw_word(img, ["SALE", "HELLO", "OPEN"][ci], (10, 40 + 20 * i))
            cv2.imwrite(str(root / cls / f"{i}.png"), img[:, :, ::-1])
    ckpt = tmp_path / "tiny.pt"
    torch.save(build_tiny_cnn().state_dict(), ckpt)
    cfg = config_from_dict({
        "name": "variants",
        "dataset": {"root": str(root)},
        "model": {"factory": "tests.conftest:build_tiny_cnn", "checkpoint": str(ckpt), "input_size": [64, 64]},
        "cam": {"batch_size": 5, "target": "topk", "k": 2, "layers": LAYERS},
        "regions": {"custom": {"logo": {"source": "masks", "masks_dir": str(_logo_masks(root, tmp_path)),
                                        "missing": "error", "resize_masks": True}}},
        "output": {"dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"), "gallery_size": 3, "save_cams": True},
        "run": {"chunk_size": 7},
        "sanity": {"enabled": False},
        "tokens": {"enabled": False},
    })
    return run_audit(cfg)


def test_topk_rows_per_rank_and_aggregates_by_target_class(variant_run):
    run, summary = variant_run.run_dir, variant_run.summary
    images = pd.read_parquet(run / "images.parquet")
    targets = pd.read_parquet(run / "targets.parquet")
    assert len(images) == 12 and images["path"].is_unique and (images["target_rank"] == 0).all()
    assert (images["target"] == images["pred"]).all(), "rank 0 is the predicted class"
    assert len(targets) == 24
    for path, g in targets.groupby("path"):
        assert sorted(g["target_rank"]) == [0, 1] and g["target"].is_unique
        g = g.sort_values("target_rank")
        assert g["target_prob"].iloc[0] >= g["target_prob"].iloc[1]
    rank0 = targets[targets["target_rank"] == 0].set_index("path").loc[images["path"]]
    np.testing.assert_array_equal(rank0["target"].to_numpy(), images["target"].to_numpy())
    np.testing.assert_allclose(rank0["text_mass"], images["text_mass"], rtol=1e-12)
    np.testing.assert_allclose(rank0["text_lift@features"], images["text_lift@features"], rtol=1e-12)
    # rank 1 is a different class with a different map
    rank1 = targets[targets["target_rank"] == 1].set_index("path").loc[images["path"]]
    assert not np.allclose(rank1["text_mass"], images["text_mass"])

    agg = summary["targets"]
    assert agg["k"] == 2 and agg["n_rows"] == 24
    ok = targets[targets["cam_status"] == "ok"]
    for cls, stats in agg["classes"].items():
        sub = ok[ok["target"] == cls]
        assert stats["n"] == len(sub) and sum(stats["n_by_rank"].values()) == len(sub)
        if len(sub):
            assert math.isclose(stats["text_lift"], sub["text_mass"].mean() / sub["text_area"].mean(), rel_tol=1e-9)
    assert sum(s["n"] for s in agg["classes"].values()) == len(ok)
    assert summary["exports"] == {"regions": "regions.parquet", "targets": "targets.parquet", "cams": "cams.npz"}


def test_layer_columns_and_per_layer_summary(variant_run):
    images = pd.read_parquet(variant_run.run_dir / "images.parquet")
    for layer in LAYERS:
        for r in ("text", "border", "logo"):
            assert {f"{r}_mass@{layer}", f"{r}_lift@{layer}"} <= set(images.columns)
    # the target layer (features) listed in cam.layers reproduces the main columns
    np.testing.assert_allclose(images["text_lift@features"], images["text_lift"], rtol=1e-12)
    np.testing.assert_allclose(images["text_lift@features.0"], images["text_mass@features.0"] / images["text_area"], rtol=1e-9)
    assert not np.allclose(images["text_mass@features.0"], images["text_mass"])
    # a logo that could not be built has no per-layer metrics either
    assert images.loc[~images["path"].str.startswith("alpha/"), "logo_mass@features.0"].isna().all()
    layers = variant_run.summary["layers"]
    assert layers["names"] == LAYERS
    main = variant_run.summary["overall"]
    assert math.isclose(layers["overall"]["features"]["text_lift"], main["text_lift"], rel_tol=1e-9)
    for cls in ("alpha", "beta", "gamma"):
        sub = images[(images["label"] == cls) & (images["cam_status"] == "ok")]
        got = layers["classes"][cls]["features.0"]
        assert math.isclose(got["text_lift"], sub["text_mass@features.0"].mean() / sub["text_area"].mean(), rel_tol=1e-9)
        lo, hi = got["text_lift_ci"]
        assert lo <= got["text_lift"] <= hi


def test_regions_parquet_in_original_coordinates(variant_run):
    run = variant_run.run_dir
    images = pd.read_parquet(run / "images.parquet").set_index("path")
    regions = pd.read_parquet(run / "regions.parquet")
    text = regions[regions["region"] == "text"]
    assert text.groupby("path").size().reindex(images.index, fill_value=0).tolist() == images["n_text_boxes"].tolist()
    assert (text["kind"] == "polygon").all() and text["score"].between(0, 1).all()
    for _, row in text.iterrows():
        xy = np.asarray(row["polygon"]).reshape(-1, 2)
        assert xy[:, 0].min() == row["x0"] and xy[:, 1].max() == row["y1"]
        assert 0 <= row["x0"] < row["x1"] <= 110 and 0 <= row["y0"] < row["y1"] <= 150  # original size, not 64x64
    logo = regions[regions["region"] == "logo"]
    masks = logo[logo["kind"] == "mask"]
    assert sorted(masks["path"]) == [f"alpha/{i}.png" for i in range(4)]
    # a 75x55 mask over a 150x110 image: mask pixels [5, 16) x [10, 21) -> original [10, 32) x [20, 42)
    assert (masks[["x0", "y0", "x1", "y1"]].to_numpy() == [10.0, 20.0, 32.0, 42.0]).all()
    failed = logo[logo["kind"] == "failed"]
    assert len(failed) == 8 and failed["error"].str.contains("mask").all()


def test_cams_npz_replots_the_audited_masses(variant_run):
    run = variant_run.run_dir
    images = pd.read_parquet(run / "images.parquet")
    regions = pd.read_parquet(run / "regions.parquet")
    with np.load(run / "cams.npz", allow_pickle=False) as cams:
        keys = set(cams.files)
        assert keys == {p + s for p in images["path"] for s in ("", "@features.0", "@features")}
        for _, row in images.iterrows():
            m = cams[row["path"]]
            assert m.dtype == np.float16 and m.shape == (2, 32, 32) and cams[row["path"] + "@features.0"].shape == (2, 64, 64)
            if row["cam_status"] != "ok":
                continue
            # the text mask rebuilt from regions.parquet + the saved map give the audited mass again
            polys = [np.asarray(p).reshape(-1, 2) for p in regions.loc[(regions["path"] == row["path"]) & (regions["region"] == "text"), "polygon"]]
            mask = Region("text", polygons=polys).model_mask(placement_for((row["height"], row["width"]), (64, 64), "stretch"))
            up = upsample_maps(torch.from_numpy(m[:1].astype(np.float32)), (64, 64))
            mass = float(region_metrics(up, torch.from_numpy(mask)[None, None])["mass"][0, 0])
            assert abs(mass - row["text_mass"]) < 2e-3, row["path"]


def test_regions_parquet_on_real_photos_with_reading_and_letterbox(scenetext_dir, tmp_path):
    """Real scene-text photos (up to 640 px) audited at 64 px with letterbox padding: the exported
    polygons are in the photos' own pixels and rebuild exactly the text region the audit measured."""
    import json
    import shutil

    root = tmp_path / "data"
    for cls, name in [("a", "imageTextN.png"), ("b", "skimage_text.png"), ("c", "scenetext06.jpg")]:
        (root / cls).mkdir(parents=True)
        shutil.copy(scenetext_dir / name, root / cls / name)
    cfg = config_from_dict({
        "name": "photos",
        "dataset": {"root": str(root)},
        "model": {"factory": "tests.conftest:build_tiny_cnn", "input_size": [64, 64], "resize": "letterbox"},
        "regions": {"text": {"read": True}},
        "output": {"dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache"), "gallery_size": 0},
        "sanity": {"enabled": False},
        "tokens": {"enabled": False},
    })
    run = run_audit(cfg).run_dir
    images = pd.read_parquet(run / "images.parquet").set_index("path")
    regions = pd.read_parquet(run / "regions.parquet")
    text = regions[regions["region"] == "text"]
    assert len(text) >= 3 and images["n_text_boxes"].min() >= 1
    for path, row in images.iterrows():
        mine = text[text["path"] == path].sort_values("shape")
        assert len(mine) == row["n_text_boxes"]
        assert (mine["x0"] >= 0).all() and (mine["x1"] <= row["width"]).all() and (mine["y1"] <= row["height"]).all()
        # what the audit read, in the same order
        read = json.loads(row["text_read"])
        assert [r[0] for r in read] == mine["text"].tolist() and mine["text"].notna().all()
        np.testing.assert_allclose([np.nan if r[1] is None else r[1] for r in read], mine["text_score"], atol=1e-4)
        # the exported polygons, put through the audit's letterbox, give the audited text area exactly
        polys = [np.asarray(p).reshape(-1, 2) for p in mine["polygon"]]
        mask = Region("text", polygons=polys).model_mask(placement_for((row["height"], row["width"]), (64, 64), "letterbox"))
        assert mask.mean() == pytest.approx(row["text_area"], abs=1e-12)
    assert text["x1"].max() > 64, "original-image pixels, not the 64 px model input"
    border = regions[regions["region"] == "border"]
    assert (border.groupby("path").size() == 4).all()
