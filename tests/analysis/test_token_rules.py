"""Which finding a token fails the gate on (gate.failures[].fails_on), from the real token rules."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from auditors.analysis.gate import decide, token_decisions, token_failures
from auditors.analysis.token_rules import entry_fails_on, verdict
from auditors.config.schema import GateConfig, TokensConfig

COMBOS = list(itertools.product([False, True], repeat=3))  # (associated, attended, dependent)


def _table() -> pd.DataFrame:
    """One token per combination of the three findings: tiny p-values fire, large ones do not."""
    return pd.DataFrame({
        "p_value": [1e-9 if a else 0.9 for a, _, _ in COMBOS],
        "lift": [3.0 if t else 1.0 for _, t, _ in COMBOS],
        "n_images": [30] * len(COMBOS),
        "effect_p_value": [1e-9 if d else 0.9 for _, _, d in COMBOS],
    })


@pytest.mark.parametrize("fail_on_association", [False, True])
def test_fails_on_names_exactly_the_findings_that_fail(fail_on_association):
    tc = TokensConfig(max_lift=2.0, max_p_value=0.01, min_images=3, fail_on_association=fail_on_association)
    d = token_decisions(_table(), tc)
    entries = [{"token": f"text:t{i}", "top_class": "horror", "lift": 1.0, "effect": None, "effect_ci": None,
                "flagged": bool(r.flagged), "associated": bool(r.associated), "attended": bool(r.attended),
                "dependent": bool(r.dependent), "fails_on": r.fails_on if isinstance(r.fails_on, str) else None}
               for i, r in enumerate(d.itertuples())]
    for (a, t, dep), e in zip(COMBOS, entries):
        assert (e["associated"], e["attended"], e["dependent"]) == (a, t, dep)  # the table built each combination
        expected = verdict(a, t, dep, fail_on_association).fails_on()
        assert expected == [k for k, on in (("dependence", dep), ("association", a and (t or fail_on_association))) if on]
        assert entry_fails_on(e) == expected and bool(expected) == e["flagged"]
        # An entry written before fails_on was recorded reads the same from its findings (when the
        # config's fail_on_association does not matter for it).
        if not (a and not t):
            assert entry_fails_on({**e, "fails_on": None}) == expected
    failures = decide({}, GateConfig(), ["text"], [], entries, {"success": True})["failures"]
    assert [f["fails_on"] for f in failures] == [entry_fails_on(e) for e in entries if e["flagged"]]
    assert all(f["rule"] == "token" and f["fails_on"] for f in failures)


def test_unflagged_token_fails_on_nothing():
    e = {"token": "text:x", "top_class": "a", "lift": 1.0, "effect": None, "effect_ci": None, "flagged": False,
         "associated": True, "dependent": True, "fails_on": "model dependence"}
    assert entry_fails_on(e) == [] and token_failures([e]) == []
