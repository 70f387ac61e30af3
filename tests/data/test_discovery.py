import pandas as pd
import pytest

from auditors.config.schema import DatasetConfig
from auditors.data.discovery import chunked, discover
from auditors.errors import ConfigError


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_image_folder_lists_classes_and_records_non_images(tmp_path):
    for p in ["cat/1.jpg", "cat/sub/2.PNG", "dog/3.png", "dog/readme.txt", "dog/.hidden.png", ".trash/4.png"]:
        _touch(tmp_path / p)
    idx = discover(DatasetConfig(root=tmp_path))
    assert idx.classes == ["cat", "dog"] and idx.labelled
    assert sorted((e.path, e.label) for e in idx.entries) == [("cat/1.jpg", "cat"), ("cat/sub/2.PNG", "cat"), ("dog/3.png", "dog")]
    assert idx.errors == [{"path": "dog/readme.txt", "stage": "discover", "reason": "not an image file (suffix '.txt')"}]


def test_model_classes_fix_the_mapping_and_unknown_labels_are_recorded(tmp_path):
    for p in ["cat/1.jpg", "dog/2.jpg", "fox/3.jpg"]:
        _touch(tmp_path / p)
    idx = discover(DatasetConfig(root=tmp_path), classes=["dog", "cat"])
    assert idx.classes == ["dog", "cat"] and len(idx.entries) == 2
    assert idx.errors[0]["path"] == "fox/3.jpg" and "unknown label 'fox'" in idx.errors[0]["reason"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_manifest_with_labels(tmp_path, suffix):
    _touch(tmp_path / "imgs/a.png")
    df = pd.DataFrame({"path": ["imgs/a.png", "imgs/b.png", "../escape.png", ""], "label": ["x", "y", "x", "x"]})
    manifest = tmp_path / f"m{suffix}"
    df.to_csv(manifest, index=False) if suffix == ".csv" else df.to_parquet(manifest)
    idx = discover(DatasetConfig(root=tmp_path, manifest=manifest))
    assert idx.labelled and idx.classes == ["x", "y"]
    assert [e.path for e in idx.entries] == ["imgs/a.png", "imgs/b.png"]
    reasons = {e["path"]: e["reason"] for e in idx.errors}
    assert reasons["../escape.png"] == "path escapes dataset.root" and "empty path" in reasons["<manifest row 3>"]


def test_manifest_without_labels_and_bad_manifests(tmp_path):
    m = tmp_path / "m.csv"
    pd.DataFrame({"path": ["a.png"]}).to_csv(m, index=False)
    idx = discover(DatasetConfig(root=tmp_path, manifest=m))
    assert not idx.labelled and idx.entries[0].label is None
    pd.DataFrame({"file": ["a.png"]}).to_csv(m, index=False)
    with pytest.raises(ConfigError, match="missing required column 'path'"):
        discover(DatasetConfig(root=tmp_path, manifest=m))
    with pytest.raises(ConfigError, match="dataset.root: folder not found"):
        discover(DatasetConfig(root=tmp_path / "nope"))


def test_chunked_covers_everything_in_order():
    items = list(range(10))
    assert [len(c) for c in chunked(items, 4)] == [4, 4, 2]
    assert sum(chunked(items, 4), []) == items
