"""The Check contract: a check measures, it never judges, loads files or renders.

A check is a class with `name`, `version`, `requires`, `metrics` (name -> higher is
better?), `descriptions` (name -> one sentence for the report) and a pydantic
`Params` model. `run(ctx, params)` returns a `Measurement`.

Evidence is data, one of:
  {"type": "table", "title": str, "columns": [str], "rows": [[cell]], "note": str?}
  {"type": "figure", "title": str, "svg": str, "caption": str?}
  {"type": "text", "title": str, "text": str}
  {"type": "flags", "title": str, "flags": [{"flag": str, "detail": str}]}
Table cells are JSON scalars; a cell may also be {"value": v, "ci": [lo, hi]}.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from audit.context import Context


class Params(BaseModel):
    """Base of every check's parameters. `data` and `confidence` come from the
    check entry's reserved keys; the rest are the check's own (unknown ones are errors)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str = "test"
    confidence: float = Field(0.95, gt=0.5, lt=1.0)


@dataclass(frozen=True)
class Metric:
    value: float
    ci: tuple[float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"value": _num(self.value), "ci": None if self.ci is None else [_num(self.ci[0]), _num(self.ci[1])]}


@dataclass
class Measurement:
    metrics: dict[str, Metric]
    evidence: list[dict[str, Any]] = field(default_factory=list)


class Check(abc.ABC):
    name: ClassVar[str]
    version: ClassVar[int] = 1
    # Data roles or capabilities needed: "data" (the entry's dataset), "train", "domains",
    # "sensitive", "image", "tabular", "text", "gradients". Missing -> skipped.
    requires: ClassVar[tuple[str, ...]] = ("data",)
    metrics: ClassVar[dict[str, bool]] = {}
    descriptions: ClassVar[dict[str, str]] = {}
    Params: ClassVar[type[Params]] = Params
    summary: ClassVar[str] = ""

    @abc.abstractmethod
    def run(self, ctx: Context, params: Any) -> Measurement:
        """Measure; return metrics (with CIs) and evidence. Never judge thresholds."""


def _num(v: Any) -> Any:
    f = float(v)
    if f != f or f in (float("inf"), float("-inf")):
        return None
    return f


# Evidence constructors keep the shapes above in one place.
def table(title: str, columns: list[str], rows: list[list[Any]], note: str | None = None) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": "table", "title": title, "columns": columns, "rows": rows}
    if note:
        ev["note"] = note
    return ev


def figure(title: str, svg: str, caption: str | None = None) -> dict[str, Any]:
    ev: dict[str, Any] = {"type": "figure", "title": title, "svg": svg}
    if caption:
        ev["caption"] = caption
    return ev


def text(title: str, body: str) -> dict[str, Any]:
    return {"type": "text", "title": title, "text": body}


def flags(title: str, items: list[dict[str, str]]) -> dict[str, Any]:
    return {"type": "flags", "title": title, "flags": items}


def cell(value: float, ci: tuple[float, float] | None) -> dict[str, Any]:
    return Metric(value, ci).to_json()
