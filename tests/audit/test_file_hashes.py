"""Content hashes remembered by file stat: an unchanged night reads no image byte, and no edit
(same size, mtime put back, a file renamed over another, a write just before hashing) is ever
served a stale hash. Bytes read are measured by the kernel (/proc/self/io rchar)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from auditors.audit import file_hashes
from auditors.audit.file_hashes import FileHashes
from auditors.data.decoding import content_hash

SIZE = 256 * 1024


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def _files(root: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = root / f"img{i:03d}.png"
        p.write_bytes(rng.integers(0, 256, SIZE, dtype=np.uint8).tobytes())
        out.append(p)
    return out


def _run(store: Path, paths: list[Path], read: bool = True) -> tuple[dict, FileHashes]:
    """One run's hashing (a fresh FileHashes, as each night opens its own)."""
    fh = FileHashes(store, read=read)
    try:
        return fh.hashes(paths), fh
    finally:
        fh.close()


@pytest.fixture
def no_racy_margin(monkeypatch):
    """Files written by the test are milliseconds old; the racy rule is tested on its own below."""
    monkeypatch.setattr(file_hashes, "RACY_NS", 0)


def test_an_unchanged_dataset_is_not_read_again(tmp_path, no_racy_margin):
    paths = _files(tmp_path / "data", 24)
    store = tmp_path / "cache" / "file_hashes.sqlite"
    first, fh = _run(store, paths)
    assert fh.files_read == 24 and fh.files_remembered == 0
    assert first == {p: content_hash(p.read_bytes()) for p in paths}
    before = _rchar()
    second, fh = _run(store, paths)
    read = _rchar() - before
    assert second == first and fh.files_read == 0 and fh.files_remembered == 24
    assert read < SIZE, f"{read} bytes read for an unchanged dataset of {24 * SIZE} bytes"


def test_an_edit_is_seen_even_with_size_and_mtime_put_back(tmp_path, no_racy_margin):
    paths = _files(tmp_path / "data", 3)
    store = tmp_path / "file_hashes.sqlite"
    first, _ = _run(store, paths)
    st = os.stat(paths[1])
    data = bytearray(paths[1].read_bytes())
    data[100] ^= 0xFF
    paths[1].write_bytes(bytes(data))
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns))  # what a copy that keeps mtimes does
    assert os.stat(paths[1]).st_size == st.st_size and os.stat(paths[1]).st_mtime_ns == st.st_mtime_ns
    second, fh = _run(store, paths)
    assert second[paths[1]] == content_hash(bytes(data)) != first[paths[1]]
    assert fh.files_read == 1 and fh.files_remembered == 2
    assert second[paths[0]] == first[paths[0]]


def test_a_file_renamed_over_another_is_read(tmp_path, no_racy_margin):
    paths = _files(tmp_path / "data", 2)
    store = tmp_path / "file_hashes.sqlite"
    first, _ = _run(store, paths)
    os.replace(paths[1], paths[0])  # same size, other bytes, other inode
    second, fh = _run(store, paths[:1])
    assert second[paths[0]] == first[paths[1]] and fh.files_read == 1


def test_a_file_written_just_before_hashing_is_not_trusted(tmp_path):
    """Racy rule: a change in the same timestamp tick as the hash could leave the stat unchanged,
    so a hash taken within RACY_NS of the file's last change is not served next time."""
    paths = _files(tmp_path / "data", 2)
    store = tmp_path / "file_hashes.sqlite"
    _run(store, paths)
    _, fh = _run(store, paths)
    assert fh.files_read == 2 and fh.files_remembered == 0


def test_no_memory_read_when_reuse_is_off(tmp_path, no_racy_margin):
    paths = _files(tmp_path / "data", 2)
    store = tmp_path / "file_hashes.sqlite"
    _run(store, paths)
    _, fh = _run(store, paths, read=False)
    assert fh.files_read == 2 and fh.files_remembered == 0


def test_odd_files_get_no_hash_and_never_block(tmp_path, no_racy_margin):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.png"
    folder.mkdir()
    missing = tmp_path / "gone.png"
    out, fh = _run(tmp_path / "file_hashes.sqlite", [fifo, folder, missing])
    assert out == {fifo: None, folder: None, missing: None} and fh.files_read == 0
