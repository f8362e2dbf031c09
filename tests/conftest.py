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


@pytest.fixture(scope="module")
def dask_client():
    """A client of a local cluster of 2 single-threaded worker processes (one per module).

    Not dask's default scheduler: other code's dask arrays still compute locally.

    The workers are told there are 2 GPUs (``CUDA_VISIBLE_DEVICES`` 0 and 1), as
    ``seamless predict --workers`` does on a GPU machine; without CUDA they run on the CPU.
    """
    distributed = pytest.importorskip("distributed")
    from napari_seamless.engine.cluster import local_cluster

    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with (
        local_cluster(2, gpus=2, env=env, dashboard_address=None) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(scope="session")
def nuclei_tif(tmp_path_factory, nuclei_image) -> Path:
    """The 512 x 512 nuclei image as a plain TIFF file (what cluster workers read)."""
    import tifffile

    path = tmp_path_factory.mktemp("nuclei") / "nuclei.tif"
    tifffile.imwrite(path, nuclei_image)
    return path
