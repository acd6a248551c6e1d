"""The Check contract, in one place: a check measures; it never judges, loads files or
renders. Everything a check may declare or override is here, with its default.

    @register_check
    class MyCheck(Check):
        name = "family.thing"                 # dotted lowercase id, unique
        version = 1                           # bump when numbers can change
        area = "evaluation"                   # report section: a key of audit.results.AREAS
        requires = ("data",)                  # see REQUIREMENTS; a missing one -> skipped
        kinds = ("image", "tabular")          # data kinds it measures; others -> skipped
        summary = "One line for `audit checks` and the report."
        metrics = {"accuracy": higher("Share of correct predictions.", proportion=True)}
        Params = MyParams                     # a Params subclass: typed, validated at spec load

        def run(self, ctx, params) -> Measurement: ...

Optional hooks (classmethods, all no-ops by default):
  `validate_params(params, spec)`  spec-level rules that need no data; raise ValueError.
  `preflight(ctx, params)`         cheap checks on loaded data before any check runs;
                                   raise an AuditInputError (exit 2) naming the problem.
  `embedding_datasets(params)`     the datasets whose penultimate-layer embeddings the
                                   check will ask for (`ctx.embeddings`), so the Context
                                   takes them during the shared prediction pass.
  `row_hash_datasets(params)`      the datasets whose row hashes (`ctx.row_hashes`) the
                                   check reads: the runner lets the Context drop a
                                   dataset's hashes (8 bytes a row) once no check left
                                   to run reads them.

A check runs every model only through the Context (`ctx.logits`, `ctx.run_model`,
`ctx.forward`, ...), which counts each pass. Evidence is data (see below); the report
decides how to draw it.

Evidence items (built with the constructors at the end of this module):
  {"type": "table", "title": str, "columns": [str], "rows": [[cell]], "note": str?}
      cells are JSON scalars or {"value": v, "ci": [lo, hi] | null}
  {"type": "text", "title": str, "text": str}
  {"type": "chart", "chart": kind, "title": str, "data": {...}, "caption": str?}
      `kind` names a renderer of the report (reports/charts.py); `data` holds its
      keyword arguments as JSON (numbers, strings, nested lists)
  {"type": "figure", "title": str, "svg": str, "caption": str?}
      a ready-made SVG, for third-party checks; the report sanitizes it
  {"type": "tokens", "title": str, "rows": [{"tokens": [str], "scores": [number | null],
   "label": str?, "focus": int?}], "caption": str?}
      text with a score per token (attributions): the report highlights each token with a
      colour computed from its score (positive warm, negative cool, scaled per row by the
      largest |score|); tokens are escaped text, `label` a line of context per row; `focus`
      the index of the token being explained (outlined, and left out of the scale)
Sanity flags (e.g. gradient masking) are not evidence: they are `Measurement.flags`,
and any flag caps the check's status at `warn`.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from audit.context import Context
    from audit.spec import AuditSpec

DEFAULT_CONFIDENCE = 0.95

# What a check may list in `requires`. "data" is the entry's dataset (always there);
# the others are checked by the runner, which skips the check with the reason.
REQUIREMENTS = ("data", "train", "domains", "sensitive")
# The kinds of data a dataset can be (audit.dataset.Kind). "text" is a sequence
# classification sample (token ids, one label per row); "tokens" is a token-classification
# sentence (sub-token ids, one tag per word: see audit.dataset.Dataset).
KINDS = ("image", "tabular", "text", "tokens")
# What a check measures unless it says otherwise: one label per sample. A check that
# understands word-level tags lists "tokens" itself.
CLASSIFICATION_KINDS = ("image", "tabular", "text")


class Params(BaseModel):
    """Base of every check's parameters. `data` and `confidence` come from the check
    entry's reserved keys; the rest are the check's own (unknown ones are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str = "test"
    confidence: float = Field(DEFAULT_CONFIDENCE, gt=0.5, lt=1.0)


@dataclass(frozen=True)
class MetricSpec:
    """What a metric means: one record per metric of a check."""

    higher_is_better: bool
    description: str
    unit: str = ""
    # the values the metric can take; a threshold outside them is a spec error
    bounds: tuple[float | None, float | None] = (None, None)
    # a share of samples: gets an exact (score) interval and a sample-size rule
    proportion: bool = False
    # a wall-clock measurement: it varies between runs of the same seed
    timing: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"higher_is_better": self.higher_is_better, "description": self.description,
                "unit": self.unit, "bounds": list(self.bounds), "proportion": self.proportion,
                "timing": self.timing}


def higher(description: str, *, unit: str = "", bounds: tuple[float | None, float | None] | None = None,
           proportion: bool = False, timing: bool = False) -> MetricSpec:
    """A metric where higher is better. `proportion=True` implies bounds [0, 1]."""
    return MetricSpec(True, description, unit, bounds or ((0.0, 1.0) if proportion else (None, None)),
                      proportion, timing)


def lower(description: str, *, unit: str = "", bounds: tuple[float | None, float | None] | None = None,
          proportion: bool = False, timing: bool = False) -> MetricSpec:
    """A metric where lower is better. `proportion=True` implies bounds [0, 1]."""
    return MetricSpec(False, description, unit, bounds or ((0.0, 1.0) if proportion else (None, None)),
                      proportion, timing)


@dataclass(frozen=True)
class NormalApprox:
    """An interval `g^-1(g(value) -+ q * se)` from an estimate and its standard error `se`
    on the scale of the link `g` ("identity" or "logit"), q a quantile of Student's t with
    `df` degrees of freedom (the normal when None): what a mean's or a DeLong AUC's
    interval rests on, so that the runner can invert it into a one-sided p-value."""

    se: float
    link: str = "identity"
    df: float | None = None


@dataclass(frozen=True)
class Metric:
    """A measured value with its confidence interval and the sample size it rests on.

    `successes` (a proportion's numerator, with `n`), `draws` (the resampled values
    behind a bootstrap interval) or `approx` (the standard error behind an interval from
    a variance) let the runner compute how likely the value is on the wrong side of a
    threshold, for family-wise control; they are not serialized."""

    value: float
    ci: tuple[float, float] | None = None
    n: int | None = None
    successes: int | None = field(default=None, compare=False)
    draws: Any = field(default=None, repr=False, compare=False)
    approx: NormalApprox | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        out = {"value": _num(self.value), "ci": None if self.ci is None else [_num(self.ci[0]), _num(self.ci[1])]}
        if self.n is not None:
            out["n"] = int(self.n)
        return out


@dataclass(frozen=True)
class Flag:
    """A sanity flag: the measurement may not mean what it seems (e.g. masked gradients)."""

    flag: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"flag": self.flag, "detail": self.detail}


@dataclass
class Measurement:
    metrics: dict[str, Metric]
    evidence: list[dict[str, Any]] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)


class Check(abc.ABC):
    name: ClassVar[str]
    version: ClassVar[int] = 1
    area: ClassVar[str] = "evaluation"
    requires: ClassVar[tuple[str, ...]] = ("data",)
    kinds: ClassVar[tuple[str, ...]] = CLASSIFICATION_KINDS
    metrics: ClassVar[dict[str, MetricSpec]] = {}
    Params: ClassVar[type[Params]] = Params
    summary: ClassVar[str] = ""

    @classmethod
    def validate_params(cls, params: Any, spec: AuditSpec) -> None:
        """Rules between parameters and the spec that need no data (e.g. a named domain
        exists). Raise ValueError with a message; the spec loader adds where."""

    @classmethod
    def preflight(cls, ctx: Context, params: Any) -> None:
        """Cheap checks on the loaded data before any check runs, so that a bad input
        stops the audit with exit 2 instead of erroring one check. Raise AuditInputError."""

    @classmethod
    def embedding_datasets(cls, params: Any) -> tuple[str, ...]:
        """Datasets whose embeddings `run` will ask for: the Context captures them during
        the cached prediction pass instead of a second pass."""
        return ()

    @classmethod
    def row_hash_datasets(cls, params: Any) -> tuple[str, ...]:
        """Datasets whose row hashes `run` reads (`ctx.row_hashes`): kept until the last
        check that declares them has run."""
        return ()

    @abc.abstractmethod
    def run(self, ctx: Context, params: Any) -> Measurement:
        """Measure; return metrics (with CIs), evidence and flags. Never judge thresholds."""


def _num(v: Any) -> Any:
    f = float(v)
    if not math.isfinite(f):
        return None
    return f


# Evidence constructors keep the shapes above in one place.
def table(title: str, columns: list[str], rows: list[list[Any]], note: str | None = None) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": "table", "title": title, "columns": columns, "rows": rows}
    if note:
        ev["note"] = note
    return ev


def chart(kind: str, title: str, data: dict[str, Any], caption: str | None = None) -> dict[str, Any]:
    """Chart data for the report to draw with its `kind` renderer (reports/charts.py)."""
    ev: dict[str, Any] = {"type": "chart", "chart": kind, "title": title, "data": data}
    if caption:
        ev["caption"] = caption
    return ev


def figure(title: str, svg: str, caption: str | None = None) -> dict[str, Any]:
    """A ready-made SVG (third-party checks); built-in checks emit `chart` data instead."""
    ev: dict[str, Any] = {"type": "figure", "title": title, "svg": svg}
    if caption:
        ev["caption"] = caption
    return ev


def tokens(title: str, rows: list[dict[str, Any]], caption: str | None = None) -> dict[str, Any]:
    """Highlighted text: rows of {"tokens": [...], "scores": [...], "label": "..."} (see above)."""
    ev: dict[str, Any] = {"type": "tokens", "title": title, "rows": rows}
    if caption:
        ev["caption"] = caption
    return ev


def text(title: str, body: str) -> dict[str, Any]:
    return {"type": "text", "title": title, "text": body}


def cell(value: float, ci: tuple[float, float] | None) -> dict[str, Any]:
    return Metric(value, ci).to_json()
