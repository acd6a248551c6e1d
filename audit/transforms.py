"""Domain transforms: corrupt or shift a dataset at severity 1..5 (ImageNet-C style tables,
monotone in strength). Used for `data.domains` entries and by `shift.corruption`.

Images are (N, C, H, W) in [0, 1]; every image op is one vectorized torch call on the
whole batch, and results are clipped to [0, 1]. Tabular transforms touch continuous
columns only (one-hot columns stay valid). Labels and sensitive attributes are kept.
All randomness comes from the caller's generator, so a domain is the same on every run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from audit.dataset import Dataset
from audit.errors import DataError, did_you_mean


@dataclass(frozen=True)
class TransformInfo:
    kinds: tuple[str, ...]
    description: str
    levels: tuple[float, ...]  # the parameter at severity 1..5


# ---- images ---------------------------------------------------------------------------
def _gen(rng: np.random.Generator) -> torch.Generator:
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


def _gaussian_noise(x: torch.Tensor, level: float, rng: np.random.Generator) -> torch.Tensor:
    return x + level * torch.randn(x.shape, generator=_gen(rng))


def _shot_noise(x: torch.Tensor, level: float, rng: np.random.Generator) -> torch.Tensor:
    return torch.poisson(x * level, generator=_gen(rng)) / level  # level = photons at full intensity


def _impulse_noise(x: torch.Tensor, level: float, rng: np.random.Generator) -> torch.Tensor:
    g = _gen(rng)
    hit = torch.rand(x.shape, generator=g) < level
    salt = torch.rand(x.shape, generator=g) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


def _gaussian_blur(x: torch.Tensor, level: float, rng: np.random.Generator) -> torch.Tensor:
    n, c, h, w = x.shape
    sigma = level * max(1.0, min(h, w) / 32)  # the table is in pixels of a 32-pixel image
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    flat = x.reshape(n * c, 1, h, w)
    # replicate padding works for any radius, even on 8x8 images (reflect needs pad < size)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return flat.reshape(n, c, h, w)


def _contrast(x: torch.Tensor, level: float, rng: np.random.Generator) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * level + mean


def _brightness(x: torch.Tensor, level: float, rng: np.random.Generator) -> torch.Tensor:
    return x + level


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _rotate(x: torch.Tensor, level: float, rng: np.random.Generator) -> torch.Tensor:
    sign = torch.from_numpy(rng.choice([-1.0, 1.0], size=x.shape[0])).to(x.dtype)
    a = sign * math.radians(level)  # the angle is fixed, its direction random per image
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _affine(x, theta)


def _translate(x: torch.Tensor, level: float, rng: np.random.Generator) -> torch.Tensor:
    phi = torch.from_numpy(rng.uniform(0, 2 * math.pi, size=x.shape[0])).to(x.dtype)
    # level is a fraction of the image side; affine_grid spans [-1, 1], i.e. 2 per side
    dx, dy = 2 * level * torch.cos(phi), 2 * level * torch.sin(phi)
    one, zero = torch.ones_like(dx), torch.zeros_like(dx)
    theta = torch.stack([torch.stack([one, zero, dx], 1), torch.stack([zero, one, dy], 1)], 1)
    return _affine(x, theta)


def _invert(x: torch.Tensor, level: float, rng: np.random.Generator) -> torch.Tensor:
    return (1 - level) * x + level * (1 - x)  # blend towards the negative; 1.0 = full inversion


def _pixelate(x: torch.Tensor, level: float, rng: np.random.Generator) -> torch.Tensor:
    h, w = x.shape[2:]
    small = F.interpolate(x, size=(max(1, round(h * level)), max(1, round(w * level))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


# ---- tabular --------------------------------------------------------------------------
def _continuous(ds: Dataset) -> np.ndarray:
    return ds.continuous if ds.continuous is not None else np.ones(ds.x.shape[1], dtype=bool)


def _feature_noise(ds: Dataset, level: float, rng: np.random.Generator) -> np.ndarray:
    cols = _continuous(ds)
    x = ds.x.astype(np.float32, copy=True)
    std = x[:, cols].std(axis=0)
    x[:, cols] += (rng.standard_normal((len(x), int(cols.sum()))) * (level * std)).astype(np.float32)
    return x


def _feature_scale(ds: Dataset, level: float, rng: np.random.Generator) -> np.ndarray:
    cols = _continuous(ds)
    x = ds.x.astype(np.float32, copy=True)
    x[:, cols] *= level
    return x


_IMAGE_OPS: dict[str, Callable[[torch.Tensor, float, np.random.Generator], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "gaussian_blur": _gaussian_blur, "contrast": _contrast, "brightness": _brightness, "rotate": _rotate,
    "translate": _translate, "invert": _invert, "pixelate": _pixelate,
}
_TABULAR_OPS: dict[str, Callable[[Dataset, float, np.random.Generator], np.ndarray]] = {
    "feature_noise": _feature_noise, "feature_scale": _feature_scale,
}

TRANSFORMS: dict[str, TransformInfo] = {
    "gaussian_noise": TransformInfo(("image",), "additive Gaussian noise, std", (0.08, 0.12, 0.18, 0.26, 0.38)),
    "shot_noise": TransformInfo(("image",), "Poisson noise, photons at full intensity", (60, 25, 12, 5, 3)),
    "impulse_noise": TransformInfo(("image",), "salt-and-pepper noise, fraction of values", (0.03, 0.06, 0.09, 0.17, 0.27)),
    "gaussian_blur": TransformInfo(("image",), "Gaussian blur, sigma in pixels per 32 pixels of side", (0.4, 0.6, 0.8, 1.0, 1.3)),
    "contrast": TransformInfo(("image",), "contrast factor around each image's mean", (0.4, 0.3, 0.2, 0.1, 0.05)),
    "brightness": TransformInfo(("image",), "added brightness", (0.1, 0.2, 0.3, 0.4, 0.5)),
    "rotate": TransformInfo(("image",), "rotation in degrees, random direction", (10, 20, 30, 40, 50)),
    "translate": TransformInfo(("image",), "shift as a fraction of the side, random direction", (0.05, 0.1, 0.15, 0.2, 0.25)),
    "invert": TransformInfo(("image",), "blend weight towards the inverted image", (0.2, 0.4, 0.6, 0.8, 1.0)),
    "pixelate": TransformInfo(("image",), "down-sampling factor", (0.6, 0.5, 0.4, 0.3, 0.25)),
    "feature_noise": TransformInfo(("tabular",), "Gaussian noise on continuous columns, in column stds", (0.1, 0.2, 0.3, 0.5, 0.8)),
    "feature_scale": TransformInfo(("tabular",), "continuous columns multiplied by", (1.1, 1.25, 1.5, 1.75, 2.0)),
    # text and token data (audit.perturb): the raw text or words change, the model's tokenizer re-encodes them
    "typos": TransformInfo(("text", "tokens"), "character typos, share of words", (0.05, 0.1, 0.15, 0.25, 0.4)),
    "case": TransformInfo(("text", "tokens"), "all lower case (or capitalised), share of rows",
                          (0.2, 0.4, 0.6, 0.8, 1.0)),
    "punctuation": TransformInfo(("text", "tokens"), "final punctuation dropped or added, share of rows",
                                 (0.2, 0.4, 0.6, 0.8, 1.0)),
    "whitespace": TransformInfo(("text",), "irregular whitespace, share of rows", (0.2, 0.4, 0.6, 0.8, 1.0)),
    "contractions": TransformInfo(("text", "tokens"), "contractions expanded or made, share of rows",
                                  (0.2, 0.4, 0.6, 0.8, 1.0)),
}
_TEXT_OPS = ("typos", "case", "punctuation", "whitespace", "contractions")


def transforms_for(kind: str) -> list[str]:
    return [name for name, info in TRANSFORMS.items() if kind in info.kinds]


def apply_transform(ds: Dataset, transform: str, severity: int, rng: np.random.Generator) -> Dataset:
    """A new Dataset: `ds` under `transform` at `severity` (1..5). The caller names it."""
    if transform not in TRANSFORMS:
        raise DataError(f"unknown transform '{transform}'.{did_you_mean(transform, TRANSFORMS)}")
    info = TRANSFORMS[transform]
    if ds.kind not in info.kinds:
        valid = transforms_for(ds.kind)
        hint = (f" Transforms for {ds.kind} data: {', '.join(valid)}." if valid
                else f" No transforms apply to {ds.kind} data.")
        raise DataError(f"transform '{transform}' applies to {'/'.join(info.kinds)} data, but dataset "
                        f"'{ds.name}' is {ds.kind}.{hint}")
    if not 1 <= int(severity) <= 5:
        raise DataError(f"severity must be 1..5, got {severity}")
    level = float(info.levels[int(severity) - 1])
    if ds.kind in ("text", "tokens"):
        return _text_transform(ds, transform, severity, level, rng)
    if ds.kind == "image":
        with torch.no_grad():
            out = _IMAGE_OPS[transform](torch.as_tensor(ds.x, dtype=torch.float32), level, rng)
            x = out.clamp(0.0, 1.0).numpy()  # out of place: an op may return its input
    else:
        x = _TABULAR_OPS[transform](ds, level, rng)
    return dataclasses.replace(
        ds, name=f"{ds.name}:{transform}@{severity}", x=x, y=ds.y.copy(), sensitive=dict(ds.sensitive),
        source=f"{ds.source or ds.name} under {transform} at severity {severity}",
        meta={**ds.meta, "transform": transform, "severity": int(severity), "from": ds.name}, _sha256=None)


def _text_transform(ds: Dataset, transform: str, severity: int, level: float, rng: np.random.Generator) -> Dataset:
    """Raw texts (or words with their tags) perturbed; the ids are dropped so that the
    data loader re-encodes them with the model's tokenizer. Typos touch `level` of the
    words of every row; the other transforms apply to a `level` share of the rows."""
    from audit.perturb import perturb_text, perturb_words

    rate = level if transform == "typos" else 0.1
    share = 1.0 if transform == "typos" else level
    meta = {k: v for k, v in ds.meta.items() if k not in ("tokenizer", "tokenizer_summary", "truncation",
                                                          "id_to_token", "examples")}
    changed = 0
    y = ds.y
    if ds.kind == "text":
        texts = list(ds.meta.get("texts") or [])
        if len(texts) != len(ds):
            raise DataError(f"transform '{transform}' changes raw text, and dataset '{ds.name}' carries none "
                            f"(token ids only)")
        out = []
        for t in texts:
            new = perturb_text(transform, t, rng, rate) if rng.random() < share else None
            changed += new is not None
            out.append(new if new is not None else t)
        meta["texts"] = out
    else:
        words = ds.meta.get("words")
        if words is None or len(words) != len(ds):
            raise DataError(f"transform '{transform}' changes words, and dataset '{ds.name}' carries none")
        classes = list(ds.classes)
        new_words, new_tags = [], []
        for i, ws in enumerate(words):
            tags = [classes[int(v)] for v in ds.y[i] if v >= 0]
            edit = perturb_words(transform, ws, tags, rng, rate) if rng.random() < share else None
            changed += edit is not None
            new_words.append(list(edit.words) if edit else list(ws))
            new_tags.append(list(edit.tags) if edit else tags)
        index = {c: j for j, c in enumerate(classes)}
        y = np.full((len(ds), max(len(t) for t in new_tags)), -1, dtype=np.int64)
        for i, tags in enumerate(new_tags):
            y[i, : len(tags)] = [index[t] for t in tags]
        meta["words"] = new_words
    meta.update(transform=transform, severity=int(severity), **{"from": ds.name}, changed_rows=changed)
    return dataclasses.replace(
        ds, name=f"{ds.name}:{transform}@{severity}", x=np.zeros((len(ds), 0), np.int64), y=y, word_starts=None,
        sensitive=dict(ds.sensitive), source=f"{ds.source or ds.name} under {transform} at severity {severity} "
                                             f"({changed} of {len(ds)} rows changed)",
        meta=meta, _sha256=None)
