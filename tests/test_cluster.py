"""The exact grid on a dask.distributed LocalCluster equals the single-process run."""

import numpy as np
import pytest
import tifffile

from napari_seamless.data import DATA_DIR
from napari_seamless.errors import ArgumentError
from napari_seamless.grid import TileGrid
from napari_seamless.stores import OmeZarrStore

distributed = pytest.importorskip("distributed")

from napari_seamless.engine.cluster import (  # noqa: E402
    _check_aligned,
    _write_coarse,
    run_on_cluster,
)


def test_cluster_run_equals_single_process(tmp_path):
    from napari_seamless.engine import segment

    image = tifffile.imread(DATA_DIR / "nuclei2d.tif")
    assert image.shape == (512, 512)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, image)
    expected = segment("nuclei", image, tile=256)  # the reference, in this process

    out = tmp_path / "out.ome.zarr"
    seen = []
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        summary = run_on_cluster(
            client,
            "nuclei",
            src,
            out,
            256,
            batch_tiles=8,
            callback=lambda done, total: seen.append((done, total)),
        )
        # a stopped run (half the tiles recorded done, the rest empty) resumed on the cluster
        part = tmp_path / "part.ome.zarr"
        grid = summary.grid
        half = OmeZarrStore.create(
            part, expected.shape, expected.dtype, chunks=grid.zor_size, n_tiles=len(grid)
        )
        for t in list(grid)[::2]:
            half.write(t.zor, expected[t.zor])
            half.mark_done(t.index)
        half.flush()
        resumed = run_on_cluster(client, "nuclei", src, part, 256, batch_tiles=5, resume=True)
    assert summary.tiles == summary.computed == 64  # ZoR 64: 8 x 8 tiles
    assert summary.tasks == 8
    assert sum(summary.workers.values()) == 64
    assert seen[-1] == (64, 64)

    store = OmeZarrStore.open(out, mode="r")
    assert store.complete and store.missing == [] and len(store.done) == 64
    level0 = np.asarray(store.levels[0][...])
    assert level0.dtype == expected.dtype
    np.testing.assert_array_equal(level0, expected)
    for k, level in enumerate(store.levels[1:], start=1):  # built on the client
        np.testing.assert_array_equal(np.asarray(level[...]), expected[:: 2**k, :: 2**k])

    assert (resumed.computed, resumed.tasks) == (32, 7)
    again = OmeZarrStore.open(part, mode="r")
    assert again.complete and again.missing == []
    np.testing.assert_array_equal(np.asarray(again.levels[0][...]), expected)
    for k, level in enumerate(again.levels[1:], start=1):
        np.testing.assert_array_equal(np.asarray(level[...]), expected[:: 2**k, :: 2**k])


def test_write_coarse_builds_the_decimated_levels():
    rng = np.random.default_rng(0)
    full = rng.integers(0, 5, (100, 70)).astype(np.uint8)
    levels = [full.copy(), np.zeros((50, 35), np.uint8), np.zeros((25, 18), np.uint8)]
    grid = TileGrid((100, 70), (48, 48), (8, 8), (8, 8))
    _write_coarse(levels, [t.zor for t in grid])
    np.testing.assert_array_equal(levels[1], full[::2, ::2])
    np.testing.assert_array_equal(levels[2], full[::4, ::4])


def test_unaligned_zor_is_refused():
    grid = TileGrid((100, 70), (48, 48), (8, 8), (8, 8))  # ZoR 32

    class Level:
        shape, chunks = (100, 70), (64, 64)

    with pytest.raises(ArgumentError, match="whole output chunks"):
        _check_aligned(grid, Level(), 0)

    Level.chunks = (32, 32)
    _check_aligned(grid, Level(), 0)
