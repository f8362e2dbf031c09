"""Tiled equals whole: the central promise, tested against whole-image inference."""

import numpy as np
import pytest
import torch

from napari_seamless.engine import ChannelError, Predictor, predict, read_window, segment
from napari_seamless.models import UNet
from napari_seamless.qa import max_abs_difference, misclassification_error
from napari_seamless.stores import ArrayStore, PyramidStore

TILES = [256, 384, 512]  # ZoR 64, 192, 320 at halo 96
DEFAULT_FLOAT64 = {(256, "clip"), (384, "shift"), (512, "clip")}


@pytest.fixture(scope="module")
def pred32(nuclei_model):
    return Predictor(nuclei_model.module, device="cpu")


@pytest.fixture(scope="module")
def pred64(nuclei_model):
    return Predictor(nuclei_model.module, device="cpu", dtype="float64")


def _random_image(shape, seed=0):
    rng = np.random.default_rng(seed)
    # blobs on noise, so that the model sees nuclei-like structure, not only noise
    img = rng.normal(40, 10, size=shape)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(shape[0] * shape[1] // 4000):
        cy, cx, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(4, 12)
        img += 120 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    return img.clip(0, 255).astype(np.uint16)


def test_whole_image_reference_matches_independent_numpy_pad(nuclei_model, pred64):
    img = _random_image((333, 517), seed=3)
    ref = predict(pred64, img, tile=None)
    # independent reference: normalise, np.pad reflect to a multiple of 16, one pass, crop
    lo, hi = np.percentile(img.astype(np.float64), [1, 99.8])
    x = (img - lo) / (hi - lo)
    xp = np.pad(x, ((0, 336 - 333), (0, 528 - 517)), mode="reflect")
    model = pred64.model
    with torch.inference_mode():
        out = torch.softmax(model(torch.from_numpy(xp)[None, None]), 1)[0].numpy()
    assert max_abs_difference(ref, out[:, :333, :517]) < 1e-12


@pytest.mark.parametrize(
    "shape, tile",
    [  # odd shapes, many tiles; the larger one at every tile with -m slow, 384 by default
        pytest.param(s, t, marks=[pytest.mark.slow] if s == (720, 1010) and t != 384 else [])
        for s in [(333, 517), (720, 1010)]
        for t in TILES
    ],
)
def test_tiled_equals_whole_float32(pred32, shape, tile):
    img = _random_image(shape)
    ref = predict(pred32, img, tile=None)
    tiled = predict(pred32, img, tile=tile)
    assert misclassification_error(ref.argmax(0), tiled.argmax(0)) == 0
    assert max_abs_difference(ref, tiled) <= 1e-5


@pytest.mark.parametrize(
    "tile, border",
    [  # each tile and each border by default; every pair with -m slow
        pytest.param(t, b, marks=[] if (t, b) in DEFAULT_FLOAT64 else [pytest.mark.slow])
        for t in TILES
        for b in ("clip", "shift")
    ],
)
def test_tiled_equals_whole_float64(pred64, tile, border):
    # float64 convolutions go through BLAS (no oneDNN kernel), whose blocking can depend on
    # the window's width: bit-identical on some CPUs, equal to a few ulp (~1e-15) on others
    img = _random_image((333, 517), seed=1)
    ref = predict(pred64, img, tile=None)
    tiled = predict(pred64, img, tile=tile, border=border)
    assert max_abs_difference(ref, tiled) <= 1e-12
    assert np.array_equal(ref.argmax(0), tiled.argmax(0))
    # batching picks other CPU kernels: equal to float64 rounding, not bit for bit (at the
    # larger tiles only: tile 256 is 54 windows, and batching does not change the grid)
    if tile > 256:
        batched = predict(pred64, img, tile=tile, border=border, batch_size=4)
        assert max_abs_difference(ref, batched) < 1e-12


@pytest.mark.parametrize("tile", TILES)
def test_tiled_equals_whole_on_real_nuclei(pred32, pred64, nuclei_image, tile):
    ref = predict(pred32, nuclei_image, tile=None)
    tiled = predict(pred32, nuclei_image, tile=tile)
    assert np.array_equal(ref.argmax(0), tiled.argmax(0))
    assert max_abs_difference(ref, tiled) <= 1e-5
    ref64, tiled64 = predict(pred64, nuclei_image, None), predict(pred64, nuclei_image, tile)
    assert max_abs_difference(ref64, tiled64) <= 1e-12


def test_halo_one_f_step_smaller_differs(nuclei_model, pred64, nuclei_image):
    """The same check with halo 80 instead of 96 must fail: the test can fail."""
    from napari_seamless.engine import InexactHaloWarning

    with pytest.warns(InexactHaloWarning, match=r"halo \(80, 80\) is below the exact halo"):
        small = Predictor(nuclei_model.module, device="cpu", dtype="float64", halo=80)
    assert small.halo == (80, 80) and pred64.halo == (96, 96)
    for img in (nuclei_image, _random_image((333, 517), seed=1)):
        ref = predict(pred64, img, tile=None)
        tiled = predict(small, img, tile=256)
        assert max_abs_difference(ref, tiled) > 0


def test_segment_is_argmax_and_writes_into_zarr(pred32, nuclei_image, tmp_path):
    import zarr

    probs = predict(pred32, nuclei_image, tile=384)
    labels = segment(pred32, nuclei_image, tile=384)
    assert labels.dtype == np.uint8 and labels.shape == nuclei_image.shape
    assert np.array_equal(labels, probs.argmax(0))
    z = zarr.open_array(
        str(tmp_path / "p.zarr"), mode="w", shape=probs.shape, dtype="f4", chunks=(1, 192, 192)
    )
    predict(pred32, nuclei_image, tile=384, out=z)
    assert np.array_equal(z[:], probs)


def test_pyramid_store_levels_are_decimated_level_zero(pred32, nuclei_image):
    store = PyramidStore.zeros((512, 512), min_size=64)
    for _ in pred32.run(nuclei_image, store, tile=256, output="labels"):
        pass
    full = store.levels[0]
    assert len(store.levels) == 4
    for k, level in enumerate(store.levels):
        assert np.array_equal(level, full[:: 2**k, :: 2**k])
    assert np.array_equal(full, segment(pred32, nuclei_image, tile=None))


def test_events_stream_every_tile_once_and_can_stop_early(pred32, nuclei_image):
    out = np.zeros((512, 512), np.uint8)
    events = pred32.run(nuclei_image, ArrayStore(out), tile=256, output="labels")
    first = [next(events) for _ in range(3)]
    events.close()  # cancel between tiles
    assert [e.done for e in first] == [1, 2, 3] and first[0].total == 64
    written = np.zeros((512, 512), bool)
    for e in first:
        written[e.tile.zor] = True
    assert written.sum() == 3 * 64 * 64


def test_read_window_equals_numpy_pad():
    img = np.arange(7 * 5).reshape(1, 7, 5)
    padded = np.pad(img, ((0, 0), (0, 9), (0, 11)), mode="reflect")
    for window in [
        (slice(0, 16), slice(0, 16)),
        (slice(3, 13), slice(2, 9)),
        (slice(0, 7), slice(0, 5)),
    ]:
        assert np.array_equal(read_window(img, window), padded[(slice(None), *window)])


def test_3d_tiled_equals_whole_on_real_volume():
    import tifffile
    from conftest import SHARED_DATA

    from napari_seamless.data import DATA_DIR  # noqa: F401  (package data present)

    path = SHARED_DATA / "nuclei3d.tif"
    if not path.exists():
        pytest.skip("shared/data/nuclei3d.tif not available")
    vol = tifffile.imread(path)
    torch.manual_seed(0)
    model = UNet(width=2, depth=2, ndim=3)
    pred = Predictor(model, ndim=3, device="cpu", dtype="float64")
    assert pred.factor == (4, 4, 4) and pred.halo == (24, 24, 24)
    ref = predict(pred, vol, tile=None, ndim=3)
    tiled = predict(pred, vol, tile=64, ndim=3)  # ZoR 16: 2 x 4 x 4 tiles
    assert max_abs_difference(ref, tiled) <= 1e-12
    assert np.array_equal(ref.argmax(0), tiled.argmax(0))


def test_wrong_channels_is_a_clear_error(pred32):
    rgb = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ChannelError, match="expects 1 input channel.*has 3"):
        predict(pred32, rgb, tile=256)
    with pytest.raises(ChannelError, match="has 4 axes"):
        predict(pred32, np.zeros((2, 2, 64, 64)), tile=256)
