"""The region cache survives kills, corrupt files and concurrent writers; only changed inputs miss."""

from __future__ import annotations

import pickle
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from auditors.config.schema import TextRegionConfig
from auditors.regions import RegionCache, TextDetector
from tests.conftest import draw_word

ROOT = Path(__file__).resolve().parents[2]

_WRITER = textwrap.dedent(
    """
    import importlib.util, sys
    # cache.py needs only the standard library: load it alone (importing the package pulls in torch)
    spec = importlib.util.spec_from_file_location("cache", {root!r} + "/auditors/regions/cache.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cache = mod.RegionCache({path!r})
    tag, n = sys.argv[1], int(sys.argv[2])
    for i in range(n):
        cache.put_many({{f"{{tag}}-{{i}}-{{j}}": {{"polygons": [[[0, 0], [1, 0], [1, 1]]], "i": i}} for j in range(20)}}, "s")
        cache.get_many([f"{{tag}}-{{i}}-0"], "s")
        print(i, flush=True)
    """
)


def _spawn(path: Path, tag: str, n: int) -> subprocess.Popen:
    code = _WRITER.format(root=str(ROOT), path=str(path))
    return subprocess.Popen([sys.executable, "-c", code, tag, str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_processes_write_one_cache(tmp_path):
    path = tmp_path / "regions.sqlite"
    procs = [_spawn(path, f"p{k}", 150) for k in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    cache = RegionCache(path)
    assert len(cache) == 3 * 150 * 20
    got = cache.get_many([f"p{k}-149-19" for k in range(3)], "s")
    assert {v["i"] for v in got.values()} == {149} and len(got) == 3


def test_killed_writer_leaves_a_consistent_cache(tmp_path):
    path = tmp_path / "regions.sqlite"
    proc = _spawn(path, "k", 100000)
    assert proc.stdout is not None
    for _ in range(5):  # let it commit a few batches, then kill it mid-stream
        proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    cache = RegionCache(path)
    n = len(cache)
    assert n >= 5 * 20 and n % 20 == 0, "whole batches only: a batch is one transaction"
    cache.put_many({"after": {"ok": True}}, "s")
    assert cache.get_many(["after"], "s") == {"after": {"ok": True}}


def test_corrupt_file_is_moved_aside_and_rebuilt(tmp_path):
    path = tmp_path / "regions.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.warns(UserWarning, match="unreadable"):
        cache = RegionCache(path)
    cache.put_many({"a": {"x": 1}}, "s")
    assert len(cache) == 1
    assert list(tmp_path.glob("regions.sqlite.corrupt-*"))


def test_undecodable_entry_is_a_miss_and_cache_pickles_as_a_path(tmp_path):
    cache = RegionCache(tmp_path / "c.sqlite")
    cache.put_many({"good": {"v": 1}}, "s")
    conn = sqlite3.connect(tmp_path / "c.sqlite")
    conn.execute("INSERT INTO regions VALUES ('bad', 's', '{not json')")
    conn.commit()
    conn.close()
    assert set(cache.get_many(["good", "bad", "absent"], "s")) == {"good"}
    clone = pickle.loads(pickle.dumps(cache))
    assert clone.get_many(["good"], "s") == {"good": {"v": 1}}


def _poster(word: str, shade: int = 240) -> np.ndarray:
    img = np.full((96, 160, 3), shade, np.uint8)
    draw_word(img, word, (12, 60), scale=1.0)
    return img


def test_changed_image_or_settings_invalidate_only_affected_entries(tmp_path):
    """Real EasyOCR: keys are (content hash, settings); nothing else is recomputed."""
    cache = RegionCache(tmp_path / "c.sqlite")
    cfg = TextRegionConfig(canvas_size=256)
    imgs = [_poster("OPEN"), _poster("SALE")]
    first = TextDetector(cfg, cache)
    first.detect(imgs, ["h-open", "h-sale"])
    assert first.stats == {"detected": 2, "cached": 0, "failed": 0}
    edited = TextDetector(cfg, cache)  # the second image was edited: a new content hash
    edited.detect([imgs[0], _poster("SALE", 230)], ["h-open", "h-sale-v2"])
    assert edited.stats == {"detected": 1, "cached": 1, "failed": 0}
    other = TextDetector(TextRegionConfig(canvas_size=256, min_size=10), cache)
    other.detect(imgs, ["h-open", "h-sale"])
    assert other.stats["detected"] == 2, "changed settings miss"
    again = TextDetector(cfg, cache)
    again.detect(imgs, ["h-open", "h-sale"])
    assert again.stats == {"detected": 0, "cached": 2, "failed": 0}, "the old settings' entries are still valid"
    assert len(cache) == 5
    t0 = time.perf_counter()
    TextDetector(cfg, cache).detect(imgs * 10, ["h-open", "h-sale"] * 10)
    assert time.perf_counter() - t0 < 1.0, "warm lookups are cheap"
