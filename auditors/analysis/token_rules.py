"""Which of a token's two findings fired, and which of them fail the gate (issue 10).

A token carries two findings that are kept apart: *data association* (its class mix differs
from the dataset's: omnibus test, BH q-value across tokens) and *model dependence* (removing it
costs confidence beyond a matched placebo: t-test against ``tokens.max_effect``, BH across the
tested tokens). Dependence always fails the gate; association fails only when the token is also
over-attended or the config says so (``tokens.fail_on_association``).

:func:`verdict` is the one place that turns those findings into the words and the pass/fail the
gate records per token and the report colours by, so the report never re-derives a token's
status from thresholds of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from auditors.analysis.stats import finite, interval

__all__ = ["FINDINGS", "FAILS_ON", "TokenVerdict", "findings_name", "verdict", "entry_verdict", "entry_fails_on"]

#: summary.json ``tokens[].findings``: which findings fired.
FINDINGS = ("none", "associated", "dependent", "both")

#: summary.json ``gate.failures[].fails_on`` of a token failure: the finding(s) that failed, and
#: the words :meth:`TokenVerdict.failing` uses for each (``tokens[].fails_on``).
FAILS_ON = {"dependence": "model dependence", "association": "data association"}


def findings_name(associated: bool, dependent: bool) -> str:
    """"both", "associated", "dependent" or "none"."""
    return FINDINGS[int(bool(associated)) + 2 * int(bool(dependent))]


@dataclass(frozen=True)
class TokenVerdict:
    """One token's findings and the gate's decision on them.

    ``association_fails``: the association finding fails the gate (attended, or
    ``fail_on_association``); ``dependence_fails``: the dependence finding fails it (always,
    when it fired). ``fails`` is their union: the gate's ``flagged``.
    """

    associated: bool
    attended: bool
    dependent: bool
    association_fails: bool
    dependence_fails: bool

    @property
    def findings(self) -> str:
        return findings_name(self.associated, self.dependent)

    @property
    def fails(self) -> bool:
        return self.association_fails or self.dependence_fails

    def fails_on(self) -> list[str]:
        """The failing findings as keys of :data:`FAILS_ON`: ["dependence"], ["association"], both or []."""
        return [k for k, on in (("dependence", self.dependence_fails), ("association", self.association_fails)) if on]

    def failing(self) -> str:
        """The findings that fail the gate, in words ("" when none): "model dependence",
        "data association + attention", "data association (tokens.fail_on_association)"."""
        parts = []
        if self.dependence_fails:
            parts.append(FAILS_ON["dependence"])
        if self.association_fails:
            parts.append(FAILS_ON["association"] + (" + attention" if self.attended else " (tokens.fail_on_association)"))
        return "; ".join(parts)


def verdict(associated: bool, attended: bool, dependent: bool, fail_on_association: bool) -> TokenVerdict:
    """The gate's token rule: dependence fails on its own; association fails with attention or
    with ``fail_on_association``."""
    return TokenVerdict(
        associated=bool(associated), attended=bool(attended), dependent=bool(dependent),
        association_fails=bool(associated and (attended or fail_on_association)),
        dependence_fails=bool(dependent),
    )


def entry_verdict(t: Mapping[str, Any], limits: Mapping[str, Any]) -> TokenVerdict:
    """The verdict of a summary.json token entry.

    Entries written since issue 10 carry ``associated`` / ``attended`` / ``dependent``; older
    ones are read with the limits (``limits``: {"lift", "effect", "p_value",
    "fail_on_association"} as in ``tokens.*``): associated when p < max_p_value, dependent when
    the effect interval's lower bound is above max_effect. Either way, ``fails`` is the gate's
    recorded ``flagged`` where the entry has one, so the report never disagrees with the gate.
    """
    lift, p = finite(t.get("lift")), finite(t.get("p_value"))
    ci = interval(t.get("effect_ci"))
    attended = t.get("attended")
    if attended is None:
        attended = lift is not None and limits.get("lift") is not None and lift > limits["lift"]
    associated = t.get("associated")
    if associated is None:
        associated = p is not None and limits.get("p_value") is not None and p < limits["p_value"]
    dependent = t.get("dependent")
    if dependent is None:
        dependent = ci is not None and limits.get("effect") is not None and ci[0] > limits["effect"]
    v = verdict(associated, attended, dependent, bool(limits.get("fail_on_association")))
    flagged = t.get("flagged")
    if flagged is None or bool(flagged) == v.fails:
        return v
    # An entry whose recorded decision differs from the rule read back (an older rule): the gate's
    # decision stands; which finding it failed on is what fired.
    dep = bool(flagged) and v.dependent
    return TokenVerdict(v.associated, v.attended, v.dependent,
                        association_fails=bool(flagged) and (v.associated or not dep), dependence_fails=dep)


def entry_fails_on(t: Mapping[str, Any]) -> list[str]:
    """Which finding(s) of a flagged token entry fail the gate (keys of :data:`FAILS_ON`); [] when
    it is not flagged.

    The token stage records them in words (``fails_on``, decided with the run's
    ``tokens.fail_on_association``), which is read first; entries without it are read back with
    :func:`entry_verdict`, whose reconstruction keeps the recorded ``flagged``."""
    if not t.get("flagged"):
        return []
    words = t.get("fails_on")
    if isinstance(words, str):
        keys = [k for k, phrase in FAILS_ON.items() if phrase in words]
        if keys:
            return keys
    return entry_verdict(t, {}).fails_on()
