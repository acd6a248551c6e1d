"""Seeded random streams: one per (seed, purpose), independent and identical across runs."""

from __future__ import annotations

import hashlib

import numpy as np


def seeded_rng(seed: int, purpose: str) -> np.random.Generator:
    """A generator seeded by `seed` and a purpose string, so that each use draws its own
    stream and adding a use elsewhere changes no other stream."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))
