"""`shift.drift`: label-free drift between a reference dataset and a current one.

The question a team monitoring a deployed model asks each week: do this week's inputs
(unlabelled) still look like the data the model was validated on? Following "Failing
Loudly" (Rabanser, Günnemann and Lipton, NeurIPS 2019), the check compares the two
samples through the model's own representations, which the context already holds:

* BBSD (black-box shift detection): the softmax outputs, one two-sample
  Kolmogorov-Smirnov test per class probability (one column for a binary model), with a
  Bonferroni correction over the columns. The paper's best single detector.
* the penultimate-layer embeddings (`Context.embeddings`: the input of the output layer,
  taken by a hook during the same cached pass as the logits): the same per-dimension KS
  with Bonferroni, and a multivariate test, the unbiased MMD^2 with a Gaussian kernel
  (bandwidth: median heuristic on the pooled, standardized sample) and a permutation
  p-value, (1 + #{permuted >= observed}) / (1 + permutations).
* tabular data: one test per input feature (KS for a continuous column, chi-square of
  homogeneity for a categorical one: a one-hot group or a 0/1 column), Bonferroni over
  the features, and the population stability index binned as Evidently bins it
  (Sturges bins over both samples for a numerical column with more than 20 distinct
  reference values, categories otherwise; empty bins get 0.0001).

`drift_pvalue` is the Bonferroni combination of those tests (the smallest p-value times
the number of tests, capped at 1), so that under no drift it is below alpha at most
alpha of the time. `domain_classifier_auc` is the ROC AUC of a logistic regression
trained to tell the two samples apart (embeddings and softmax outputs, and the raw
features of tabular data; cross-fitted over `folds`, so every score is out-of-fold),
with a stratified weight-bootstrap CI: 0.5 is indistinguishable, 1.0 fully separable.
`drifted_feature_share` is the share of features whose Bonferroni-adjusted test
rejects at alpha = 1 - confidence: input features for tabular data, penultimate-layer
dimensions otherwise. The features are all the features there are, not a sample, so it
carries no interval.

When the current dataset holds the same rows as the reference (the reference itself,
or a transform of it such as `{from: test, transform: gaussian_noise}`), two-sample
tests would compare each row with itself; the rows are then split at random into two
disjoint halves, the reference half taken from the reference and the other half from
the current data. Labels are never used. The MMD and the domain classifier use at most
`n_max` rows per side (a seeded subset); the KS tests use every row.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from audit.check import Check, Measurement, Metric, Params, chart, higher, lower, table, text
from audit.context import Context
from audit.errors import DataError, SkipCheck, did_you_mean
from audit.registry import register_check
from audit.stats import from_draws, resample_weights

PSI_LEVEL = 0.1  # Evidently's default PSI drift threshold
MAX_ROWS, MAX_BARS = 60, 40  # evidence size: table rows, bars of a chart
FEATURE_ROWS = 1_000_000  # per side: the per-feature tests read every row's features


class DriftParams(Params):
    current: str | None = Field(None, description="the dataset compared with `data` (the reference): "
                                                  "any data role or domain of the spec")
    permutations: int = Field(500, ge=20, le=100_000, description="permutations of the MMD test")
    n_max: int = Field(1000, ge=20, le=100_000,
                       description="rows per side for the MMD and the domain classifier (seeded subset)")
    folds: int = Field(5, ge=2, le=20, description="cross-fitting folds of the domain classifier")


# ---- statistics, on arrays ---------------------------------------------------------------
@dataclass
class Side:
    """What the tests see of one sample: softmax outputs, embeddings, raw tabular features."""

    proba: np.ndarray
    emb: np.ndarray | None = None
    x: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> Side:
        return Side(self.proba[idx], None if self.emb is None else self.emb[idx],
                    None if self.x is None else self.x[idx])

    def __len__(self) -> int:
        return int(self.proba.shape[0])


@dataclass
class TestResult:
    name: str
    on: str
    dims: int
    statistic: float
    pvalue: float  # already corrected within the test (Bonferroni over its columns)
    detail: str = ""
    per_dim: dict[str, np.ndarray] = field(default_factory=dict)


def bonferroni(p: np.ndarray) -> float:
    p = np.asarray(p, dtype=np.float64)
    return float(min(1.0, p.min() * p.size)) if p.size else 1.0


def ks_columns(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided two-sample KS statistic and p-value per column (scipy's ks_2samp)."""
    from scipy.stats import ks_2samp

    if a.shape[1] == 0:
        return np.zeros(0), np.ones(0)
    with warnings.catch_warnings():
        # ties (saturated softmax outputs, dead ReLUs) make scipy fall back from the exact
        # distribution to the asymptotic one, which it announces as a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        res = ks_2samp(a, b, axis=0)
    return np.atleast_1d(res.statistic).astype(float), np.atleast_1d(res.pvalue).astype(float)


def varying(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Columns not constant over the pooled sample (a dead unit tests nothing)."""
    z = np.concatenate([a, b])
    return np.flatnonzero(z.max(axis=0) > z.min(axis=0))


def bbsd_columns(proba: np.ndarray) -> np.ndarray:
    """Softmax columns to test: one for a binary model (the two are redundant), else all."""
    return proba[:, 1:] if proba.shape[1] == 2 else proba


def mmd_permutation_test(a: np.ndarray, b: np.ndarray, permutations: int, rng: np.random.Generator,
                         gamma: float | None = None) -> tuple[float, float]:
    """Unbiased MMD^2 between samples `a` and `b` with the kernel exp(-gamma |x - y|^2), and
    its permutation p-value. Default gamma: 1 / median of the pooled pairwise squared
    distances after standardizing every column on the pooled sample."""
    z = np.concatenate([a, b]).astype(np.float64)
    m, n = len(a), len(b)
    if gamma is None:
        sd = z.std(axis=0)
        z = (z - z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    sq = (z * z).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    if gamma is None:
        off = d2[np.triu_indices(m + n, k=1)]
        med = float(np.median(off)) if off.size else 0.0
        gamma = 1.0 / med if med > 0 else 1.0
    k = np.exp(-gamma * d2)
    np.fill_diagonal(k, 0.0)

    def stat(first: np.ndarray) -> np.ndarray:
        """MMD^2_u for (P, m+n) indicators of the first sample."""
        second = 1.0 - first
        kf = first @ k
        sxx = (kf * first).sum(axis=1)
        sxy = (kf * second).sum(axis=1)
        syy = ((second @ k) * second).sum(axis=1)
        return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2.0 * sxy / (m * n)

    observed = float(stat(np.r_[np.ones(m), np.zeros(n)][None])[0])
    exceed, done = 0, 0
    chunk = max(1, min(permutations, 2_000_000 // (m + n)))
    while done < permutations:
        b_ = min(chunk, permutations - done)
        order = rng.permuted(np.tile(np.arange(m + n), (b_, 1)), axis=1)
        first = (order < m).astype(np.float64)
        exceed += int((stat(first) >= observed - 1e-12).sum())
        done += b_
    return observed, (1 + exceed) / (1 + permutations)


def psi(ref: np.ndarray, cur: np.ndarray, categorical: bool) -> float:
    """Population stability index, binned as Evidently's `psi` stat test: Sturges bins over
    both samples for a numerical column with more than 20 distinct reference values,
    one bin per category otherwise; an empty bin gets 0.0001 (or a millionth of the
    smallest non-empty share when that is below 0.0001)."""
    ref, cur = np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)
    if not categorical and np.unique(ref).size > 20:
        edges = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        r = np.histogram(ref, edges)[0] / len(ref)
        c = np.histogram(cur, edges)[0] / len(cur)
    else:
        keys = np.unique(np.concatenate([ref, cur]))
        r = np.array([(ref == k).sum() for k in keys]) / len(ref)
        c = np.array([(cur == k).sum() for k in keys]) / len(cur)
    r, c = _fill_zeros(r), _fill_zeros(c)
    return float(np.sum((r - c) * np.log(r / c)))


def _fill_zeros(p: np.ndarray) -> np.ndarray:
    p = p.astype(np.float64).copy()
    nz = p[p > 0]
    if nz.size and (p == 0).any():
        low = nz.min()
        p[p == 0] = low / 1e6 if low <= 1e-4 else 1e-4
    return p


def chi2_homogeneity(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float]:
    """Chi-square test that two samples of a categorical variable share its distribution."""
    from scipy.stats import chi2_contingency

    keys = np.unique(np.concatenate([ref, cur]))
    if keys.size < 2:
        return 0.0, 1.0
    tab = np.array([[(ref == k).sum() for k in keys], [(cur == k).sum() for k in keys]])
    res = chi2_contingency(tab, correction=False)
    return float(res.statistic), float(res.pvalue)


@dataclass(frozen=True)
class Feature:
    name: str
    columns: tuple[int, ...]
    categorical: bool

    def values(self, x: np.ndarray) -> np.ndarray:
        if len(self.columns) == 1:
            return x[:, self.columns[0]]
        block = x[:, list(self.columns)]
        # a one-hot group: the index of the hot column, -1 when none is set
        return np.where(block.max(axis=1) > 0, block.argmax(axis=1), -1).astype(np.float64)


def tabular_features(names: list[str] | None, groups: dict[str, list[int]] | None,
                     continuous: np.ndarray | None, width: int) -> list[Feature]:
    """The dataset's original features: one-hot groups and 0/1 columns are categorical."""
    if groups:
        items = [(name, tuple(cols)) for name, cols in groups.items()]
    else:
        items = [((names[j] if names and j < len(names) else f"x{j}"), (j,)) for j in range(width)]
    out = []
    for name, cols in items:
        categorical = len(cols) > 1 or (continuous is not None and not bool(continuous[cols[0]]))
        out.append(Feature(str(name), cols, categorical))
    return out


def feature_tests(ref: np.ndarray, cur: np.ndarray, features: list[Feature]) -> list[dict[str, Any]]:
    """One row per feature: test, statistic, p-value, PSI and the size of the shift."""
    rows = []
    for f in features:
        a, b = f.values(ref), f.values(cur)
        if f.categorical:
            stat, p = chi2_homogeneity(a, b)
            keys = np.unique(np.concatenate([a, b]))
            shift = float(max(abs((a == k).mean() - (b == k).mean()) for k in keys))
            rows.append({"feature": f.name, "type": "categorical", "test": "chi-square", "statistic": stat,
                         "p": p, "psi": psi(a, b, True), "shift": shift, "shift_unit": "max share change"})
        else:
            stat_a, p_a = ks_columns(a[:, None], b[:, None])
            sd = float(a.std())
            shift = float((b.mean() - a.mean()) / sd) if sd > 0 else 0.0
            rows.append({"feature": f.name, "type": "continuous", "test": "KS", "statistic": float(stat_a[0]),
                         "p": float(p_a[0]), "psi": psi(a, b, False), "shift": shift,
                         "shift_unit": "mean shift (reference SD)"})
    k = len(rows)
    for r in rows:
        r["p_adj"] = min(1.0, r["p"] * k)
    return rows


def drift_tests(ref: Side, cur: Side, *, permutations: int, n_max: int, rng: np.random.Generator,
                features: list[Feature] | None = None) -> list[TestResult]:
    """The battery of two-sample tests (BBSD KS, embedding KS, MMD, per-feature) on two
    samples; each p-value is corrected within its own test."""
    out = []
    pa, pb = bbsd_columns(ref.proba), bbsd_columns(cur.proba)
    cols = varying(pa, pb)
    stat, p = ks_columns(pa[:, cols], pb[:, cols])
    out.append(TestResult("BBSD: KS per class probability", "softmax outputs", len(cols),
                          float(stat.max()) if stat.size else 0.0, bonferroni(p),
                          "largest KS statistic; p: Bonferroni over the columns", {"stat": stat, "p": p}))
    if ref.emb is not None and cur.emb is not None:
        cols = varying(ref.emb, cur.emb)
        stat, p = ks_columns(ref.emb[:, cols], cur.emb[:, cols])
        out.append(TestResult("KS per embedding dimension", "penultimate layer", len(cols),
                              float(stat.max()) if stat.size else 0.0, bonferroni(p),
                              "largest KS statistic; p: Bonferroni over the non-constant dimensions",
                              {"stat": stat, "p": p}))
        rep, rep_name = ref.emb[:, cols], "penultimate layer"
        rep_c = cur.emb[:, cols]
    else:
        rep, rep_c, rep_name = pa, pb, "softmax outputs"
    ia = _subset(len(rep), n_max, rng)
    ib = _subset(len(rep_c), n_max, rng)
    mmd, p_mmd = mmd_permutation_test(rep[ia], rep_c[ib], permutations, rng)
    out.append(TestResult("MMD (Gaussian kernel), permutation test", rep_name, rep.shape[1], mmd, p_mmd,
                          f"unbiased MMD^2 on {len(ia)} + {len(ib)} rows, {permutations} permutations"))
    if features and ref.x is not None and cur.x is not None:
        rows = feature_tests(ref.x, cur.x, features)
        p_feat = np.array([r["p"] for r in rows])
        out.append(TestResult("per-feature KS / chi-square", "input features", len(rows),
                              float(max(r["statistic"] for r in rows if r["test"] == "KS") if any(
                                  r["test"] == "KS" for r in rows) else 0.0),
                              bonferroni(p_feat), "largest KS statistic; p: Bonferroni over the features",
                              {"rows": rows}))  # type: ignore[dict-item]
    return out


def combined_pvalue(tests: list[TestResult]) -> float:
    return bonferroni(np.array([t.pvalue for t in tests]))


def _subset(n: int, n_max: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, n_max, replace=False)) if n > n_max else np.arange(n)


def domain_classifier(a: np.ndarray, b: np.ndarray, folds: int, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold scores of a logistic regression telling `b` (label 1) from `a` (label 0)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([a, b]).astype(np.float64)
    y = np.r_[np.zeros(len(a), np.int64), np.ones(len(b), np.int64)]
    folds = max(2, min(folds, len(a), len(b)))
    cv = StratifiedKFold(folds, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_predict(model, x, y, cv=cv, method="predict_proba")[:, 1]
    return scores, y


def auc_with_ci(scores: np.ndarray, y: np.ndarray, confidence: float, rng: np.random.Generator) -> Metric:
    """ROC AUC with a weight-bootstrap CI that keeps the two sample sizes (stratified)."""
    from sklearn.metrics import roc_auc_score

    from checks.performance.classification import RocAuc

    order = np.argsort(y, kind="stable")  # label 0 first: strata in row order
    scores, y = scores[order], y[order]
    n0 = int((y == 0).sum())
    auc = RocAuc(scores, y == 1)
    draws = np.concatenate([auc(w) for w in resample_weights(len(y), 2000, rng, strata=[n0, len(y) - n0])])
    return from_draws(float(roc_auc_score(y, scores)), draws, confidence, n=len(y), bounds=(0.0, 1.0))


# ---- the check ---------------------------------------------------------------------------
def _source_of(ctx: Context, name: str) -> str | None:
    entry = ctx.spec.domains.get(name) or ctx.spec.data.get(name)
    if entry is not None and entry.from_:
        return entry.from_
    return ctx.dataset(name).meta.get("from")


def same_rows(ctx: Context, ref: str, cur: str) -> bool:
    """The current dataset holds the reference's rows (itself, or a transform of it)."""
    if ref == cur:
        return True
    a, b = ctx.dataset(ref), ctx.dataset(cur)
    return _source_of(ctx, cur) == ref and len(a) == len(b) and np.array_equal(a.y, b.y)


@register_check
class Drift(Check):
    name = "shift.drift"
    version = 1
    area = "deployment"
    requires = ("data",)
    kinds = ("image", "tabular", "text")
    Params = DriftParams
    metrics = {
        "drift_pvalue": higher("Bonferroni combination of the two-sample tests (BBSD KS, embedding KS, MMD, "
                               "per-feature): small values mean the current data has drifted.", bounds=(0.0, 1.0)),
        "domain_classifier_auc": lower("Cross-fitted ROC AUC of a classifier telling current from reference "
                                       "rows (0.5: indistinguishable).", bounds=(0.0, 1.0)),
        "drifted_feature_share": lower("Share of input features (tabular) or penultimate-layer dimensions "
                                       "whose Bonferroni-adjusted test rejects at 1 - confidence.",
                                       bounds=(0.0, 1.0)),
    }
    summary = ("Label-free drift of a current dataset from the reference: BBSD and embedding KS with "
               "Bonferroni, MMD, domain-classifier AUC, per-feature tests and PSI for tabular data.")

    @classmethod
    def validate_params(cls, params: DriftParams, spec: Any) -> None:
        names = spec.dataset_names()
        if params.current is None:
            raise ValueError("shift.drift needs `current`: the dataset to compare with the reference "
                             f"`data` ({params.data}), e.g. `current: production`")
        if params.current not in names:
            raise ValueError(f"current: unknown dataset '{params.current}'.{did_you_mean(params.current, names)}")

    @classmethod
    def embedding_datasets(cls, params: DriftParams) -> tuple[str, ...]:
        """Datasets whose penultimate activations the check reads: taken during their
        cached logits pass (Context.embeddings)."""
        return (params.data,) + ((params.current,) if params.current else ())

    @classmethod
    def preflight(cls, ctx: Context, params: DriftParams) -> None:
        if params.current is None:
            return
        ref, cur = ctx.dataset(params.data), ctx.dataset(params.current)
        if ref.kind != cur.kind or ref.x.shape[1:] != cur.x.shape[1:]:
            raise DataError(f"dataset '{params.current}' ({cur.kind}, {tuple(cur.x.shape[1:])}) cannot be "
                            f"compared with '{params.data}' ({ref.kind}, {tuple(ref.x.shape[1:])}): the same "
                            "kind and input shape are needed")

    def run(self, ctx: Context, params: DriftParams) -> Measurement:
        if params.current is None:
            raise SkipCheck("no `current` dataset to compare with the reference")
        self.preflight(ctx, params)
        ref_ds, cur_ds = ctx.dataset(params.data), ctx.dataset(params.current)
        rng = ctx.rng(f"{self.name}:{params.data}:{params.current}")
        alpha = 1.0 - params.confidence

        # the per-feature tests read every row's features: up to FEATURE_ROWS rows per side
        # (a rule of the sizes alone, so every engine decides alike)
        features_read = ref_ds.kind == "tabular" and max(len(ref_ds), len(cur_ds)) <= FEATURE_ROWS

        def side(name: str) -> Side:
            ds = ctx.dataset(name)
            emb = ctx.embeddings(name)  # first: a dataset not yet predicted gets both in one pass
            x = (ds.take(np.arange(len(ds))) if ds.lazy else ds.x).astype(np.float64) if features_read else None
            return Side(ctx.probabilities(name), emb, x)

        ref, cur = side(params.data), side(params.current)
        paired = same_rows(ctx, params.data, params.current)
        if paired:  # disjoint halves: a row is never compared with itself
            perm = rng.permutation(len(ref))
            half = len(perm) // 2
            ref, cur = ref.take(np.sort(perm[:half])), cur.take(np.sort(perm[half:]))
        if min(len(ref), len(cur)) < 2:
            raise SkipCheck("fewer than 2 rows on one side")
        features = None
        if features_read:
            features = tabular_features(ref_ds.feature_names, ref_ds.feature_groups, ref_ds.continuous,
                                        ref_ds.x.shape[1])
        tests = drift_tests(ref, cur, permutations=params.permutations, n_max=params.n_max, rng=rng,
                            features=features)
        p_value = combined_pvalue(tests)

        # the domain classifier: balanced subsets of the same size
        m = min(len(ref), len(cur), params.n_max)
        ia, ib = np.sort(rng.choice(len(ref), m, replace=False)), np.sort(rng.choice(len(cur), m, replace=False))

        def design(s: Side, idx: np.ndarray) -> np.ndarray:
            parts = [bbsd_columns(s.proba[idx])] + ([s.emb[idx]] if s.emb is not None else []) + (
                [s.x[idx]] if s.x is not None else [])
            return np.concatenate(parts, axis=1)

        scores, labels = domain_classifier(design(ref, ia), design(cur, ib), params.folds, rng)
        auc = auc_with_ci(scores, labels, params.confidence, rng)

        feat_rows = next((t.per_dim["rows"] for t in tests if "rows" in t.per_dim), None)
        if feat_rows is not None:
            share = float(np.mean([r["p_adj"] < alpha for r in feat_rows]))
            share_of = f"{sum(r['p_adj'] < alpha for r in feat_rows)} of {len(feat_rows)} input features"
        else:
            per = next((t for t in tests if t.on == "penultimate layer" and "p" in t.per_dim),
                       tests[0])
            p_dim = per.per_dim["p"]
            drifted = int((np.minimum(1.0, p_dim * p_dim.size) < alpha).sum()) if p_dim.size else 0
            share = drifted / p_dim.size if p_dim.size else 0.0
            share_of = f"{drifted} of {p_dim.size} {'embedding dimensions' if per.on == 'penultimate layer' else 'softmax columns'}"

        metrics = {"drift_pvalue": Metric(p_value, None, n=len(ref) + len(cur)),
                   "domain_classifier_auc": auc,
                   "drifted_feature_share": Metric(share, None)}
        evidence = self._evidence(ctx, params, ref_ds, cur_ds, ref, cur, paired, tests, p_value, alpha, auc,
                                  scores, labels, feat_rows, share_of)
        if ref_ds.kind == "tabular" and not features_read:
            evidence.append(text("Per-feature tests not run", (
                f"'{params.data}' or '{params.current}' has more than {FEATURE_ROWS:,} rows: the per-feature KS and "
                "chi-square tests, which read every row's features, were left out; the tests on the model's outputs "
                "and embeddings cover every row.")))
        return Measurement(metrics=metrics, evidence=evidence)

    @staticmethod
    def _evidence(ctx: Context, params: DriftParams, ref_ds: Any, cur_ds: Any, ref: Side, cur: Side,
                  paired: bool, tests: list[TestResult], p_value: float, alpha: float, auc: Metric,
                  scores: np.ndarray, labels: np.ndarray, feat_rows: list[dict[str, Any]] | None,
                  share_of: str) -> list[dict[str, Any]]:
        from sklearn.metrics import roc_curve

        rows = [[t.name, t.on, t.dims, round(t.statistic, 6), _p(t.pvalue), "yes" if t.pvalue < alpha else "no"]
                for t in tests]
        rows.append([f"combined (Bonferroni over {len(tests)} tests)", "", "", None, _p(p_value),
                     "yes" if p_value < alpha else "no"])
        how = (f"disjoint random halves of the same {len(ref_ds):,} rows ({len(ref):,} reference, {len(cur):,} "
               f"current): '{params.current}' holds the rows of '{params.data}'" if paired else
               f"{len(ref):,} reference rows ('{params.data}') and {len(cur):,} current rows ('{params.current}')")
        evidence = [
            table("Two-sample tests", ["test", "on", "columns", "statistic", "p-value", f"drift at {alpha:g}"], rows,
                  note=f"{how}. Labels are not used. {share_of} drifted (Bonferroni-adjusted p < {alpha:g})."),
        ]
        if feat_rows:
            ordered = sorted(feat_rows, key=lambda r: (r["p"], r["feature"]))[:MAX_ROWS]
            evidence.append(table(
                "Per-feature drift", ["feature", "type", "test", "statistic", "p-value", "adjusted p", "PSI",
                                      "shift", f"drift at {alpha:g}"],
                [[r["feature"], r["type"], r["test"], round(r["statistic"], 6), _p(r["p"]), _p(r["p_adj"]),
                  round(r["psi"], 4), f"{r['shift']:+.3f} ({r['shift_unit']})" if r["type"] == "continuous"
                  else f"{r['shift']:.3f} ({r['shift_unit']})", "yes" if r["p_adj"] < alpha else "no"]
                 for r in ordered],
                note=f"Adjusted p: Bonferroni over {len(feat_rows)} features"
                     + (f"; the {MAX_ROWS} with the smallest p-values shown" if len(feat_rows) > MAX_ROWS else "")
                     + f". PSI binned as Evidently bins it; PSI above {PSI_LEVEL:g} is Evidently's default drift "
                       "level."))
        if feat_rows and len(feat_rows) <= MAX_BARS:
            evidence.append(chart("bar", "PSI per feature", {
                "labels": [r["feature"] for r in feat_rows], "values": [r["psi"] for r in feat_rows],
                "title": "Population stability index", "ylabel": "PSI", "threshold": PSI_LEVEL,
                "threshold_label": f"PSI {PSI_LEVEL:g}",
                "highlight": [bool(r["p_adj"] < alpha) for r in feat_rows]},
                caption="Drifted features (Bonferroni-adjusted test) in the warning colour."))
        bbsd = tests[0].per_dim
        classes = list(ref_ds.classes)
        names = classes[1:] if ref.proba.shape[1] == 2 else classes
        if bbsd["stat"].size == len(names) and len(names) <= MAX_BARS:
            evidence.append(chart("bar", "BBSD: KS statistic per class probability", {
                "labels": names, "values": bbsd["stat"].tolist(), "title": "Shift of the softmax outputs",
                "ylabel": "KS statistic",
                "highlight": [bool(min(1.0, p * bbsd["p"].size) < alpha) for p in bbsd["p"]]},
                caption="Classes whose predicted probability drifted (Bonferroni-adjusted KS) in the warning "
                        "colour."))
        fpr, tpr, _ = roc_curve(labels, scores)
        ci = f" [{auc.ci[0]:.3f}, {auc.ci[1]:.3f}]" if auc.ci else ""
        evidence.append(chart("roc", "Domain classifier", {"fpr": fpr.tolist(), "tpr": tpr.tolist(),
                                                           "title": "Current vs reference rows",
                                                           "label": "domain classifier"},
                              caption=f"Cross-fitted logistic regression on {len(labels) // 2:,} rows per side; "
                                      f"AUC {auc.value:.3f}{ci}: 0.5 means the samples cannot be told apart."))
        emb = ref.emb.shape[1] if ref.emb is not None else 0
        evidence.append(text("How drift was measured",
                             f"Reference '{params.data}' ({ref_ds.source or ref_ds.kind}), current "
                             f"'{params.current}' ({cur_ds.source or cur_ds.kind}). BBSD on the model's softmax "
                             f"outputs; " + (f"{emb}-dimensional penultimate-layer embeddings (the input of "
                                             "the output layer) for the KS and MMD tests; " if emb else
                                             "no penultimate-layer embeddings (the model has no hookable "
                                             "output layer): the MMD runs on the softmax outputs; ")
                             + "outputs and embeddings come from the context's cached prediction pass. "
                             "drift_pvalue is the Bonferroni combination of the tests above."))
        return evidence


def _p(p: float) -> float:
    return float(f"{p:.4g}")
