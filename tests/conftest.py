from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only when asked for (``-m slow``): the suite stays short."""
    if "slow" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def nuclei_model():
    from napari_seamless.models import load_model

    return load_model("nuclei")


@pytest.fixture(scope="session")
def nuclei_image() -> np.ndarray:
    from napari_seamless.data import nuclei

    return nuclei()


@pytest.fixture(scope="session")
def nuclei_truth() -> np.ndarray:
    from napari_seamless.data import nuclei_mask

    return nuclei_mask() > 0
