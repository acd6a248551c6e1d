"""`robustness.adversarial`: white-box FGSM / PGD (Linf, L2) over an eps sweep, with the
gradient-masking sanity checks that RobustBench and AutoAttack's authors ask for.

Robust accuracy counts a sample as robust when it is classified correctly and the attack
found no misclassified point in its eps-ball; misclassified clean samples are not
attacked (they are already non-robust). Attack success rate is over the originally
correct samples. Both are resampled as one 2x2 table (clean correct x robust) with the
count bootstrap.

A masked gradient makes an attack look weak and the model look robust. The check flags,
with a one-sided sign test on the paired per-sample outcomes (alpha 0.05):
PGD fooling significantly fewer samples than FGSM or than uniform random noise of the
same eps, robust accuracy rising significantly as eps grows, and input gradients that
are zero or non-finite for at least 10% of the attacked samples. A flag caps the check
at `warn`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from scipy.stats import binomtest

from audit import attacks
from audit.check import Check, Flag, Measurement, Metric, Params, cell, chart, higher, lower, table, text
from audit.context import Context
from audit.errors import SkipCheck, SpecError
from audit.registry import register_check
from audit.stats import proportion

MASKING_ALPHA = 0.05
BAD_GRAD_FRACTION = 0.10
_DEFAULT_EPS = {"linf": [1 / 255, 2 / 255, 4 / 255, 8 / 255], "l2": [0.125, 0.25, 0.5, 1.0]}


class AdversarialParams(Params):
    attack: Literal["fgsm", "pgd"] = "pgd"
    norm: Literal["linf", "l2"] = "linf"
    # One radius or the sweep; the clean point (eps 0) is always drawn. Images: input
    # units; tabular: standard deviations of each continuous feature.
    eps: float | list[float] | None = None
    steps: int = Field(20, ge=1, le=10_000)
    step_size: float | None = Field(None, gt=0)  # default 2.5 * eps / steps (Madry et al.)
    restarts: int = Field(1, ge=1, le=100)
    random_start: bool = True
    n_samples: int = Field(512, ge=1)
    targeted: Literal[False] = False  # untargeted only
    batch_size: int | None = Field(None, ge=1)
    noise_draws: int = Field(10, ge=1, le=1000)  # uniform-noise baseline draws per sample

    @field_validator("eps")
    @classmethod
    def _eps_nonnegative(cls, v: float | list[float] | None) -> float | list[float] | None:
        values = [v] if isinstance(v, (int, float)) else (v or [])
        if isinstance(v, list) and not v:
            raise ValueError("eps must list at least one radius")
        for e in values:
            if not math.isfinite(e) or e < 0:
                raise ValueError(f"eps must be finite and >= 0, got {e}")
        return v

    def eps_list(self) -> list[float]:
        raw = _DEFAULT_EPS[self.norm] if self.eps is None else (
            [self.eps] if isinstance(self.eps, (int, float)) else self.eps)
        return sorted({float(e) for e in raw})


def _check_box(params: AdversarialParams, lo: float, hi: float, dims: int | None, where: str) -> None:
    width = hi - lo
    for e in params.eps_list():
        if params.norm == "linf" and e > width:
            raise ValueError(f"eps {e:g} is larger than the input box {where} [{lo:g}, {hi:g}] "
                             f"(width {width:g}): every input would be reachable")
        if params.norm == "l2" and dims is not None and e > width * math.sqrt(dims):
            raise ValueError(f"L2 eps {e:g} is larger than the diameter of the input box {where} "
                             f"[{lo:g}, {hi:g}]^{dims} ({width * math.sqrt(dims):.4g})")


@register_check
class AdversarialRobustness(Check):
    name = "robustness.adversarial"
    version = 1
    requires = ("data",)
    kinds = ("image", "tabular")
    area = "robustness"
    metrics = {
        "robust_accuracy": higher("Share of samples classified correctly with no misclassified point found "
                                  "by the attack within the largest eps.", proportion=True),
        "attack_success_rate": lower("Share of originally correct samples that the attack at the largest eps "
                                     "turned into misclassifications.", proportion=True),
    }
    summary = "White-box FGSM/PGD attacks over an eps sweep, with gradient-masking sanity checks."
    Params = AdversarialParams

    @classmethod
    def validate_params(cls, params: AdversarialParams, spec: Any) -> None:
        box = spec.model.input_range
        if box is not None:
            _check_box(params, float(box[0]), float(box[1]), None, "model.input_range")

    @classmethod
    def preflight(cls, ctx: Context, params: AdversarialParams) -> None:
        ds = ctx.dataset(params.data)
        if ds.kind != "image":
            return  # tabular eps is in standard deviations and the box is the data's range
        lo, hi = _image_box(ctx)
        try:
            _check_box(params, lo, hi, int(np.prod(ds.x.shape[1:])), "(model.input_range)")
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        xmin, xmax = float(ds.x.min()), float(ds.x.max())
        if xmin < lo - 1e-6 or xmax > hi + 1e-6:
            raise SpecError(f"dataset '{params.data}' has values in [{xmin:g}, {xmax:g}], outside the "
                            f"model's input box [{lo:g}, {hi:g}]; set model.input_range to the range "
                            f"the model takes")

    def run(self, ctx: Context, params: AdversarialParams) -> Measurement:
        ds = ctx.dataset(params.data)
        if ds.kind == "text":
            raise SkipCheck("gradient attacks need continuous inputs; dataset "
                            f"'{params.data}' holds token ids")
        tag = f"{self.name}:{params.data}"
        n_total = len(ds)
        n = min(params.n_samples, n_total)
        idx = np.sort(ctx.rng(f"{tag}:subsample").choice(n_total, n, replace=False)) if n < n_total \
            else np.arange(n_total)
        device = ctx.device
        y_np = ds.y[idx]
        clean_logits = ctx.logits(params.data)[idx]
        correct = _predict_np(clean_logits) == y_np
        att = np.flatnonzero(correct)  # only correctly classified samples are attacked
        x = torch.as_tensor(ds.x[idx][att]).to(device)
        y = torch.as_tensor(y_np[att]).to(device)
        lo, hi, scale = _geometry(ctx, ds, device)
        bs = params.batch_size or ctx.batch_size
        eps_list = params.eps_list()
        cfg = (f"{params.attack}:{params.norm}:steps={params.steps}:ss={params.step_size}:"
               f"r={params.restarts}:rs={params.random_start}:n={n}")

        def preds_of(key: str, make: Any) -> np.ndarray:
            """Predictions for a derived input of the attacked samples, through the same
            (cached) inference path as the clean predictions."""
            if len(att) == 0:
                return np.zeros(0, dtype=np.int64)
            return _predict_np(ctx.cached_logits(f"{tag}:{key}", make, label="Adversarial predictions"))

        y_att = y_np[att]
        rows: dict[float, dict[str, Any]] = {}
        examples: tuple[torch.Tensor, np.ndarray] | None = None
        for eps in eps_list:
            if eps == 0.0:
                rows[eps] = {"robust": np.ones(len(att), dtype=bool)}
                continue
            kw = dict(eps=eps, norm=params.norm, lo=lo, hi=hi, scale=scale,
                      count_backward=ctx.count_backward, batch_size=bs)
            main = self._attack(ctx, params, x, y, eps, kw, f"{tag}:{eps}:start")
            adv_pred = preds_of(f"adv:{cfg}:eps={eps}", lambda: main.x_adv)
            row: dict[str, Any] = {"robust": adv_pred == y_att, "bad_grad": main.bad_grad.cpu().numpy()}
            if params.attack == "pgd":
                f = attacks.fgsm(ctx.forward, x, y, **kw)
                row["fgsm"] = preds_of(f"fgsm:{params.norm}:n={n}:eps={eps}", lambda: f.x_adv) == y_att
            noise_robust = np.ones(len(att), dtype=bool)
            for d in range(params.noise_draws):
                # A stream per draw: a draw is the same whether or not others came from the cache.
                gen = ctx.torch_generator(f"{tag}:{eps}:noise:{d}")
                noise_robust &= preds_of(
                    f"noise:{params.norm}:n={n}:eps={eps}:draw={d}",
                    lambda: attacks.uniform_noise(x, eps=eps, norm=params.norm, lo=lo, hi=hi,
                                                  scale=scale, generator=gen)) == y_att
            row["noise"] = noise_robust
            rows[eps] = row
            if eps == eps_list[-1] and ds.kind == "image":
                examples = (main.x_adv, adv_pred)

        # ---- metrics and curve ---------------------------------------------------------
        def full(robust_att: np.ndarray) -> np.ndarray:
            out = np.zeros(n, dtype=bool)
            out[att] = robust_att
            return out

        rng = ctx.rng(f"{tag}:bootstrap")
        curve: dict[str, dict[float, tuple[Metric, Metric]]] = {"main": {}, "fgsm": {}, "noise": {}}
        for eps, row in rows.items():
            for which in curve:
                key = "robust" if which == "main" else which
                if key in row:
                    curve[which][eps] = _robust_metrics(correct, full(row[key]), params.confidence, rng)
        # The clean point (eps 0) of every curve is the cached clean accuracy.
        clean = _robust_metrics(correct, correct, params.confidence, rng)
        for pts in curve.values():
            pts.setdefault(0.0, clean)
        top = eps_list[-1]
        robust_acc, asr = curve["main"][top]

        flag_items = self._masking_flags(params, rows, eps_list, len(att))
        evidence = self._evidence(params, ds, curve, clean[0], rows, eps_list, flag_items, n, len(att))
        if examples is not None:
            evidence.append(self._examples(ds, x, examples, y_att, top))
        return Measurement(metrics={"robust_accuracy": robust_acc, "attack_success_rate": asr},
                           evidence=evidence, flags=flag_items)

    # ---- pieces ---------------------------------------------------------------------------
    @staticmethod
    def _attack(ctx: Context, params: AdversarialParams, x: torch.Tensor, y: torch.Tensor, eps: float,
                kw: dict[str, Any], purpose: str) -> attacks.AttackResult:
        if params.attack == "fgsm":
            return attacks.fgsm(ctx.forward, x, y, **kw)
        return attacks.pgd(ctx.forward, x, y, steps=params.steps, step_size=params.step_size,
                           restarts=params.restarts, random_start=params.random_start,
                           generator=ctx.torch_generator(purpose), **kw)

    @staticmethod
    def _masking_flags(params: AdversarialParams, rows: dict[float, dict[str, Any]], eps_list: list[float],
                       n_att: int) -> list[Flag]:
        out: list[Flag] = []
        name = params.attack.upper()
        for eps in eps_list:
            row = rows[eps]
            if eps == 0.0:
                continue
            for ref, label in (("fgsm", "FGSM"), ("noise", f"uniform random noise ({params.noise_draws} draws)")):
                if ref not in row:
                    continue
                p, only_ref, only_main = _weaker(row["robust"], row[ref])
                if p < MASKING_ALPHA:
                    out.append(Flag(f"{name} weaker than {label.split(' (')[0]} at eps {eps:g}",
                                    f"{label} fooled {only_ref} samples that {name} did not, "
                                    f"{name} fooled {only_main} that it did not (sign test p = {p:.3g}); "
                                    "a sign of masked or obfuscated gradients"))
            bad = row["bad_grad"]
            if n_att and bad.mean() >= BAD_GRAD_FRACTION:
                out.append(Flag(f"zero or non-finite input gradients at eps {eps:g}",
                                f"{int(bad.sum())} of {n_att} attacked samples "
                                f"({bad.mean():.0%}) had an all-zero or NaN/inf loss gradient "
                                "w.r.t. the input: gradient attacks cannot work there"))
        for small, large in zip(eps_list, eps_list[1:]):
            # Nested balls: robust accuracy must not rise with eps.
            p, rose, fell = _weaker(rows[large]["robust"], rows[small]["robust"])
            if p < MASKING_ALPHA:
                out.append(Flag(f"robust accuracy rises from eps {small:g} to {large:g}",
                                f"{rose} samples fooled at eps {small:g} survive eps {large:g} "
                                f"({fell} the other way; sign test p = {p:.3g}): the attack is "
                                "not finding points the larger ball contains"))
        return out

    @staticmethod
    def _evidence(params: AdversarialParams, ds: Any, curve: dict[str, dict[float, tuple[Metric, Metric]]],
                  clean: Metric, rows: dict[float, dict[str, Any]], eps_list: list[float],
                  flag_items: list[Flag], n: int, n_att: int) -> list[dict[str, Any]]:
        name = params.attack.upper()
        unit = "std of each continuous feature" if ds.kind == "tabular" else "input units"
        labels = {"main": f"{name} ({params.norm})", "fgsm": f"FGSM ({params.norm})",
                  "noise": f"uniform noise, best of {params.noise_draws}"}
        series: dict[str, tuple[list[Any], ...]] = {}
        for which, pts in curve.items():
            if len(pts) < 2:
                continue
            xs = sorted(pts)
            ms = [pts[e][0] for e in xs]
            series[labels[which]] = (xs, [m.value for m in ms], [m.ci[0] if m.ci else None for m in ms],
                                     [m.ci[1] if m.ci else None for m in ms])
        table_rows = []
        for eps in sorted(curve["main"]):  # the clean point (eps 0) is always listed
            ra, asr = curve["main"][eps]
            row = rows.get(eps, {})
            fg = curve["fgsm"].get(eps)
            nz = curve["noise"].get(eps)
            bad = row.get("bad_grad")
            table_rows.append([eps, cell(ra.value, ra.ci), cell(asr.value, asr.ci),
                               None if fg is None else fg[0].value, None if nz is None else nz[0].value,
                               None if bad is None or not len(bad) else float(bad.mean())])
        step = params.step_size if params.step_size is not None else "2.5*eps/steps"
        cfg = (f"{name} {params.norm}, " + (f"{params.steps} steps of {step}, {params.restarts} restart(s), "
                                            f"random start {'on' if params.random_start else 'off'}, "
                                            if params.attack == "pgd" else "")
               + f"{n} samples ({n_att} correctly classified and attacked), clean accuracy {clean.value:.3f}; "
               f"eps in {unit}.")
        ev = [chart("line", "Robust accuracy vs eps",
                    {"series": series, "xlabel": f"eps ({params.norm}, {unit})", "ylabel": "robust accuracy",
                     "title": "Robust accuracy vs eps", "ylim": [0.0, 1.02]},
                    caption=f"{cfg} Bands: {int(100 * params.confidence)}% bootstrap CIs. FGSM and "
                            "uniform noise are the gradient-masking baselines."),
              table("Attack sweep", ["eps", "robust accuracy", "attack success rate",
                                     "FGSM robust acc.", "noise robust acc.", "bad-gradient share"],
                    table_rows, note=f"eps in {unit}; FGSM and noise columns are the gradient-masking baselines.")]
        checks_done = (["PGD not weaker than FGSM"] if params.attack == "pgd" else []) + [
            "not weaker than uniform noise", "robust accuracy non-increasing in eps",
            f"zero/NaN input gradients below {BAD_GRAD_FRACTION:.0%}"]
        if not flag_items:  # failures are the measurement's flags
            ev.append(text("Gradient-masking sanity checks",
                           "All passed (sign tests at alpha 0.05): " + "; ".join(checks_done) + "."))
        return ev

    @staticmethod
    def _examples(ds: Any, x: torch.Tensor, examples: tuple[torch.Tensor, np.ndarray], y: np.ndarray,
                  eps: float) -> dict[str, Any]:
        x_adv, adv_pred = examples
        fooled = np.flatnonzero(adv_pred != y)[:4]
        if len(fooled) == 0:
            return text("Adversarial examples", f"The attack fooled no sample at eps {eps:g}.")
        images: list[np.ndarray] = []
        titles: list[str] = []
        for i in fooled:
            clean = np.round(x[i].cpu().numpy().astype(np.float64), 4)
            adv = np.round(x_adv[i].cpu().numpy().astype(np.float64), 4)
            images += [clean, adv, adv - clean]
            titles += [f"clean: {ds.classes[y[i]]}", f"adversarial: {ds.classes[adv_pred[i]]}",
                       "perturbation"]
        grid = {"images": images, "titles": titles, "ncols": 3, "title": f"Adversarial examples at eps {eps:g}"}
        return chart("image_grid", f"Adversarial examples at eps {eps:g}", grid,
                     caption="Originally correct samples the attack fooled: clean input, adversarial "
                             "input with its predicted class, and the perturbation (contrast stretched).")


# ---- helpers ---------------------------------------------------------------------------------
def _predict_np(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim == 1 or logits.shape[1] == 1:
        return (logits.reshape(-1) > 0).astype(np.int64)
    return logits.argmax(axis=1)


def _image_box(ctx: Context) -> tuple[float, float]:
    box = ctx.model.input_range
    return (0.0, 1.0) if box is None else (float(box[0]), float(box[1]))


def _geometry(ctx: Context, ds: Any, device: torch.device
              ) -> tuple[torch.Tensor | float, torch.Tensor | float, torch.Tensor | None]:
    """(lo, hi, scale): the valid box and the per-feature unit of eps."""
    if ds.kind == "image":
        lo, hi = _image_box(ctx)
        return lo, hi, None
    cont = ds.continuous
    if cont is None or not np.any(cont):
        raise SkipCheck(f"dataset '{ds.name}' marks no continuous features to perturb")
    x = np.asarray(ds.x, dtype=np.float64)
    std = np.where(np.asarray(cont, dtype=bool), x.std(axis=0), 0.0)
    scale = torch.as_tensor(std, dtype=torch.float32, device=device)
    if ctx.model.input_range is not None:
        lo, hi = ctx.model.input_range
        return float(lo), float(hi), scale
    # No declared box: stay within each feature's observed range (plausible values).
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    return as_t(x.min(axis=0)), as_t(x.max(axis=0)), scale


def _robust_metrics(correct: np.ndarray, robust: np.ndarray, confidence: float,
                    rng: np.random.Generator) -> tuple[Metric, Metric]:
    """Robust accuracy (robust samples of all) and attack success rate (fooled samples of
    the originally correct ones): proportions with exact intervals."""
    correct, robust = np.asarray(correct, bool), np.asarray(robust, bool)
    n_correct = int(correct.sum())
    return (proportion(int((correct & robust).sum()), len(correct), confidence),
            proportion(int((correct & ~robust).sum()), n_correct, confidence))


def _weaker(robust_main: np.ndarray, robust_ref: np.ndarray) -> tuple[float, int, int]:
    """One-sided sign test that the reference fools more samples than the main attack.
    Returns (p, fooled only by the reference, fooled only by the main attack)."""
    only_ref = int(np.sum(robust_main & ~robust_ref))
    only_main = int(np.sum(~robust_main & robust_ref))
    if only_ref + only_main == 0 or only_ref <= only_main:
        return 1.0, only_ref, only_main
    return float(binomtest(only_ref, only_ref + only_main, 0.5, alternative="greater").pvalue), only_ref, only_main
