"""Per-image result reuse: what changed is recomputed, nothing stale is served, nothing read back runs code.

Real Prefect flow runs, real EasyOCR, the real SQLite store; cases built to break the claim
(same-size replacement with the mtime restored, a rewritten cache entry, a pickle payload).
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

import auditors
from flows.audit import run_audit
from tests.conftest import build_tiny_cnn, draw_word, tiny_audit_config

pytestmark = pytest.mark.usefixtures("prefect_server")


_BASE = {"cam": {"batch_size": 3}, "run": {"chunk_size": 5}}


def _config(root, tmp_path, **over):
    return tiny_audit_config(root, tmp_path, _BASE, over, name="inc")


def _rows(result) -> pd.DataFrame:
    return pd.read_parquet(result.run_dir / "images.parquet").set_index("path").sort_index()


def _counts(result) -> tuple[int, int]:
    inc = result.summary["incremental"]
    return inc["reused"], inc["computed"]


def _poster(path, word: str, shade: int) -> None:
    img = np.full((150, 110, 3), 235, np.uint8)
    img[:, :, 1] = shade
    draw_word(img, word, (10, 60))
    cv2.imwrite(str(path), img[:, :, ::-1])


def _png_of_size(size: int, word: str, shade: int) -> bytes:
    """A different poster whose PNG file has exactly ``size`` bytes (padded in a tEXt chunk)."""
    import io

    from PIL import Image, PngImagePlugin

    img = np.full((150, 110, 3), 235, np.uint8)
    img[:, :, 2] = shade
    draw_word(img, word, (20, 100))

    def encode(pad: int | None) -> bytes:
        info = PngImagePlugin.PngInfo()
        if pad is not None:
            info.add_text("c", "x" * pad)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", pnginfo=info)
        return buf.getvalue()

    base = len(encode(0))
    assert base <= size, "replacement must not be larger than the original"
    data = encode(size - base)
    assert len(data) == size
    return data


def test_growth_recomputes_only_new_images_and_inserted_files_do_not_shift_work(poster_folder, tmp_path):
    cfg = _config(poster_folder, tmp_path)
    first = run_audit(cfg)
    assert _counts(first) == (0, 12)
    # "aaa.png" sorts first in its class: with consecutive chunks it shifted every boundary.
    _poster(poster_folder / "alpha" / "aaa.png", "NEW", 90)
    second = run_audit(cfg)
    assert _counts(second) == (12, 1)
    a, b = _rows(first), _rows(second)
    pd.testing.assert_frame_equal(a, b.drop(index="alpha/aaa.png"))
    assert second.summary["text_detection"].get("text_detected", 0) == 1, "only the new image is OCR'd"
    # The gallery is rebuilt from the table even when every row was reused.
    third = run_audit(cfg)
    assert _counts(third) == (13, 0)
    # regions.parquet (every region shape per image) is rebuilt from the stored rows too
    reg = lambda r: pd.read_parquet(r.run_dir / "regions.parquet").sort_values(["path", "region", "shape"]).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(reg(second), reg(third))
    assert set(reg(third)["path"]) == set(_rows(third).index)
    assert "gallery" in (third.run_dir / "report.html").read_text().lower()


def test_same_size_replacement_with_restored_mtime_is_recomputed(poster_folder, tmp_path):
    cfg = _config(poster_folder, tmp_path)
    target = poster_folder / "beta" / "2.png"
    run_audit(cfg)
    st = target.stat()
    # Different content, same byte count, same mtime: what a path+size+mtime key serves stale.
    target.write_bytes(_png_of_size(size=st.st_size, word="HI", shade=30))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    second = run_audit(cfg)
    assert _counts(second) == (11, 1)
    row = _rows(second).loc["beta/2.png"]
    from auditors.data.decoding import content_hash

    assert row["content_hash"] == content_hash(target.read_bytes()), "the row describes the file as it is now"


@pytest.mark.parametrize("change", ["config", "checkpoint", "version"])
def test_a_change_that_affects_rows_recomputes_them(poster_folder, tmp_path, monkeypatch, change):
    cfg = _config(poster_folder, tmp_path)
    first = run_audit(cfg)
    if change == "config":
        changed = _config(poster_folder, tmp_path, cam={"method": "gradcampp"})
    elif change == "checkpoint":
        torch.manual_seed(1)
        other = build_tiny_cnn()
        with torch.no_grad():
            other.fc.weight.mul_(-1)
        torch.save(other.state_dict(), tmp_path / "other.pt")
        changed = _config(poster_folder, tmp_path, model={"checkpoint": str(tmp_path / "other.pt")})
    else:
        monkeypatch.setattr(auditors, "__version__", auditors.__version__ + ".post1")
        changed = cfg
    second = run_audit(changed)
    assert _counts(second) == (0, 12)
    assert second.summary["text_detection"]["text_cached"] == 12, "text regions do not depend on the model"
    if change == "checkpoint":
        assert not np.allclose(_rows(first)["confidence"], _rows(second)["confidence"])
    # a change that does not affect rows (batch size, gallery, gate) reuses them
    third = run_audit(_config(poster_folder, tmp_path, cam={"method": "gradcampp", "batch_size": 7})
                      if change == "config" else cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"max_text_lift": 9.0})}))
    assert _counts(third) == (12, 0)


def test_tokens_and_a_new_region_can_be_turned_on_over_a_cached_audit(poster_folder, tmp_path):
    run_audit(_config(poster_folder, tmp_path, regions={"border": {"enabled": False}}))
    with_tokens = run_audit(_config(poster_folder, tmp_path, regions={"border": {"enabled": False}}, tokens={"enabled": True}))
    assert _counts(with_tokens) == (12, 0), "instances were stored with the rows"
    rows = _rows(with_tokens)
    assert rows["text_top_instance"].notna().all()
    inst = pd.read_parquet(with_tokens.run_dir / "text_instances.parquet")
    assert set(inst["path"]) == set(rows.index)
    fresh = run_audit(_config(poster_folder, tmp_path / "fresh", regions={"border": {"enabled": False}}, tokens={"enabled": True}))
    pd.testing.assert_frame_equal(rows, _rows(fresh))
    with_border = run_audit(_config(poster_folder, tmp_path))
    assert _counts(with_border) == (0, 12)
    assert _rows(with_border)["border_mass"].between(0, 1).all()


def _entries(cache_dir):
    con = sqlite3.connect(cache_dir / "results.sqlite")
    try:
        return con.execute("SELECT image_hash, settings, payload FROM regions").fetchall()
    finally:
        con.close()


class _Boom:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_tampered_and_pickled_cache_entries_are_never_trusted_or_run(poster_folder, tmp_path):
    cfg = _config(poster_folder, tmp_path)
    first = run_audit(cfg)
    entries = _entries(tmp_path / "cache")
    assert len(entries) == 12
    payload = json.loads(entries[0][2])
    assert set(payload) == {"format", "key", "setting", "row", "instances", "regions", "targets", "maps"}
    assert payload["targets"] is None and payload["maps"] is None, "a plain run stores no top-k rows nor maps"
    marker = tmp_path / "pwned"
    blob = pickle.dumps(_Boom(str(marker)))
    con = sqlite3.connect(tmp_path / "cache" / "results.sqlite")
    with con:
        rows = con.execute("SELECT image_hash, settings, payload FROM regions").fetchall()
        for i, (key, setting, text) in enumerate(rows):
            p = json.loads(text)
            if i % 4 == 0:
                new = blob.decode("latin-1")  # not JSON at all
            elif i % 4 == 1:
                p["row"]["confidence"] = "0.99"  # wrong type
                new = json.dumps(p)
            elif i % 4 == 2:
                p["row"]["__class__"] = "os.system"  # extra key
                new = json.dumps(p)
            else:
                p["key"] = "0" * 40  # entry copied under another image's key
                new = json.dumps(p)
            con.execute("UPDATE regions SET payload = ? WHERE image_hash = ? AND settings = ?", (new, key, setting))
    con.close()
    second = run_audit(cfg)
    assert not marker.exists()
    assert _counts(second) == (0, 12)
    assert second.summary["incremental"]["rejected"] == 9, "3 of 12 were not JSON; 9 decoded but failed checks"
    pd.testing.assert_frame_equal(_rows(first), _rows(second))
    assert not (tmp_path / "cache" / "prefect-results").exists(), "no pickled task results are written"
