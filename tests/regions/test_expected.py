"""regions.expected: the pointing-game region from a COCO file, masks or manifest boxes.

COCO files are parsed for real (polygons, bboxes, RLE fallback, categories, basename match);
malformed files fail with the file and the problem named; a bad annotation fails only its image.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from auditors.analysis.gate import apply_gate
from auditors.config.schema import AuditConfig, GateConfig, RegionsConfig
from auditors.data.geometry import placement_for
from auditors.errors import ConfigError
from auditors.regions.build import RegionBuilder, check_region_inputs, describe_regions
from auditors.regions.coco import CocoSource, load_coco
from auditors.regions.base import RegionFailure


def _write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _coco(tmp_path: Path) -> Path:
    return _write(tmp_path / "instances.json", {
        "images": [
            {"id": 1, "file_name": "horror/a.png", "width": 100, "height": 80},
            {"id": 2, "file_name": "b.png", "width": 100, "height": 80},
            {"id": 3, "file_name": "comedy/bad.png", "width": 100, "height": 80},
            {"id": 4, "file_name": "comedy/none.png", "width": 100, "height": 80},
        ],
        "categories": [{"id": 7, "name": "knife"}, {"id": 8, "name": "person"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [10, 20, 30, 10],
             "segmentation": [[10, 20, 40, 20, 40, 30, 10, 30]]},
            {"id": 11, "image_id": 1, "category_id": 8, "bbox": [60, 0, 40, 80]},
            {"id": 12, "image_id": 2, "category_id": 7, "bbox": [0, 0, 50, 40],
             "segmentation": {"counts": "abc", "size": [80, 100]}},  # compressed RLE: its bbox is used
            {"id": 13, "image_id": 3, "category_id": 7, "bbox": [5, 5, -3, 4]},
        ],
    })


def test_coco_polygons_bboxes_and_categories(tmp_path):
    path = _coco(tmp_path)
    src = CocoSource("expected", path, None, "empty")
    a = src.region("horror/a.png", (80, 100)).original_mask(80, 100)
    assert a[25, 25] and a[40, 80] and not a[5, 5]
    assert abs(a.mean() - (30 * 10 + 40 * 80) / 8000) < 0.02  # polygon + bbox, both drawn
    only_knife = CocoSource("expected", path, ["knife"], "empty").region("horror/a.png", (80, 100)).original_mask(80, 100)
    assert only_knife[25, 25] and not only_knife[40, 80]
    # file_name "b.png" matches the dataset path "any/b.png" by a unique basename; RLE falls back to the bbox
    b = src.region("any/b.png", (80, 100)).original_mask(80, 100)
    assert b[:40, :50].all() and not b[45:, :].any()
    assert src.region("comedy/none.png", (80, 100)).is_empty  # listed, never annotated: nothing to judge
    assert src.region("not/listed.png", (80, 100)).is_empty
    with pytest.raises(RegionFailure, match="no annotation for not/listed.png"):
        CocoSource("expected", path, None, "error").region("not/listed.png", (80, 100))


def test_a_bad_annotation_or_size_fails_only_its_image_naming_file_and_annotation(tmp_path):
    path = _coco(tmp_path)
    src = CocoSource("expected", path, None, "empty")
    with pytest.raises(RegionFailure) as exc:
        src.region("comedy/bad.png", (80, 100))
    assert str(path) in str(exc.value) and "annotation id 13" in str(exc.value) and "positive width" in str(exc.value)
    with pytest.raises(RegionFailure, match=r"says horror/a.png is 100x80 but the image is 50x40"):
        src.region("horror/a.png", (40, 50))


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON"),
    ([1, 2], "top level must be an object"),
    ({"annotations": []}, "missing list 'images'"),
    ({"images": {}, "annotations": []}, "'images' must be a list"),
    ({"images": [{"file_name": "a.png"}], "annotations": []}, r"images\[0\] needs an 'id'"),
    ({"images": [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}], "annotations": []}, "duplicate image id 1"),
    ({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 5, "image_id": 9, "bbox": [0, 0, 1, 1]}]},
     r"annotations\[0\] refers to image_id 9"),
    ({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"bbox": [0, 0, 1, 1]}]}, "needs an 'image_id'"),
])
def test_malformed_coco_files_name_the_file_and_the_problem(tmp_path, content, problem):
    path = _write(tmp_path / "broken.json", content)
    with pytest.raises(ConfigError, match=problem) as exc:
        load_coco(path)
    assert str(path) in str(exc.value)


def test_missing_file_and_unknown_category_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="nope.json: file not found"):
        load_coco(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match=r"categories \['axe'\] are not in the file"):
        load_coco(_coco(tmp_path), ["axe"])


def _cfg(tmp_path: Path, expected: dict, **regions) -> AuditConfig:
    return AuditConfig.model_validate({
        "name": "t", "dataset": {"root": str(tmp_path)}, "model": {"arch": "resnet18"},
        "regions": {"text": {"enabled": False}, "expected": {"enabled": True, **expected}, **regions},
    })


def test_builder_checks_and_describes_the_coco_source(tmp_path):
    cfg = _cfg(tmp_path, {"source": "coco", "annotations": str(_coco(tmp_path))})
    check_region_inputs(cfg)
    desc = describe_regions(cfg.regions)
    assert desc["expected"]["source"] == "coco" and desc["expected"]["reference"] is True
    broken = _cfg(tmp_path, {"source": "coco", "annotations": str(_write(tmp_path / "x.json", "[]"))})
    with pytest.raises(ConfigError, match="x.json: the top level must be an object"):
        check_region_inputs(broken)  # fails before any chunk runs


def test_manifest_boxes_and_masks_reuse_the_custom_region_sources(tmp_path):
    img = np.zeros((60, 80, 3), np.uint8)
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), img)
    import pandas as pd

    manifest = pd.DataFrame({"path": ["imgs/a.png"], "label": ["x"], "obj": ["[[10, 10, 20, 20]]"]})
    cfg = _cfg(tmp_path, {"source": "manifest_boxes", "column": "obj"})
    builder = RegionBuilder(cfg.regions, tmp_path, None, manifest=manifest)
    assert builder.names == ["border", "expected"]

    class Item:
        original, digest, path = img, "d", "imgs/a.png"
        placement = placement_for((60, 80), (60, 80), "stretch")

    regs = builder.build([Item()])
    m = regs[0]["expected"].original_mask(60, 80)
    assert m[15, 15] and m.sum() == 400
    masks_dir = tmp_path / "masks"
    (masks_dir / "imgs").mkdir(parents=True)
    mask = np.zeros((60, 80), np.uint8)
    mask[30:40, 50:70] = 255
    cv2.imwrite(str(masks_dir / "imgs" / "a.png"), mask)
    cfg = _cfg(tmp_path, {"source": "masks", "masks_dir": str(masks_dir)})
    regs = RegionBuilder(cfg.regions, tmp_path, None).build([Item()])
    assert regs[0]["expected"].original_mask(60, 80).sum() == 200


def test_expected_is_never_a_shortcut_rule_nor_loses_pixels_to_exclusive_regions(tmp_path):
    with pytest.raises(ValidationError, match="pointing game"):
        GateConfig(max_lift={"expected": 2.0})
    with pytest.raises(ValidationError, match="pointing game"):
        GateConfig(max_effect={"expected": 0.1})
    with pytest.raises(ValidationError, match="pointing game"):
        GateConfig(max_norm_lift={"expected": 0.5})
    # a class attending the annotated object 9x more than its area is not flagged by default
    per_class = {"horror": {"n": 50, "expected_lift": 9.0, "expected_lift_ci": [8.0, 10.0]}}
    gate = apply_gate(per_class, GateConfig(), ["expected"], [])
    assert gate["passed"] and not per_class["horror"]["flagged"]
    # exclusive mode: the border keeps its pixels and the annotation keeps all of its own
    cfg = _cfg(tmp_path, {"source": "coco", "annotations": str(_coco(tmp_path))}, exclusive=True,
               border={"enabled": True, "width": 0.2})
    builder = RegionBuilder(cfg.regions, tmp_path, None)
    img = np.zeros((80, 100, 3), np.uint8)

    class Item:
        original, digest, path = img, "d", "horror/a.png"
        placement = placement_for((80, 100), (80, 100), "stretch")

    regs = builder.build([Item()])
    masks = builder.model_masks(regs, [Item()])
    exp = masks[0, builder.names.index("expected")]
    assert exp.sum() == regs[0]["expected"].original_mask(80, 100).sum()
    assert (exp & masks[0, builder.names.index("border")]).any()


def test_config_errors_for_an_incomplete_expected_section(tmp_path):
    with pytest.raises(ValidationError, match="source 'coco' needs annotations"):
        RegionsConfig(expected={"enabled": True, "source": "coco"})
    with pytest.raises(ValidationError, match="categories applies to source 'coco' only"):
        RegionsConfig(expected={"enabled": True, "source": "masks", "masks_dir": "m", "categories": ["a"]})
    assert RegionsConfig(expected={"source": "coco"}).enabled_names() == ["text", "border"]  # off: not checked
