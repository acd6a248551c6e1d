"""White-box evasion attacks on torch tensors, batched: FGSM and PGD (Linf, L2) with a
seeded random start and restarts (Goodfellow et al. 2015; Madry et al. 2018).

Gradients are taken for the input only (the context freezes the weights), everything
stays on the device between steps, and every pass is counted through the callbacks the
caller hands in (`Context.forward`, `Context.count_backward`).

A perturbation lives in "normalised units": `x_adv = clip(x + scale * u, lo, hi)` with
`||u|| <= eps`. Images use scale 1; tabular data uses each continuous feature's standard
deviation and 0 for features that must not move (categorical one-hots).

PGD keeps, per sample, the first iterate that is misclassified (as AutoAttack does): the
logits of every iterate are computed anyway for its gradient, so this costs no pass and
makes the reported robust accuracy a tighter upper bound. With `early_stop` (default) a
sample fooled at some iterate is attacked no further: what is reported for it (that
first fooling iterate and its predicted class) is the same, and its remaining passes are
saved; so are those of a sample whose path has become periodic (its step left it where it
was, or took it back to the previous iterate: every later step would repeat a pass). The
result carries the predicted class of every returned point the loop already classified,
so that the caller need not predict them again.

Linf steps clamp the perturbation to `[max(x - eps*scale, lo) - x, min(x + eps*scale, hi)
- x]` (one in-place clamp per step; the same set as clipping the perturbation and then the
input); L2 steps project it. The gradient is taken with respect to the perturbation added
to the input (a few per cent faster on a CPU than with respect to the input itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Norm = Literal["linf", "l2"]
Forward = Callable[[torch.Tensor], torch.Tensor]
Counter = Callable[[int], None]
_TINY = 1e-12


@dataclass
class AttackResult:
    x_adv: torch.Tensor        # (n, ...) adversarial inputs, on the device
    bad_grad: torch.Tensor     # (n,) bool: input gradient all zero or non-finite at the first step
    passes: dict[str, int]     # forward / backward samples this attack ran
    # (n,) predicted class of x_adv where the attack loop classified that very point (a
    # fooling iterate), -1 where it did not (the final iterate of a sample never fooled)
    pred: torch.Tensor | None = None


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed loss (per-sample gradients do not depend on the batch): cross-entropy, or
    binary cross-entropy for a single-logit model (class 1 positive)."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype), reduction="sum")
    return F.cross_entropy(logits, y, reduction="sum")


def predict(logits: torch.Tensor) -> torch.Tensor:
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm per sample, shaped to broadcast against t."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-sample bool mask shaped to broadcast against a batch like `like`."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


class _Geometry:
    """The perturbation set: norm ball of radius eps in normalised units, inside the box."""

    def __init__(self, norm: Norm, eps: float, lo: torch.Tensor | float, hi: torch.Tensor | float,
                 scale: torch.Tensor | None) -> None:
        self.norm, self.eps, self.lo, self.hi, self.scale = norm, float(eps), lo, hi, scale
        # 1/scale where a feature may move, 0 where it may not.
        self.inv = None if scale is None else torch.where(scale > 0, 1.0 / scale.clamp_min(_TINY),
                                                          torch.zeros_like(scale))

    def _scaled(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.scale is None else t * self.scale

    def random_start(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.norm == "linf":
            u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1
            u = u * self.eps
        else:
            # Uniform in the L2 ball: Gaussian direction, radius eps * U^(1/d).
            g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            if self.scale is not None:
                g = g * (self.scale > 0)
            d = int(g[0].count_nonzero()) if self.scale is not None else g[0].numel()
            r = torch.rand((x.shape[0],), generator=generator, device=x.device, dtype=x.dtype)
            radius = self.eps * r.pow(1.0 / max(d, 1))
            u = g / (_per_sample_norm(g) + _TINY) * _rows(radius, x)
        return self.project(x, self._scaled(u))

    def step(self, delta: torch.Tensor, grad: torch.Tensor, step_size: float) -> torch.Tensor:
        g = self._scaled(grad)  # gradient w.r.t. the normalised perturbation
        if self.norm == "linf":
            return delta + step_size * self._scaled(g.sign())
        return delta + step_size * self._scaled(g / (_per_sample_norm(g) + _TINY))

    def project(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            bound = self.eps if self.scale is None else self.eps * self.scale
            delta = torch.clamp(delta, -bound, bound)
        else:
            u = delta if self.inv is None else delta * self.inv
            factor = torch.clamp(self.eps / (_per_sample_norm(u) + _TINY), max=1.0)
            delta = delta * factor
        return torch.clamp(x + delta, self.lo, self.hi) - x

    def grad_score(self, grad: torch.Tensor) -> torch.Tensor:
        return self._scaled(grad).flatten(1).abs().amax(dim=1)

    def linf_box(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-element bounds of a Linf perturbation: the eps-ball around x inside the box, minus x."""
        bound = self.eps if self.scale is None else self.eps * self.scale
        lo = torch.maximum(x - bound, torch.as_tensor(self.lo, dtype=x.dtype, device=x.device)) - x
        hi = torch.minimum(x + bound, torch.as_tensor(self.hi, dtype=x.dtype, device=x.device)) - x
        return lo, hi

    def advance(self, x: torch.Tensor, delta: torch.Tensor, grad: torch.Tensor, step_size: float,
                box: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """The next perturbation from `delta` (detached) and a sanitized gradient; in place for Linf."""
        if box is not None:
            g = grad.sign_() if self.scale is None else self._scaled(self._scaled(grad).sign_())
            return delta.add_(g, alpha=step_size).clamp_(box[0], box[1])
        return self.project(x, self.step(delta, grad, step_size))


def _leave_cycles(active: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, delta: torch.Tensor,
                  box: tuple[torch.Tensor, torch.Tensor] | None, before: torch.Tensor, p: torch.Tensor,
                  prev: torch.Tensor | None, p_prev: torch.Tensor | None, best: torch.Tensor,
                  pred: torch.Tensor, t: int, steps: int,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                             tuple[torch.Tensor, torch.Tensor] | None, torch.Tensor, torch.Tensor]:
    """Early stop for unfooled samples whose path has become periodic. PGD is deterministic
    in the iterate, so a sample whose next perturbation equals the current one (a fixed
    point: every coordinate at the bound its gradient pushes it to) or the previous one (a
    2-cycle: sign steps flipping back and forth) would run the same passes again until the
    last step and never be fooled (each iterate of the cycle has been classified, unfooled).
    It leaves the batch with the point the full run would end at (the cycle's iterate at
    step `steps`, by parity) and the class this loop gave that point. Returns the filtered
    batch and (current perturbation, class) as the next step's `prev`, `p_prev`."""
    if t + 1 >= steps:  # the last step: the loop ends anyway
        return active, xs, ys, delta, box, before, p
    same = (delta == before).flatten(1).all(dim=1)
    back = torch.zeros_like(same) if prev is None else (delta == prev).flatten(1).all(dim=1) & ~same
    leave = same | back
    if bool(leave.any()):
        # a 2-cycle alternates delta_{t+1} (= delta_{t-1}) and delta_t: at step `steps` it is at
        # delta_{t+1} when steps - (t + 1) is even, else at delta_t
        at_next = same | (back & ((steps - t - 1) % 2 == 0))
        end_delta = torch.where(at_next.view(-1, *[1] * (delta.dim() - 1)), delta, before)
        end_class = p if p_prev is None else torch.where(same | ~at_next, p, p_prev)
        rows = active[leave]
        best[rows], pred[rows] = xs[leave] + end_delta[leave], end_class[leave]
        keep = ~leave
        active, xs, ys, delta, before, p = active[keep], xs[keep], ys[keep], delta[keep], before[keep], p[keep]
        if box is not None:
            box = (box[0][keep], box[1][keep])
    return active, xs, ys, delta, box, before, p


def _pgd_batch(forward: Forward, count_backward: Counter, x: torch.Tensor, y: torch.Tensor,
               geo: _Geometry, steps: int, step_size: float, random_start: bool,
               generator: torch.Generator | None, bad_grad: torch.Tensor | None, early_stop: bool = True,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, int]:
    """One restart on one batch. Returns (x_adv, fooled at some iterate, predicted class of
    x_adv where known else -1, forward, backward). With `early_stop`, samples leave the
    batch at the iterate that fools them."""
    n = x.shape[0]
    delta = geo.random_start(x, generator) if random_start else torch.zeros_like(x)
    box = geo.linf_box(x) if geo.norm == "linf" else None
    best = torch.empty_like(x)
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    pred = torch.full((n,), -1, dtype=torch.long, device=x.device)
    active = torch.arange(n, device=x.device)  # rows of the batch still attacked
    xs, ys = x, y
    # the previous iterate's perturbation and class (early stop: a sample back at it is in a 2-cycle)
    prev: torch.Tensor | None = None
    p_prev: torch.Tensor | None = None
    fwd = bwd = 0
    for t in range(steps):
        m = int(xs.shape[0])
        delta.requires_grad_(True)
        logits = forward(xs + delta)
        (grad,) = torch.autograd.grad(loss_fn(logits, ys), delta)
        count_backward(m)
        fwd += m
        bwd += m
        delta = delta.detach()
        with torch.no_grad():
            if t == 0 and bad_grad is not None:
                score = geo.grad_score(grad)
                bad_grad[active] |= (score == 0) | ~torch.isfinite(score)
            grad = grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
            p = predict(logits)
            newly = p != ys
            if not early_stop:
                newly &= ~found[active]
            if bool(newly.any()):
                rows = active[newly]
                best[rows], pred[rows], found[rows] = xs[newly] + delta[newly], p[newly], True
                if early_stop:
                    keep = ~newly
                    active, xs, ys, delta, grad = active[keep], xs[keep], ys[keep], delta[keep], grad[keep]
                    p = p[keep]
                    if prev is not None and p_prev is not None:
                        prev, p_prev = prev[keep], p_prev[keep]
                    if box is not None:
                        box = (box[0][keep], box[1][keep])
                    if active.numel() == 0:
                        break
            if early_stop:
                before = delta.clone()
                delta = geo.advance(xs, delta, grad, step_size, box)
                active, xs, ys, delta, box, prev, p_prev = _leave_cycles(
                    active, xs, ys, delta, box, before, p, prev, p_prev, best, pred, t, steps)
                if active.numel() == 0:
                    break
            else:
                delta = geo.advance(xs, delta, grad, step_size, box)
    rest = active if early_stop else torch.nonzero(~found).flatten()
    if rest.numel():
        best[rest] = (xs + delta) if early_stop else (x + delta)[rest]
    return best, found, pred, fwd, bwd


def pgd(forward: Forward, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm = "linf",
        steps: int = 20, step_size: float | None = None, restarts: int = 1, random_start: bool = True,
        lo: torch.Tensor | float = 0.0, hi: torch.Tensor | float = 1.0, scale: torch.Tensor | None = None,
        generator: torch.Generator | None = None, count_backward: Counter | None = None,
        batch_size: int = 256, early_stop: bool = True) -> AttackResult:
    """Untargeted PGD. `x`, `y` on the attack device. Restarts after the first run only on
    the samples no earlier restart fooled (one extra forward pass decides which)."""
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    count_backward = count_backward or (lambda n: None)
    step_size = 2.5 * eps / steps if step_size is None else float(step_size)
    geo = _Geometry(norm, eps, lo, hi, scale)
    n = x.shape[0]
    out = x.clone()
    bad = torch.zeros(n, dtype=torch.bool, device=x.device)
    pred = torch.full((n,), -1, dtype=torch.long, device=x.device)
    passes = {"forward": 0, "backward": 0}
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        xb, yb = x[sl], y[sl]
        idx = torch.arange(xb.shape[0], device=x.device)
        fooled = torch.zeros(xb.shape[0], dtype=torch.bool, device=x.device)
        advb = xb.clone()
        predb = torch.full((xb.shape[0],), -1, dtype=torch.long, device=x.device)
        bad_b = torch.zeros(xb.shape[0], dtype=torch.bool, device=x.device)
        for r in range(restarts):
            adv, found, p, f, b = _pgd_batch(forward, count_backward, xb[idx], yb[idx], geo, steps, step_size,
                                             random_start, generator, bad_b if r == 0 else None, early_stop)
            passes["forward"] += f
            passes["backward"] += b
            if r + 1 < restarts:
                # Which final iterates fool the model decides who gets another restart.
                with torch.no_grad():
                    unknown = p < 0
                    p[unknown] = predict(forward(adv[unknown]))
                    found |= p != yb[idx]
                passes["forward"] += int(unknown.sum())
            advb[idx] = adv
            predb[idx] = p
            fooled[idx] |= found
            if r + 1 < restarts:
                idx = idx[~found]
                if idx.numel() == 0 or not random_start:
                    break  # without a random start a restart repeats the same path
        out[sl] = advb
        bad[sl] = bad_b
        pred[sl] = predb
    return AttackResult(out, bad, passes, pred)


def fgsm(forward: Forward, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm = "linf",
         lo: torch.Tensor | float = 0.0, hi: torch.Tensor | float = 1.0, scale: torch.Tensor | None = None,
         count_backward: Counter | None = None, batch_size: int = 256,
         gradient: torch.Tensor | None = None) -> AttackResult:
    """FGSM (L2: the fast gradient method): one step of size eps from the clean input.
    The step's direction is the loss gradient at the clean input, whatever eps: pass the
    `clean_gradient` of an earlier call as `gradient` to sweep eps without another pass."""
    passes = {"forward": 0, "backward": 0}
    if gradient is None:
        gradient = clean_gradient(forward, x, y, count_backward=count_backward, batch_size=batch_size)
        passes = {"forward": int(x.shape[0]), "backward": int(x.shape[0])}
    geo = _Geometry(norm, eps, lo, hi, scale)
    with torch.no_grad():
        score = geo.grad_score(gradient)
        bad = (score == 0) | ~torch.isfinite(score)
        g = torch.nan_to_num(gradient, nan=0.0, posinf=0.0, neginf=0.0)
        x_adv = x + geo.project(x, geo.step(torch.zeros_like(x), g, eps))
    return AttackResult(x_adv, bad, passes)


def clean_gradient(forward: Forward, x: torch.Tensor, y: torch.Tensor, *, count_backward: Counter | None = None,
                   batch_size: int = 256) -> torch.Tensor:
    """The loss gradient with respect to the input at the clean input (one forward and
    backward pass per sample): FGSM's direction at every eps."""
    count_backward = count_backward or (lambda n: None)
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss_fn(forward(xb), y[start:start + batch_size]), xb)
        count_backward(int(xb.shape[0]))
        out[start:start + batch_size] = g
    return out


def uniform_noise(x: torch.Tensor, *, eps: float, norm: Norm = "linf", lo: torch.Tensor | float = 0.0,
                  hi: torch.Tensor | float = 1.0, scale: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """x plus noise drawn uniformly from the same perturbation set (the random baseline)."""
    return x + _Geometry(norm, eps, lo, hi, scale).random_start(x, generator)
