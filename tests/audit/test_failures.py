"""Failure analysis end to end: a tiny model trained in-test to call any photo with a planted word
"stamped" misclassifies real photos that carry the word but are labelled "clean". The run must
list exactly those mistakes in failures.parquet, with a predicted-class map that is the one
images.parquet measured and a true-class map from the same forward, say which region the
wrong prediction leaned on (the planted text), summarise errors vs correct predictions with
intervals, and show the mistakes side by side in the report (headless Chromium)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from auditors.audit.chunk import audit_chunk
from auditors.config import config_from_dict
from auditors.data.discovery import discover
from auditors.measure.failures import leaned_on, top_per_class
from flows.audit import run_audit
from tests.browser import chromium_driver, console_errors, open_file
from tests.conftest import TinyCNN, draw_word, fit_full_batch

SIDE = 128
CLASSES = ["clean", "stamped"]


def build_model() -> torch.nn.Module:
    """Factory for the audit config (model.factory: tests.audit.test_failures:build_model)."""
    torch.manual_seed(0)
    return TinyCNN(2)


def _crops(scenetext: Path) -> list[np.ndarray]:
    """Real photos, four corner crops each, at the model's input size."""
    out = []
    for p in sorted(scenetext.iterdir()):
        img = cv2.imread(str(p))
        if img is None:
            continue
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        s = min(h, w)
        for y, x in ((0, 0), (0, w - s), (h - s, 0), (h - s, w - s)):
            out.append(cv2.resize(img[y:y + s, x:x + s], (SIDE, SIDE), interpolation=cv2.INTER_AREA))
    return out


def _stamp(img: np.ndarray, seed: int) -> np.ndarray:
    """A white label with a dark word at a random place: the shortcut the model learns."""
    rng = np.random.default_rng(seed)
    out = img.copy()
    x, y = int(rng.integers(4, 40)), int(rng.integers(24, 110))
    cv2.rectangle(out, (x - 3, y - 22), (x + 84, y + 6), (250, 250, 250), -1)
    draw_word(out, "SALE", (x, y), scale=0.8, thickness=2)
    return out


def _to_x(images: list[np.ndarray]) -> torch.Tensor:
    small = np.stack(images).astype(np.float32) / 255  # the audit's input size: what the model sees there
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    return torch.from_numpy((small - mean) / std).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def shortcut_run(tmp_path_factory, scenetext_dir, one_torch_thread):
    tmp = tmp_path_factory.mktemp("failures")
    crops = _crops(scenetext_dir)
    train = crops[::2]
    x = _to_x(train + [_stamp(c, i) for i, c in enumerate(train)])
    y = torch.tensor([0] * len(train) + [1] * len(train))
    model = fit_full_batch(build_model(), x, y, lr=0.02)
    model.eval()
    ckpt = tmp / "shortcut.pt"
    torch.save(model.state_dict(), ckpt)

    # Held-out crops: 'clean' has 10 clean photos and 8 that carry the stamp (the model's mistakes),
    # 'stamped' has 10 stamped photos.
    test = crops[1::2]
    root = tmp / "data"
    planted = set()
    for cls in CLASSES:
        (root / cls).mkdir(parents=True)
    for i, img in enumerate(test[:10]):
        cv2.imwrite(str(root / "clean" / f"c{i:02d}.png"), img[:, :, ::-1])
    for i, img in enumerate(test[10:18]):
        cv2.imwrite(str(root / "clean" / f"p{i:02d}.png"), _stamp(img, 100 + i)[:, :, ::-1])
        planted.add(f"clean/p{i:02d}.png")
    for i, img in enumerate(test[18:28]):
        cv2.imwrite(str(root / "stamped" / f"s{i:02d}.png"), _stamp(img, 200 + i)[:, :, ::-1])
    cfg = config_from_dict({
        "name": "failures",
        "dataset": {"root": str(root)},
        "model": {"factory": "tests.audit.test_failures:build_model", "checkpoint": str(ckpt),
                  "input_size": [SIDE, SIDE], "classes": CLASSES},
        "cam": {"batch_size": 8},
        "stats": {"bootstrap": 500},
        "output": {"dir": str(tmp / "out"), "cache_dir": str(tmp / "cache"), "gallery_size": 2, "failures_per_class": 2},
        "run": {"chunk_size": 10, "cache": False},
    })
    return cfg, run_audit(cfg), planted


@pytest.mark.slow
def test_failures_table_lists_exactly_the_mistakes_with_both_maps(shortcut_run):
    cfg, result, planted = shortcut_run
    run = result.run_dir
    images = pd.read_parquet(run / "images.parquet").set_index("path")
    failures = pd.read_parquet(run / "failures.parquet").set_index("path")
    wrong = images[images["pred"] != images["label"]]
    assert set(failures.index) == set(wrong.index) and len(failures) > 0
    # The model learnt the shortcut: most planted photos are called 'stamped' although labelled 'clean'.
    assert len(planted & set(failures.index)) >= 6, sorted(failures.index)
    for path, f in failures.iterrows():
        img = images.loc[path]
        assert f["pred"] == img["pred"] and f["label"] == img["label"]
        # cam.target is 'predicted': the predicted-class map is the one images.parquet measured.
        for r in ("text", "border"):
            assert f[f"{r}_mass_pred"] == pytest.approx(img[f"{r}_mass"], abs=1e-4, nan_ok=True)
            assert f[f"{r}_lift_pred"] == pytest.approx(img[f"{r}_lift"], rel=1e-3, nan_ok=True)
        # Two classes: the true class has the rest of the probability of the same forward.
        assert f["true_prob"] + f["confidence"] == pytest.approx(1.0, abs=1e-5)
        assert f["leaned_on"] == leaned_on({r: f[f"{r}_lift_pred"] for r in ("text", "border")})
    on_planted = failures.loc[sorted(planted & set(failures.index))]
    # The wrong call leans on the planted word, and the true class's map sits less on it.
    assert (on_planted["leaned_on"] == "text").mean() >= 0.75, on_planted[["text_lift_pred", "border_lift_pred"]]
    assert (on_planted["text_mass_pred"] > on_planted["text_mass_true"]).mean() >= 0.75


@pytest.mark.slow
def test_failure_summary_matches_the_tables_with_intervals(shortcut_run):
    cfg, result, _ = shortcut_run
    run = result.run_dir
    summary = json.loads((run / "summary.json").read_text())["failures"]
    images = pd.read_parquet(run / "images.parquet")
    failures = pd.read_parquet(run / "failures.parquet")
    assert summary["n_errors"] == len(failures) and summary["n_labelled"] == len(images)
    text = summary["regions"]["text"]
    errs = failures["text_lift_pred"].dropna()
    assert text["errors"]["n"] == len(errs)
    assert text["errors"]["share_lift_above_1"] == pytest.approx((errs > 1).mean())
    correct = images[(images["pred"] == images["label"])]["text_lift"].dropna()
    assert text["correct"]["n"] == len(correct)
    assert text["correct"]["share_lift_above_1"] == pytest.approx((correct > 1).mean())
    for side in ("errors", "correct"):
        lo, hi = text[side]["share_ci"]
        assert 0 <= lo <= text[side]["share_lift_above_1"] <= hi <= 1
    assert sum(summary["leaned_on"].values()) == len(failures)
    assert summary["errors_by_class"] == failures["label"].value_counts().to_dict()


@pytest.mark.slow
def test_report_shows_both_maps_side_by_side(shortcut_run):
    cfg, result, _ = shortcut_run
    failures = pd.read_parquet(result.run_dir / "failures.parquet")
    with chromium_driver() as d:
        open_file(d, result.report)
        assert console_errors(d) == []
        section = d.find_element("id", "failures")
        assert "misclassified" in section.text and "mistakes" in section.text
        cards = d.find_elements("css selector", "#failures .failure-card")
        per_class = failures.groupby("label").size()
        assert len(cards) == sum(min(2, n) for n in per_class)
        for card in cards:
            imgs = card.find_elements("css selector", "img")
            assert len(imgs) == 3 and all(i.get_property("naturalWidth") > 0 for i in imgs)
            captions = [c.text for c in card.find_elements("css selector", ".panel-caption")]
            assert captions[1].startswith("Map for predicted") and captions[2].startswith("Map for true")
            assert len(card.find_elements("css selector", "table.failure-metrics tbody tr")) == 2
        # The cards of a class are its most confident mistakes, in order.
        shown = [c.get_attribute("data-path") for c in cards]
        for label, group in failures.groupby("label"):
            best = group.sort_values(["confidence", "path"], ascending=[False, True])["path"].head(2).tolist()
            assert [p for p in shown if p in set(group["path"])] == best


def test_chunk_keeps_only_top_k_pictures_per_class(shortcut_run, tmp_path):
    cfg, _, _ = shortcut_run
    cfg = cfg.model_copy(update={"output": cfg.output.model_copy(update={"failures_per_class": 1}),
                                 "cam": cfg.cam.model_copy(update={"batch_size": 4})})
    index = discover(cfg.dataset)
    # the cached chunk loop never pays for failure analysis: only the flow's step asks for it
    plain = audit_chunk(index.entries[:8], cfg, index.classes, "features.3", tmp_path / "regions.sqlite")
    assert plain.failures is None and plain.failure_items == []
    result = audit_chunk(index.entries, cfg, index.classes, "features.3", tmp_path / "regions.sqlite", failures_wanted=True)
    assert len(result.failures) == int((result.rows["pred"] != result.rows["label"]).sum()) > 1
    by_class = result.failures.groupby("label")["confidence"].max()
    assert sorted((it.label, it.confidence) for it in result.failure_items) == sorted(by_class.items())
    assert all(it.cam_pred.shape == it.cam_true.shape == it.image.shape[:2] for it in result.failure_items)
    off = cfg.model_copy(update={"output": cfg.output.model_copy(update={"failures_per_class": 0})})
    none = audit_chunk(index.entries[:8], off, index.classes, "features.3", tmp_path / "regions.sqlite", failures_wanted=True)
    assert none.failures is None and none.failure_items == []


@pytest.mark.slow
def test_failures_hold_for_rows_reused_from_the_result_store(shortcut_run, tmp_path):
    """Failure analysis runs after the merge, so a run whose every row comes from the per-image
    store still lists every mistake with both maps: its failure rows come from the store too
    (none recomputed), and only the report's few pictures are drawn again from pixels."""
    cfg, first, _ = shortcut_run
    cached = cfg.model_copy(update={
        "output": cfg.output.model_copy(update={"dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache")}),
        "run": cfg.run.model_copy(update={"cache": True}),
    })
    fill = run_audit(cached)
    again = run_audit(cached)
    n = len(pd.read_parquet(again.run_dir / "images.parquet"))
    summary = json.loads((again.run_dir / "summary.json").read_text())
    expected = pd.read_parquet(first.run_dir / "failures.parquet").sort_values("path").reset_index(drop=True)
    got = pd.read_parquet(again.run_dir / "failures.parquet").sort_values("path").reset_index(drop=True)
    assert len(got) > 0
    assert fill.summary["incremental"]["computed"] == n and fill.summary["incremental"]["failure_rows_computed"] == len(got)
    incremental = dict(summary["incremental"])
    # the token stage groups again, from crop comparisons the first run stored: it compares nothing
    assert incremental.pop("token_pairs_computed") == 0 and incremental.pop("token_pairs_reused") > 0
    assert fill.summary["incremental"]["token_pairs_computed"] > 0
    assert incremental == {"reused": n, "computed": 0, "rejected": 0,
                           "failure_rows_reused": len(got), "failure_rows_computed": 0,
                           "files_hashed": 0, "file_hashes_remembered": n}
    # identical tables: the Great Expectations result of the first run is reused, and says so
    assert "reused_from" not in fill.summary["validation"] and summary["validation"]["reused_from"]
    assert {k: summary["validation"][k] for k in ("success", "n_expectations", "n_failed")} == {
        k: fill.summary["validation"][k] for k in ("success", "n_expectations", "n_failed")}
    assert 'class="note validation-reused"' in (again.run_dir / "report.html").read_text()
    assert 'class="note validation-reused"' not in (fill.run_dir / "report.html").read_text()
    pd.testing.assert_frame_equal(got, expected, check_exact=False, atol=1e-4, rtol=1e-3)
    assert summary["failures"]["n_errors"] == len(got)
    assert (again.run_dir / "report.html").read_text().count('failure-card" data-path=') == sum(
        min(2, c) for c in got.groupby("label").size())


def test_leaned_on_and_top_per_class_rules():
    assert leaned_on({"text": 2.5, "border": 1.2}) == "text"
    assert leaned_on({"text": 0.9, "border": 0.4}) == "none"
    assert leaned_on({"text": float("nan"), "border": 1.01}) == "border"
    assert leaned_on({}) == "none"

    class It:
        def __init__(self, label, conf, path):
            self.label, self.confidence, self.path = label, conf, path

    items = [It("a", 0.9, "x"), It("a", 0.95, "y"), It("a", 0.9, "w"), It("b", 0.6, "z")]
    assert [(i.label, i.path) for i in top_per_class(items, 2)] == [("a", "y"), ("a", "w"), ("b", "z")]
    assert top_per_class(items, 0) == []


@pytest.mark.slow
def test_one_new_mistake_computes_one_failure_row(shortcut_run, scenetext_dir, tmp_path):
    """A night that adds one mistaken image computes one failure row (plus one whose stored entry
    was tampered with); the others are reused, and failures.parquet equals a cold run's."""
    import shutil
    import sqlite3

    cfg, _, _ = shortcut_run
    root = tmp_path / "data"
    shutil.copytree(cfg.dataset.root, root)
    grown = cfg.model_copy(update={
        "dataset": cfg.dataset.model_copy(update={"root": str(root)}),
        "output": cfg.output.model_copy(update={"dir": str(tmp_path / "out"), "cache_dir": str(tmp_path / "cache")}),
        "run": cfg.run.model_copy(update={"cache": True}),
    })
    first = run_audit(grown)
    n_before = first.summary["incremental"]["failure_rows_computed"]
    assert n_before > 0
    crop = _crops(scenetext_dir)[1]
    cv2.imwrite(str(root / "clean" / "new.png"), _stamp(crop, 999)[:, :, ::-1])  # a planted mistake
    con = sqlite3.connect(tmp_path / "cache" / "failures.sqlite")
    with con:  # one stored row with a value of the wrong type: verification must reject it
        image_hash, settings, payload = con.execute("SELECT image_hash, settings, payload FROM regions").fetchone()
        entry = json.loads(payload)
        entry["row"]["confidence"] = "0.99"
        con.execute("UPDATE regions SET payload = ? WHERE image_hash = ? AND settings = ?",
                    (json.dumps(entry), image_hash, settings))
    con.close()
    second = run_audit(grown)
    images = pd.read_parquet(second.run_dir / "images.parquet").set_index("path")
    assert images.loc["clean/new.png", "pred"] == "stamped", "the planted stamp makes the model err"
    inc = second.summary["incremental"]
    assert (inc["computed"], inc["failure_rows_computed"], inc["failure_rows_reused"]) == (1, 2, n_before - 1)
    assert "reused_from" not in second.summary["validation"], "a grown table is validated again"
    cold = run_audit(grown.model_copy(update={"run": grown.run.model_copy(update={"cache": False}),
                                              "output": grown.output.model_copy(update={"dir": str(tmp_path / "cold")})}))
    assert cold.summary["incremental"]["failure_rows_reused"] == 0
    got, want = (pd.read_parquet(r.run_dir / "failures.parquet").sort_values("path").reset_index(drop=True)
                 for r in (second, cold))
    pd.testing.assert_frame_equal(got, want, check_exact=False, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_chunk_pass_stores_failure_rows_from_its_own_forward(shortcut_run, tmp_path):
    """Images computed in a run get their failure row in the chunk pass, from the forward that
    made the prediction (one forward per image), stored per batch and equal to what a separate
    pass over the mistakes computes; the failure step after the merge then reuses every one of
    them and computes none, and a second pass recomputes nothing."""
    from auditors.audit.failure_reuse import failures_for
    from auditors.audit.incremental import audit_images
    from auditors.audit.plan import make_plan
    from auditors.models.engines import engine_for
    from auditors.models.loading import select_device
    from flows.audit import result_spec

    cfg, _, planted = shortcut_run
    cached = cfg.model_copy(update={
        "output": cfg.output.model_copy(update={"cache_dir": str(tmp_path / "cache")}),
        "run": cfg.run.model_copy(update={"cache": True}),
    })
    plan = make_plan(cached)
    spec = result_spec(plan.config, plan, tmp_path / "cache")
    entries = plan.index.entries
    engine = engine_for(plan.config.model, plan.config.cam, plan.target_layer, select_device(plan.config.cam.device))
    forwarded = []
    hook = engine.model.register_forward_pre_hook(lambda _m, args: forwarded.append(len(args[0])))
    try:
        first = audit_images(entries, plan.config, plan.classes, plan.target_layer, None, spec)
    finally:
        hook.remove()
    assert sum(forwarded) == len(entries), "one forward per image: the true-class maps come from the same pass"
    mistakes = first.rows.loc[first.rows["label"] != first.rows["pred"]]
    assert set(mistakes["path"]) >= planted
    assert sorted(first.failures["path"]) == sorted(mistakes["path"])
    assert first.stats["failure_rows_computed"] == len(mistakes)
    assert (tmp_path / "cache" / "failures.sqlite").is_file()

    # the old way: a pass over the mistaken images alone, batched together
    wrong = [e for e in entries if e.path in set(mistakes["path"])]
    alone = audit_chunk(wrong, plan.config, plan.classes, plan.target_layer, None, failures_wanted=True).failures
    by_path = lambda df: df.sort_values("path").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(by_path(first.failures), by_path(alone), check_exact=False, atol=1e-5, rtol=1e-4)

    # the failure step: every row is in the store (nothing computed), or given as this run's fresh rows
    rows, _, errors, counts = failures_for(plan.config, entries, first.rows, plan.classes, plan.target_layer, None, spec)
    assert errors == [] and (counts["failure_rows_reused"], counts["failure_rows_computed"]) == (len(mistakes), 0)
    pd.testing.assert_frame_equal(by_path(rows), by_path(alone), check_exact=False, atol=1e-5, rtol=1e-4)
    rows, _, _, counts = failures_for(plan.config, entries, first.rows, plan.classes, plan.target_layer, None,
                                      fresh=first.failures)
    assert (counts["failure_rows_reused"], counts["failure_rows_computed"]) == (0, 0) and len(rows) == len(mistakes)

    again = audit_images(entries, plan.config, plan.classes, plan.target_layer, None, spec)
    assert again.stats["rows_computed"] == 0 and again.stats["failure_rows_computed"] == 0 and again.failures is None
