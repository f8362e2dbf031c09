"""Seam QA core (qa/): paper metrics and where differences sit (issue 8, part)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_seamless.errors import SeamlessError
from napari_seamless.grid import TileGrid
from napari_seamless.qa import compare, error_map, error_profile, seam_distance


def _distance_by_tiles(grid):
    """Independent route: each pixel's distance to the inner edges of its own ZoR."""
    out = np.full(grid.shape, np.iinfo(np.int32).max, dtype=np.int64)
    for tile in grid:
        block = np.full([z.stop - z.start for z in tile.zor], np.iinfo(np.int32).max)
        for ax, (z, n) in enumerate(zip(tile.zor, grid.shape, strict=True)):
            i = np.arange(z.start, z.stop)
            d = np.full(i.size, np.iinfo(np.int32).max)
            if z.start > 0:
                d = np.minimum(d, i - z.start)
            if z.stop < n:
                d = np.minimum(d, z.stop - 1 - i)
            shape = [1] * len(grid.shape)
            shape[ax] = -1
            block = np.minimum(block, d.reshape(shape))
        out[tile.zor] = block
    return out


@pytest.mark.parametrize("shape", [(100, 130), (64, 64), (40, 50, 70)])
def test_seam_distance_equals_the_distance_to_the_edges_of_each_zor(shape):
    grid = TileGrid(shape, tile=48 if len(shape) == 2 else 40, halo=16, factor=8)
    got = seam_distance(grid)
    assert got.shape == shape and got.dtype == np.int32
    np.testing.assert_array_equal(got, _distance_by_tiles(grid))
    if len(grid) > 1:
        assert got.min() == 0


def test_error_profile_recovers_a_known_profile():
    grid = TileGrid((96, 96), tile=48, halo=16, factor=8)  # ZoR 16: seams every 16 px
    distance = seam_distance(grid)
    diff = 1.0 / (1.0 + distance)
    d, mean = error_profile(np.stack([diff, diff]), distance)
    # ZoR 16: 0..7 inside, up to 15 in the border ZoRs (the image edge is not a seam)
    np.testing.assert_array_equal(d, np.arange(16))
    np.testing.assert_allclose(mean, 1.0 / (1.0 + d))
    with pytest.raises(SeamlessError):
        error_profile(np.zeros((3, 5)), distance)


def test_compare_and_error_map():
    rng = np.random.default_rng(0)
    ref = rng.random((3, 20, 30))
    same = compare(ref, ref.astype(np.float32))
    assert same.me == 0 and same.exact and same.rmse < 1e-7
    moved = ref.copy()
    moved[:, 2, 3] = moved[::-1, 2, 3] + 1  # one pixel changes its class
    other = compare(ref, moved)
    assert other.me == 1 and other.nme == 1 / 600 and not other.exact
    assert "differs" in other.describe()
    errors = error_map(ref.argmax(0), moved.argmax(0))
    assert errors.dtype == np.uint8 and errors.sum() == 1 and errors[2, 3] == 1
    with pytest.raises(SeamlessError, match="cannot compare"):
        compare(ref, ref[:, :10])


def test_halo_sweep_differs_below_the_exact_halo_and_not_at_it():
    """The paper's Table 3 setting, small: a random 4-class U-Net on N(0, 1) noise."""
    import torch

    from napari_seamless.engine import Predictor
    from napari_seamless.models import UNet
    from napari_seamless.qa import halo_sweep

    torch.manual_seed(0)
    model = UNet(in_channels=1, classes=4, width=4, depth=2).eval()
    pred = Predictor(model, device="cpu", dtype="float64")  # rounding far below the effect
    f, exact = pred.factor[0], pred.halo[0]
    image = np.random.default_rng(0).normal(size=(160, 176)).astype(np.float32)
    halos = list(range(0, exact + f + 1, f))
    rows = halo_sweep(pred, image, 2 * exact + 2 * f + 16, halos, normalization=None)
    assert [r.halo for r in rows] == halos and pred.halo == (exact, exact)
    for r in rows:
        if r.halo < exact:
            assert r.comparison.max_abs > 1e-9, r
        else:
            assert r.comparison.me == 0 and r.comparison.max_abs <= 1e-12, r
    below = [r.comparison.rmse for r in rows if r.halo < exact]
    assert below == sorted(below, reverse=True)  # the error shrinks as the halo grows
    assert all(r.relative_runtime > 0 for r in rows)


def test_offset_experiment_agrees_only_at_multiples_of_f():
    """The paper's Fig. 4: crops starting off the F-lattice see another network."""
    import torch

    from napari_seamless.engine import Predictor
    from napari_seamless.models import UNet
    from napari_seamless.qa import offset_experiment

    torch.manual_seed(0)
    model = UNet(in_channels=1, classes=3, width=4, depth=2).eval()
    pred = Predictor(model, device="cpu", dtype="float64")
    f = pred.factor[0]
    image = np.random.default_rng(1).normal(size=(96, 104))
    rows = offset_experiment(pred, image, range(0, 2 * f + 1))
    assert [r.aligned for r in rows] == [o % f == 0 for o in range(2 * f + 1)]
    for r in rows:
        if r.aligned:
            assert r.identical and r.max_abs == 0, r  # bit-identical in float64
        else:
            assert r.max_abs > 1e-6, r
    with pytest.raises(SeamlessError, match="leaves no interior"):
        offset_experiment(pred, image, [90])


def test_sweep_counts_label_errors_by_the_models_own_rule():
    """A one-channel (sigmoid) model: ME counts p > threshold flips, as segment() labels."""
    import torch

    from napari_seamless.engine import Predictor, predict, segment
    from napari_seamless.models import UNet
    from napari_seamless.qa import halo_sweep, misclassification_error

    torch.manual_seed(3)
    model = UNet(in_channels=1, classes=1, width=4, depth=2).eval()
    image = np.random.default_rng(2).normal(size=(120, 136)).astype(np.float32)
    probe = Predictor(model, device="cpu", activation="sigmoid")
    # a threshold at the median probability, so that half the pixels are foreground
    threshold = float(np.median(predict(probe, image, None, normalization=None)))
    pred = Predictor(model, device="cpu", activation="sigmoid", threshold=threshold)
    tile = 2 * pred.halo[0] + 2 * pred.factor[0]
    (row,) = halo_sweep(pred, image, tile, [0], normalization=None)
    naive = Predictor(
        model, device="cpu", activation="sigmoid", threshold=threshold, halo=0, factor=pred.factor
    )
    whole = segment(pred, image, None, normalization=None)
    tiled = segment(naive, image, tile, normalization=None)
    assert row.comparison.me == misclassification_error(whole, tiled) > 0


def test_random_four_class_unet_on_noise_errs_at_every_halo_below_the_exact_one():
    """The paper's Table 3 setting (He-initialised random 4-class U-Net, N(0, 1) noise), in
    float32: ME > 0 at every halo below the computed one, ME = 0 and RMSE at float32
    rounding from it on; naive and overlap-average tiling differ from the reference."""
    from napari_seamless.engine import Predictor, predict
    from napari_seamless.models import UNet, he_init
    from napari_seamless.qa import compare, halo_sweep

    pred = Predictor(he_init(UNet(classes=4, width=8)).eval(), device="cpu")
    f, exact = pred.factor[0], pred.halo[0]
    assert (f, exact) == (16, 96)
    image = np.random.default_rng(0).standard_normal((384, 384)).astype(np.float32)
    rows = halo_sweep(pred, image, 256, range(0, exact + f + 1, f), normalization=None)
    for r in rows:
        if r.halo < exact:
            assert r.comparison.me > 0, r
        else:
            assert r.comparison.me == 0 and r.comparison.rmse <= 1e-6, r
    reference = predict(pred, image, None, normalization=None)
    for mode in ("naive", "overlap-average"):
        c = compare(reference, predict(pred, image, 256, mode=mode, normalization=None))
        assert c.me > 0 and c.rmse > 1e-4, (mode, c)
