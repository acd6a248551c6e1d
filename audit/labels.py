"""Class order: where a dataset's class order came from, and the label-order sanity test.

`model.classes` is the model's output order. When the spec gives it, or the model states
it (a Hugging Face config's `id2label`, the recipe `audit train` saved, a built-in
fixture, or a model the audit trains on that very data), the order is *declared*.
Otherwise the loader had to take it from the data (sorted labels, folder names, npz
class indices) and nothing says the model agrees: a breast-cancer model trained with
malignant = 0 would be scored against benign = 0 and report accuracy 0.04 instead of
0.96. Such orders are recorded as not declared, printed, and tested once the shared
prediction pass has run (`check_label_order`, called by the runner's `prepare`).

The test looks for the class permutation that best fits the model's predictions (an
assignment problem on the confusion matrix). If it is not the identity, the classes it
moves are examined, and the audit stops only when the data give strong evidence on both
counts (each a one-sided binomial test at `ALPHA`):

* on those classes the predictions agree with the labels *less* often than chance (the
  rate a predictor independent of the labels, with the same prediction shares, would
  reach): a weak or degenerate model (e.g. one that always predicts the same class) sits
  at chance and is not stopped, however poor it is;
* and the permutation is right more often than the identity on the samples where
  exactly one of them is right (McNemar's exact test).

A swapped binary model with accuracy 0.04 on 143 samples gives p ~ 1e-30; a model that is
merely bad, or a small sample (fewer than ~14 samples cannot reach `ALPHA`), does not
trigger it. Declaring `model.classes` skips the test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from audit.dataset import Dataset
from audit.errors import DataError

# A false stop costs the user a spec edit (declaring model.classes), a missed swap a
# silently wrong report; both tests must pass this level, far beyond noise.
ALPHA = 1e-4


@dataclass(frozen=True)
class ClassOrder:
    """The class order of a dataset: index i is `classes[i]`."""

    classes: list[str]
    source: str  # "model.classes", "id2label", "sorted labels of data/test.csv", ...
    declared: bool  # stated by the spec or the model, not taken from the data

    def to_json(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "source": self.source, "declared": self.declared}

    def listing(self, limit: int = 20) -> str:
        shown = ", ".join(f"{i}={c}" for i, c in enumerate(self.classes[:limit]))
        return shown + (f", … ({len(self.classes)} classes)" if len(self.classes) > limit else "")


def label_order_problem(y: np.ndarray, logits: np.ndarray, classes: list[str], source: str) -> str | None:
    """A message when the model's predictions say the class order from `source` is wrong,
    else None. `logits`: (N, K), or (N, 1) for a binary model (class 1 when > 0)."""
    from audit.stats import binom_cdf, binom_sf, confusion_counts, row_argmax

    y = np.asarray(y)
    logits = np.asarray(logits)
    k, n = len(classes), len(y)
    if k < 2 or n == 0 or logits.ndim != 2 or logits.shape[1] not in (1, k):
        return None  # the context reports output-shape mismatches itself
    cm = np.zeros((k, k), dtype=np.int64)
    step = 1 << 20  # in chunks of rows: no N-length prediction array
    for s in range(0, n, step):
        z = logits[s:s + step]
        cm += confusion_counts(y[s:s + step], z[:, 0] > 0 if z.shape[1] == 1 else row_argmax(z), k)
    if (np.diagonal(cm)[:, None] >= cm).all():
        # every class's most frequent output is its own: no permutation has more hits, and
        # one with as many would give p >= 0.5 below (spares the scipy.optimize import)
        return None
    from scipy.optimize import linear_sum_assignment

    _, perm = linear_sum_assignment(cm, maximize=True)  # perm[true class] = model output
    moved = np.flatnonzero(perm != np.arange(k))
    if moved.size == 0:
        return None
    rows = cm[moved]
    n_moved = int(rows.sum())
    if n_moved == 0:
        return None
    pred_share = cm.sum(axis=0) / n
    chance_rate = float((rows.sum(axis=1) * pred_share[moved]).sum() / n_moved)
    hits = int(cm[moved, moved].sum())  # right under the order used
    hits_perm = int(cm[moved, perm[moved]].sum())  # right under the permutation
    p_below = binom_cdf(hits, n_moved, chance_rate)
    p_better = binom_sf(hits_perm - 1, hits + hits_perm, 0.5) if hits + hits_perm else 1.0
    p = max(p_below, p_better)
    if p >= ALPHA:
        return None
    accuracy = float(np.trace(cm) / n)
    accuracy_perm = float(cm[np.arange(k), perm].sum() / n)
    chance = float((cm.sum(axis=1) / n * pred_share).sum())
    suggested = [""] * k
    for true_class, output in enumerate(perm):
        suggested[output] = classes[true_class]
    used = ClassOrder(list(classes), source, False)
    return (f"the class order looks wrong. It was taken from the {source} ({used.listing()}); with it the "
            f"model's accuracy is {accuracy:.3f} where chance is {chance:.3f}, while reading its outputs in "
            f"the order [{', '.join(suggested)}] gives {accuracy_perm:.3f} (binomial tests, p = {p:.1g}). "
            f"Declare the model's output order in the spec: `model.classes: [{', '.join(suggested)}]` "
            f"(or the order you know to be right).")


def check_label_order(ds: Dataset, logits: np.ndarray) -> None:
    """Stop the audit (DataError) when `ds`'s class order came from the data and the
    model's predictions say it is wrong. Declared orders and derived datasets (whose
    order is their source's) are not tested."""
    order = ds.meta.get("class_order") or {}
    if order.get("declared", True) or "transform" in ds.meta:
        return
    problem = label_order_problem(ds.y, logits, ds.classes, str(order.get("source", "data")))
    if problem:
        raise DataError(problem, where=f"dataset '{ds.name}'")


def token_alignment_problem(y: np.ndarray, word_starts: np.ndarray, sub_logits: np.ndarray,
                            classes: list[str]) -> str | None:
    """A message when a token classifier's predictions fit the tags one sub-token later
    (or earlier) far better than at each word's first sub-token, where the audit reads
    them: the labels were aligned to the wrong sub-token (a shifted label sequence, a
    forgotten [CLS] offset). Judged on the words inside entities (O would agree under any
    shift), by McNemar's exact test on the words where exactly one reading is right."""
    from audit.stats import binom_sf

    y = np.asarray(y)
    n_pos = sub_logits.shape[1]
    ok = (y >= 0) & (word_starts >= 0)
    if "O" in classes:
        ok &= y != classes.index("O")
    rows, cols = np.nonzero(ok)
    if rows.size == 0:
        return None
    starts = word_starts[rows, cols]
    gold = y[rows, cols]
    pred0 = sub_logits[rows, starts].argmax(axis=-1)
    right0 = pred0 == gold
    for shift, word in ((1, "later"), (-1, "earlier")):
        pos = starts + shift
        inside = (pos >= 0) & (pos < n_pos)
        if inside.sum() == 0:
            continue
        pred_s = sub_logits[rows[inside], pos[inside]].argmax(axis=-1)
        right_s = pred_s == gold[inside]
        r0 = right0[inside]
        b = int((r0 & ~right_s).sum())
        c = int((right_s & ~r0).sum())
        if c <= b or b + c == 0:
            continue
        p = binom_sf(c - 1, b + c, 0.5)
        acc0, acc_s = float(r0.mean()), float(right_s.mean())
        if p < ALPHA and acc_s - acc0 > 0.2:
            return (f"the model's tags fit the words one sub-token {word} ({acc_s:.3f} of {int(inside.sum())} entity "
                    f"words right) far better than at each word's first sub-token ({acc0:.3f}), where word-level "
                    f"predictions are read (the Hugging Face convention; McNemar p {_p(p)}): the labels look "
                    f"shifted by one sub-token against the tokens (labels aligned to the wrong sub-token when the "
                    f"model was trained, or a missing special-token offset). Fix the alignment and retrain; every "
                    f"metric read at the first sub-token would be wrong")
    return None


def _p(p: float) -> str:
    return f"= {p:.1g}" if p > 0 else "< 1e-300"


def check_token_alignment(ds: Dataset, sub_logits: np.ndarray) -> None:
    """Stop the audit (DataError) when a token classifier's labels are shifted by one
    sub-token (see `token_alignment_problem`)."""
    if ds.word_starts is None:
        return
    order = ds.meta.get("class_order") or {}
    if not order.get("declared", True):  # no test can tell a permutation of tags from a weak model
        raise DataError(f"the tag order was taken from the {order.get('source', 'data')}, but a token classifier's "
                        f"outputs must be named: declare `model.classes` with the tag of each output, in order (or "
                        f"give the model's config.json an id2label)", where=f"dataset '{ds.name}'")
    problem = token_alignment_problem(ds.y, ds.word_starts, sub_logits, ds.classes)
    if problem:
        raise DataError(problem, where=f"dataset '{ds.name}'")
