import os
from pathlib import Path

import pytest

from ssran_edge.data.protocols import shared_data_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The team's real data. Missing data is a failure, not a skip: CI must run these tests."""
    root = shared_data_dir()
    if not (root / "cave").is_dir():
        pytest.fail(f"real data sets not found at {root} (set SSRAN_DATA); these tests must not be skipped")
    return root


@pytest.fixture(autouse=True)
def _few_threads():
    # Two cores on CI: keep torch from oversubscribing when tests run beside other work.
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
