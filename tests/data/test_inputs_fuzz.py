"""Fuzz (hypothesis) of manifests, file names and image bytes: listed or recorded, never a crash."""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from auditors.config.schema import DatasetConfig
from auditors.data.decoding import load_rgb
from auditors.data.discovery import discover
from auditors.errors import ConfigError, InputError

# --------------------------------------------------------------------------- names, manifests, image bytes fuzz


path_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["..", "../x.png", "/etc/passwd", "a/../../b.png", "a\x00b.png", " ", "a/./b.png", "~/x.png", "C:\\x.png"]),
)
label_values = st.one_of(st.none(), st.text(max_size=8), st.integers(), st.floats(allow_nan=True), st.sampled_from(["a", "b"]))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(path_text, label_values), max_size=8), st.sampled_from([".csv", ".parquet"]))
def test_fuzzed_manifests_are_listed_or_recorded_never_crash(tmp_path_factory, rows, suffix):
    import pandas as pd

    base = tmp_path_factory.mktemp("m")
    (base / "root" / "a").mkdir(parents=True)
    (base / "root" / "a" / "x.png").write_bytes(b"\x89PNG")
    df = pd.DataFrame({"path": [r[0] for r in rows], "label": [r[1] for r in rows]}, dtype=object)
    manifest = base / f"m{suffix}"
    try:
        if suffix == ".csv":
            df.to_csv(manifest, index=False)
        else:
            df.astype(str).to_parquet(manifest, index=False)  # parquet columns need one type
    except (UnicodeEncodeError, ValueError):
        assume(False)  # the fuzz could not even write this manifest
    try:
        index = discover(DatasetConfig(root=base / "root", manifest=manifest), ["a", "b"])
    except ConfigError:
        return
    root = (base / "root").resolve()
    for e in index.entries:  # whatever is listed stays inside the root
        assert root in (root / e.path).resolve().parents
    assert all({"path", "stage", "reason"} <= set(err) and err["reason"] for err in index.errors)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=20),
                min_size=1, max_size=6, unique=True))
def test_fuzzed_file_names_in_an_image_folder_are_listed_or_recorded(tmp_path_factory, names):
    base = tmp_path_factory.mktemp("f") / "root" / "cls"
    base.mkdir(parents=True)
    made = []
    for n in names:
        try:
            (base / n).write_bytes(b"x")
            made.append(n)
        except OSError:  # too long, "." or ".." etc.: the filesystem refuses it, nothing to test
            continue
    index = discover(DatasetConfig(root=base.parent))
    seen = {e.path for e in index.entries} | {e["path"] for e in index.errors}
    for n in made:
        if not n.startswith("."):  # hidden files are skipped by design
            assert f"cls/{n}" in seen, n


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=400), st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b"BM", b"II*\x00"]).flatmap(
    lambda head: st.binary(max_size=200).map(lambda tail: head + tail))))
def test_fuzzed_image_bytes_decode_or_raise_input_error(data):
    try:
        arr = load_rgb("fuzz.bin", data)
    except InputError as err:
        assert err.reason
        return
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
