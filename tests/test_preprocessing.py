"""The normalisation sample (issue 9): bounded, deterministic, spread over the whole image."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_seamless.preprocessing import (
    PercentileNormalization,
    Preprocessing,
    ScaleRange,
    ZeroMeanUnitVariance,
    sample,
)


class VirtualImage:
    """A channel-first image that exists only as a formula of its indices.

    Value at ``(c, y, x, ...)``: ``(c * 1000 + 31 * y + 17 * x + ...) % 4096``, uint16.
    Records every box read by ``__getitem__`` (which accepts only tuples of unit-step
    slices, as :func:`sample` promises to use) so a test can prove what was read.
    """

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.dtype = np.dtype(np.uint16)
        self.ndim = len(self.shape)
        self.boxes = []

    def __getitem__(self, key):
        assert isinstance(key, tuple) and len(key) == self.ndim, key
        assert all(isinstance(k, slice) and k.step in (None, 1) for k in key), key
        ranges = [range(*k.indices(n)) for k, n in zip(key, self.shape, strict=True)]
        self.boxes.append(tuple((r.start, r.stop) for r in ranges))
        grids = np.meshgrid(*(np.arange(r.start, r.stop) for r in ranges), indexing="ij")
        weights = [1000, 31, 17, 7][: self.ndim]
        return (sum(w * g for w, g in zip(weights, grids, strict=True)) % 4096).astype(np.uint16)

    def pixels_read(self):
        """Pixels per channel read so far (channel axis excluded)."""
        return sum(int(np.prod([b - a for a, b in box[1:]])) for box in self.boxes)


def test_a_20000_squared_image_is_sampled_within_budget_and_spread_over_it():
    image = VirtualImage((2, 20000, 20000))
    budget = 2**22
    norm = PercentileNormalization.fit(image, max_samples=budget)
    assert 0 < image.pixels_read() <= budget  # 4M of the 400M pixels per channel
    assert all(box[0] == (0, 2) for box in image.boxes)  # all channels in one read
    for axis in (1, 2):  # blocks reach both ends of both axes
        starts = [box[axis][0] for box in image.boxes]
        stops = [box[axis][1] for box in image.boxes]
        assert min(starts) < 20000 // 8 and max(stops) > 20000 * 7 // 8
    # the formula is close to uniform on 0..4095: the sampled percentiles say so
    for c in range(2):
        assert norm.low[c] == pytest.approx(0.01 * 4095, abs=15)
        assert norm.high[c] == pytest.approx(0.998 * 4095, abs=15)


def test_the_sample_is_the_same_every_run_and_for_every_array_kind():
    shape, budget = (1, 3000, 2500), 2**18
    first = sample(VirtualImage(shape), budget)
    assert first.shape[0] == 1 and first.shape[1] <= budget and first.dtype == np.float64
    np.testing.assert_array_equal(sample(VirtualImage(shape), budget), first)
    full = VirtualImage(shape)[(slice(None),) * 3]
    np.testing.assert_array_equal(sample(full, budget), first)  # numpy
    np.testing.assert_array_equal(sample(da.from_array(full, chunks=(1, 700, 900)), budget), first)
    z = zarr.array(full, chunks=(1, 512, 512))
    np.testing.assert_array_equal(sample(z, budget), first)  # zarr: same, whatever the chunks
    a = PercentileNormalization.fit(VirtualImage(shape), max_samples=budget)
    b = PercentileNormalization.fit(z, max_samples=budget)
    assert a == b


def test_a_volume_is_sampled_in_cubes():
    image = VirtualImage((1, 300, 400, 500))
    out = sample(image, 2**20)
    assert out.shape[1] <= 2**20 and image.pixels_read() == out.shape[1]
    assert all([b - a for a, b in box[1:]] == [64, 64, 64] for box in image.boxes)


def test_a_small_image_is_read_whole_and_fits_as_before():
    image = np.random.default_rng(0).normal(100, 20, (2, 300, 200)).astype(np.float32)
    norm = PercentileNormalization.fit(image)
    for c in range(2):
        lo, hi = np.percentile(np.asarray(image[c], np.float64), [1.0, 99.8])
        assert (norm.low[c], norm.high[c]) == (lo, hi)  # bit-identical to the whole image
    fitted = Preprocessing((ZeroMeanUnitVariance(), ScaleRange())).fit(image)
    whole = image.astype(np.float64)
    mean = whole.reshape(2, -1).mean(axis=1)
    assert fitted.steps[0].low == tuple(mean)
    np.testing.assert_array_equal(sample(image), whole.reshape(2, -1))


def test_a_budget_smaller_than_a_block_shrinks_the_block():
    image = VirtualImage((1, 5000, 5000))
    assert sample(image, 100).shape == (1, 100)
    with pytest.raises(ValueError, match="positive"):
        sample(image, 0)
