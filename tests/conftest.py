"""Shared pytest fixtures. Reference models train once per test session into a private
cache directory, so tests never read or write the user's cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from audit.dataset import LoadedModel

# The suite's tensors are small: intra-op threads buy little, and on a busy machine two
# OpenMP threads spinning on two cores cost 10-20x the CPU time of one (measured on the
# adult model's inference). AUDIT_TEST_THREADS overrides.
torch.set_num_threads(int(os.environ.get("AUDIT_TEST_THREADS", "1")))


@pytest.fixture(scope="session", autouse=True)
def audit_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("audit-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDIT_CACHE_DIR", str(path))
        yield path


# Session-wide models: do not change their weights (use `.factory` or
# fixtures.models.load_fixture_model for a private copy).
@pytest.fixture(scope="session")
def digits_cnn(audit_cache_dir: Path) -> LoadedModel:
    from fixtures.models import load_fixture_model

    return load_fixture_model("digits-cnn")


@pytest.fixture(scope="session")
def adult_transformer(audit_cache_dir: Path) -> LoadedModel:
    from fixtures.models import load_fixture_model

    return load_fixture_model("adult-transformer")
