"""Great Expectations results are reused only for identical tables under identical expectations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from auditors.analysis.validation import images_expectations, validate_tables
from auditors.analysis.validation_reuse import KEEP_ENTRIES, reuse_or_validate, table_fingerprint, validation_key

INPUTS = {"classes": ["x"], "regions": ["text"], "cf_regions": ["text"], "placebo_max_overlap": 0.0}


def _images(overlap: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({
        "path": ["a", "b", "c"], "pred": ["x"] * 3, "confidence": [0.5] * 3, "cam_status": ["ok"] * 3,
        "text_mass": [0.1] * 3, "text_area": [0.1] * 3, "text_lift": [1.0] * 3, "text_hit": [0.0] * 3,
        "text_norm_lift": [0.5, np.nan, 0.2],
        "text_placebo_overlap": [overlap, np.nan, 0.3], "text_placebo_status": ["ok", None, "overlap"],
    })


def _validate(df: pd.DataFrame, calls: list[int]):
    def run():
        calls.append(1)
        return validate_tables({"images": (df, images_expectations(["x"], ["text"], ["text"], 0.0))})
    return run


def test_table_fingerprint_sees_every_value_nan_dtype_and_order():
    df = _images()
    assert table_fingerprint(df) == table_fingerprint(_images())
    changed = [
        _images(overlap=1e-9),                                   # one value
        df.assign(text_norm_lift=[0.5, 0.0, 0.2]),               # a NaN became a number
        df.assign(confidence=df["confidence"].astype("float32")),  # a dtype
        df.iloc[::-1],                                           # row order
        df.rename(columns={"pred": "pred2"}),                    # a column name
        df.iloc[:2],                                             # a row fewer
    ]
    assert len({table_fingerprint(d) for d in changed} | {table_fingerprint(df)}) == len(changed) + 1


def test_identical_tables_reuse_the_stored_result_and_any_change_revalidates(tmp_path):
    store = tmp_path / "validations"
    calls: list[int] = []
    df = _images()
    key = validation_key({"images": df}, INPUTS)
    first = reuse_or_validate(store, key, _validate(df, calls))
    assert calls == [1] and first["success"] and "reused" not in first
    again = reuse_or_validate(store, validation_key({"images": _images()}, INPUTS), _validate(df, calls))
    assert calls == [1], "an identical table under the same expectations is not validated twice"
    assert again["reused"]["key"] == key and {k: again[k] for k in first} == first

    # A broken control in one cell: a new key, validated for real, and it fails.
    bad = _images(overlap=0.1)
    out = reuse_or_validate(store, validation_key({"images": bad}, INPUTS), _validate(bad, calls))
    assert calls == [1, 1] and not out["success"] and "reused" not in out
    # Same table, different expectation inputs (a tolerance): a new key.
    assert validation_key({"images": df}, {**INPUTS, "placebo_max_overlap": 0.2}) != key


def test_a_corrupt_or_foreign_entry_is_ignored_and_replaced(tmp_path):
    store = tmp_path / "validations"
    calls: list[int] = []
    df = _images()
    key = validation_key({"images": df}, INPUTS)
    store.mkdir()
    (store / f"{key}.json").write_text("{not json")
    assert "reused" not in reuse_or_validate(store, key, _validate(df, calls)) and calls == [1]
    entry = json.loads((store / f"{key}.json").read_text())
    entry["key"] = "someone-else"
    (store / f"{key}.json").write_text(json.dumps(entry))
    assert "reused" not in reuse_or_validate(store, key, _validate(df, calls)) and calls == [1, 1]


def test_the_store_keeps_a_bounded_number_of_entries(tmp_path):
    store = tmp_path / "validations"
    for i in range(KEEP_ENTRIES + 5):
        reuse_or_validate(store, f"k{i}", lambda: {"success": True, "n_expectations": 0, "n_failed": 0, "suites": {}})
    assert len(list(store.glob("*.json"))) == KEEP_ENTRIES
