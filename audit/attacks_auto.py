"""AutoAttack-grade evasion attacks (Croce and Hein, ICML 2020), batched on the device:

* APGD-CE: auto-PGD on the cross-entropy loss (step size halved at checkpoints when the
  loss stalls, restarts from the best point, momentum 0.75);
* APGD-T: auto-PGD on the targeted DLR loss, once per target class (the top-`k` other
  classes of the clean logits); DLR is invariant to the scale of the logits, which is what
  defeats saturated-softmax gradient masking;
* FAB-T: the targeted fast adaptive boundary attack (Croce and Hein, ICML 2020b): steps
  to the linearised decision boundary of each target class, biased back towards the
  clean input, keeping the smallest adversarial perturbation found;
* Square: the black-box score-based random search of Andriushchenko et al. (ECCV 2020)
  on the margin loss; it needs no gradient at all, so masked gradients do not stop it;
* `autoattack`: the standard version's cascade, each attack on the samples no earlier
  one fooled; a sample is robust only if every attack failed (per-sample worst case).

Our own code, written from the papers and checked against the reference implementation's
defaults (fra31/auto-attack, 'standard' version: 100 iterations, 1 restart, 9 target
classes, 5000 Square queries, p_init 0.8) and against ART's AutoAttack in the tests. Why
not a library: every pass must go through the audit's counted forward; the loops stay on
the device (no host read inside a step loop; the cascade compacts the still-robust
samples between attacks, and Square every `_SQUARE_CHUNK` queries); and the perturbation
set is the audit's own (tabular eps in standard deviations with frozen one-hot columns),
which the libraries do not express.

Everything works in "normalised units" u, with `x_adv = x + scale * u`: images use scale
1, tabular data each continuous feature's standard deviation and 0 for features that must
not move. The set is `||u|| <= eps` (Linf or L2) intersected with the valid input box.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

Norm = Literal["linf", "l2"]
Forward = Callable[[torch.Tensor], torch.Tensor]
Counter = Callable[[int], None]
Finalize = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, x_adv) -> valid x_adv
_TINY = 1e-12
_ROOM_CAP = 1e4        # FAB's projection: an unbounded box side counts as this far (normalised units)
_BISECT = 60           # FAB's projection: bisection steps (2^-60 of the bracket)
_SQUARE_CHUNK = 50     # Square: queries between two compactions of the still-active samples

AUTOATTACK_STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")


# ---- losses and predictions ------------------------------------------------------------------
def two_class(logits: torch.Tensor) -> torch.Tensor:
    """A single-logit binary model's output as two logits [0, z] (softmax = sigmoid)."""
    if logits.shape[1] == 1:
        return torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits


def predict(logits: torch.Tensor) -> torch.Tensor:
    return two_class(logits).argmax(dim=1)


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample cross-entropy (to maximise)."""
    return F.cross_entropy(two_class(logits).float(), y, reduction="none")


def dlr_targeted_loss(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Targeted DLR (Croce and Hein 2020, eq. 7), to maximise:
    -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2); with 3 classes the denominator is
    z_pi1 - z_pi3. Invariant to shifting and scaling the logits."""
    z = two_class(logits).float()
    zs = z.sort(dim=1).values
    k = z.shape[1]
    if k >= 4:
        denom = zs[:, -1] - 0.5 * (zs[:, -3] + zs[:, -4])
    else:
        denom = zs[:, -1] - zs[:, 0]
    u = torch.arange(z.shape[0], device=z.device)
    return -(z[u, y] - z[u, target]) / (denom + _TINY)


def margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j: positive while correctly classified (Square minimises it)."""
    z = two_class(logits).float()
    u = torch.arange(z.shape[0], device=z.device)
    zy = z[u, y]
    others = z.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return zy - others


# ---- the perturbation set -------------------------------------------------------------------------
def _rows(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view(-1, *([1] * (like.dim() - 1)))


def _norm2(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1)


class Space:
    """The set `{u : ||u|| <= eps, lo <= x + scale * u <= hi}` for a batch x, in normalised units."""

    def __init__(self, x: torch.Tensor, norm: Norm, eps: float, lo: torch.Tensor | float,
                 hi: torch.Tensor | float, scale: torch.Tensor | None) -> None:
        self.x, self.norm, self.eps = x, norm, float(eps)
        dt, dev = x.dtype, x.device
        s = torch.ones_like(x[:1]) if scale is None else torch.as_tensor(scale, dtype=dt, device=dev).expand_as(x[0])[None]
        self.s = s
        self.move = (s > 0).to(dt)
        safe = torch.where(s > 0, s, torch.ones_like(s))
        self.lo = torch.as_tensor(lo, dtype=dt, device=dev)
        self.hi = torch.as_tensor(hi, dtype=dt, device=dev)
        zero = torch.zeros((), dtype=dt, device=dev)
        self.ulo = torch.where(s > 0, (self.lo - x) / safe, zero).clamp(max=0.0)
        self.uhi = torch.where(s > 0, (self.hi - x) / safe, zero).clamp(min=0.0)
        # Linf: the ball and the box are both boxes
        self.blo = self.ulo.clamp(min=-self.eps)
        self.bhi = self.uhi.clamp(max=self.eps)

    def take(self, idx: torch.Tensor) -> Space:
        out = object.__new__(Space)
        out.norm, out.eps, out.s, out.move, out.lo, out.hi = self.norm, self.eps, self.s, self.move, self.lo, self.hi
        out.x, out.ulo, out.uhi, out.blo, out.bhi = (t[idx] for t in (self.x, self.ulo, self.uhi, self.blo, self.bhi))
        return out

    def to_x(self, u: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.x + self.s * u, self.lo, self.hi)

    def project(self, u: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return torch.clamp(u, self.blo, self.bhi)
        u = u * self.move
        u = u * _rows(torch.clamp(self.eps / (_norm2(u) + _TINY), max=1.0), u)
        return torch.clamp(u, self.ulo, self.uhi)  # towards 0 only: stays in the ball

    def direction(self, g: torch.Tensor) -> torch.Tensor:
        g = g * self.move
        if self.norm == "linf":
            return g.sign()
        return g / _rows(_norm2(g) + _TINY, g)

    def size(self, u: torch.Tensor) -> torch.Tensor:
        u = u * self.move
        return u.flatten(1).abs().amax(dim=1) if self.norm == "linf" else _norm2(u)

    def random_start(self, generator: torch.Generator | None) -> torch.Tensor:
        """APGD's start: a random direction scaled to the sphere of radius eps, then projected."""
        shape, dev, dt = self.x.shape, self.x.device, self.x.dtype
        if self.norm == "linf":
            t = (torch.rand(shape, generator=generator, device=dev, dtype=dt) * 2 - 1) * self.move
            u = self.eps * t / _rows(t.flatten(1).abs().amax(dim=1) + _TINY, t)
        else:
            t = torch.randn(shape, generator=generator, device=dev, dtype=dt) * self.move
            u = self.eps * t / _rows(_norm2(t) + _TINY, t)
        return self.project(u)


@dataclass
class Outcome:
    """One attack's result on a batch: adversarial inputs (the input itself where nothing
    was found), which samples it fooled, its pass counts and what it did."""

    x_adv: torch.Tensor
    fooled: torch.Tensor          # (n,) bool, on the device
    forward: int = 0              # samples through the model
    backward: int = 0
    bad_grad: torch.Tensor | None = None   # (n,) bool: zero or non-finite input gradient at the start
    info: dict = field(default_factory=dict)


# ---- APGD -----------------------------------------------------------------------------------------
def _checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve its step: p0 = 0, p1 = 0.22, p_{j+1} = p_j +
    max(p_j - p_{j-1} - 0.03, 0.06) (as fractions of `steps`); the reference's integer form."""
    k = max(int(0.22 * steps), 1)
    k_min = max(int(0.06 * steps), 1)
    decr = max(int(0.03 * steps), 1)
    out, at = [], 0
    while at + k <= steps:
        at += k
        out.append(at)
        k = max(k - decr, k_min)
    return out


def apgd_batch(forward: Forward, count_backward: Counter, space: Space, y: torch.Tensor, *,
               steps: int, loss: str = "ce", target: torch.Tensor | None = None,
               generator: torch.Generator | None = None, rho: float = 0.75) -> Outcome:
    """One APGD run (Croce and Hein 2020, Algorithm 1) on one batch: `steps` + 1
    forward+backward passes. `loss`: "ce" or "dlr-targeted" (with `target`)."""
    n = y.shape[0]
    x = space.x

    def loss_grad(u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u = u.detach().requires_grad_(True)
        logits = forward(space.to_x(u))
        per = ce_loss(logits, y) if loss == "ce" else dlr_targeted_loss(logits, y, target)
        (g,) = torch.autograd.grad(per.sum(), u)
        count_backward(n)
        return logits.detach(), per.detach(), g.detach()

    u = space.random_start(generator)
    logits, cur, g = loss_grad(u)
    score = (g * space.move).flatten(1).abs().amax(dim=1)
    bad_grad = (score == 0) | ~torch.isfinite(score)
    g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
    fooled = predict(logits) != y
    u_adv = u.clone()
    best_loss, u_best, g_best = cur.clone(), u.clone(), g.clone()
    step = torch.full((n,), 2.0 * space.eps, device=x.device, dtype=x.dtype)
    history = [cur]                      # loss per iterate, the start included (device tensors)
    checks = set(_checkpoints(steps))
    last_check = 0
    best_at_check = best_loss.clone()
    reduced = torch.zeros(n, dtype=torch.bool, device=x.device)
    u_prev = u.clone()
    for i in range(steps):
        with torch.no_grad():
            a = 1.0 if i == 0 else 0.75
            mom = u - u_prev
            u_prev = u
            z = space.project(u + _rows(step, u) * space.direction(g))
            u = space.project(u + a * (z - u) + (1.0 - a) * mom)
        logits, cur, g = loss_grad(u)
        with torch.no_grad():
            g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
            newly = (predict(logits) != y) & ~fooled
            u_adv = torch.where(_rows(newly, u), u, u_adv)
            fooled |= newly
            better = cur > best_loss
            u_best = torch.where(_rows(better, u), u, u_best)
            g_best = torch.where(_rows(better, g), g, g_best)
            best_loss = torch.where(better, cur, best_loss)
            history.append(cur)
            if i + 1 in checks:
                k = i + 1 - last_check
                window = torch.stack(history[-(k + 1):])          # k + 1 losses: k comparisons
                increases = (window[1:] > window[:-1]).sum(dim=0)
                stall = increases.to(x.dtype) <= k * rho
                no_gain = ~reduced & (best_at_check >= best_loss)
                halve = stall | no_gain
                reduced = halve
                best_at_check = best_loss.clone()
                step = torch.where(halve, step / 2.0, step)
                u = torch.where(_rows(halve, u), u_best, u)
                g = torch.where(_rows(halve, g), g_best, g)
                last_check = i + 1
                history = history[-1:]
    u_out = torch.where(_rows(fooled, u_adv), u_adv, u_best)
    return Outcome(space.to_x(u_out).detach(), fooled, forward=n * (steps + 1), backward=n * (steps + 1),
                   bad_grad=bad_grad)


# ---- FAB-T ----------------------------------------------------------------------------------------
def _min_norm_to_plane(p: torch.Tensor, w: torch.Tensor, c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                       norm: Norm) -> torch.Tensor:
    """The smallest step d (Linf or L2) with w.d = c and lo <= p + d <= hi, per row (flat
    (n, D) tensors); where the box does not reach the plane, the step that gets closest.

    Along the optimum every coordinate moves in the direction sign(w_i c) by
    min(t, room_i) (Linf) or min(lambda |w_i|, room_i) (L2); the progress w.d is monotone in
    t (lambda), so a vectorised bisection finds it without sorting or host reads."""
    sgn = torch.sign(w) * torch.sign(c)[:, None]
    room = torch.where(sgn > 0, hi - p, p - lo).clamp(min=0.0, max=_ROOM_CAP)
    room = torch.where(sgn == 0, torch.zeros_like(room), room)
    aw = w.abs()
    need = c.abs()
    if norm == "linf":
        top = room.amax(dim=1)

        def moved(t: torch.Tensor) -> torch.Tensor:
            return torch.minimum(t[:, None], room)
    else:
        top = (room / (aw + _TINY)).amax(dim=1)

        def moved(t: torch.Tensor) -> torch.Tensor:
            return torch.minimum(t[:, None] * aw, room)
    lo_t, hi_t = torch.zeros_like(top), top
    for _ in range(_BISECT):
        mid = 0.5 * (lo_t + hi_t)
        short = (aw * moved(mid)).sum(dim=1) < need
        lo_t = torch.where(short, mid, lo_t)
        hi_t = torch.where(short, hi_t, mid)
    return sgn * moved(hi_t)


def fab_targeted_batch(forward: Forward, count_backward: Counter, space: Space, y: torch.Tensor,
                       target: torch.Tensor, *, steps: int, alpha_max: float = 0.1, eta: float = 1.05,
                       beta: float = 0.9) -> Outcome:
    """One FAB-T run for one target class per sample: per iteration one forward+backward
    (the gradient of z_t - z_y) and one forward (is the new point adversarial?). Returns
    the smallest adversarial point found if it lies within eps, else the input."""
    n = y.shape[0]
    u = torch.zeros_like(space.x)
    flat = lambda t: t.flatten(1)  # noqa: E731
    lo, hi = flat(space.ulo.expand_as(u)), flat(space.uhi.expand_as(u))
    best = torch.full((n,), float("inf"), device=u.device, dtype=u.dtype)
    u_best = torch.zeros_like(u)
    ar = torch.arange(n, device=u.device)
    for _ in range(steps):
        uu = u.detach().requires_grad_(True)
        logits = two_class(forward(space.to_x(uu))).float()
        diff = logits[ar, target] - logits[ar, y]       # < 0 until the target class wins
        (g,) = torch.autograd.grad(diff.sum(), uu)
        count_backward(n)
        with torch.no_grad():
            g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0) * space.move
            w = flat(g)
            d1 = _min_norm_to_plane(flat(u), w, -diff.detach(), lo, hi, space.norm)
            # the same plane seen from the clean input: w.(0 + d2) = w.u - diff
            d2 = _min_norm_to_plane(torch.zeros_like(flat(u)), w, (w * flat(u)).sum(1) - diff.detach(),
                                    lo, hi, space.norm)
            if space.norm == "linf":
                a1, a2 = d1.abs().amax(1), d2.abs().amax(1)
            else:
                a1, a2 = d1.norm(dim=1), d2.norm(dim=1)
            a1, a2 = a1.clamp(min=1e-8), a2.clamp(min=1e-8)
            alpha = (a1 / (a1 + a2)).clamp(0.0, alpha_max)[:, None]
            step = (flat(u) + eta * d1) * (1 - alpha) + (eta * d2) * alpha
            u = torch.clamp(step.view_as(u), space.ulo, space.uhi)
            adv = predict(forward(space.to_x(u))) != y
            size = space.size(u)
            improve = adv & (size < best)
            best = torch.where(improve, size, best)
            u_best = torch.where(_rows(improve, u), u, u_best)
            u = torch.where(_rows(adv, u), beta * u, u)  # back towards the clean input
    ok = best <= space.eps * (1 + 1e-6)
    u_out = torch.where(_rows(ok, u_best), space.project(u_best), torch.zeros_like(u_best))
    return Outcome(space.to_x(u_out), ok, forward=2 * n * steps, backward=n * steps, info={"min_size": best})


# ---- Square ---------------------------------------------------------------------------------------
def _p_schedule(p_init: float, it: int, n_queries: int) -> float:
    """Square's schedule for the share of coordinates changed, on the 10,000-query scale."""
    it = int(it / n_queries * 10_000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64),
                       (6000, 128), (8000, 256)):
        if it <= bound:
            return p_init / div
    return p_init / 512


def _eta_rect(h: int, w: int, dev: torch.device, dt: torch.dtype) -> torch.Tensor:
    """Square L2's window pattern: nested rectangles weighted 1/(r+1)^2 around the centre."""
    d = torch.zeros(h, w, device=dev, dtype=dt)
    ch, cw = h // 2, w // 2
    for r in range(max(ch, cw) + 1):
        d[max(ch - r, 0):min(ch + r + 1, h), max(cw - r, 0):min(cw + r + 1, w)] += 1.0 / (r + 1) ** 2
    return d / (d.norm() + _TINY)


def _eta(h: int, w: int, flip: bool, dev: torch.device, dt: torch.dtype) -> torch.Tensor:
    """The L2 window: one half +, the other half - (so that it moves mass, not just adds it)."""
    if h == 1:
        half = w // 2
        d = torch.cat([_eta_rect(1, half, dev, dt) if half else torch.zeros(1, 0, device=dev, dtype=dt),
                       -_eta_rect(1, w - half, dev, dt)], dim=1)
    else:
        half = h // 2
        d = torch.cat([_eta_rect(half, w, dev, dt) if half else torch.zeros(0, w, device=dev, dtype=dt),
                       -_eta_rect(h - half, w, dev, dt)], dim=0)
        if flip and h == w:
            d = d.t()
    return d / (d.norm() + _TINY)


def _as_image(t: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W) view: images as they are, anything else as one row of features."""
    if t.dim() == 4:
        return t
    return t.reshape(t.shape[0], 1, 1, -1)


def square_batch(forward: Forward, space: Space, y: torch.Tensor, *, n_queries: int, p_init: float = 0.8,
                 generator: torch.Generator | None = None, host_rng: torch.Generator | None = None) -> Outcome:
    """Square attack (untargeted, margin loss), one restart. Queries the model once at the
    start and once per iteration for every sample not yet fooled; samples that are fooled
    stop being queried at the next compaction (every `_SQUARE_CHUNK` iterations)."""
    n = y.shape[0]
    dev, dt = space.x.device, space.x.dtype
    host_rng = host_rng or torch.Generator().manual_seed(0)
    img = _as_image(space.x)
    c, h, w = img.shape[1:]
    n_feat = c * h * w
    move = _as_image(space.move)
    eps = space.eps

    def signs(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randint(0, 2, shape, generator=generator, device=dev).to(dt) * 2 - 1

    # initial point: vertical stripes (Linf) or a grid of L2 windows (L2)
    if space.norm == "linf":
        u0 = eps * signs((n, c, 1, w)).expand(n, c, h, w) * move
    else:
        u0 = torch.zeros(n, c, h, w, device=dev, dtype=dt)
        s = max(h // 5, 1) if h > 1 else max(w // 5, 1)
        sh = s if h > 1 else 1
        for vh in range(0, h - sh + 1, sh):
            for vw in range(0, w - s + 1, s):
                pattern = _eta(sh, s, False, dev, dt)
                u0[:, :, vh:vh + sh, vw:vw + s] += pattern * signs((n, c, 1, 1))
        u0 = u0 * move
        u0 = eps * u0 / _rows(_norm2(u0) + _TINY, u0)
    u_best = space.project(u0.reshape_as(space.x))
    m_best = margin(forward(space.to_x(u_best)), y)
    queries = torch.ones(n, device=dev, dtype=dt)
    forward_n = n
    active_idx = torch.arange(n, device=dev)
    it = 0
    while it < n_queries:
        todo = (m_best[active_idx] > 0).nonzero().squeeze(1)   # compaction: one host read per chunk
        active_idx = active_idx[todo]
        m = active_idx.numel()
        if m == 0:
            break
        sub = space.take(active_idx)
        ys = y[active_idx]
        ub = u_best[active_idx]
        mb = m_best[active_idx]
        qs = queries[active_idx]
        for _ in range(min(_SQUARE_CHUNK, n_queries - it)):
            p = _p_schedule(p_init, it, n_queries)
            ui = _as_image(ub)
            if h > 1:
                s = int(round(math.sqrt(p * n_feat / c)))
                s = min(max(s, 1 if space.norm == "linf" else 3), h, w)
                sh, sw = s, s
            else:
                sw = min(max(int(round(p * w)), 1 if space.norm == "linf" else 3), w)
                sh = 1
            vh = int(torch.randint(0, h - sh + 1, (1,), generator=host_rng))
            vw = int(torch.randint(0, w - sw + 1, (1,), generator=host_rng))
            new = ui.clone()
            if space.norm == "linf":
                new[:, :, vh:vh + sh, vw:vw + sw] = ui[:, :, vh:vh + sh, vw:vw + sw] + 2 * eps * signs((m, c, 1, 1))
            else:
                vh2 = int(torch.randint(0, h - sh + 1, (1,), generator=host_rng))
                vw2 = int(torch.randint(0, w - sw + 1, (1,), generator=host_rng))
                win = ui[:, :, vh:vh + sh, vw:vw + sw]
                n_win1 = win.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
                mask = torch.zeros_like(ui[:1])
                mask[:, :, vh:vh + sh, vw:vw + sw] = 1.0
                mask[:, :, vh2:vh2 + sh, vw2:vw2 + sw] = 1.0
                n_img = _norm2(ui).view(-1, 1, 1, 1)
                n_wins = (ui * mask).pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
                flip = bool(torch.rand(1, generator=host_rng) > 0.5)
                delta = _eta(sh, sw, flip, dev, dt) * signs((m, c, 1, 1)) + win / (n_win1 + _TINY)
                delta = delta / (delta.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt() + _TINY)
                budget = ((eps ** 2 - n_img ** 2).clamp(min=0.0) / c + n_wins ** 2).sqrt()
                new[:, :, vh2:vh2 + sh, vw2:vw2 + sw] = 0.0
                new[:, :, vh:vh + sh, vw:vw + sw] = delta * budget
                new = new * move
                new = eps * new / _rows(_norm2(new) + _TINY, new)
            cand = sub.project(new.reshape_as(ub))
            with torch.no_grad():
                mc = margin(forward(sub.to_x(cand)), ys)
            forward_n += m
            still = mb > 0
            better = (mc < mb) & still
            ub = torch.where(_rows(better, ub), cand, ub)
            mb = torch.where(better, mc, mb)
            qs = qs + still.to(dt)
            it += 1
        u_best[active_idx] = ub
        m_best[active_idx] = mb
        queries[active_idx] = qs
    fooled = m_best <= 0
    u_out = torch.where(_rows(fooled, u_best), u_best, torch.zeros_like(u_best))
    return Outcome(space.to_x(u_out), fooled, forward=forward_n, backward=0,
                   info={"queries": queries})


# ---- drivers: batches, target classes, restarts, the cascade -------------------------------------
@dataclass
class AttackConfig:
    norm: Norm
    eps: float
    steps: int = 100              # APGD and FAB iterations
    restarts: int = 1             # APGD-CE restarts (random starts)
    n_target_classes: int = 9     # APGD-T and FAB-T
    n_queries: int = 5000         # Square
    p_init: float = 0.8           # Square


@dataclass
class CascadeResult:
    x_adv: torch.Tensor                    # worst case over the attacks run (the input where none succeeded)
    robust: torch.Tensor                   # (n,) bool: no attack fooled the sample (after `finalize`)
    fooled_by: dict[str, torch.Tensor]     # attack -> (n,) bool: fooled by this attack (run on the still-robust)
    robust_after: dict[str, int]           # attack -> samples still robust after it (cascade order)
    passes: dict[str, dict[str, int]]      # attack -> forward / backward samples
    seconds: dict[str, float]
    bad_grad: torch.Tensor                 # (n,) bool from the first gradient of the first white-box attack
    queries: torch.Tensor | None = None    # Square queries per sample (those it ran on)
    skipped: dict[str, str] = field(default_factory=dict)


def _target_classes(clean_logits: torch.Tensor, y: torch.Tensor, k: int) -> list[torch.Tensor]:
    """The k most likely other classes per sample, most likely first."""
    z = two_class(clean_logits).float().clone()
    z[torch.arange(len(y), device=z.device), y] = float("-inf")
    order = z.argsort(dim=1, descending=True)
    return [order[:, j] for j in range(min(k, z.shape[1] - 1))]


def run_attacks(forward: Forward, x: torch.Tensor, y: torch.Tensor, cfg: AttackConfig, *,
                attacks: tuple[str, ...] = AUTOATTACK_STANDARD, lo: torch.Tensor | float = 0.0,
                hi: torch.Tensor | float = 1.0, scale: torch.Tensor | None = None,
                generator: torch.Generator | None = None, host_seed: int = 0,
                count_backward: Counter | None = None, batch_size: int = 256,
                finalize: Finalize | None = None, sync: Callable[[], None] | None = None,
                clean_logits: torch.Tensor | None = None) -> CascadeResult:
    """Run `attacks` in turn (AutoAttack's order: apgd-ce, apgd-t, fab-t, square), each on
    the samples no earlier attack fooled. A sample counts as fooled when its (finalized)
    adversarial point is misclassified by one more forward pass, which is counted too.
    `x`, `y`: originally correctly classified samples, on the device; `clean_logits` (their
    logits, which pick the target classes) saves a forward pass when the caller has them."""
    import time

    count_backward = count_backward or (lambda n: None)
    finalize = finalize or (lambda x0, xa: xa)
    sync = sync or (lambda: None)
    n = x.shape[0]
    dev = x.device
    x_adv = x.clone()
    robust = torch.ones(n, dtype=torch.bool, device=dev)
    bad_grad = torch.zeros(n, dtype=torch.bool, device=dev)
    first_grad = True
    fooled_by: dict[str, torch.Tensor] = {}
    robust_after: dict[str, int] = {}
    passes: dict[str, dict[str, int]] = {}
    seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    queries = None
    host_rng = torch.Generator().manual_seed(int(host_seed))
    if clean_logits is None:
        with torch.no_grad():
            clean_logits = torch.cat([forward(x[s:s + batch_size]) for s in range(0, n, batch_size)]) if n else \
                torch.zeros((0, 2), device=dev)
        passes["clean"] = {"forward": n, "backward": 0}
    k_classes = two_class(clean_logits).shape[1] if n else 2
    targets = _target_classes(clean_logits, y, cfg.n_target_classes) if n else []
    for name in attacks:
        sync()
        t0 = time.perf_counter()
        fwd = bwd = 0
        hit = torch.zeros(n, dtype=torch.bool, device=dev)
        if name == "apgd-t" and k_classes < 3:
            skipped[name] = "a targeted DLR loss needs at least 3 classes (APGD-CE covers a binary task)"
            continue
        runs: list[tuple[str, torch.Tensor | None]]
        if name == "apgd-ce":
            runs = [("ce", None)] * cfg.restarts
        elif name in ("apgd-t", "fab-t"):
            runs = [("t", t) for t in targets]
        elif name == "square":
            runs = [("square", None)]
        else:
            raise ValueError(f"unknown attack {name!r}")
        for kind, tgt in runs:
            idx = robust.nonzero().squeeze(1)           # between runs: the still-robust samples
            if idx.numel() == 0:
                break
            for s in range(0, idx.numel(), batch_size):
                b = idx[s:s + batch_size]
                space = Space(x[b], cfg.norm, cfg.eps, lo, hi, scale)
                if name == "apgd-ce":
                    out = apgd_batch(forward, count_backward, space, y[b], steps=cfg.steps, loss="ce",
                                     generator=generator)
                elif name == "apgd-t":
                    out = apgd_batch(forward, count_backward, space, y[b], steps=cfg.steps, loss="dlr-targeted",
                                     target=tgt[b], generator=generator)
                elif name == "fab-t":
                    out = fab_targeted_batch(forward, count_backward, space, y[b], tgt[b], steps=cfg.steps)
                else:
                    out = square_batch(forward, space, y[b], n_queries=cfg.n_queries, p_init=cfg.p_init,
                                       generator=generator, host_rng=host_rng)
                    if queries is None:
                        queries = torch.zeros(n, device=dev)
                    queries[b] = out.info["queries"].to(queries.dtype)
                if first_grad and out.bad_grad is not None:
                    bad_grad[b] = out.bad_grad
                fwd += out.forward
                bwd += out.backward
                xa = finalize(x[b], out.x_adv)
                with torch.no_grad():
                    really = predict(forward(xa)) != y[b]
                fwd += int(b.numel())
                x_adv[b] = torch.where(_rows(really, xa), xa, x_adv[b])
                hit[b] |= really
                robust[b] &= ~really
            if name in ("apgd-ce", "apgd-t") and out.bad_grad is not None:
                first_grad = False
        sync()
        seconds[name] = time.perf_counter() - t0
        fooled_by[name] = hit
        robust_after[name] = int(robust.sum())
        passes[name] = {"forward": fwd, "backward": bwd}
    return CascadeResult(x_adv, robust, fooled_by, robust_after, passes, seconds, bad_grad, queries, skipped)
