"""Stores: pyramids with leading axes, the OME-Zarr output and its done-tile record, TIFF."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_seamless.errors import SeamlessError
from napari_seamless.grid import TileGrid
from napari_seamless.io import OWNER_KEY, is_ours
from napari_seamless.stores import (
    OmeZarrError,
    OmeZarrStore,
    PyramidStore,
    level_slices,
    pyramid_shapes,
    write_tiff_pyramid,
)

SHAPE = (1000, 1373)  # odd on purpose: ragged last tiles, odd level shapes


def _block(index: int, lead: tuple[int, ...], shape: tuple[int, ...], dtype) -> np.ndarray:
    """The deterministic, nowhere-zero block of tile ``index``."""
    rng = np.random.default_rng(index)
    return rng.integers(1, 250, lead + shape).astype(dtype)


def _fill(stores, grid: TileGrid, lead=(), dtype=np.uint8) -> None:
    for tile in grid:
        block = _block(tile.index, lead, tile.zor_shape, dtype)
        for store in stores:
            store.write(tile.zor, block)
            if isinstance(store, OmeZarrStore):
                store.mark_done(tile.index)


def test_pyramid_store_writes_leading_axes_into_every_level():
    grid = TileGrid((300, 500), tile=128, halo=16, factor=16)
    store = PyramidStore.zeros(grid.shape, np.float32, min_size=64, lead=(3,))
    full = np.zeros((3, *grid.shape), np.float32)
    for tile in grid:
        block = _block(tile.index, (3,), tile.zor_shape, np.float32)
        store.write(tile.zor, block)
        full[(Ellipsis, *tile.zor)] = block
    assert [lv.shape[1:] for lv in store.levels] == pyramid_shapes(grid.shape, 64)
    for k, level in enumerate(store.levels):
        np.testing.assert_array_equal(level, full[:, :: 2**k, :: 2**k])


def test_level_slices_skips_a_zor_with_no_pixel_of_the_level():
    assert level_slices((slice(1, 4), slice(0, 8)), 2) is None  # pixels 1..3: none is 4j
    dst, src = level_slices((slice(3, 9), slice(0, 8)), 2)
    assert dst == (slice(1, 3), slice(0, 2)) and src[0] == slice(1, None, 4)


@pytest.mark.parametrize(
    "kind, lead, dtype, axes",
    [("labels", (), np.uint8, "yx"), ("image", (2,), np.float32, "cyx")],
)
def test_ome_zarr_equals_a_numpy_pyramid_at_every_level(tmp_path, kind, lead, dtype, axes):
    grid = TileGrid(SHAPE, tile=512, halo=96, factor=16)  # ZoR 320
    ref = PyramidStore.zeros(SHAPE, dtype, lead=lead)
    out = OmeZarrStore.create(
        tmp_path / "out.zarr",
        lead + SHAPE,
        dtype,
        chunks=grid.zor_size,
        n_tiles=len(grid),
        kind=kind,
        axes=axes,
    )
    _fill([ref, out], grid, lead, dtype)
    out.finish()
    back = OmeZarrStore.open(tmp_path / "out.zarr", mode="r")
    assert back.complete and back.done == set(range(len(grid))) and back.axes == axes
    assert len(back.levels) == len(ref.levels) == 4
    for k, (mine, theirs) in enumerate(zip(back.levels, ref.levels, strict=True)):
        assert mine.dtype == dtype
        np.testing.assert_array_equal(mine[...], theirs, err_msg=f"level {k}")
    # a tile owns whole chunks while the ZoR halves to >= 64 px: 320, 160, 80; then 256
    chunks = [lv.chunks[len(lead) :] for lv in back.levels]
    assert chunks[:3] == [(320, 320), (160, 160), (80, 80)]
    assert chunks[3] == tuple(min(256, s) for s in back.levels[3].shape[len(lead) :])
    if lead:
        assert back.levels[0].chunks[0] == 1  # one channel per chunk


def test_ome_zarr_metadata_is_ngff_04_and_marked_as_ours(tmp_path):
    path = tmp_path / "labels.zarr"
    OmeZarrStore.create(path, SHAPE, np.uint32, chunks=320, n_tiles=20, source_image="../../")
    attrs = json.loads((path / ".zattrs").read_text())
    (ms,) = attrs["multiscales"]
    assert ms["version"] == "0.4"
    assert ms["axes"] == [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    scales = [d["coordinateTransformations"] for d in ms["datasets"]]
    assert scales == [[{"type": "scale", "scale": [2.0**k] * 2}] for k in range(4)]
    assert attrs["image-label"] == {"version": "0.4", "source": {"image": "../../"}}
    assert json.loads((path / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    assert attrs[OWNER_KEY]["complete"] is False and attrs[OWNER_KEY]["tiles_total"] == 20
    assert is_ours(path)


@pytest.mark.parametrize("kind", ["labels", "image"])
def test_ome_zarr_reader_sees_the_multiscale(tmp_path, kind):
    """An independent reader (ome-zarr-py) parses the metadata: levels, shapes, labels."""
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    path = tmp_path / "out.zarr"
    lead = () if kind == "labels" else (3,)
    store = OmeZarrStore.create(
        path,
        lead + SHAPE,
        np.uint16,
        chunks=320,
        n_tiles=20,
        kind=kind,
        axes=None if not lead else "cyx",
    )
    store.write((slice(0, 320), slice(0, 320)), np.full(lead + (320, 320), 7, np.uint16))
    store.flush()
    node = next(iter(Reader(parse_url(str(path)))()))
    assert node.load(Multiscales) is not None
    assert (node.load(Label) is not None) == (kind == "labels")
    expected = [lead + s for s in pyramid_shapes(SHAPE)]
    assert [tuple(d.shape) for d in node.data] == expected
    assert [a["name"] for a in node.metadata["axes"]] == list(store.axes)
    assert int(np.asarray(node.data[1][..., 0, 0]).ravel()[0]) == 7


def test_done_record_round_trip_and_settings(tmp_path):
    path = tmp_path / "out.zarr"
    settings = {"model": "nuclei", "tile": (512, 512), "halo": np.int64(96), "input": Path("a.tif")}
    store = OmeZarrStore.create(path, SHAPE, np.uint8, chunks=320, n_tiles=23, attrs=settings)
    with store:
        for i in (0, 5, 7, 8, 22):
            store.mark_done(i)
    back = OmeZarrStore.open(path)
    assert back.done == {0, 5, 7, 8, 22} and not back.complete
    assert back.missing == [i for i in range(23) if i not in back.done]
    assert back.settings == {"model": "nuclei", "tile": [512, 512], "halo": 96, "input": "a.tif"}
    assert back.differences(settings) == {}
    assert back.differences({**settings, "halo": 64}) == {"halo": (96, 64)}
    back.finish()
    assert OmeZarrStore.open(path).complete
    with pytest.raises(ValueError, match="outside"):
        back.mark_done(23)


def test_throttle_holds_the_record_until_flush(tmp_path):
    path = tmp_path / "out.zarr"
    store = OmeZarrStore.create(path, SHAPE, np.uint8, chunks=320, n_tiles=20, throttle=3600)
    store.mark_done(3)
    assert OmeZarrStore.open(path).done == set()
    store.flush()
    assert OmeZarrStore.open(path).done == {3}


def test_open_refuses_what_is_not_ours_or_unreadable(tmp_path):
    with pytest.raises(OmeZarrError, match="not an OME-Zarr output written by napari-seamless"):
        OmeZarrStore.open(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=2)
    with pytest.raises(OmeZarrError, match="not an OME-Zarr output"):
        OmeZarrStore.open(tmp_path / "plain.zarr")
    path = tmp_path / "out.zarr"
    OmeZarrStore.create(path, SHAPE, np.uint8, chunks=320, n_tiles=20)
    attrs = json.loads((path / ".zattrs").read_text())
    attrs[OWNER_KEY]["tiles_done"]["count"] = 5  # disagrees with the bits
    (path / ".zattrs").write_text(json.dumps(attrs))
    with pytest.raises(OmeZarrError, match="done-tile record") as info:
        OmeZarrStore.open(path)
    assert isinstance(info.value, SeamlessError) and isinstance(info.value, ValueError)


def test_create_refuses_bad_axes(tmp_path):
    with pytest.raises(ValueError, match="labels have no channel axis"):
        OmeZarrStore.create(
            tmp_path / "a.zarr", (2, *SHAPE), np.uint8, chunks=320, n_tiles=1, axes="cyx"
        )
    with pytest.raises(ValueError, match="do not fit shape"):
        OmeZarrStore.create(tmp_path / "b.zarr", SHAPE, np.uint8, chunks=320, n_tiles=1, axes="zyx")


_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from napari_seamless.grid import TileGrid
    from napari_seamless.stores import OmeZarrStore

    grid = TileGrid({shape}, tile={tile}, halo={halo}, factor=16)
    store = OmeZarrStore.open(sys.argv[1], throttle=0)
    while True:  # never finishes: the parent kills it
        for tile in grid:
            rng = np.random.default_rng(tile.index)
            store.write(tile.zor, rng.integers(1, 250, tile.zor_shape).astype(np.uint8))
            store.mark_done(tile.index)
            print(tile.index, flush=True)
    """
)


def test_record_survives_sigkill_and_every_done_tile_is_on_disk(tmp_path):
    shape, tile, halo = (1000, 1373), 96, 16  # ZoR 64: 16 x 22 = 352 tiles
    grid = TileGrid(shape, tile=tile, halo=halo, factor=16)
    path = tmp_path / "out.zarr"
    OmeZarrStore.create(path, shape, np.uint8, chunks=grid.zor_size, n_tiles=len(grid))
    script = _CHILD.format(shape=shape, tile=tile, halo=halo)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        printed = 0
        for _line in child.stdout:
            printed += 1
            if printed >= len(grid) // 2:
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
    assert printed >= len(grid) // 2, "the writer died before it wrote half the tiles"
    store = OmeZarrStore.open(path, mode="r")
    assert not store.complete
    assert printed <= len(store.done) < len(grid)
    for index in sorted(store.done):
        t = grid[index]
        block = _block(index, (), t.zor_shape, np.uint8)
        for k, level in enumerate(store.levels):
            where = level_slices(t.zor, k)
            if where is not None:
                dst, src = where
                np.testing.assert_array_equal(level[dst], block[src], f"tile {index} level {k}")


@pytest.mark.parametrize(
    "shape, lead, dtype, axes",
    [
        (SHAPE, (), np.uint16, "yx"),
        ((512, 512), (), np.uint8, "yx"),
        (SHAPE, (2,), np.float32, "cyx"),
    ],
)
def test_tiff_pyramid_round_trip(tmp_path, shape, lead, dtype, axes):
    grid = TileGrid(shape, tile=512, halo=96, factor=16)
    out = OmeZarrStore.create(
        tmp_path / "out.zarr",
        lead + shape,
        dtype,
        chunks=grid.zor_size,
        n_tiles=len(grid),
        kind="image" if lead else "labels",
        axes=axes,
    )
    _fill([out], grid, lead, dtype)
    tif = write_tiff_pyramid(out.levels, tmp_path / "out.tif", axes=axes)
    np.testing.assert_array_equal(tifffile.imread(tif), out.levels[0][...])
    with tifffile.TiffFile(tif) as tf:
        assert tf.is_bigtiff
        series = tf.series[0]
        assert series.axes == axes.upper()
        assert len(series.levels) == len(out.levels)
        page = tf.pages[0]
        assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
        for k, level in enumerate(series.levels):
            assert level.shape == out.levels[k].shape
            np.testing.assert_array_equal(level.asarray(), out.levels[k][...], f"level {k}")


class _Spy:
    """An array-like that records the size of every read."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.reads = array, array.shape, array.dtype, []

    def __getitem__(self, key):
        part = self.array[key]
        self.reads.append(part.size)
        return part


def test_tiff_pyramid_reads_one_row_of_tiles_at_a_time(tmp_path):
    levels = [
        _Spy(np.arange(np.prod(s)).reshape(s).astype(np.uint16)) for s in pyramid_shapes(SHAPE)
    ]
    write_tiff_pyramid(levels, tmp_path / "a.tif", axes="yx", tile=(128, 256))
    for level in levels:
        assert max(level.reads) <= 128 * level.shape[1]
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a.tif"), levels[0].array)


def test_tiff_pyramid_refuses_mismatched_levels(tmp_path):
    with pytest.raises(ValueError, match="every level must have"):
        write_tiff_pyramid(
            [np.zeros((2, 64, 64)), np.zeros((32, 32))], tmp_path / "a.tif", axes="cyx"
        )
    with pytest.raises(ValueError, match="multiples of 16"):
        write_tiff_pyramid([np.zeros((64, 64))], tmp_path / "a.tif", axes="yx", tile=(100, 100))
