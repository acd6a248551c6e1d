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
makes the reported robust accuracy a tighter upper bound.
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


def _pgd_batch(forward: Forward, count_backward: Counter, x: torch.Tensor, y: torch.Tensor,
               geo: _Geometry, steps: int, step_size: float, random_start: bool,
               generator: torch.Generator | None, bad_grad: torch.Tensor | None,
               ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """One restart on one batch. Returns (x_adv, fooled-at-some-iterate, forward, backward)."""
    n = x.shape[0]
    delta = geo.random_start(x, generator) if random_start else torch.zeros_like(x)
    best = x.clone()
    found = torch.zeros(n, dtype=torch.bool, device=x.device)
    fwd = bwd = 0
    for t in range(steps):
        delta.requires_grad_(True)
        logits = forward(x + delta)
        (grad,) = torch.autograd.grad(loss_fn(logits, y), delta)
        count_backward(n)
        fwd += n
        bwd += n
        with torch.no_grad():
            if t == 0 and bad_grad is not None:
                score = geo.grad_score(grad)
                bad_grad |= (score == 0) | ~torch.isfinite(score)
            grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
            cur = x + delta
            newly = (predict(logits) != y) & ~found
            best = torch.where(_rows(newly, x), cur, best)
            found |= newly
            delta = geo.project(x, geo.step(delta.detach(), grad, step_size))
    final = x + delta.detach()
    best = torch.where(_rows(found, x), best, final)
    return best, found, fwd, bwd


def pgd(forward: Forward, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm = "linf",
        steps: int = 20, step_size: float | None = None, restarts: int = 1, random_start: bool = True,
        lo: torch.Tensor | float = 0.0, hi: torch.Tensor | float = 1.0, scale: torch.Tensor | None = None,
        generator: torch.Generator | None = None, count_backward: Counter | None = None,
        batch_size: int = 256) -> AttackResult:
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
    passes = {"forward": 0, "backward": 0}
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        xb, yb = x[sl], y[sl]
        idx = torch.arange(xb.shape[0], device=x.device)
        fooled = torch.zeros(xb.shape[0], dtype=torch.bool, device=x.device)
        advb = xb.clone()
        bad_b = torch.zeros(xb.shape[0], dtype=torch.bool, device=x.device)
        for r in range(restarts):
            adv, found, f, b = _pgd_batch(forward, count_backward, xb[idx], yb[idx], geo, steps, step_size,
                                          random_start, generator, bad_b if r == 0 else None)
            passes["forward"] += f
            passes["backward"] += b
            if r + 1 < restarts:
                # Which final iterates fool the model decides who gets another restart.
                with torch.no_grad():
                    found |= predict(forward(adv)) != yb[idx]
                passes["forward"] += int(idx.shape[0])
            advb[idx] = adv
            fooled[idx] |= found
            if r + 1 < restarts:
                idx = idx[~found]
                if idx.numel() == 0 or not random_start:
                    break  # without a random start a restart repeats the same path
        out[sl] = advb
        bad[sl] = bad_b
    return AttackResult(out, bad, passes)


def fgsm(forward: Forward, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: Norm = "linf",
         lo: torch.Tensor | float = 0.0, hi: torch.Tensor | float = 1.0, scale: torch.Tensor | None = None,
         count_backward: Counter | None = None, batch_size: int = 256) -> AttackResult:
    """FGSM (L2: the fast gradient method): one step of size eps from the clean input."""
    return pgd(forward, x, y, eps=eps, norm=norm, steps=1, step_size=eps, restarts=1, random_start=False,
               lo=lo, hi=hi, scale=scale, count_backward=count_backward, batch_size=batch_size)


def uniform_noise(x: torch.Tensor, *, eps: float, norm: Norm = "linf", lo: torch.Tensor | float = 0.0,
                  hi: torch.Tensor | float = 1.0, scale: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """x plus noise drawn uniformly from the same perturbation set (the random baseline)."""
    return x + _Geometry(norm, eps, lo, hi, scale).random_start(x, generator)
