"""performance.calibration: expected / maximum calibration error and the Brier score.

Confidence is the top-class probability; `n_bins` equal-width bins over [0, 1] with
right-closed intervals (lo, hi], the same binning as sklearn.calibration.calibration_curve
(strategy="uniform").

* ECE = sum_b (n_b / N) |acc_b - conf_b|   (Guo et al., 2017)
* MCE = max over non-empty bins of |acc_b - conf_b|
* Brier = (1/N) sum_i sum_k (p_ik - 1[y_i = k])^2, the original multiclass definition
  (range [0, 2]); equal to sklearn's brier_score_loss(..., scale_by_half=False). For a
  binary task it is twice the customary binary Brier score (sklearn's default).

Intervals, at a cost that does not grow with resamples x N (a held-out set of 10^6 rows
costs what one of 10^3 does, beyond one O(N) pass):

* ECE and MCE are functions of per-bin counts and sums. The samples fall into cells
  (bin x correct or not); a row bootstrap draws the cell counts as one multinomial, and
  given a cell's count M its sum of confidences is a sum of M draws from the cell's
  confidences: mean M mu, variance M sigma^2, drawn from the normal with those moments
  (bins are narrow, so sigma is small and the approximation is close). `weight_resamples`
  resamples cost resamples x cells. `intervals: row_bootstrap` resamples rows instead
  (weights B x N; the reference the tests hold the cell bootstrap to).
* Brier is a mean of per-sample values: Student's t interval from their variance.

Per-sample values are reduced chunk by chunk (`Context.probability_chunks`): the cell
statistics and the Brier score's moments, so memory does not grow with N either (a
streamed set of 10^7 rows never holds its probabilities whole).

Token classification: each word with a prediction (its first sub-token's probabilities)
is a sample, and the bootstrap resamples whole sentences (a sentence's words are not
independent), so its intervals always come from the weight bootstrap over sentences (the
cell draws assume independent samples); the binned statistics are weighted bin sums, so
a resample chunk costs a gather and three `np.add.reduceat` passes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from audit import stats
from audit.check import Check, Measurement, Metric, Params, chart, lower, table, text
from audit.context import Context
from audit.registry import register_check


class CalibrationParams(Params):
    n_bins: int = Field(15, ge=2, le=100, description="equal-width confidence bins")
    weight_resamples: int = Field(stats.WEIGHT_RESAMPLES, ge=200, le=20_000,
                                  description="bootstrap resamples of ECE and MCE")
    intervals: Literal["fast", "row_bootstrap"] = Field(
        "fast", description="fast: ECE/MCE resample cell counts, Brier from its variance (cost independent of "
                            "N); row_bootstrap: resample rows (cost resamples x N)")


def confidence_bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index per sample, intervals (lo, hi] as in sklearn's calibration_curve."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], confidence)


class BinnedCalibration:
    """Per-bin weighted sums, and ECE / MCE, under a batch of resampling weights (B, N).

    Samples are sorted by bin once; a resample is then one gather and `np.add.reduceat`
    over the non-empty bins (empty bins stay empty in every resample)."""

    def __init__(self, confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> None:
        bins = confidence_bins(confidence, n_bins)
        self.order = np.argsort(bins, kind="stable")
        sorted_bins = bins[self.order]
        self.starts = np.flatnonzero(np.r_[True, sorted_bins[1:] != sorted_bins[:-1]])
        self.bin_ids = sorted_bins[self.starts]  # the non-empty bins, ascending
        self.conf = np.asarray(confidence, dtype=np.float64)[self.order]
        self.correct = np.asarray(correct, dtype=np.float64)[self.order]
        self.n_bins = n_bins

    def sums(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(B, n_nonempty) weighted count, confidence sum and correct sum per non-empty bin."""
        ws = np.asarray(w, dtype=np.float64)[:, self.order]
        return (np.add.reduceat(ws, self.starts, axis=1),
                np.add.reduceat(ws * self.conf, self.starts, axis=1),
                np.add.reduceat(ws * self.correct, self.starts, axis=1))

    def ece(self, w: np.ndarray) -> np.ndarray:
        count, conf, corr = self.sums(w)
        return np.abs(corr - conf).sum(axis=1) / count.sum(axis=1)

    def mce(self, w: np.ndarray) -> np.ndarray:
        count, conf, corr = self.sums(w)
        gap = np.where(count > 0, np.abs(corr - conf) / np.where(count > 0, count, 1.0), -np.inf)
        return gap.max(axis=1)

    def cell_draws(self, n_resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(ECE, MCE) under `n_resamples` row-bootstrap resamples drawn as counts (see
        `CalibrationCells.draws`)."""
        return CalibrationCells.of(self.conf, self.correct, self.n_bins).draws(n_resamples, rng)


class CalibrationCells:
    """Sufficient statistics of ECE and MCE: per cell (confidence bin x correct or not) the
    count, sum and sum of squares of the confidences, accumulated chunk by chunk (memory
    independent of N)."""

    def __init__(self, n_bins: int) -> None:
        self.n_bins = n_bins
        self.count = np.zeros(2 * n_bins)
        self.s1 = np.zeros(2 * n_bins)
        self.s2 = np.zeros(2 * n_bins)

    @classmethod
    def of(cls, confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> CalibrationCells:
        return cls(n_bins).add(confidence, correct)

    def add(self, confidence: np.ndarray, correct: np.ndarray) -> CalibrationCells:
        conf = np.asarray(confidence, dtype=np.float64)
        cell = 2 * confidence_bins(conf, self.n_bins) + (np.asarray(correct) > 0.5)
        size = 2 * self.n_bins
        self.count += np.bincount(cell, minlength=size)
        self.s1 += np.bincount(cell, weights=conf, minlength=size)
        self.s2 += np.bincount(cell, weights=conf * conf, minlength=size)
        return self

    @property
    def n(self) -> int:
        return int(self.count.sum())

    def table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n_bins,) count, mean confidence and accuracy per bin (NaN for empty bins)."""
        count = self.count.reshape(-1, 2).sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            conf = np.where(count > 0, self.s1.reshape(-1, 2).sum(axis=1) / count, np.nan)
            acc = np.where(count > 0, self.count.reshape(-1, 2)[:, 1] / count, np.nan)
        return count, conf, acc

    def ece(self) -> float:
        count = self.count.reshape(-1, 2)
        gap = np.abs(count[:, 1] - self.s1.reshape(-1, 2).sum(axis=1))
        return float(gap.sum() / count.sum())

    def mce(self) -> float:
        count, conf, acc = self.table()
        return float(np.abs(acc - conf)[count > 0].max())

    def draws(self, n_resamples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(ECE, MCE) under `n_resamples` row-bootstrap resamples drawn as counts: the
        non-empty cells get multinomial counts M; each cell's confidence sum is
        M mu + sqrt(M) sigma Z (mu, sigma: the cell's mean and standard deviation of
        confidence, Z standard normal); its correct count is M or 0. Cost resamples x cells."""
        n = self.n
        keep = np.flatnonzero(self.count > 0)
        count, s1, s2 = self.count[keep], self.s1[keep], self.s2[keep]
        mu = s1 / count
        sigma = np.sqrt(np.maximum(s2 / count - mu ** 2, 0.0))
        is_correct = (keep % 2).astype(np.float64)
        bin_of = keep // 2
        bin_start = np.flatnonzero(np.r_[True, bin_of[1:] != bin_of[:-1]])
        m = rng.multinomial(n, count / n, size=n_resamples).astype(np.float64)   # (B, cells)
        conf = m * mu + np.sqrt(m) * sigma * rng.standard_normal(m.shape)
        per_bin_count = np.add.reduceat(m, bin_start, axis=1)
        gap = np.abs(np.add.reduceat(m * is_correct - conf, bin_start, axis=1))
        ece = gap.sum(axis=1) / n
        with np.errstate(divide="ignore", invalid="ignore"):
            mce = np.where(per_bin_count > 0, gap / np.where(per_bin_count > 0, per_bin_count, 1.0), -np.inf).max(1)
        return ece, mce


def brier_per_sample(proba: np.ndarray, y: np.ndarray) -> np.ndarray:
    if proba.shape[1] == 2:  # the same sum of two squares without NumPy's slow axis-1 reduction
        hit = (np.asarray(y) == 1).astype(proba.dtype)
        return (proba[:, 0] - (1.0 - hit)) ** 2 + (proba[:, 1] - hit) ** 2
    onehot = np.zeros_like(proba)
    onehot[np.arange(len(y)), y] = 1.0
    return ((proba - onehot) ** 2).sum(axis=1)


def top_class(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, predicted class) of each row: the largest probability and its first
    arg-max; for two classes the same values without NumPy's slow axis-1 reductions."""
    top = np.maximum(proba[:, 0], proba[:, 1]) if proba.shape[1] == 2 else proba.max(axis=1)
    return top, stats.row_argmax(proba)


@register_check
class Calibration(Check):
    name = "performance.calibration"
    version = 1
    requires = ("data",)
    kinds = ("image", "tabular", "text", "tokens")
    summary = "Whether predicted confidences match observed accuracy (reliability diagram, ECE, Brier)."
    area = "evaluation"
    metrics = {
        "ece": lower("Expected calibration error: bin-size-weighted mean gap between confidence and "
                     "accuracy over equal-width confidence bins.", bounds=(0.0, 1.0)),
        "mce": lower("Maximum calibration error: the largest confidence-accuracy gap of any non-empty bin.",
                     bounds=(0.0, 1.0)),
        "brier": lower("Multiclass Brier score: mean squared distance between the probability vector and "
                       "the one-hot label (range 0-2; twice the customary binary score).", bounds=(0.0, 2.0)),
    }
    Params = CalibrationParams

    def run(self, ctx: Context, params: CalibrationParams) -> Measurement:
        ds = ctx.dataset(params.data)
        y = np.asarray(ds.y)
        n = len(y)
        # Token classification: the samples are the words that have a prediction (their
        # first sub-token's probabilities); the bootstrap resamples whole sentences.
        unit: np.ndarray | None = None
        ok = None
        what = "samples"
        if ds.kind == "tokens":
            ok = (y >= 0) & (ds.word_starts >= 0)
            unit = np.nonzero(ok)[0]
            what = f"words ({n} sentences)"

        def rng(what: str) -> np.random.Generator:
            return ctx.rng(f"{self.name}:{params.data}:{what}")

        kw = {"confidence": params.confidence, "n_resamples": params.weight_resamples}
        if ds.kind == "tokens" or params.intervals == "row_bootstrap":
            # tokens: the bootstrap resamples whole sentences (a sentence's words are not
            # independent), so the cell draws, which assume independent samples, do not apply
            proba = ctx.probabilities(params.data)  # cached: one forward pass per sample
            if ok is not None:
                proba, y = proba[ok], y[ok]

            def expand(w: np.ndarray) -> np.ndarray:
                return w if ds.kind != "tokens" else w[:, unit]

            confidence = proba.max(axis=1)
            correct = (proba.argmax(axis=1) == y).astype(np.float64)
            binned = BinnedCalibration(confidence, correct, params.n_bins)
            brier = brier_per_sample(proba, y)
            metrics: dict[str, Metric] = {
                "ece": stats.bootstrap_weighted(lambda w: binned.ece(expand(w)), n, rng=rng("ece"),
                                                bounds=(0.0, 1.0), **kw),
                "mce": stats.bootstrap_weighted(lambda w: binned.mce(expand(w)), n, rng=rng("mce"),
                                                bounds=(0.0, 1.0), **kw),
                "brier": (stats.bootstrap_mean(brier, rng=rng("brier"), bounds=(0.0, 2.0), **kw)
                          if ds.kind != "tokens"
                          else stats.bootstrap_weighted(lambda w: (expand(w) @ brier) / expand(w).sum(axis=1), n,
                                                        rng=rng("brier"), bounds=(0.0, 2.0), **kw)),
            }
            cells = CalibrationCells.of(confidence, correct, params.n_bins)
        else:
            # per-sample values reduced chunk by chunk: memory bounded by a chunk, not N
            cells = CalibrationCells(params.n_bins)
            brier_moments = stats.Moments()
            for rows, proba in ctx.probability_chunks(params.data):
                yc = y[rows]
                confidence, predicted = top_class(proba)
                cells.add(confidence, predicted == yc)
                brier_moments.add(brier_per_sample(proba, yc))
            with np.errstate(divide="ignore", invalid="ignore"):
                ece_draws, mce_draws = cells.draws(params.weight_resamples, rng("cells"))
            metrics = {
                "ece": stats.from_draws(cells.ece(), ece_draws, params.confidence, n=n, bounds=(0.0, 1.0)),
                "mce": stats.from_draws(cells.mce(), mce_draws, params.confidence, n=n, bounds=(0.0, 1.0)),
                "brier": stats.mean_interval_of(brier_moments, confidence=params.confidence, bounds=(0.0, 2.0)),
            }

        count, bin_conf, bin_acc = cells.table()
        nonempty = count > 0
        edges = np.linspace(0.0, 1.0, params.n_bins + 1)
        rows = [[f"({edges[b]:.3f}, {edges[b + 1]:.3f}]", int(count[b]),
                 None if not nonempty[b] else float(bin_conf[b]),
                 None if not nonempty[b] else float(bin_acc[b]),
                 None if not nonempty[b] else float(bin_acc[b] - bin_conf[b])]
                for b in range(params.n_bins)]
        m = metrics
        mean_conf, accuracy = cells.s1.sum() / cells.n, cells.count[1::2].sum() / cells.n
        over = float(mean_conf - accuracy)
        summary = (f"ECE {m['ece'].value:.4f}, MCE {m['mce'].value:.4f}, Brier {m['brier'].value:.4f} "
                   f"on {cells.n} {what} of '{params.data}' ({params.n_bins} equal-width bins). "
                   f"Mean confidence {mean_conf:.3f} vs accuracy {accuracy:.3f}: the model is "
                   f"{'over' if over > 0 else 'under'}-confident by {abs(over):.3f} on average.")
        evidence = [
            text("Summary", summary),
            chart("reliability_diagram", "Reliability diagram",
                  {"bin_conf": bin_conf, "bin_acc": bin_acc, "bin_count": count},
                  caption="Accuracy per confidence bin against the diagonal of perfect calibration."),
            table("Confidence bins", ["bin", "count", "mean confidence", "accuracy", "accuracy - confidence"],
                  rows),
        ]
        return Measurement(metrics=metrics, evidence=evidence)
