"""`robustness.adversarial`: evasion attacks over an eps sweep — FGSM, PGD, and the
AutoAttack family (APGD-CE, APGD-T, FAB-T, Square; `attack: autoattack` runs the standard
cascade) — with the gradient-masking sanity checks that RobustBench and AutoAttack's
authors ask for, an optional transfer attack from a `surrogate` model, and a black-box
Square attack that joins in when masking is suspected.

Robust accuracy counts a sample as robust when it is classified correctly and *no attack
run* found a misclassified point in its eps-ball: the per-sample worst case over the main
attack(s), the FGSM and uniform-noise baselines, the transfer attack and Square. So when
a masking flag fires, the black-box and transfer results are already in the headline: a
model with masked gradients cannot look robust because its gradient attack failed.
Misclassified clean samples are not attacked (they are already non-robust). Attack
success rate is over the originally correct samples. Both are proportions with exact
(Clopper-Pearson) intervals.

The masking flags (one-sided sign tests on the paired per-sample outcomes, alpha 0.05):
the white-box attack fooling significantly fewer samples than FGSM, than uniform random
noise of the same eps, or than the transfer attack; Square (black box) fooling at least
1% of the attacked samples (and 2 or more) that the white-box attacks missed; robust
accuracy rising significantly as eps grows; and input gradients that are zero or
non-finite for at least 10% of the attacked samples. A flag caps the check at `warn`.

Tabular data: eps is in standard deviations of each continuous feature (measured on the
check's dataset); one-hot and other binary columns never move; continuous columns that
hold only whole numbers (counts, ages in years) move in whole steps: the final
adversarial point is rounded, towards the clean value where rounding would leave the
ball, and judged after rounding.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator
from scipy.stats import binomtest

from audit import attacks, attacks_auto
from audit.check import Check, Flag, Measurement, Metric, Params, cell, chart, higher, lower, table, text
from audit.context import Context
from audit.errors import SkipCheck, SpecError
from audit.registry import register_check
from audit.spec import ModelSpec
from audit.stats import proportion

MASKING_ALPHA = 0.05
BAD_GRAD_FRACTION = 0.10
BLACK_BOX_SHARE = 0.01
_DEFAULT_EPS = {"linf": [1 / 255, 2 / 255, 4 / 255, 8 / 255], "l2": [0.125, 0.25, 0.5, 1.0]}
# Tabular data: eps in standard deviations. 0.05 std is below measurement noise for most
# features; 0.5 std moves a feature across a good part of its range.
_DEFAULT_EPS_TABULAR = {"linf": [0.05, 0.1, 0.2, 0.3, 0.5], "l2": [0.1, 0.25, 0.5, 1.0]}
_AUTO = ("apgd-ce", "apgd-t", "fab-t", "square", "autoattack")
_CASCADE = {"apgd-ce": ("apgd-ce",), "apgd-t": ("apgd-t",), "fab-t": ("fab-t",), "square": ("square",),
            "autoattack": attacks_auto.AUTOATTACK_STANDARD}
_LABEL = {"apgd-ce": "APGD-CE", "apgd-t": "APGD-T", "fab-t": "FAB-T", "square": "Square", "pgd": "PGD",
          "fgsm": "FGSM", "autoattack": "AutoAttack"}


class AdversarialParams(Params):
    attack: Literal["fgsm", "pgd", "apgd-ce", "apgd-t", "fab-t", "square", "autoattack"] = "pgd"
    norm: Literal["linf", "l2"] = "linf"
    # One radius or the sweep; the clean point (eps 0) is always drawn. Images: input
    # units; tabular: standard deviations of each continuous feature.
    eps: float | list[float] | None = None
    steps: int | None = Field(None, ge=1, le=10_000)  # PGD: 20; APGD, FAB: 100 (AutoAttack standard)
    step_size: float | None = Field(None, gt=0)  # PGD: default 2.5 * eps / steps (Madry et al.)
    restarts: int = Field(1, ge=1, le=100)
    random_start: bool = True
    n_samples: int = Field(512, ge=1)
    targeted: Literal[False] = False  # untargeted only (APGD-T and FAB-T target classes internally)
    batch_size: int | None = Field(None, ge=1)
    noise_draws: int = Field(10, ge=1, le=1000)  # uniform-noise baseline draws per sample
    n_target_classes: int = Field(9, ge=1, le=1000)  # APGD-T, FAB-T
    n_queries: int = Field(5000, ge=1, le=1_000_000)  # Square
    # Square on top of a gradient attack: when a masking flag fires (auto), always, or never.
    black_box: Literal["auto", "always", "never"] = "auto"
    # A model to craft transfer attacks on (a fixture or a file, like `model:`), e.g. an
    # undefended twin of the audited model.
    surrogate: ModelSpec | None = None

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

    @field_validator("surrogate")
    @classmethod
    def _surrogate_source(cls, v: ModelSpec | None) -> ModelSpec | None:
        if v is not None and v.train is not None:
            raise ValueError("a surrogate is a fixture or a model file, not a training recipe")
        return v

    def eps_list(self, kind: str = "image") -> list[float]:
        defaults = _DEFAULT_EPS_TABULAR if kind == "tabular" else _DEFAULT_EPS
        raw = defaults[self.norm] if self.eps is None else (
            [self.eps] if isinstance(self.eps, (int, float)) else self.eps)
        return sorted({float(e) for e in raw})

    def n_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return 20 if self.attack in ("pgd", "fgsm") else 100


def _check_box(params: AdversarialParams, lo: float, hi: float, dims: int | None, where: str) -> None:
    width = hi - lo
    for e in params.eps_list("image"):
        if params.norm == "linf" and e > width:
            raise ValueError(f"eps {e:g} is larger than the input box {where} [{lo:g}, {hi:g}] "
                             f"(width {width:g}): every input would be reachable")
        if params.norm == "l2" and dims is not None and e > width * math.sqrt(dims):
            raise ValueError(f"L2 eps {e:g} is larger than the diameter of the input box {where} "
                             f"[{lo:g}, {hi:g}]^{dims} ({width * math.sqrt(dims):.4g})")


class _Seeds:
    """Torch generators from the audit seed and a purpose; the derived seeds are recorded."""

    def __init__(self, ctx: Context, tag: str) -> None:
        self.ctx, self.tag, self.used = ctx, tag, {}

    def generator(self, purpose: str, device: torch.device | None = None) -> torch.Generator:
        full = f"{self.tag}:{purpose}"
        seed = int(self.ctx.rng(full).integers(2**62))
        self.used[purpose] = seed
        g = torch.Generator(device=device or self.ctx.device)
        g.manual_seed(seed)
        return g

    def integer(self, purpose: str) -> int:
        seed = int(self.ctx.rng(f"{self.tag}:{purpose}").integers(2**62))
        self.used[purpose] = seed
        return seed


@register_check
class AdversarialRobustness(Check):
    name = "robustness.adversarial"
    version = 2
    requires = ("data",)
    kinds = ("image", "tabular")
    area = "robustness"
    metrics = {
        "robust_accuracy": higher("Share of samples classified correctly with no misclassified point found "
                                  "by any attack run (per-sample worst case) within the largest eps.",
                                  proportion=True),
        "attack_success_rate": lower("Share of originally correct samples that some attack at the largest eps "
                                     "turned into misclassifications.", proportion=True),
    }
    summary = ("Evasion attacks (FGSM, PGD, APGD-CE, APGD-T, FAB-T, Square, AutoAttack) over an eps sweep, "
               "worst case per sample, with gradient-masking sanity checks, transfer and black-box attacks.")
    Params = AdversarialParams

    @classmethod
    def validate_params(cls, params: AdversarialParams, spec: Any) -> None:
        box = spec.model.input_range
        if box is not None and params.eps is not None:
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
        stats = ctx.input_stats(params.data)  # exact, from the pass when the dataset streams
        xmin, xmax = float(stats.min.min()), float(stats.max.max())
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
        cost = _Cost(ctx)
        seeds = _Seeds(ctx, tag)
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
        y = torch.as_tensor(y_np[att].astype(np.int64)).to(device)  # a streamed dataset's labels are compact
        geo = _geometry(ctx, ds, device, params.data)
        lo, hi, scale = geo["lo"], geo["hi"], geo["scale"]
        bs = params.batch_size or ctx.batch_size
        eps_list = params.eps_list(ds.kind)
        steps = params.n_steps()
        cfg = (f"{params.attack}:{params.norm}:steps={steps}:ss={params.step_size}:r={params.restarts}:"
               f"rs={params.random_start}:t={params.n_target_classes}:q={params.n_queries}:n={n}")
        surrogate = ctx.auxiliary_model(params.surrogate) if params.surrogate is not None else None
        clean_att = torch.as_tensor(clean_logits[att]).to(device)
        sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None

        def preds_of(key: str, make: Any) -> np.ndarray:
            """Predictions for a derived input of the attacked samples, through the same
            (cached) inference path as the clean predictions."""
            if len(att) == 0:
                return np.zeros(0, dtype=np.int64)
            return _predict_np(ctx.cached_logits(f"{tag}:{key}", make, label="Adversarial predictions"))

        def finalize(x0: torch.Tensor, xa: torch.Tensor, eps: float) -> torch.Tensor:
            return _finalize(x0, xa, geo, params.norm, eps)

        def preds_known(key: str, x_adv: torch.Tensor, known: torch.Tensor | None) -> np.ndarray:
            """Predictions of an attack's points: the classes its loop already computed for
            the points it classified (`known` >= 0), a counted pass for the others. Points
            that finalizing moved (whole-number columns) are all predicted again."""
            if known is None or geo.get("integer_t") is not None or len(att) == 0:
                return preds_of(key, lambda: x_adv)

            def build() -> np.ndarray:
                out = known.cpu().numpy().copy()
                miss = np.flatnonzero(out < 0)
                if len(miss):
                    rows = torch.as_tensor(miss, device=x_adv.device)
                    out[miss] = _predict_np(ctx.infer(x_adv[rows], what="Adversarial predictions"))
                return out

            return ctx.cached(("adversarial-predictions", f"{tag}:{key}"), build)

        clean_grad: dict[str, torch.Tensor] = {}

        def fgsm_at(eps: float, kw: dict[str, Any]) -> attacks.AttackResult:
            """FGSM at eps from the loss gradient at the clean input, computed once for every eps."""
            first = "g" not in clean_grad
            if first:
                t1 = time.perf_counter()
                clean_grad["g"] = attacks.clean_gradient(ctx.forward, x, y, count_backward=ctx.count_backward,
                                                         batch_size=bs)
                if sync:
                    sync()
                cost.bare_backward(time.perf_counter() - t1, len(att))
            res = attacks.fgsm(ctx.forward, x, y, gradient=clean_grad["g"], **kw)
            if first:
                res.passes.update(forward=len(att), backward=len(att))
            return res
        y_att = y_np[att]
        rows: dict[float, dict[str, Any]] = {}
        runs: dict[float, dict[str, Any]] = {}   # per eps: what each attack did (passes, seconds, queries)
        examples: tuple[torch.Tensor, np.ndarray] | None = None
        for eps in eps_list:
            if eps == 0.0:
                rows[eps] = {"main": np.ones(len(att), dtype=bool)}
                continue
            kw = dict(eps=eps, norm=params.norm, lo=lo, hi=hi, scale=scale, count_backward=ctx.count_backward,
                      batch_size=bs)
            row: dict[str, Any] = {}
            info: dict[str, Any] = {}
            t0 = time.perf_counter()
            if params.attack in ("pgd", "fgsm"):
                if params.attack == "fgsm":
                    main = fgsm_at(eps, kw)
                else:
                    main = attacks.pgd(ctx.forward, x, y, steps=steps, step_size=params.step_size,
                                       restarts=params.restarts, random_start=params.random_start,
                                       generator=seeds.generator(f"{eps}:start"), **kw)
                x_main = finalize(x, main.x_adv, eps)
                adv_pred = preds_known(f"adv:{cfg}:eps={eps}", x_main, main.pred)
                row["main"] = adv_pred == y_att
                row["bad_grad"] = main.bad_grad.cpu().numpy()
                info[params.attack] = {"passes": dict(main.passes), "seconds": time.perf_counter() - t0}
            else:
                casc = self._cascade(ctx, params, x, y, clean_att, eps, geo, seeds, bs, _CASCADE[params.attack],
                                     sync, f"{eps}")
                x_main = casc.x_adv
                adv_pred = preds_of(f"adv:{cfg}:eps={eps}", lambda: x_main)
                white = [a for a in _CASCADE[params.attack] if a != "square"]
                fooled_white = np.zeros(len(att), dtype=bool)
                for a in white:
                    if a in casc.fooled_by:
                        fooled_white |= casc.fooled_by[a].cpu().numpy()
                row["main"] = adv_pred == y_att
                if white:
                    row["white"] = ~fooled_white
                if "square" in casc.fooled_by and white:
                    row["square_gain"] = int(casc.fooled_by["square"].sum())
                    row["square"] = row["main"]  # after the black-box attack: the cascade's result
                row["bad_grad"] = casc.bad_grad.cpu().numpy() if white else None
                info.update(self._cascade_info(casc, len(att)))
            if params.attack in ("pgd", "apgd-ce", "apgd-t", "fab-t", "autoattack"):
                f = fgsm_at(eps, kw)
                x_f = finalize(x, f.x_adv, eps)
                row["fgsm"] = preds_of(f"fgsm:{params.norm}:n={n}:eps={eps}", lambda: x_f) == y_att
            noise_robust = np.ones(len(att), dtype=bool)
            for d in range(params.noise_draws):
                # A stream per draw: a draw is the same whether or not others came from the cache.
                gen = seeds.generator(f"{eps}:noise:{d}")
                with cost.bare_forward(sync) as making:
                    noise_robust &= preds_of(
                        f"noise:{params.norm}:n={n}:eps={eps}:draw={d}",
                        making(lambda: finalize(x, attacks.uniform_noise(x, eps=eps, norm=params.norm, lo=lo, hi=hi,
                                                                         scale=scale, generator=gen), eps))) == y_att
            row["noise"] = noise_robust
            if surrogate is not None:
                t1 = time.perf_counter()
                x_t, passes = self._transfer(ctx, surrogate.module, x, y, eps, geo, params, seeds, bs, steps)
                row["transfer"] = preds_of(f"transfer:{cfg}:eps={eps}", lambda: x_t) == y_att
                info["transfer"] = {"passes": passes, "seconds": time.perf_counter() - t1}
            rows[eps] = row
            runs[eps] = info
            if eps == eps_list[-1] and ds.kind == "image":
                examples = (x_main, adv_pred)

        flag_items = self._masking_flags(params, rows, eps_list, len(att))
        # Masking suspected (or asked for): the black-box attack joins the worst case.
        want_square = "square" not in _CASCADE.get(params.attack, ()) and (
            params.black_box == "always" or (params.black_box == "auto" and flag_items))
        if want_square:
            for eps in eps_list:
                if eps == 0.0:
                    continue
                alive = _worst(rows[eps])
                sel = np.flatnonzero(alive)
                robust_sq = np.ones(len(att), dtype=bool)
                if len(sel):
                    casc = self._cascade(ctx, params, x[sel], y[sel], clean_att[sel], eps, geo, seeds, bs,
                                         ("square",), sync, f"{eps}:black-box")
                    robust_sq[sel] = casc.robust.cpu().numpy()
                    runs[eps].update(self._cascade_info(casc, len(sel)))
                rows[eps]["square"] = alive & robust_sq  # after Square: every attack so far, then Square
                rows[eps]["square_gain"] = int((~robust_sq).sum())

        # ---- metrics and curve ---------------------------------------------------------
        def full(robust_att: np.ndarray) -> np.ndarray:
            out = np.zeros(n, dtype=bool)
            out[att] = robust_att
            return out

        series_keys = ("worst", "main", "white", "fgsm", "noise", "transfer", "square")
        curve: dict[str, dict[float, tuple[Metric, Metric]]] = {k: {} for k in series_keys}
        for eps, row in rows.items():
            row["worst"] = _worst(row)
            for which in series_keys:
                if which in row and row[which] is not None:
                    curve[which][eps] = _robust_metrics(correct, full(row[which]), params.confidence)
        # The clean point (eps 0) of every curve is the cached clean accuracy.
        clean = _robust_metrics(correct, correct, params.confidence)
        for pts in curve.values():
            if pts:
                pts.setdefault(0.0, clean)
        top = eps_list[-1]
        robust_acc, asr = curve["worst"][top]

        evidence = self._evidence(params, ds, geo, curve, clean[0], rows, runs, eps_list, flag_items, n,
                                  len(att), seeds, want_square)
        evidence.append(cost.table())
        if examples is not None:
            evidence.append(self._examples(ds, x, examples, y_att, top))
        return Measurement(metrics={"robust_accuracy": robust_acc, "attack_success_rate": asr},
                           evidence=evidence, flags=flag_items)

    # ---- pieces ---------------------------------------------------------------------------
    @staticmethod
    def _cascade(ctx: Context, params: AdversarialParams, x: torch.Tensor, y: torch.Tensor, clean: torch.Tensor,
                 eps: float, geo: dict[str, Any], seeds: _Seeds, bs: int, which: tuple[str, ...],
                 sync: Any, purpose: str) -> attacks_auto.CascadeResult:
        cfg = attacks_auto.AttackConfig(norm=params.norm, eps=eps, steps=params.n_steps(),
                                        restarts=params.restarts, n_target_classes=params.n_target_classes,
                                        n_queries=params.n_queries)
        return attacks_auto.run_attacks(
            ctx.forward, x, y, cfg, attacks=which, lo=geo["lo"], hi=geo["hi"], scale=geo["scale"],
            generator=seeds.generator(f"{purpose}:autoattack"), host_seed=seeds.integer(f"{purpose}:square-windows"),
            count_backward=ctx.count_backward, batch_size=bs, clean_logits=clean,
            finalize=lambda x0, xa: _finalize(x0, xa, geo, params.norm, eps), sync=sync)

    @staticmethod
    def _cascade_info(casc: attacks_auto.CascadeResult, n_att: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for a, p in casc.passes.items():
            if a == "clean":
                continue
            d: dict[str, Any] = {"passes": p, "seconds": casc.seconds.get(a, 0.0),
                                 "fooled": int(casc.fooled_by[a].sum()), "robust_after": casc.robust_after[a],
                                 "of": n_att}
            if a == "square" and casc.queries is not None:
                q = casc.queries.cpu().numpy()
                hit = casc.fooled_by[a].cpu().numpy()
                d["median_queries_fooled"] = float(np.median(q[hit])) if hit.any() else None
                d["queries_per_s"] = p["forward"] / max(casc.seconds.get(a, 0.0), 1e-9)
            out[a] = d
        for a, why in casc.skipped.items():
            out[a] = {"skipped": why}
        return out

    @staticmethod
    def _transfer(ctx: Context, surrogate: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                  geo: dict[str, Any], params: AdversarialParams, seeds: _Seeds, bs: int, steps: int
                  ) -> tuple[torch.Tensor, dict[str, int]]:
        """APGD-CE on the surrogate (counted through the context); the highest-loss (or first
        fooling) point per sample is then judged on the audited model."""
        counted = ctx.counting(surrogate)
        gen = seeds.generator(f"{eps}:transfer")
        out = x.clone()
        passes = {"forward": 0, "backward": 0}
        for s in range(0, x.shape[0], bs):
            space = attacks_auto.Space(x[s:s + bs], params.norm, eps, geo["lo"], geo["hi"], geo["scale"])
            o = attacks_auto.apgd_batch(counted, lambda n: None, space, y[s:s + bs], steps=steps, generator=gen)
            out[s:s + bs] = _finalize(x[s:s + bs], o.x_adv, geo, params.norm, eps)
            passes["forward"] += o.forward
            passes["backward"] += o.backward
        return out, passes

    @staticmethod
    def _masking_flags(params: AdversarialParams, rows: dict[float, dict[str, Any]], eps_list: list[float],
                       n_att: int) -> list[Flag]:
        out: list[Flag] = []
        for eps in eps_list:
            row = rows[eps]
            if eps == 0.0:
                continue
            mine = "white" if "white" in row else "main"
            name = ("white-box attacks" if mine == "white" and params.attack == "autoattack"
                    else _LABEL[params.attack])
            if params.attack == "square":
                name = "Square"
            for ref, label in (("fgsm", "FGSM"), ("noise", f"uniform random noise ({params.noise_draws} draws)"),
                               ("transfer", "the transfer attack from the surrogate")):
                if ref not in row:
                    continue
                p, only_ref, only_main = _weaker(row[mine], row[ref])
                if p < MASKING_ALPHA:
                    out.append(Flag(f"{name} weaker than {label.split(' (')[0]} at eps {eps:g}",
                                    f"{label} fooled {only_ref} samples that {name} did not, "
                                    f"{name} fooled {only_main} that it did not (sign test p = {p:.3g}); "
                                    "a sign of masked or obfuscated gradients"))
            gain = row.get("square_gain")
            if gain is not None and "white" in row and n_att and gain >= max(2, BLACK_BOX_SHARE * n_att):
                out.append(Flag(f"black-box Square beats the white-box attacks at eps {eps:g}",
                                f"Square, which uses no gradient, fooled {gain} of {n_att} attacked samples "
                                "that APGD/FAB had missed: the gradients mislead (masking); the headline "
                                "counts Square's results"))
            bad = row.get("bad_grad")
            if bad is not None and n_att and bad.mean() >= BAD_GRAD_FRACTION:
                out.append(Flag(f"zero or non-finite input gradients at eps {eps:g}",
                                f"{int(bad.sum())} of {n_att} attacked samples "
                                f"({bad.mean():.0%}) had an all-zero or NaN/inf loss gradient "
                                "w.r.t. the input: gradient attacks cannot work there"))
        for small, large in zip(eps_list, eps_list[1:]):
            # Nested balls: robust accuracy must not rise with eps.
            a = rows[large].get("white", rows[large]["main"])
            b = rows[small].get("white", rows[small]["main"])
            p, rose, fell = _weaker(a, b)
            if p < MASKING_ALPHA:
                out.append(Flag(f"robust accuracy rises from eps {small:g} to {large:g}",
                                f"{rose} samples fooled at eps {small:g} survive eps {large:g} "
                                f"({fell} the other way; sign test p = {p:.3g}): the attack is "
                                "not finding points the larger ball contains"))
        return out

    @staticmethod
    def _evidence(params: AdversarialParams, ds: Any, geo: dict[str, Any],
                  curve: dict[str, dict[float, tuple[Metric, Metric]]], clean: Metric,
                  rows: dict[float, dict[str, Any]], runs: dict[float, dict[str, Any]], eps_list: list[float],
                  flag_items: list[Flag], n: int, n_att: int, seeds: _Seeds, ran_square: bool
                  ) -> list[dict[str, Any]]:
        name = _LABEL[params.attack]
        unit = geo["unit"]
        steps = params.n_steps()
        labels = {"worst": "worst case over all attacks", "main": f"{name} ({params.norm})",
                  "white": "white-box: APGD-CE, APGD-T, FAB-T", "fgsm": f"FGSM ({params.norm})",
                  "noise": f"uniform noise, worst of {params.noise_draws}", "transfer": "transfer from surrogate",
                  "square": "after Square (black box)"}
        if params.attack == "autoattack":
            labels["main"] = "AutoAttack (standard cascade)"
        series: dict[str, tuple[list[Any], ...]] = {}
        for which, pts in curve.items():
            if len(pts) < 2 or which == "main" and params.attack == "autoattack":
                continue
            xs = sorted(pts)
            ms = [pts[e][0] for e in xs]
            series[labels[which]] = (xs, [m.value for m in ms], [m.ci[0] if m.ci else None for m in ms],
                                     [m.ci[1] if m.ci else None for m in ms])
        cols = [c for c in ("main", "white", "fgsm", "noise", "transfer", "square") if curve[c]
                and not (c == "main" and params.attack == "autoattack")]
        table_rows = []
        for eps in sorted(curve["worst"]):  # the clean point (eps 0) is always listed
            ra, asr = curve["worst"][eps]
            row = rows.get(eps, {})
            bad = row.get("bad_grad")
            table_rows.append([eps, cell(ra.value, ra.ci), cell(asr.value, asr.ci)]
                              + [None if eps not in curve[c] else curve[c][eps][0].value for c in cols]
                              + [None if bad is None or not len(bad) else float(bad.mean())])
        if params.attack == "pgd":
            step = params.step_size if params.step_size is not None else "2.5*eps/steps"
            how = (f"PGD {params.norm}, {steps} steps of {step}, {params.restarts} restart(s), random start "
                   f"{'on' if params.random_start else 'off'}")
        elif params.attack == "fgsm":
            how = f"FGSM {params.norm}"
        else:
            parts = {"apgd-ce": f"APGD-CE ({steps} iterations, {params.restarts} restart(s))",
                     "apgd-t": f"APGD-T on the targeted DLR loss ({steps} iterations, "
                               f"{params.n_target_classes} target classes)",
                     "fab-t": f"FAB-T ({steps} iterations, {params.n_target_classes} target classes)",
                     "square": f"Square ({params.n_queries} queries, p_init 0.8, 1 restart)"}
            how = "; then ".join(parts[a] for a in _CASCADE[params.attack])
            if params.attack == "autoattack":
                how = "AutoAttack, standard cascade, each attack on the samples the earlier ones left: " + how
        extras = []
        if "fgsm" in curve and curve["fgsm"]:
            extras.append("FGSM")
        extras.append(f"uniform noise ({params.noise_draws} draws)")
        if curve["transfer"]:
            extras.append(f"a transfer attack (APGD-CE, {steps} iterations) from the surrogate "
                          f"{_surrogate_name(params.surrogate)}")
        if ran_square:
            extras.append(f"Square ({params.n_queries} queries) as a black-box check"
                          + (" because a masking flag fired" if params.black_box == "auto" else ""))
        cfg = (f"{how}. Also run, and part of the per-sample worst case: {', '.join(extras)}. "
               f"{n} samples ({n_att} correctly classified and attacked), clean accuracy {clean.value:.3f}; "
               f"eps in {unit}.")
        head_cols = {"main": f"{name} alone", "white": "white-box attacks alone", "fgsm": "FGSM", "noise": "noise",
                     "transfer": "transfer", "square": "after Square"}
        ev = [chart("line", "Robust accuracy vs eps",
                    {"series": series, "xlabel": f"eps ({params.norm}, {unit})", "ylabel": "robust accuracy",
                     "title": "Robust accuracy vs eps", "ylim": [0.0, 1.02]},
                    caption=f"{cfg} Bands: {int(100 * params.confidence)}% exact (Clopper-Pearson) intervals. "
                            "The headline is the worst case: a sample is robust only if no attack fooled it."),
              table("Attack sweep", ["eps", "robust accuracy (worst case)", "attack success rate"]
                    + [head_cols[c] + " robust acc." for c in cols] + ["bad-gradient share"], table_rows,
                    note=f"eps in {unit}. Robust accuracy of each attack on its own beside the worst case; "
                         "FGSM, noise, transfer and Square are the gradient-masking baselines.")]
        ev.append(_settings_table(params, runs, seeds))
        if ds.kind == "tabular":
            ev.append(_units_table(ds, geo, params, eps_list))
        checks_done = ([f"{name} not weaker than FGSM"] if curve["fgsm"] else []) + [
            "not weaker than uniform noise", "robust accuracy non-increasing in eps",
            f"zero/NaN input gradients below {BAD_GRAD_FRACTION:.0%}"]
        if curve["transfer"]:
            checks_done.append("not weaker than the transfer attack")
        if "square" in _CASCADE.get(params.attack, ()) and params.attack == "autoattack":
            checks_done.append(f"Square adds under {BLACK_BOX_SHARE:.0%} to the white-box attacks")
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


class _Cost:
    """The check's passes (forward-only and forward+backward samples, from the Context's
    counters) and its floor: the same passes as bare batched loops, at the per-sample cost
    of the check's own bare passes (the loss gradient at the clean input for a forward+
    backward sample; the noise predictions, model time only, for a forward one)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.t0 = time.perf_counter()
        self.f0, self.b0 = ctx.forward_samples, ctx.backward_samples
        self.fb = [0.0, 0]  # seconds, samples of bare forward+backward passes
        self.f = [0.0, 0]   # seconds, samples of bare forward passes

    def bare_backward(self, seconds: float, samples: int) -> None:
        self.fb[0] += seconds
        self.fb[1] += samples

    @contextlib.contextmanager
    def bare_forward(self, sync: Any) -> Iterator[Any]:
        """Times the model passes in the block: the time `making(make)` spends building
        inputs is not a model pass and is left out."""
        making_s = [0.0]

        def making(make: Any) -> Any:
            def wrapped() -> Any:
                t = time.perf_counter()
                out = make()
                making_s[0] += time.perf_counter() - t
                return out
            return wrapped

        t0, f0 = time.perf_counter(), self.ctx.forward_samples
        yield making
        if sync:
            sync()
        ran = self.ctx.forward_samples - f0
        if ran:
            self.f[0] += time.perf_counter() - t0 - making_s[0]
            self.f[1] += ran

    def table(self) -> dict[str, Any]:
        seconds = time.perf_counter() - self.t0
        fwd = self.ctx.forward_samples - self.f0
        bwd = self.ctx.backward_samples - self.b0
        per_fb = self.fb[0] / self.fb[1] if self.fb[1] else None
        per_f = self.f[0] / self.f[1] if self.f[1] else None
        rows = [["forward + backward", bwd, None if per_fb is None else round(1e3 * per_fb, 4),
                 None if per_fb is None else round(bwd * per_fb, 3)],
                ["forward only", fwd - bwd, None if per_f is None else round(1e3 * per_f, 4),
                 None if per_f is None else round((fwd - bwd) * per_f, 3)]]
        floor = sum(r[3] for r in rows if r[3] is not None)
        known = all(r[3] is not None for r, k in zip(rows, (bwd, fwd - bwd)) if k)
        note = (f"Every pass this check made (attacks, predictions of their points, baselines), counted by the "
                f"audit. Floor: the same samples through bare batched passes, at the per-sample cost measured on "
                f"this check's own bare passes (the loss gradient at the clean input; the noise predictions). ")
        if known and floor > 0:
            note += (f"The check took {seconds:.2f} s, {seconds / floor:.2f}x its floor of {floor:.2f} s "
                     "(the rest: attack steps and projections, noise draws, bookkeeping).")
        else:
            note += f"The check took {seconds:.2f} s."
        return table("Passes and cost", ["passes", "samples", "ms per sample (bare)", "floor (s)"], rows, note=note)


# ---- helpers ---------------------------------------------------------------------------------
def _surrogate_name(entry: ModelSpec | None) -> str:
    if entry is None:
        return ""
    return f"fixture '{entry.fixture}'" if entry.fixture else f"'{entry.path}'"


def _settings_table(params: AdversarialParams, runs: dict[float, dict[str, Any]], seeds: _Seeds) -> dict[str, Any]:
    rows = []
    for eps, info in runs.items():
        for attack, d in info.items():
            if "skipped" in d:
                rows.append([eps, _LABEL.get(attack, attack), None, None, None, None, None, d["skipped"]])
                continue
            p = d["passes"]
            note = []
            if "robust_after" in d:
                note.append(f"fooled {d['fooled']}, {d['robust_after']} of {d['of']} still robust after it")
            if d.get("queries_per_s") is not None:
                note.append(f"{d['queries_per_s']:.0f} queries/s")
            if d.get("median_queries_fooled") is not None:
                note.append(f"median {d['median_queries_fooled']:.0f} queries to fool")
            rows.append([eps, _LABEL.get(attack, attack), params.n_steps() if attack not in ("square",) else None,
                         params.n_queries if attack == "square" else None, int(p["forward"]), int(p["backward"]),
                         round(float(d["seconds"]), 3), "; ".join(note)])
    seed_note = ", ".join(f"{k}={v}" for k, v in sorted(seeds.used.items())[:12])
    more = len(seeds.used) - 12
    return table("Attack runs", ["eps", "attack", "iterations", "Square queries", "forward samples",
                                 "backward samples", "seconds", "result"], rows,
                 note=(f"Restarts: {params.restarts}; target classes (APGD-T, FAB-T): {params.n_target_classes}. "
                       f"Seeds (derived from the audit seed and each purpose): {seed_note}"
                       + (f" and {more} more" if more > 0 else "") + "."))


def _units_table(ds: Any, geo: dict[str, Any], params: AdversarialParams, eps_list: list[float]) -> dict[str, Any]:
    std = geo["std"]
    names = ds.feature_names or [f"x{i}" for i in range(len(std))]
    top = eps_list[-1]
    rows = []
    for j in np.flatnonzero(geo["movable"])[:20]:
        rows.append([names[j], float(std[j]), float(top * std[j]),
                     "whole steps" if geo["integer"][j] else "continuous"])
    fixed = [names[j] for j in np.flatnonzero(~geo["movable"])]
    note = (f"eps is in standard deviations of each feature, measured on dataset '{ds.name}': at eps {top:g} "
            f"({params.norm}) a feature may move by {top:g} x its std (L2: the moves' squares, in std units, "
            f"sum to at most {top:g}^2). The sweep {', '.join(f'{e:g}' for e in eps_list)} std runs from "
            "changes within measurement noise to a good part of a feature's range. "
            f"{len(fixed)} columns never move (one-hot categories and other binary columns"
            + (f": {', '.join(fixed[:8])}{', ...' if len(fixed) > 8 else ''}" if fixed else "")
            + "); columns holding only whole numbers move in whole steps.")
    return table("What eps means on this data", ["feature", "std (data units)", f"largest move at eps {top:g}",
                                                  "moves"], rows, note=note)


def _predict_np(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim == 1 or logits.shape[1] == 1:
        return (logits.reshape(-1) > 0).astype(np.int64)
    return logits.argmax(axis=1)


def _image_box(ctx: Context) -> tuple[float, float]:
    box = ctx.model.input_range
    return (0.0, 1.0) if box is None else (float(box[0]), float(box[1]))


def tabular_geometry(ds: Any, device: torch.device | str = "cpu", input_range: tuple[float, float] | None = None,
                     stats: Any = None) -> dict[str, Any]:
    """The perturbation set of a tabular dataset: eps unit (std per continuous feature,
    0 for columns that must not move), the valid box and the whole-number columns. From
    the exact per-column statistics (`Context.input_stats`, the same over the same blocks
    whether the dataset streams or not); computed here when none are given."""
    cont = ds.continuous
    if cont is None or not np.any(cont):
        raise SkipCheck(f"dataset '{ds.name}' marks no continuous features to perturb")
    if stats is None:
        from audit.lazy import BlockStats, block_rows, merge_stats

        step = block_rows(ds.x.shape[1])
        stats = merge_stats([BlockStats.of(np.asarray(ds.x[s:s + step])) for s in range(0, len(ds), step)])
    sd = stats.std
    movable = np.asarray(cont, dtype=bool) & (sd > 0)
    std = np.where(movable, sd, 0.0)
    whole = np.asarray(stats.whole, dtype=bool) & movable
    as_t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)  # noqa: E731
    if input_range is not None:
        lo, hi = float(input_range[0]), float(input_range[1])
    else:
        # No declared box: stay within each feature's observed range (plausible values).
        lo, hi = as_t(stats.min), as_t(stats.max)
    return {"lo": lo, "hi": hi, "scale": as_t(std), "std": std, "movable": movable, "integer": whole,
            "integer_t": as_t(whole.astype(np.float32)) if whole.any() else None,
            "unit": "standard deviations of each continuous feature (one-hot and binary columns fixed)"}


def _geometry(ctx: Context, ds: Any, device: torch.device, name: str) -> dict[str, Any]:
    """lo, hi, scale (the per-feature unit of eps) and the whole-number columns."""
    if ds.kind == "image":
        lo, hi = _image_box(ctx)
        return {"lo": lo, "hi": hi, "scale": None, "integer_t": None, "unit": "input units"}
    return tabular_geometry(ds, device, ctx.model.input_range, ctx.input_stats(name))


def _finalize(x0: torch.Tensor, xa: torch.Tensor, geo: dict[str, Any], norm: str, eps: float) -> torch.Tensor:
    """Whole-number columns in whole steps: the move is rounded to the nearest integer (Linf,
    when that stays within eps std) or towards zero (L2, or where nearest would leave the ball)."""
    mask = geo.get("integer_t")
    if mask is None:
        return xa
    d = xa - x0
    trunc = torch.trunc(d)
    if norm == "linf":
        near = torch.round(d)
        bound = eps * geo["scale"]
        d_int = torch.where(near.abs() <= bound + 1e-6, near, trunc)
    else:
        d_int = trunc
    return torch.where(mask > 0, x0 + d_int, xa)


def _worst(row: dict[str, Any]) -> np.ndarray:
    out = None
    for k in ("main", "white", "fgsm", "noise", "transfer", "square"):
        v = row.get(k)
        if v is None:
            continue
        out = v.copy() if out is None else out & v
    return out


def _robust_metrics(correct: np.ndarray, robust: np.ndarray, confidence: float) -> tuple[Metric, Metric]:
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
