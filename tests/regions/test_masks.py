"""User masks, manifest boxes, backgrounds and custom regions: one result or one recorded error per image."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from auditors.config import config_from_dict
from auditors.config.schema import RegionsConfig
from auditors.errors import ConfigError
from auditors.data.geometry import Placement, placement_for
from auditors.regions.background import grabcut_foreground
from auditors.regions.base import RegionFailure
from auditors.regions.build import RegionBuilder, manifest_columns_for, region_inputs_fingerprint, region_names, region_sources
from auditors.regions.masks import parse_boxes, read_mask

H, W = 120, 90  # non-square on purpose


@dataclass
class Item:
    original: np.ndarray
    digest: str
    placement: Placement
    path: str


def _item(path: str, img: np.ndarray | None = None, out=(64, 64), mode="stretch") -> Item:
    img = np.full((H, W, 3), 200, np.uint8) if img is None else img
    return Item(img, f"digest-{path}-{img.shape}", placement_for(img.shape[:2], out, mode), path)


def _cfg(root: Path, regions: dict, manifest: Path | None = None, **model) -> object:
    return config_from_dict({
        "name": "t",
        "dataset": {"root": str(root), "manifest": str(manifest) if manifest else None},
        "model": {"arch": "resnet18", "input_size": [64, 64], **model},
        "regions": {"text": {"enabled": False}, "border": {"enabled": False}, **regions},
    })


def _builder(cfg, cache_path: Path | None = None, manifest=None) -> RegionBuilder:
    """The builder the chunk loop makes: the regions section, the dataset root and the manifest."""
    return RegionBuilder(cfg.regions, cfg.dataset.root, cache_path, manifest=cfg.dataset.manifest if manifest is None else manifest)


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    r = tmp_path / "data"
    r.mkdir()
    return r


# --- mask files -------------------------------------------------------------------------

def test_mask_values_grey_palette_colour_alpha(tmp_path):
    m = np.zeros((4, 5), np.uint8)
    m[1, 2] = 1  # 0/1 masks are common: non-zero means "in"
    assert read_mask(_png(tmp_path / "l.png", m)).sum() == 1
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[0, 0, 2] = 255
    assert read_mask(_png(tmp_path / "rgb.png", rgb))[0, 0]
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., :3] = 255  # white everywhere, only the alpha says where
    rgba[2:, :, 3] = 255
    out = read_mask(_png(tmp_path / "rgba.png", rgba))
    assert out[2:].all() and not out[:2].any()


@pytest.mark.parametrize("content", [b"", b"not a png at all", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00"])
def test_corrupt_mask_file_is_a_clear_failure(tmp_path, content):
    f = tmp_path / "bad.png"
    f.write_bytes(content)
    with pytest.raises(RegionFailure, match="bad.png"):
        read_mask(f)


def test_custom_masks_folder_matched_by_relative_path(root):
    m = np.zeros((H, W), np.uint8)
    m[:60, :45] = 255  # top-left quarter
    _png(root / "masks" / "cats" / "001.png", m)
    cfg = _cfg(root, {"custom": {"watermark": {"source": "masks", "masks_dir": str(root / "masks")}}})
    b = _builder(cfg)
    items = [_item("cats/001.jpg"), _item("cats/002.jpg")]  # 002 has no mask: missing=empty (custom default)
    regs = b.build(items)
    assert b.names == ["watermark"] and b.errors(regs, items) == []
    masks = b.model_masks(regs, items)
    assert masks[0, 0].mean() == pytest.approx(0.25, abs=0.02) and not masks[1, 0].any()


def test_missing_mask_can_be_an_error(root):
    (root / "masks").mkdir()
    cfg = _cfg(root, {"custom": {"logo": {"source": "masks", "masks_dir": str(root / "masks"), "missing": "error"}}})
    b = _builder(cfg)
    items = [_item("a/1.png")]
    regs = b.build(items)
    (err,) = b.errors(regs, items)
    assert err["path"] == "a/1.png" and err["stage"] == "regions" and "logo" in err["reason"] and "no mask file" in err["reason"]
    assert b.failed(regs).tolist() == [[True]]


def test_wrong_size_mask_is_an_error_unless_resize_allowed(root):
    half = np.zeros((H // 2, W // 2), np.uint8)
    half[:, : W // 4] = 255  # left half, at half resolution
    _png(root / "m" / "x.png", half)
    _png(root / "m" / "y.png", np.zeros((50, 50), np.uint8))  # other aspect ratio
    items = [_item("x.jpg"), _item("y.jpg")]
    strict = _builder(_cfg(root, {"custom": {"half": {"source": "masks", "masks_dir": str(root / "m")}}}))
    regs = strict.build(items)
    errs = strict.errors(regs, items)
    assert len(errs) == 2 and "45x60 but the image is 90x120" in errs[0]["reason"] and "resize_masks" in errs[0]["reason"]
    lenient = _builder(_cfg(root, {"custom": {"half": {"source": "masks", "masks_dir": str(root / "m"), "resize_masks": True}}}))
    regs = lenient.build(items)
    (err,) = lenient.errors(regs, items)
    assert err["path"] == "y.jpg" and "50x50" in err["reason"]
    m = lenient.model_masks(regs, items)[0, 0]
    assert m[:, :31].all() and not m[:, 32:].any(), "stretched over the image: 22 of 45 columns -> 31.3 of 64"


def test_corrupt_mask_in_a_batch_fails_only_that_image(root):
    good = np.zeros((H, W), np.uint8)
    good[:10] = 255
    _png(root / "m" / "ok.png", good)
    (root / "m" / "bad.png").write_bytes(b"garbage")
    b = _builder(_cfg(root, {"custom": {"wm": {"source": "masks", "masks_dir": str(root / "m")}}}))
    items = [_item("ok.jpg"), _item("bad.jpg")]
    regs = b.build(items)
    assert b.failed(regs).tolist() == [[False], [True]]
    (err,) = b.errors(regs, items)
    assert err["path"] == "bad.jpg" and "not a readable image" in err["reason"]
    assert b.stats["region_errors"] == 1


# --- manifest sources -------------------------------------------------------------------

def test_parse_boxes_forms():
    assert parse_boxes("[1, 2, 3, 4]", "c") == [[1, 2, 3, 4]]
    assert parse_boxes([[1, 2, 3, 4], [5, 6, 7, 8]], "c") == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert parse_boxes(np.array([[1, 2, 3, 4]]), "c") == [[1, 2, 3, 4]]
    assert parse_boxes("[]", "c") == []
    for bad, msg in [("[1, 2, 3]", "must be"), ("{oops", "JSON"), ("[[1, 2, 0, 4]]", "non-positive"),
                     ('[["a", 2, 3, 4]]', "non-numeric"), ("[[1, 2, NaN, 4]]", "non-finite"), ("7", "expected")]:
        with pytest.raises(RegionFailure, match=msg):
            parse_boxes(bad, "col 'logo'")


def test_manifest_boxes_clip_or_fail(root):
    rows = {
        "in.jpg": {"logo": "[[10, 20, 30, 40]]"},
        "partly.jpg": {"logo": json.dumps([[80, 110, 50, 50]])},  # hangs over the bottom-right corner
        "outside.jpg": {"logo": "[[500, 10, 20, 20]]"},
        "none.jpg": {"logo": float("nan")},
    }
    b = _builder(_cfg(root, {"custom": {"logo": {"source": "manifest_boxes", "column": "logo"}}}), manifest=rows)
    items = [_item(p, out=(H, W)) for p in rows]
    regs = b.build(items)
    np.testing.assert_allclose(regs["partly.jpg" == "x" or 1]["logo"].polygons[0].max(axis=0), [W, H])
    masks = b.model_masks(regs, items)[:, 0]
    assert masks[0].sum() == 30 * 40 and masks[0][20:60, 10:40].all()
    assert masks[1].sum() == (W - 80) * (H - 110)
    errs = b.errors(regs, items)
    assert [e["path"] for e in errs] == ["outside.jpg"] and "lies outside the 90x120 image" in errs[0]["reason"]
    assert not masks[3].any() and not b.failed(regs)[3, 0]


def test_manifest_file_is_read_lazily_with_only_needed_columns(root, tmp_path):
    _png(root / "fg" / "a.png", np.pad(np.ones((H - 40, W - 40), np.uint8) * 255, 20))
    man = tmp_path / "manifest.csv"
    pd.DataFrame({"path": ["a.jpg", "b.jpg", "c.jpg"], "label": ["x", "x", "y"], "fg": ["fg/a.png", "", "../../etc/passwd"]}).to_csv(man, index=False)
    cfg = _cfg(root, {"background": {"enabled": True, "source": "manifest_mask", "column": "fg"}}, manifest=man)
    assert manifest_columns_for(cfg.regions) == ["fg"]
    b = _builder(cfg)
    items = [_item("a.jpg", out=(H, W)), _item("b.jpg", out=(H, W)), _item("c.jpg", out=(H, W))]
    regs = b.build(items)
    bg = b.model_masks(regs, items)[:, 0]
    assert bg[0].sum() == H * W - (H - 40) * (W - 40), "background = complement of the foreground mask"
    reasons = {e["path"]: e["reason"] for e in b.errors(regs, items)}
    assert "no value in manifest column 'fg'" in reasons["b.jpg"], "background default: missing foreground is an error"
    assert "stay inside" in reasons["c.jpg"]


def test_manifest_source_needs_a_manifest_and_the_column(root, tmp_path):
    cfg = _cfg(root, {"custom": {"logo": {"source": "manifest_boxes", "column": "logo"}}})
    with pytest.raises(ConfigError, match="dataset.manifest is not set"):
        _builder(cfg).build([_item("a.jpg")])
    man = tmp_path / "m.csv"
    pd.DataFrame({"path": ["a.jpg"]}).to_csv(man, index=False)
    with pytest.raises(ConfigError, match=r"\['logo'\]"):
        _builder(_cfg(root, {"custom": {"logo": {"source": "manifest_boxes", "column": "logo"}}}, manifest=man)).build([_item("a.jpg")])


def test_manifest_dataframe_is_accepted(root):
    df = pd.DataFrame({"path": ["a.jpg"], "logo": [[[0, 0, 45, 60]]]})
    b = _builder(_cfg(root, {"custom": {"logo": {"source": "manifest_boxes", "column": "logo"}}}), manifest=df)
    items = [_item("a.jpg")]
    assert b.model_masks(b.build(items), items)[0, 0].mean() == pytest.approx(0.25)


# --- background -------------------------------------------------------------------------

def test_grabcut_background_is_a_labelled_heuristic(root, tmp_path):
    img = np.full((H, W, 3), 30, np.uint8)
    cv2.circle(img, (W // 2, H // 2), 30, (230, 200, 40), -1)  # a centred bright subject
    cfg = _cfg(root, {"background": {"enabled": True}})
    b = _builder(cfg, tmp_path / "cache.sqlite")
    assert b.describe()["background"]["heuristic"] is True and region_sources(cfg)["background"]["source"] == "grabcut"
    items = [_item("a.jpg", img, out=(H, W))]
    bg = b.model_masks(b.build(items), items)[0, 0]
    yy, xx = np.mgrid[:H, :W]
    disk = (xx - W // 2) ** 2 + (yy - H // 2) ** 2 <= 28**2
    assert not bg[disk].mean() > 0.05 and bg[~disk].mean() > 0.9
    again = _builder(cfg, tmp_path / "cache.sqlite")
    bg2 = again.model_masks(again.build(items), items)[0, 0]
    assert again.stats["background_cached"] == 1 and again.stats["background_grabcut"] == 0
    assert (bg == bg2).all(), "cached GrabCut equals a fresh one"


@pytest.mark.parametrize("shape", [(8, 8), (3, 200), (1, 1)])
def test_grabcut_on_tiny_or_flat_images(shape):
    img = np.full(shape + (3,), 128, np.uint8)
    try:
        fg = grabcut_foreground(img, 0.1, 3, 192)
        assert fg.dtype == bool and fg.shape[0] == shape[0]
    except RegionFailure as exc:
        assert "too small" in str(exc)


def test_uniform_image_grabcut_does_not_crash_the_batch(root):
    b = _builder(_cfg(root, {"background": {"enabled": True}}))
    items = [_item("flat.jpg", np.zeros((40, 40, 3), np.uint8)), _item("tiny.jpg", np.zeros((2, 2, 3), np.uint8))]
    regs = b.build(items)
    errs = b.errors(regs, items)
    assert all(e["path"] == "tiny.jpg" for e in errs)
    b.model_masks(regs, items)


# --- names, overlaps, exclusive ---------------------------------------------------------

@pytest.mark.parametrize("name", ["Text", "text", "border", "background", "1abc", "overlap_x", "regions", "has-dash", "x" * 41])
def test_custom_region_names_are_validated(name):
    with pytest.raises(ValueError):
        RegionsConfig.model_validate({"custom": {name: {"source": "masks", "masks_dir": "m"}}})


def test_ambiguous_overlap_columns_are_rejected():
    spec = {"source": "masks", "masks_dir": "m"}
    with pytest.raises(ValueError, match="ambiguous"):
        RegionsConfig.model_validate({"text": {"enabled": False}, "border": {"enabled": False},
                                      "custom": {"a_b": spec, "c": spec, "a": spec, "b_c": spec}})


def test_source_without_its_key_is_rejected():
    with pytest.raises(ValueError, match="needs column"):
        RegionsConfig.model_validate({"custom": {"logo": {"source": "manifest_boxes"}}})
    with pytest.raises(ValueError, match="not regions"):
        RegionsConfig.model_validate({"priority": ["logo"]})


def test_overlaps_and_exclusive_priority(root):
    rows = {"a.jpg": {"left": "[[0, 0, 45, 120]]", "top": "[[0, 0, 90, 60]]"}}
    regions = {"custom": {"left": {"source": "manifest_boxes", "column": "left"}, "top": {"source": "manifest_boxes", "column": "top"}}}
    items = [_item("a.jpg", out=(H, W))]
    shared = _builder(_cfg(root, regions), manifest=rows)
    regs = shared.build(items)
    m = shared.model_masks(regs, items)
    (row,) = shared.image_columns(regs, m)
    assert row["overlap_left_top"] == pytest.approx(0.5) and row["regions_overlap"] == pytest.approx(0.25)
    assert set(row) == set(RegionBuilder.column_dtypes(shared.regions))
    excl = _builder(_cfg(root, {**regions, "exclusive": True, "priority": ["top"]}), manifest=rows)
    regs = excl.build(items)
    m = excl.model_masks(regs, items)[0]
    assert m[1].sum() == 90 * 60 and m[0].sum() == 45 * 60, "top wins the shared quarter"
    assert not (m[0] & m[1]).any()
    (row,) = excl.image_columns(regs, excl.model_masks(regs, items))
    assert row["overlap_left_top"] == pytest.approx(0.5), "overlap is reported before exclusive resolution"
    assert excl.describe()["top"]["exclusive_rank"] == 0


def test_default_priority_puts_text_and_custom_before_border_and_background(root):
    (root / "m").mkdir()
    cfg = _cfg(root, {"border": {"enabled": True}, "background": {"enabled": True}, "exclusive": True,
                      "custom": {"wm": {"source": "masks", "masks_dir": str(root / "m")}}})
    b = _builder(cfg)
    assert b.names == ["border", "background", "wm"] and b.order == ["wm", "border", "background"]


def test_names_columns_and_describe_agree(root):
    (root / "m").mkdir()
    cfg = config_from_dict({
        "name": "t", "dataset": {"root": str(root)}, "model": {"arch": "resnet18"},
        "regions": {"text": {"read": True}, "background": {"enabled": True, "source": "masks", "masks_dir": str(root / "m")},
                    "custom": {"logo": {"source": "masks", "masks_dir": str(root / "m")}}},
    })
    b = _builder(cfg)
    assert b.names == region_names(cfg) == ["text", "border", "background", "logo"]
    assert set(b.describe()) == set(b.names) and not any(d["heuristic"] for d in b.describe().values())
    cols = RegionBuilder.column_dtypes(cfg.regions)
    assert cols["n_text_boxes"] == "Int64" and cols["text_read"] == "string" and "overlap_text_logo" in cols


def test_missing_masks_dir_is_a_config_error(root):
    with pytest.raises(ConfigError, match=r"regions.custom.logo.masks_dir: folder not found"):
        _builder(_cfg(root, {"custom": {"logo": {"source": "masks", "masks_dir": str(root / "nope")}}}))


def test_fingerprint_follows_mask_files_and_manifest_values(root):
    _png(root / "m" / "a.png", np.zeros((H, W), np.uint8))
    cfg = _cfg(root, {"custom": {"logo": {"source": "masks", "masks_dir": str(root / "m")}}})
    before = region_inputs_fingerprint(cfg, ["a.jpg", "b.jpg"])
    assert before == region_inputs_fingerprint(cfg, ["a.jpg", "b.jpg"])
    _png(root / "m" / "b.png", np.zeros((H, W), np.uint8))
    assert region_inputs_fingerprint(cfg, ["a.jpg", "b.jpg"]) != before
    mcfg = _cfg(root, {"custom": {"logo": {"source": "manifest_boxes", "column": "logo"}}})
    f1 = region_inputs_fingerprint(mcfg, ["a.jpg"], {"a.jpg": {"logo": "[[0,0,1,1]]"}})
    f2 = region_inputs_fingerprint(mcfg, ["a.jpg"], {"a.jpg": {"logo": "[[0,0,2,1]]"}})
    assert f1 != f2
    assert region_inputs_fingerprint(_cfg(root, {}), ["a.jpg"]) == ""


def test_fail_fast_checks_and_chunk_rows(root, tmp_path):
    from auditors.regions.build import check_region_inputs, chunk_manifest_rows

    cfg = _cfg(root, {"custom": {"logo": {"source": "manifest_boxes", "column": "logo"}}})
    with pytest.raises(ConfigError, match="dataset.manifest is not set"):
        check_region_inputs(cfg)
    df = pd.DataFrame({"path": ["a.jpg", "b.jpg"], "label": ["x", "y"], "logo": ["[[0, 0, 5, 5]]", None]})
    with pytest.raises(ConfigError, match="lacks"):
        check_region_inputs(cfg, df.drop(columns="logo"))
    check_region_inputs(cfg, df)
    rows = chunk_manifest_rows(df, ["b.jpg", "zzz.jpg"], cfg)
    assert set(rows) == {"b.jpg", "zzz.jpg"} and set(rows["b.jpg"]) == {"logo"} and rows["zzz.jpg"] == {}
    assert pd.isna(rows["b.jpg"]["logo"]), "only this chunk's paths and the needed columns"
    assert chunk_manifest_rows(df, ["a.jpg"], _cfg(root, {})) is None
    with pytest.raises(ConfigError, match="masks_dir"):
        check_region_inputs(_cfg(root, {"background": {"enabled": True, "source": "masks", "masks_dir": str(root / "no")}}))


def test_builder_needs_only_the_regions_section(root):
    """A provider is usable without a dataset, a model or an audit config."""
    rc = RegionsConfig.model_validate({"text": {"enabled": False}, "border": {"width": 0.1},
                                       "custom": {"logo": {"source": "manifest_boxes", "column": "logo"}}})
    b = RegionBuilder(rc, root, manifest={"a.jpg": {"logo": "[[0, 0, 45, 60]]"}})
    items = [_item("a.jpg", out=(H, W))]
    masks = b.model_masks(b.build(items), items)
    assert b.names == ["border", "logo"] and masks.shape == (1, 2, H, W)
    assert masks[0, 1].sum() == 45 * 60 and masks[0, 0].mean() == pytest.approx(1 - 0.8 * 0.8, abs=0.02)
    with pytest.raises(TypeError, match=r"cfg\.regions"):
        RegionBuilder(_cfg(root, {}), root)
