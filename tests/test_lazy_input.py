"""Lazy input (issue 9): a tiled, compressed TIFF is read chunk by chunk, never whole."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import tifffile.zarr

from napari_seamless import io
from napari_seamless.io import InputError, lazy, read_image


def _pixels(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 4000, shape).astype(np.uint16)


@pytest.fixture
def chunk_reads(monkeypatch):
    """The chunk keys every tifffile zarr store is asked for, in order."""
    keys: list[str] = []
    get = tifffile.zarr.ZarrTiffStore.get

    async def counting_get(self, key, prototype, byte_range=None):
        if not key.rsplit("/", 1)[-1].startswith((".z", "zarr.json")):
            keys.append(key)
        return await get(self, key, prototype, byte_range)

    monkeypatch.setattr(tifffile.zarr.ZarrTiffStore, "get", counting_get)
    return keys


def test_tiled_compressed_tiff_decodes_only_the_tiles_a_window_touches(
    tmp_path, monkeypatch, chunk_reads
):
    path = tmp_path / "slide.tif"
    full = _pixels((1024, 1024))
    tifffile.imwrite(path, full, tile=(128, 128), compression="zlib")
    monkeypatch.setattr(io, "_VALIDATE_ALL_BYTES", 0)  # as for a slide too large to check whole
    image = read_image(path)
    assert not isinstance(image.data, np.ndarray)
    assert image.shape == (1024, 1024) and image.data.dtype == np.uint16
    assert image.data.ndim == 2
    assert len(chunk_reads) == 2  # the first and the last tile, to refuse a bad file early
    chunk_reads.clear()
    window = image.data[(slice(200, 300), slice(500, 600))]
    assert isinstance(window, np.ndarray)
    np.testing.assert_array_equal(window, full[200:300, 500:600])
    assert len(chunk_reads) == 4  # tiles (1..2) x (3..4) of 8 x 8
    view = lazy(image.data)
    np.testing.assert_array_equal(np.asarray(view[1000:, :30]), full[1000:, :30])


def test_compressed_strip_tiff_and_pyramid_levels_are_lazy_too(tmp_path):
    full = _pixels((3, 256, 200), 1)
    tifffile.imwrite(
        tmp_path / "stack.tif", full, compression="zlib", rowsperstrip=16, photometric="minisblack"
    )
    image = read_image(tmp_path / "stack.tif")
    assert not isinstance(image.data, np.ndarray)
    np.testing.assert_array_equal(
        image.data[(slice(1, 2), slice(40, 90), slice(None))], full[1:2, 40:90]
    )

    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path) as w:
        w.write(full[0], subifds=1, tile=(64, 64), compression="zlib")
        w.write(full[0, ::2, ::2], subfiletype=1, tile=(64, 64), compression="zlib")
    level = read_image(path, level=1)
    assert level.shape == (128, 100) and not isinstance(level.data, np.ndarray)
    np.testing.assert_array_equal(level.data[:, :], full[0, ::2, ::2])


def test_uncompressed_contiguous_tiff_stays_a_memory_map(tmp_path):
    tifffile.imwrite(tmp_path / "raw.tif", _pixels((64, 64)))
    assert isinstance(read_image(tmp_path / "raw.tif").data, np.memmap)


def test_a_missing_tile_past_the_end_of_the_file_is_refused_when_opened(tmp_path, monkeypatch):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, _pixels((1024, 1024)), tile=(128, 128), compression="zlib")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.9)])
    monkeypatch.setattr(io, "_VALIDATE_ALL_BYTES", 0)  # caught from the layout, not by decoding
    with pytest.raises(InputError, match=r"cannot read .*cut\.tif as a TIFF: .*\(truncated\)"):
        read_image(path)
