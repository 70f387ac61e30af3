"""What the report shows of the audit's validity machinery (issue 10): placebo exclusions next
to the effect they qualify, the normalised lift next to the raw lift with the rule that fired,
and a token's two findings coloured by the gate's own decision.

Summaries come from the real pipeline pieces: per-image tables aggregated and gated by
:func:`auditors.audit.finalize.summarise`, token entries decided by the gate's token rules.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from auditors.analysis.gate import token_status
from auditors.audit.finalize import summarise
from auditors.report import ReportInputs, render_report, write_report
from auditors.report.facts import token_limits
from auditors.report.tokens import build_tokens
from tests.browser import console_errors, open_file
from tests.report.builders import (
    RUN_ID, audit_config, decided, image_rows, make_errors, token_entry, validation_result,
)
from tests.report.html_text import visible_text

CF = {"counterfactual": {"enabled": True, "regions": ["text"], "method": "telea", "margin": 2},
      "stats": {"bootstrap": 400, "ci": 0.95, "seed": 0}}


def cf_rows(cls: str, n: int, no_placebo: dict[str, int], effect: float, norm: float, max_lift: float,
            text_area: float = 0.05) -> list[dict]:
    """``n`` audited images of ``cls`` with text counterfactual columns as interventions/runner.py
    writes them: the first images get no placebo (``no_placebo``: {reason: count}; every edit
    column None), the rest an effect spread around ``effect``. ``norm``/``max_lift``: the per-image
    normalised lift and the highest lift the layer could reach (measure/metrics reachable_mass)."""
    rows = image_rows(cls, n, text_mass=norm * max_lift * text_area, text_area=text_area, spread=0.05, degenerate=0)
    reasons = [k for k, c in no_placebo.items() for _ in range(c)]
    for i, row in enumerate(rows):
        row["text_max_lift"] = max_lift
        row["text_norm_lift"] = row["text_lift"] / max_lift
        if i < len(reasons):
            row.update({f"text_{e}_{c}": None for e in ("removed", "placebo") for c in ("pred", "conf", "flip", "mass")})
            row.update({"text_placebo_overlap": None, "text_effect": None, "text_placebo_status": reasons[i]})
            continue
        e = effect + 0.02 * np.sin(i)
        row.update({
            "text_removed_pred": cls, "text_removed_conf": 0.85 - e, "text_removed_flip": 0.0, "text_removed_mass": 0.01,
            "text_placebo_pred": cls, "text_placebo_conf": 0.85, "text_placebo_flip": 0.0, "text_placebo_mass": 0.01,
            "text_placebo_overlap": 0.0, "text_effect": e, "text_placebo_status": "ok",
        })
    return rows


def cf_run(**gate) -> tuple:
    """A counterfactual run aggregated and gated for real: 'horror' (20 images) has 14 without a
    placebo (the effect rests on 6), 'comedy' (20) has 2 without one, 'drama' (20) none.
    horror's normalised lift is 0.8 (raw lift 2.4 of a reachable 3.0); the others' 0.2."""
    cfg = audit_config(**CF, gate={"max_text_lift": 50.0, "max_text_effect": 0.05, "min_images_per_class": 5, **gate})
    images = pd.DataFrame(
        cf_rows("horror", 20, {"too_large": 4, "no_room": 10}, 0.02, 0.8, 3.0)
        + cf_rows("comedy", 20, {"no_room": 2}, 0.01, 0.2, 3.0)
        + cf_rows("drama", 20, {}, 0.0, 0.2, 3.0)
    )
    summary = summarise(cfg, images, make_errors(0), ["comedy", "drama", "horror"], "label", validation_result(),
                        run_id=RUN_ID, target_layer="layer4", device="cpu")
    return summary, images


def test_placebo_exclusions_stated_next_to_the_effect():
    summary, images = cf_run()
    cf = summary.counterfactual
    assert cf.n_no_placebo == {"text": 16}
    assert cf.get("no_placebo_reasons") == {"text": {"no_room": 12, "too_large": 4}}
    assert summary.classes["horror"].get("n_text_edited") == 6 and summary.classes["horror"].get("n_text_no_placebo") == 14
    html = render_report(summary, images, [], validation_result(), make_errors(0))
    text = " ".join(visible_text(html).split())
    # The overall sentence, with the reasons, next to the effect table.
    assert ("Effect measured on 44 of 60 images with the text; 16 excluded (27%): no placebo site that does not "
            "overlap the region (tolerance 0%) (12 no free spot large enough; 4 region larger than the free image content).") in text
    assert "The effect rests on few images" not in text  # 16 of 60 is not most of them
    # Per class: horror's 14 excluded are in its row, under "of 20".
    horror = re.search(r'<tr class="cf-[a-z]+">\s*<th scope="row" class="class-name" data-sort="horror">.*?</tr>', html, re.S).group(0)
    assert ">6<span class=\"sub\">of 20</span><span class=\"sub excluded\">14 no placebo</span>" in horror


def test_most_images_excluded_says_the_effect_rests_on_few():
    cfg = audit_config(**CF, gate={"min_images_per_class": 5})
    images = pd.DataFrame(cf_rows("horror", 12, {"no_room": 9}, 0.1, 0.5, 2.0) + cf_rows("drama", 12, {"overlap": 1}, 0.0, 0.5, 2.0))
    summary = summarise(cfg, images, make_errors(0), ["drama", "horror"], "label", validation_result(),
                        run_id=RUN_ID, target_layer="layer4", device="cpu")
    text = " ".join(visible_text(render_report(summary, images, [], {}, None)).split())
    # 10 of 24 is under half: not "few" (9 of horror's 12 are, and its row says so: the sentence is about the run).
    assert "Effect measured on 14 of 24 images with the text; 10 excluded (42%)" in text
    assert "rests on few images" not in text and "9 no placebo" in text
    images = pd.DataFrame(cf_rows("horror", 12, {"no_room": 9}, 0.1, 0.5, 2.0) + cf_rows("drama", 12, {"overlap": 5}, 0.0, 0.5, 2.0))
    summary = summarise(cfg, images, make_errors(0), ["drama", "horror"], "label", validation_result(),
                        run_id=RUN_ID, target_layer="layer4", device="cpu")
    text = " ".join(visible_text(render_report(summary, images, [], {}, None)).split())
    assert ("The effect rests on few images. Effect measured on 10 of 24 images with the text; 14 excluded (58%): "
            "no placebo site that does not overlap the region") in text


def test_norm_lift_beside_raw_lift_and_the_norm_rule_marks_its_cell():
    summary, images = cf_run(max_norm_lift={"text": 0.5})
    horror = summary.classes["horror"]
    assert horror.get("text_norm_lift") == pytest.approx(0.8, rel=0.02) and horror.get("text_max_lift") == pytest.approx(3.0)
    fired = [(f.class_, f.rule) for f in summary.gate.failures]
    assert fired == [("horror", "max_text_norm_lift")]  # raw lift 2.4 is far below its limit of 50
    html = render_report(summary, images, [], validation_result(), make_errors(0))
    row = re.search(r'<tr class="status-flagged[^"]*">.*?</tr>', html, re.S).group(0)
    cells = re.findall(r"<td class=\"([^\"]*)\"[^>]*>(.*?)</td>", row, re.S)
    norm = [c for c in cells if "max lift 3.0" in c[1]]
    raw = [c for c in cells if c[1].startswith("2.4")]
    assert len(norm) == 1 and "fired" in norm[0][0] and "\u2691 text norm lift rule" in norm[0][1]
    assert norm[0][1].startswith("0.80")
    assert len(raw) == 1 and "fired" not in raw[0][0]  # the raw lift cell is shown, not marked
    text = " ".join(visible_text(html).split())
    assert "Norm. lift = lift \u00f7 max lift , the highest lift a heatmap at the target layer's resolution (layer layer4 )" in text
    assert "Gate limit ( gate.max_norm_lift ): Text 0.5." in text


def _token_run(fail_on_association: bool):
    """Two tokens decided by the real token rules: 'BADGE' is balanced across classes but the model
    needs it (dependent, not associated); 'STUDIO' is tied to one class but neither attended
    (lift 1.1) nor needed (associated, not dependent)."""
    tokens = decided([
        token_entry("text:badge", 40, "drama", 0.36, 0.62, 1.3, 0.21, [0.15, 0.27], (0.4, 0.02),
                    example_text="BADGE", risk=20.0, effect_p_value=1e-6),
        token_entry("text:studio", 30, "horror", 0.9, 1e-9, 1.1, 0.0, [-0.02, 0.02], (0.0, 0.0),
                    example_text="STUDIO", risk=10.0, effect_p_value=0.6),
    ], {"fail_on_association": fail_on_association})
    cfg = audit_config(**CF, tokens={"enabled": True, "min_images": 3, "max_lift": 2.0, "max_effect": 0.05,
                                     "max_p_value": 0.01, "fail_on_association": fail_on_association},
                       gate={"min_images_per_class": 5})
    images = pd.DataFrame(cf_rows("horror", 12, {}, 0.0, 0.3, 2.0) + cf_rows("drama", 12, {}, 0.0, 0.3, 2.0))
    summary = summarise(cfg, images, make_errors(0), ["drama", "horror"], "label", validation_result(),
                        run_id=RUN_ID, target_layer="layer4", device="cpu", tokens=tokens)
    return summary, images


def test_dependent_token_fails_and_associated_token_is_reported():
    summary, images = _token_run(fail_on_association=False)
    badge, studio = summary.tokens
    assert (badge.findings, badge.flagged, badge.fails_on) == ("dependent", True, "model dependence")
    assert (studio.findings, studio.flagged, studio.fails_on) == ("associated", False, None)
    assert [(f.rule, f.token) for f in summary.gate.failures] == [("token", "text:badge")]
    assert summary.gate.passed is False
    # The gate's status words and the report's row agree for each token.
    limits = token_limits(summary)
    assert token_status(badge.to_dict(), limits) == ("flagged", "model dependence")
    assert token_status(studio.to_dict(), limits) == ("reported", "data association, not attended")
    rows = {r["key"]: r for r in build_tokens(summary)["rows"]}
    assert rows["text:badge"]["status"] == "flagged" and rows["text:studio"]["status"] == "reported"
    assert [(c["key"], c["fails"]) for c in rows["text:badge"]["finding_chips"]] == [("dependent", True)]
    assert [(c["key"], c["fails"]) for c in rows["text:studio"]["finding_chips"]] == [("associated", False)]
    html = render_report(summary, images, [], validation_result(), make_errors(0))
    row = lambda key: re.search(rf'<tr class="token-row status-(\w+)" data-token="{key}">(.*?)</tr>', html, re.S)  # noqa: E731
    b, s = row("text:badge"), row("text:studio")
    assert b.group(1) == "flagged" and "\u2691 fails gate" in b.group(2) and 'class="finding finding-dependent fails"' in b.group(2)
    assert 'data-findings="dependent"' in b.group(2) and ">dependent</span>" in b.group(2)  # under the effect
    assert s.group(1) == "reported" and ">reported</span>" in s.group(2) and 'class="finding finding-associated"' in s.group(2)
    assert 'data-findings="associated"' in s.group(2) and ">associated</span>" in s.group(2)  # under the q-value


def test_association_fails_when_the_config_asks():
    summary, _ = _token_run(fail_on_association=True)
    badge, studio = summary.tokens
    assert studio.flagged and studio.fails_on == "data association (tokens.fail_on_association)"
    assert sorted(f.token for f in summary.gate.failures) == ["text:badge", "text:studio"]
    rows = {r["key"]: r for r in build_tokens(summary)["rows"]}
    assert rows["text:studio"]["status"] == "flagged"
    assert [(c["key"], c["fails"]) for c in rows["text:studio"]["finding_chips"]] == [("associated", True)]


def test_report_inputs_dataclass_is_the_same_report(tmp_path):
    summary, images = cf_run()
    inputs = ReportInputs(summary, images, [], validation_result(), make_errors(0))
    assert render_report(inputs) == render_report(summary, images, [], validation_result(), make_errors(0))
    out = write_report(tmp_path, inputs)
    assert out.read_text(encoding="utf-8") == render_report(inputs)
    with pytest.raises(TypeError, match="not both"):
        render_report(inputs, images)


def test_validity_parts_render_in_browser(driver, tmp_path):
    """The new parts in headless Chromium: visible, no console errors, the token table still fits."""
    summary, images = cf_run(max_norm_lift={"text": 0.5})
    path = write_report(tmp_path / "cf", summary, images, [], validation_result(), make_errors(0))
    open_file(driver, path)
    assert console_errors(driver) == []
    note = driver.find_element("id", "cf-exclusion-text")
    assert note.is_displayed() and "16 excluded" in note.text and note.get_attribute("data-excluded") == "16"
    fired = driver.find_elements("css selector", "#class-table td.fired")
    assert len(fired) == 1 and fired[0].is_displayed() and "text norm lift rule" in fired[0].text
    assert driver.find_element("id", "norm-lift-note").is_displayed()

    tsummary, timages = _token_run(fail_on_association=False)
    path = write_report(tmp_path / "tok", tsummary, timages, [], validation_result(), make_errors(0))
    open_file(driver, path)
    assert console_errors(driver) == []
    chips = driver.find_elements("css selector", "#token-table .finding")
    assert [(c.text, "fails" in c.get_attribute("class")) for c in chips] == [("dependence", True), ("association", False)]
    assert all(c.is_displayed() for c in chips)
    tags = [t.text for t in driver.find_elements("css selector", "#token-table td.token-status .tag")]
    assert tags == ["\u2691 fails gate", "reported"]
    assert driver.execute_script(
        "const t = document.getElementById('token-table'); return t.scrollWidth <= t.parentElement.clientWidth;")
