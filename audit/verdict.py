"""Judging metrics against thresholds: the only place a threshold is evaluated.

A threshold is
  `pass`          when the whole confidence interval is on the right side of the limit,
  `fail`          when the point estimate is on the wrong side,
  `inconclusive`  otherwise: the interval straddles the limit (not enough evidence).
A metric without an interval is judged on its value alone; an undefined one fails.

A check's status follows from its thresholds: `fail` when a must-level threshold fails;
`warn` when a should-level threshold fails, a threshold is inconclusive, or a sanity flag
was raised; `pass` when every threshold passes; `info` when it has no threshold (reported,
not judged). Each reason for a warn is kept, by kind, so that a should-level failure is
never shown as "inconclusive".

Sample size: for a proportion, a perfect result on n samples has an exact lower bound of
((1 - confidence) / 2) ** (1 / n); below the n at which even that passes, the threshold
is inconclusive and says how many samples it needs.

Family-wise control (`familywise: holm`): every threshold with an interval is a one-sided
test (its p-value is the one its interval inverts); Holm's step-down procedure at level
1 - confidence over all of them decides which passes stand, so the chance that any pass
in the audit is wrong is at most 1 - confidence. A pass that does not survive becomes
inconclusive. Holm never turns a non-pass into a pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from audit.check import Metric, MetricSpec
from audit.formatting import format_number
from audit.results import CheckResult, ThresholdResult
from audit.spec import Threshold
from audit.stats import min_n_to_pass, p_wrong_side

REASON_KINDS = ("must_fail", "should_fail", "inconclusive", "small_sample", "holm", "flag")


@dataclass(frozen=True)
class Judged:
    status: str                   # pass | fail | inconclusive
    reason: dict[str, str] | None  # why it is not a plain pass, by kind


def judge(metric: Metric | None, threshold: Threshold, spec: MetricSpec | None = None,
          confidence: float | None = None, name: str = "metric") -> str:
    """The status of one threshold: pass, fail or inconclusive."""
    return judge_threshold(name, metric, threshold, spec, confidence).status


def judge_threshold(name: str, metric: Metric | None, t: Threshold, spec: MetricSpec | None = None,
                    confidence: float | None = None) -> Judged:
    level = "should_fail" if t.level == "should" else "must_fail"
    if metric is None:
        return Judged("fail", {"kind": level, "text": "the check did not produce this metric"})
    if metric.value is None or not math.isfinite(metric.value):
        return Judged("fail", {"kind": level, "text": "the metric is undefined on this data"})
    value, limit = metric.value, t.limit
    lo, hi = metric.ci if metric.ci is not None else (value, value)
    if t.op == "min":
        status = "pass" if lo >= limit else ("fail" if value < limit else "inconclusive")
    else:
        status = "pass" if hi <= limit else ("fail" if value > limit else "inconclusive")
    if status == "fail":
        return Judged("fail", {"kind": level, "text": describe(name, metric, t, "fail")})
    if (spec is not None and spec.proportion and metric.n is not None and confidence is not None):
        need = min_n_to_pass(t.op, limit, confidence)
        if need is None or metric.n < need:
            best = ((1 - confidence) / 2) ** (1 / metric.n) if metric.n else 0.0
            bound = (f"even {metric.n}/{metric.n} gives an exact lower bound of {format_number(best)}"
                     if t.op == "min" else
                     f"even 0/{metric.n} gives an exact upper bound of {format_number(1 - best)}")
            more = f"at least {need:,} samples are needed" if need else "no sample size is enough"
            return Judged("inconclusive", {"kind": "small_sample", "text": (
                f"{name} on {metric.n} samples cannot pass {_rel(t)} {format_number(limit)} at "
                f"{confidence:.0%} confidence: {bound}; {more}")})
    if status == "inconclusive":
        return Judged("inconclusive", {"kind": "inconclusive",
                                       "text": describe(name, metric, t, "inconclusive")})
    return Judged("pass", None)


def _rel(t: Threshold) -> str:
    return ">=" if t.op == "min" else "<="


def describe(name: str, metric: Metric | None, t: Threshold, status: str) -> str:
    """One line: 'accuracy 0.970 [0.953, 0.984] >= 0.95 (should)'."""
    if metric is None:
        return f"{name} missing"
    ci = f" [{format_number(metric.ci[0])}, {format_number(metric.ci[1])}]" if metric.ci else ""
    sym = _rel(t)
    if status == "pass":
        rel = sym
    elif status == "inconclusive":
        rel = f"{sym}? (interval crosses)"
    else:
        rel = "<" if t.op == "min" else ">"
    level = " (should)" if t.level == "should" else ""
    return f"{name} {format_number(metric.value)}{ci} {rel} {format_number(t.limit)}{level}"


def check_status(thresholds: list[ThresholdResult] | tuple[ThresholdResult, ...],
                 flags: list[dict[str, str]] | tuple[dict[str, str], ...]) -> tuple[str, list[dict[str, str]]]:
    """(status, reasons) of a check from its judged thresholds and sanity flags."""
    reasons = [t.reason for t in thresholds if t.reason]
    reasons += [{"kind": "flag", "text": f"{f['flag']}: {f['detail']}"} for f in flags]
    if not thresholds:
        return "info", reasons
    if any(t.status == "fail" and t.level == "must" for t in thresholds):
        return "fail", reasons
    if reasons:
        return "warn", reasons
    return "pass", reasons


def threshold_result(name: str, metric: Metric | None, t: Threshold, spec: MetricSpec | None,
                     confidence: float) -> ThresholdResult:
    judged = judge_threshold(name, metric, t, spec, confidence)
    p = None if metric is None or metric.ci is None else p_wrong_side(metric, t.op, t.limit)
    return ThresholdResult(name, t.op, t.limit, t.level, judged.status,
                           None if metric is None else metric.value,
                           None if metric is None else metric.ci, reason=judged.reason, p_value=p)


def apply_holm(checks: list[CheckResult], alpha: float) -> list[CheckResult]:
    """Holm's step-down over every threshold with a p-value; passes that do not survive
    become inconclusive (reason `holm`) and their checks are re-judged."""
    from statsmodels.stats.multitest import multipletests

    family = [(i, j) for i, c in enumerate(checks) for j, t in enumerate(c.thresholds) if t.p_value is not None]
    if not family:
        return checks
    pvals = [checks[i].thresholds[j].p_value for i, j in family]
    reject, adjusted, _, _ = multipletests(pvals, alpha=alpha, method="holm")
    out = list(checks)
    m = len(family)
    for (i, j), ok, adj in zip(family, reject, adjusted):
        t = out[i].thresholds[j]
        t = replace(t, p_holm=float(adj))
        if t.status == "pass" and not ok:
            t = replace(t, status="inconclusive", reason={"kind": "holm", "text": (
                f"{t.metric} passes alone (one-sided p = {format_number(t.p_value)}) but not under Holm's "
                f"family-wise rule over {m} thresholds (adjusted p = {format_number(adj)} > {alpha:g})")})
        ths = list(out[i].thresholds)
        ths[j] = t
        out[i] = replace(out[i], thresholds=tuple(ths))
    for i in {i for i, _ in family}:
        c = out[i]
        if c.status in ("error", "skipped"):
            continue
        status, reasons = check_status(c.thresholds, c.flags)
        out[i] = replace(c, status=status, reasons=tuple(reasons), message=summarize(c.thresholds, c.flags, c.metrics))
    return out


def summarize(thresholds: Any, flags: Any, metrics: dict[str, dict[str, Any]]) -> str:
    """The one-line message of a judged check."""
    parts = []
    for t in thresholds:
        ci = f" [{format_number(t.ci[0])}, {format_number(t.ci[1])}]" if t.ci else ""
        if t.value is None:
            parts.append(f"{t.metric} missing")
            continue
        if t.status == "pass":
            rel = _rel_op(t.op)
        elif t.status == "inconclusive":
            rel = f"{_rel_op(t.op)}? ({(t.reason or {}).get('kind', 'inconclusive').replace('_', ' ')})"
        else:
            rel = "<" if t.op == "min" else ">"
        level = " (should)" if t.level == "should" else ""
        parts.append(f"{t.metric} {format_number(t.value)}{ci} {rel} {format_number(t.limit)}{level}")
    if not thresholds:
        head = next(iter(metrics.items()), None)
        parts.append("no thresholds (reported, not judged)" + (
            f"; {head[0]} {format_number(head[1].get('value'))}" if head else ""))
    parts += [f"flag: {f['flag']}" for f in flags]
    return "; ".join(parts)


def _rel_op(op: str) -> str:
    return ">=" if op == "min" else "<="
