"""Crop similarities remembered across runs (tokens/pair_store.py): same tokens, fewer comparisons.

Instances: real words EasyOCR found on the real scene photos plus jittered crops of a real sign
(tests/tokens/test_visual_grouping.py builds both), i.e. what a night's token stage groups.
"""

import sqlite3
import warnings

import numpy as np
import pandas as pd
import pytest

from auditors.tokens import visual
from auditors.tokens.grouping import TokenSettings, assign_tokens
from auditors.tokens.pair_store import PairSimilarities, open_pair_store, similarity_version
from tests.tokens.test_visual_grouping import _scene_words, jittered_logo


@pytest.fixture(scope="module")
def night() -> pd.DataFrame:
    """~300 instances: 240 jittered crops of one real sign and the real photos' words."""
    words = _scene_words(min_conf=0.5, documents=True)
    return pd.concat([jittered_logo(240, seed=4), words], ignore_index=True)


@pytest.fixture
def counted(monkeypatch) -> list[int]:
    """Counts real comparisons (patch_similarity calls) made by the grouping."""
    calls = [0]
    real = visual.patch_similarity

    def counting(a, b):
        calls[0] += 1
        return real(a, b)

    monkeypatch.setattr(visual, "patch_similarity", counting)
    return calls


def test_a_second_run_compares_nothing_and_finds_the_same_tokens(night, counted, tmp_path):
    fresh = assign_tokens(night, TokenSettings())
    cold_calls = counted[0]
    assert cold_calls > len(night)  # the grouping compares several pairs per instance

    first = PairSimilarities(tmp_path / "token_pairs.sqlite")
    counted[0] = 0
    stored = assign_tokens(night, TokenSettings(), first)
    assert counted[0] == cold_calls == first.stats["token_pairs_computed"]
    assert first.stats["token_pairs_reused"] == 0
    pd.testing.assert_series_equal(stored, fresh)

    second = PairSimilarities(tmp_path / "token_pairs.sqlite")
    counted[0] = 0
    again = assign_tokens(night, TokenSettings(), second)
    assert counted[0] == 0 and second.stats["token_pairs_computed"] == 0
    assert second.stats["token_pairs_reused"] == cold_calls  # every comparison read back, bit for bit
    pd.testing.assert_series_equal(again, fresh)


def test_a_grown_dataset_compares_a_fraction_of_the_pairs_and_equals_a_fresh_grouping(night, counted, tmp_path):
    store = tmp_path / "token_pairs.sqlite"
    assign_tokens(night, TokenSettings(), PairSimilarities(store))
    grown = pd.concat([night, jittered_logo(12, seed=9).assign(path=lambda d: "new-" + d["path"])], ignore_index=True)

    counted[0] = 0
    fresh = assign_tokens(grown, TokenSettings())
    cold_calls = counted[0]

    pairs = PairSimilarities(store)
    counted[0] = 0
    warm = assign_tokens(grown, TokenSettings(), pairs)
    pd.testing.assert_series_equal(warm, fresh)
    assert counted[0] == pairs.stats["token_pairs_computed"]
    assert pairs.stats["token_pairs_reused"] > 0
    # 3% more instances: ~20% of a cold grouping's comparisons (the new instances' pairs, and pairs the
    # grown embedding and the linker's samples bring in); measured 516 of 2,636
    assert counted[0] < 0.35 * cold_calls, (counted[0], cold_calls)


def test_a_changed_comparison_reuses_nothing(night, counted, tmp_path):
    store = tmp_path / "token_pairs.sqlite"
    assign_tokens(night, TokenSettings(), PairSimilarities(store))
    other = PairSimilarities(store, version=similarity_version() + "-edited")
    counted[0] = 0
    assign_tokens(night, TokenSettings(), other)
    assert other.stats["token_pairs_reused"] == 0 and counted[0] == other.stats["token_pairs_computed"] > 0


def test_the_version_follows_the_comparison_code(monkeypatch, tmp_path):
    import auditors.code_version as code_version
    import auditors.tokens.pair_store as pair_store

    before = similarity_version()
    root = tmp_path / "auditors"
    for rel in pair_store._SIMILARITY_SOURCES:
        src = code_version.PACKAGE_ROOT / rel
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(src.read_bytes())
    monkeypatch.setattr(code_version, "PACKAGE_ROOT", root)
    assert similarity_version() == before  # same sources, same version
    (root / "tokens" / "visual.py").write_bytes((root / "tokens" / "visual.py").read_bytes() + b"\n# edited\n")
    assert similarity_version() != before


def test_an_unreadable_store_is_moved_aside_and_the_grouping_still_runs(night, tmp_path):
    store = tmp_path / "token_pairs.sqlite"
    store.write_bytes(b"not a database" * 100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pairs = PairSimilarities(store)
    assert any("unreadable" in str(w.message) for w in caught)
    tokens = assign_tokens(night, TokenSettings(), pairs)
    pd.testing.assert_series_equal(tokens, assign_tokens(night, TokenSettings()))
    assert pairs.stats["token_pairs_computed"] > 0
    assert list(tmp_path.glob("token_pairs.sqlite.corrupt-*"))
    with sqlite3.connect(store) as conn:  # rebuilt, and holds this run's comparisons
        assert conn.execute("SELECT COUNT(*) FROM regions").fetchone()[0] > 0


def test_a_stored_value_that_does_not_decode_counts_as_a_miss(night, counted, tmp_path):
    store = tmp_path / "token_pairs.sqlite"
    assign_tokens(night, TokenSettings(), PairSimilarities(store))
    with sqlite3.connect(store) as conn:
        conn.execute("UPDATE regions SET payload = '{\"s\": \"oops\"}' WHERE rowid % 2 = 0")
        damaged = conn.execute("SELECT COUNT(*) FROM regions WHERE payload LIKE '%oops%'").fetchone()[0]
    assert damaged > 0
    pairs = PairSimilarities(store)
    counted[0] = 0
    tokens = assign_tokens(night, TokenSettings(), pairs)
    pd.testing.assert_series_equal(tokens, assign_tokens(night, TokenSettings()))
    assert pairs.stats["token_pairs_computed"] > 0 and pairs.stats["token_pairs_reused"] > 0
    assert np.isclose(pairs.stats["token_pairs_computed"], damaged, rtol=0.5)


def test_a_store_that_cannot_be_written_or_opened_costs_work_never_the_tokens(night, tmp_path, monkeypatch):
    pairs = PairSimilarities(tmp_path / "token_pairs.sqlite")

    def disk_full(*_args, **_kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(pairs.store, "put_many", disk_full)
    with pytest.warns(UserWarning, match="could not store .* comparisons .*disk is full"):
        tokens = assign_tokens(night, TokenSettings(), pairs)
    pd.testing.assert_series_equal(tokens, assign_tokens(night, TokenSettings()))
    assert len(PairSimilarities(tmp_path / "token_pairs.sqlite").store) == 0  # nothing was stored

    blocked = tmp_path / "a-file"
    blocked.write_text("in the way")  # the store's folder is a file: it cannot be created
    with pytest.warns(UserWarning, match="cannot be opened"):
        assert open_pair_store(blocked / "token_pairs.sqlite") is None
