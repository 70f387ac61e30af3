"""Regions inside a real chunk audit: every configured region becomes its columns; bad masks stay per-image."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from auditors.config import config_from_dict
from auditors.data.discovery import discover
from auditors.audit.chunk import audit_chunk
from auditors.audit.tables import row_columns
from auditors.regions.build import RegionBuilder, region_names, region_sources


@pytest.fixture()
def audited(poster_folder, tmp_path):
    """Posters with a watermark mask for some, manifest logo boxes (one outside), GrabCut backgrounds."""
    masks = tmp_path / "wm"
    for cls in ("alpha", "beta"):
        m = np.zeros((150, 110), np.uint8)
        m[-20:, -30:] = 255  # bottom-right corner stamp
        (masks / cls).mkdir(parents=True)
        Image.fromarray(m).save(masks / cls / "0.png")
    (masks / "gamma").mkdir()
    (masks / "gamma" / "0.png").write_bytes(b"broken")
    entries = sorted(p.relative_to(poster_folder).as_posix() for p in poster_folder.rglob("*.png"))
    logo = {p: json.dumps([[5, 5, 30, 20]]) for p in entries}
    logo[entries[1]] = json.dumps([[500, 500, 10, 10]])  # outside the 110x150 image
    manifest = tmp_path / "manifest.csv"
    pd.DataFrame({"path": entries, "label": [p.split("/")[0] for p in entries], "logo": [logo[p] for p in entries]}).to_csv(manifest, index=False)
    cfg = config_from_dict({
        "name": "regions",
        "dataset": {"root": str(poster_folder), "manifest": str(manifest)},
        "model": {"factory": "tests.conftest:build_tiny_cnn", "input_size": [64, 64], "resize": "letterbox"},
        "cam": {"batch_size": 6},
        "regions": {
            "text": {"canvas_size": 256},
            "background": {"enabled": True},
            "custom": {"watermark": {"source": "masks", "masks_dir": str(masks)}, "logo": {"source": "manifest_boxes", "column": "logo"}},
            "exclusive": True,
        },
    })
    index = discover(cfg.dataset)
    result = audit_chunk(index.entries, cfg, index.classes, "features.3", tmp_path / "regions.sqlite")
    return cfg, result, entries


def test_every_region_has_its_columns_values_and_per_image_errors(audited):
    cfg, result, entries = audited
    names = region_names(cfg)
    assert names == ["text", "border", "background", "watermark", "logo"]
    rows = result.rows
    assert list(rows.columns) == list(row_columns(cfg))
    for r in names:
        assert {f"{r}_mass", f"{r}_area", f"{r}_lift", f"{r}_hit"} <= set(rows.columns)
    assert "overlap_text_background" in rows.columns and "regions_overlap" in rows.columns
    ok = rows.set_index("path")
    stamped = ok.loc["alpha/0.png"]
    assert stamped["watermark_area"] > 0 and ok.loc["alpha/1.png", "watermark_area"] == 0
    assert (rows["text_area"] > 0).mean() > 0.8, "the printed words are found"
    total = rows[[f"{r}_area" for r in names]].sum(axis=1)
    assert (total <= 1 + 1e-9).all(), "exclusive: no pixel counted twice"
    assert region_sources(cfg)["background"]["heuristic"] is True

    # A broken mask file and a box outside the image fail that region of that image only.
    assert len(result.rows) == len(entries), "a broken mask or a stray box never drops an image"
    assert result.stats["region_errors"] == 2

    class Item:
        def __init__(self, path):
            self.path, self.digest, self.placement = path, "d-" + path, None
            self.original = np.full((150, 110, 3), 200, np.uint8)

    cfg_no_text = cfg.model_copy(update={"regions": cfg.regions.model_copy(update={"text": cfg.regions.text.model_copy(update={"enabled": False}),
                                                                                    "background": cfg.regions.background.model_copy(update={"enabled": False})})})
    builder = RegionBuilder(cfg_no_text.regions, cfg_no_text.dataset.root, manifest=cfg_no_text.dataset.manifest)
    items = [Item("gamma/0.png"), Item(entries[1])]
    regs = builder.build(items)
    reasons = {(e["path"], e["reason"].split(":")[0]) for e in builder.errors(regs, items)}
    assert reasons == {("gamma/0.png", "region 'watermark'"), (entries[1], "region 'logo'")}
