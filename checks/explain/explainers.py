"""Thin wiring to Captum and SHAP: one function per attribution method.

Every method has the signature `fn(model, x, target, baseline, setup) -> attributions`
(same shape as `x`) and explains one output per sample: `target[i]` of `model(x[i])`.
The algorithms are Captum's and SHAP's; this module only adapts inputs, targets,
baselines and seeds, and chunks the explained samples (`explain`).

Two methods also run batched in plain torch (`FAST`, the default `implementation`),
where the library's own per-call overhead dominates the passes: Captum's integrated
gradients (on small tabular models it costs ~10x its forward and backward passes) and
SHAP's GradientExplainer (expected gradients: SHAP runs one sample's draws per pass, in
a Python loop). They are the same algorithms on the same points: Captum's Gauss-Legendre
steps and weights; SHAP's draws of background row and interpolation point, reproduced
from its seed bit for bit; tests/test_fast_attribution.py holds them equal to the
libraries' output. `implementation: library` calls Captum and SHAP instead.

`model` is the audited module as the Context counts it (`ctx.counting(module)`: every
forward and backward is counted) inside a `TwoClassLogits`, which turns a single-logit
binary classifier into two logits, so that every method sees (N, K) outputs and a class
index target. Nothing here runs a model outside the module it is handed.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

CAPTUM_METHODS = ("integrated_gradients", "saliency", "deeplift", "gradient_shap", "occlusion")
SHAP_METHODS = ("shap_gradient", "shap_deep", "shap_kernel", "shap_permutation")
METHOD_NAMES = CAPTUM_METHODS + SHAP_METHODS
# Model-agnostic methods see the model as a function of flat feature vectors and need a
# k-means background; the others take gradients and use `setup.background` rows.
MODEL_AGNOSTIC = ("shap_kernel", "shap_permutation")
USES_BACKGROUND = ("gradient_shap", "shap_gradient", "shap_deep")


class TwoClassLogits(nn.Module):
    """Maps (N, 1) binary logits z to (N, 2) logits [-z/2, z/2], whose softmax is
    [1 - sigmoid(z), sigmoid(z)]; (N, K) logits pass unchanged. It counts nothing: wrap a
    counted module, `TwoClassLogits(ctx.counting(module))`."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        if out.ndim == 1:
            out = out[:, None]
        if out.shape[1] == 1:
            out = torch.cat([-out / 2, out / 2], dim=1)
        return out


class _Select(nn.Module):
    """One output column of the model: SHAP's PyTorch explainers explain every output of a
    model, so per-sample targets are served by explaining each class's samples with this."""

    def __init__(self, model: nn.Module, column: int) -> None:
        super().__init__()
        self.model = model
        self.column = column

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.column:self.column + 1]


@dataclass
class ExplainSetup:
    """What a method needs besides the samples; built once per check run (set-up cost)."""

    kind: str                                  # "image" | "tabular"
    n_steps: int = 32                          # IG steps; GradientSHAP / SHAP Gradient draws
    n_evals: int | None = None                 # model evaluations per sample (Kernel, Permutation)
    internal_batch_size: int = 256             # rows per forward inside a method
    background: torch.Tensor | None = None     # (B, ...) rows on the device
    kmeans: Any = None                         # shap DenseData (k-means summary of the background)
    occlusion_window: int = 1                  # image patch side (tabular: one column)
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


ExplainFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor | None, ExplainSetup],
                     "torch.Tensor | np.ndarray"]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch and NumPy's global generators (Captum's GradientSHAP and SHAP draw from
    them) and restore both afterwards, so a check does not disturb anyone's randomness."""
    state = np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(state)


# ---- Captum --------------------------------------------------------------------------

def integrated_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                         baseline: torch.Tensor | None, setup: ExplainSetup) -> torch.Tensor:
    from captum.attr import IntegratedGradients

    return IntegratedGradients(model).attribute(
        x, baselines=baseline, target=target, n_steps=setup.n_steps,
        internal_batch_size=setup.internal_batch_size)


def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
             baseline: torch.Tensor | None, setup: ExplainSetup) -> torch.Tensor:
    from captum.attr import Saliency

    return Saliency(model).attribute(x, target=target, abs=True)


def deeplift(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
             baseline: torch.Tensor | None, setup: ExplainSetup) -> torch.Tensor:
    from captum.attr import DeepLift

    with warnings.catch_warnings():
        # Captum warns each call that it sets (and later removes) hooks on activations.
        warnings.filterwarnings("ignore", message=".*hooks.*")
        return DeepLift(model).attribute(x, baselines=baseline, target=target)


def gradient_shap(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                  baseline: torch.Tensor | None, setup: ExplainSetup) -> torch.Tensor:
    from captum.attr import GradientShap

    if setup.background is None:
        raise ValueError("gradient_shap needs background rows")
    with seeded(setup.seed):
        return GradientShap(model).attribute(x, baselines=setup.background, target=target,
                                             n_samples=setup.n_steps)


def occlusion(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
              baseline: torch.Tensor | None, setup: ExplainSetup) -> torch.Tensor:
    from captum.attr import Occlusion

    if x.ndim == 4:
        w = setup.occlusion_window
        window: tuple[int, ...] = (int(x.shape[1]), w, w)
        strides: tuple[int, ...] = (int(x.shape[1]), w, w)
    else:
        window, strides = (1,) * (x.ndim - 1), (1,) * (x.ndim - 1)
    n_features = int(np.prod(x.shape[1:]) // np.prod(window))
    per_eval = max(1, min(n_features, setup.internal_batch_size // max(1, int(x.shape[0]))))
    return Occlusion(model).attribute(x, sliding_window_shapes=window, strides=strides,
                                      baselines=0.0 if baseline is None else baseline,
                                      target=target, perturbations_per_eval=per_eval)


# ---- SHAP ----------------------------------------------------------------------------

def _per_class(x: torch.Tensor, target: torch.Tensor,
               fn: Callable[[int, torch.Tensor], np.ndarray]) -> np.ndarray:
    """Run `fn(class, x_of_that_class)` for each distinct target; reassemble in order."""
    out = np.zeros(tuple(x.shape), dtype=np.float32)
    t = target.detach().cpu().numpy()
    for c in np.unique(t):
        rows = np.flatnonzero(t == c)
        out[rows] = np.asarray(fn(int(c), x[torch.as_tensor(rows, device=x.device)])).reshape(
            (len(rows),) + tuple(x.shape[1:]))
    return out


def shap_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                  baseline: torch.Tensor | None, setup: ExplainSetup) -> np.ndarray:
    import shap

    if setup.background is None:
        raise ValueError("shap_gradient needs background rows")

    def one(c: int, xc: torch.Tensor) -> np.ndarray:
        explainer = shap.GradientExplainer(_Select(model, c), setup.background,
                                           batch_size=setup.internal_batch_size)
        with seeded(setup.seed):
            values = explainer.shap_values(xc, nsamples=setup.n_steps, rseed=setup.seed)
        return np.asarray(values)[..., 0]

    return _per_class(x, target, one)


def shap_deep(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
              baseline: torch.Tensor | None, setup: ExplainSetup) -> np.ndarray:
    import shap

    if setup.background is None:
        raise ValueError("shap_deep needs background rows")

    def one(c: int, xc: torch.Tensor) -> np.ndarray:
        explainer = shap.DeepExplainer(_Select(model, c), setup.background)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*unrecognized nn.Module.*")
                values = explainer.shap_values(xc, check_additivity=False)
        finally:
            _remove_shap_attributes(model)
        return np.asarray(values)[..., 0]

    return _per_class(x, target, one)


def _remove_shap_attributes(model: nn.Module) -> None:
    """SHAP's DeepExplainer hooks store `x`/`y` Parameters on every layer and its clean-up
    recurses only through nn containers, leaving them on layers nested in custom modules:
    they would change the audited model's parameter count and state_dict."""
    for module in model.modules():
        for name in ("x", "y"):
            if name in module._parameters:
                del module._parameters[name]
            elif name in module.__dict__ and isinstance(module.__dict__[name], torch.Tensor):
                del module.__dict__[name]


def _output_fn(model: nn.Module, shape: tuple[int, ...], column: int, device: torch.device,
               batch_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """The model as a NumPy function of flat feature rows, one output column (SHAP's view)."""

    def f(rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.float32).reshape((-1,) + shape)
        outs = []
        with torch.inference_mode():
            for s in range(0, rows.shape[0], batch_size):
                xb = torch.as_tensor(rows[s:s + batch_size], device=device)
                outs.append(model(xb)[:, column].float())
        return torch.cat(outs).cpu().numpy().astype(np.float64) if outs else np.zeros(0)

    return f


def default_evals(method: str, n_features: int) -> int:
    """SHAP's own defaults: KernelSHAP 2F + 2048 coalitions; Permutation at least two
    antithetic permutations (each costs 2F + 1 evaluations), and no fewer than 500."""
    if method == "shap_kernel":
        return 2 * n_features + 2048
    return max(500, 2 * (2 * n_features + 1))


def shap_kernel(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                baseline: torch.Tensor | None, setup: ExplainSetup) -> np.ndarray:
    import shap

    if setup.kmeans is None:
        raise ValueError("shap_kernel needs a k-means background")
    shape = tuple(x.shape[1:])
    n_features = int(np.prod(shape))
    evals = setup.n_evals or default_evals("shap_kernel", n_features)

    def one(c: int, xc: torch.Tensor) -> np.ndarray:
        f = _output_fn(model, shape, c, xc.device, setup.internal_batch_size)
        explainer = shap.KernelExplainer(f, setup.kmeans)
        flat = xc.detach().cpu().numpy().reshape(len(xc), -1)
        with seeded(setup.seed):
            # l1_reg=False: every feature gets its Shapley estimate (no sparse selection).
            return np.asarray(explainer.shap_values(flat, nsamples=evals, l1_reg=False, silent=True))

    return _per_class(x, target, one)


def shap_permutation(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                     baseline: torch.Tensor | None, setup: ExplainSetup) -> np.ndarray:
    import shap

    if setup.kmeans is None:
        raise ValueError("shap_permutation needs a k-means background")
    shape = tuple(x.shape[1:])
    n_features = int(np.prod(shape))
    evals = setup.n_evals or default_evals("shap_permutation", n_features)
    # The Independent masker averages over background rows uniformly: k-means centroids.
    background = np.asarray(setup.kmeans.data, dtype=np.float32)
    masker = shap.maskers.Independent(background, max_samples=len(background))

    def one(c: int, xc: torch.Tensor) -> np.ndarray:
        f = _output_fn(model, shape, c, xc.device, setup.internal_batch_size)
        with seeded(setup.seed):
            explainer = shap.PermutationExplainer(f, masker, seed=setup.seed)
            flat = xc.detach().cpu().numpy().reshape(len(xc), -1)
            return np.asarray(explainer(flat, max_evals=evals, batch_size=setup.internal_batch_size,
                                        silent=True).values)

    return _per_class(x, target, one)


# ---- the same algorithms, batched in plain torch ---------------------------------------

def rows_per_pass(setup: ExplainSetup, x: torch.Tensor) -> int:
    """Model rows per forward+backward pass of the batched methods: at least the audit's
    batch size, more for small inputs (a pass of a small model is mostly fixed cost). On
    a CPU about 2^18 input elements for a table and 2^16 for an image (a convolution's
    activations are many times its input: the caches), 2^22 on an accelerator."""
    elements = max(1, int(np.prod(tuple(x.shape[1:]))))
    if x.device.type != "cpu":
        budget, cap = 1 << 22, 1 << 16
    else:
        budget, cap = (1 << 18) if x.ndim == 2 else (1 << 16), 1 << 13
    return int(max(setup.internal_batch_size, min(cap, budget // elements)))


def gauss_legendre(n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Captum's default quadrature (`method="gausslegendre"`): step weights and alphas in [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    return 0.5 * weights, 0.5 * (1.0 + nodes)


def _column(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return out.gather(1, target.view(-1, 1)).sum()


def integrated_gradients_fast(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                              baseline: torch.Tensor | None, setup: ExplainSetup) -> torch.Tensor:
    """Captum's IntegratedGradients (Gauss-Legendre, `setup.n_steps` steps) batched over
    samples and steps: passes of `rows_per_pass` rows, each the scaled inputs of several
    samples at several alphas; gradients of the target logit summed with the step weights,
    times (x - baseline). A zero (or absent) baseline is never materialised."""
    weights, alphas = gauss_legendre(setup.n_steps)
    x = x.detach()
    shape = tuple(x.shape[1:])
    view = (-1, 1) + (1,) * len(shape)
    base = None if baseline is None or not bool(torch.count_nonzero(baseline)) else baseline.detach()
    diff = x if base is None else x - base
    a = torch.as_tensor(alphas, dtype=x.dtype, device=x.device)
    w = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    n, steps = int(x.shape[0]), len(alphas)
    rows = rows_per_pass(setup, x)
    per = max(1, rows // steps)           # samples per pass
    k_per = min(steps, max(1, rows // per))  # steps per pass
    total = torch.zeros_like(x)
    for s0 in range(0, n, per):
        sl = slice(s0, min(n, s0 + per))
        d, t = diff[sl], target[sl]
        for k0 in range(0, steps, k_per):
            ak, wk = a[k0:k0 + k_per].view(view), w[k0:k0 + k_per].view(view)
            scaled = ak * d if base is None else base[sl] + ak * d   # (k, b, ...)
            k = int(scaled.shape[0])
            scaled = scaled.reshape((-1,) + shape).requires_grad_(True)
            (g,) = torch.autograd.grad(_column(model(scaled), t.repeat(k)), scaled)
            total[sl] += (g.view((k, -1) + shape) * wk).sum(0)
    return total * diff


def legacy_shap_draws(seed: int, n_pairs: int, n_background: int) -> tuple[np.ndarray, np.ndarray]:
    """The background rows and interpolation points SHAP's GradientExplainer draws after
    `np.random.seed(seed)`: per (sample, draw) pair, `np.random.choice(B)` then
    `np.random.uniform()`, from NumPy's legacy MT19937 stream (frozen by NumPy's
    compatibility policy). The raw 32-bit stream is generated in bulk and parsed as the
    legacy routines consume it: choice is masked rejection sampling (one word per try),
    uniform takes two words (53-bit double)."""
    rng = n_background - 1
    if rng == 0:
        bitgen = np.random.MT19937()
        bitgen._legacy_seeding(seed)
        raw = bitgen.random_raw(2 * n_pairs).reshape(-1, 2)
        t = ((raw[:, 0] >> 5) * 67108864.0 + (raw[:, 1] >> 6)) / 9007199254740992.0
        return np.zeros(n_pairs, np.int64), t
    mask = (1 << int(rng).bit_length()) - 1
    size = 4 * n_pairs + 64
    while True:
        bitgen = np.random.MT19937()
        bitgen._legacy_seeding(seed)
        raw = bitgen.random_raw(size)
        ok = (raw & mask) <= rng
        nxt = np.where(ok, np.arange(size), size)
        nxt = np.minimum.accumulate(nxt[::-1])[::-1].tolist()  # next accepted word at or after i
        picks = np.empty(n_pairs, np.int64)
        pos = 0
        for p in range(n_pairs):
            j = nxt[pos] if pos < size else size
            if j + 2 >= size:
                break
            picks[p] = j
            pos = j + 3
        else:
            rind = (raw[picks] & mask).astype(np.int64)
            t = ((raw[picks + 1] >> 5) * 67108864.0 + (raw[picks + 2] >> 6)) / 9007199254740992.0
            return rind, t
        size *= 2


def shap_gradient_fast(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                       baseline: torch.Tensor | None, setup: ExplainSetup) -> torch.Tensor:
    """SHAP's GradientExplainer (expected gradients, `setup.n_steps` draws per sample) on
    the same draws SHAP makes (`legacy_shap_draws`: per explained class, re-seeded, the
    class's samples in order, as `shap_gradient` runs it), batched: every draw of several
    samples in one pass of `rows_per_pass` rows. Attribution = mean over draws of
    gradient(target logit at t x + (1 - t) b) * (x - b)."""
    if setup.background is None:
        raise ValueError("shap_gradient needs background rows")
    bg = setup.background.detach().to(x.dtype)
    x = x.detach()
    shape = tuple(x.shape[1:])
    view = (-1,) + (1,) * len(shape)
    draws = setup.n_steps
    n = int(x.shape[0])
    rind = np.empty((n, draws), np.int64)
    tt = np.empty((n, draws), np.float64)
    tn = target.detach().cpu().numpy()
    for c in np.unique(tn):  # SHAP re-seeds for each explained class (one explainer per class)
        rows = np.flatnonzero(tn == c)
        r, t = legacy_shap_draws(setup.seed, len(rows) * draws, int(bg.shape[0]))
        rind[rows], tt[rows] = r.reshape(len(rows), draws), t.reshape(len(rows), draws)
    rind_t = torch.as_tensor(rind, device=x.device)
    t_all = torch.as_tensor(tt, dtype=x.dtype, device=x.device)
    per = max(1, rows_per_pass(setup, x) // draws)
    out = torch.zeros_like(x)
    for s0 in range(0, n, per):
        sl = slice(s0, min(n, s0 + per))
        b = bg[rind_t[sl].reshape(-1)]                          # (m * draws, ...)
        xs = x[sl].repeat_interleave(draws, dim=0)
        t = t_all[sl].reshape(view)
        points = (t * xs + (1 - t) * b).requires_grad_(True)
        (g,) = torch.autograd.grad(_column(model(points), target[sl].repeat_interleave(draws)), points)
        out[sl] = (g * (xs - b)).view((-1, draws) + shape).mean(1)
    return out


FAST: dict[str, ExplainFn] = {"integrated_gradients": integrated_gradients_fast,
                              "shap_gradient": shap_gradient_fast}


def method(name: str, implementation: str = "fast") -> ExplainFn:
    """The function of a method: the batched torch one when it has one and `implementation`
    is "fast", else the library's."""
    if implementation == "fast" and name in FAST:
        return FAST[name]
    return METHODS[name]


METHODS: dict[str, ExplainFn] = {
    "integrated_gradients": integrated_gradients,
    "saliency": saliency,
    "deeplift": deeplift,
    "gradient_shap": gradient_shap,
    "occlusion": occlusion,
    "shap_gradient": shap_gradient,
    "shap_deep": shap_deep,
    "shap_kernel": shap_kernel,
    "shap_permutation": shap_permutation,
}


def kmeans_background(rows: np.ndarray, k: int, seed: int, max_rows: int = 2000) -> Any:
    """SHAP's k-means summary of (a seeded subsample of) the background rows, flattened."""
    import shap

    flat = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    if len(flat) > max_rows:
        flat = flat[np.random.default_rng(seed).choice(len(flat), max_rows, replace=False)]
    k = max(1, min(k, len(flat)))
    # One OpenMP thread: scikit-learn's KMeans (inside shap.kmeans) slows down by 10-20x when
    # its threads compete with other work for the cores, and a few thousand rows need no more.
    with seeded(seed), threadpool_limits(limits=1, user_api="openmp"):
        return shap.kmeans(flat, k)


def explain(fn: ExplainFn, model: nn.Module, x: np.ndarray, target: np.ndarray,
            baseline: np.ndarray | None, setup: ExplainSetup, *, device: torch.device,
            chunk: int) -> np.ndarray:
    """Attributions for `x` (N, ...) towards `target` (N,), `chunk` samples at a time on
    `device`. `baseline` is per-sample (N, ...) or None. Returns float32 NumPy (N, ...)."""
    out = np.zeros(x.shape, dtype=np.float32)
    for s in range(0, len(x), chunk):
        # Fresh ordinary tensors (never inference-mode ones): autograd runs through them.
        xb = torch.tensor(np.ascontiguousarray(x[s:s + chunk]), dtype=torch.float32, device=device,
                          requires_grad=True)
        tb = torch.tensor(np.asarray(target[s:s + chunk]), dtype=torch.long, device=device)
        bb = None if baseline is None else torch.tensor(
            np.ascontiguousarray(baseline[s:s + chunk]), dtype=torch.float32, device=device)
        a = fn(model, xb, tb, bb, setup)
        if isinstance(a, tuple):
            a = a[0]
        a = a.detach().float().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        out[s:s + chunk] = a.reshape(tuple(xb.shape))
    return out


def class_logits(logits: np.ndarray) -> np.ndarray:
    """NumPy twin of TwoClassLogits' output mapping: (N, 1) binary logits -> (N, 2)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1:
        logits = logits[:, None]
    return np.concatenate([-logits / 2, logits / 2], axis=1) if logits.shape[1] == 1 else logits
