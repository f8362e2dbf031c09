"""The comparison modes (naive, overlap-average), the region reference and the seam report.

Overlap-average is checked against MONAI's own ``sliding_window_inference`` (an independent
implementation of the practice it stands for); the region reference against whole-image
inference; the seam report's error map against the grid's seams.
"""

import numpy as np
import pytest
import torch

from napari_seamless.engine import Predictor, predict, segment
from napari_seamless.errors import ArgumentError
from napari_seamless.grid import RegionError, TileGrid, parse_region, region_tile
from napari_seamless.models.unet import UNet
from napari_seamless.overlap import OverlapGrid, importance_map
from napari_seamless.qa import ReferenceTooLargeError, reference, seam_report
from napari_seamless.stores import ArrayStore


@pytest.fixture(scope="module")
def small():
    """A random 3-class U-Net with F 4 and halo 24, and its Predictor."""
    torch.manual_seed(0)
    model = UNet(width=8, depth=2, classes=3).eval()
    return model, Predictor(model)


@pytest.fixture(scope="module")
def noise():
    return np.random.default_rng(0).standard_normal((200, 260)).astype(np.float32)


@pytest.mark.parametrize("weights", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.25, 0.5, 24])
def test_overlap_average_equals_monai_sliding_window(small, noise, weights, overlap):
    from monai.inferers import sliding_window_inference

    model, pred = small
    ours = predict(
        pred,
        noise,
        64,
        mode="overlap-average",
        overlap=overlap,
        weights=weights,
        normalization=None,
    )
    fraction = overlap if isinstance(overlap, float) else overlap / 64
    with torch.inference_mode():
        theirs = sliding_window_inference(
            torch.from_numpy(noise)[None, None],
            (64, 64),
            1,
            lambda x: torch.softmax(model(x), 1),
            overlap=fraction,
            mode=weights,
        )[0].numpy()
    assert np.abs(ours - theirs).max() <= 1e-5
    whole = predict(pred, noise, None, normalization=None)
    assert np.abs(ours - whole).max() > 1e-3  # the practice is not exact


def test_overlap_windows_are_monais_and_final_boxes_partition_the_image():
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    shape, window = (200, 260), (64, 64)
    grid = OverlapGrid(shape, window, 0.25, factor=4)
    theirs = dense_patch_slices(shape, window, _get_scan_interval(shape, window, 2, (0.25, 0.25)))
    assert [t.window for t in grid] == [tuple(s) for s in theirs]
    hits = np.zeros(shape, dtype=int)
    for t in grid:
        hits[t.zor] += 1
        assert all(
            w.start <= z.start and z.stop <= w.stop for w, z in zip(t.window, t.zor, strict=True)
        )
    assert (hits == 1).all()
    assert "overlap 16 px (stride 48)" in grid.describe()


def test_gaussian_weights_peak_in_the_centre_and_never_reach_zero():
    w = importance_map((64, 32))
    assert w.shape == (64, 32) and w.dtype == np.float32
    assert w.max() == pytest.approx(w[31:33, 15:17].max()) and w.min() >= 1e-3
    assert (importance_map((8, 8), "constant") == 1).all()
    with pytest.raises(ArgumentError, match="weights must be one of"):
        importance_map((8, 8), "triangle")


def test_overlap_average_streams_each_final_box_once_and_labels_follow(small, noise):
    _, pred = small
    writes = []

    class Recorder(ArrayStore):
        def write(self, zor, block):
            writes.append(zor)
            super().write(zor, block)

    labels = np.zeros(noise.shape, np.uint8)
    events = list(
        pred.run(
            noise, Recorder(labels), 64, output="labels", mode="overlap-average", normalization=None
        )
    )
    assert len(events) == len(writes) == events[-1].total
    scores = predict(pred, noise, 64, mode="overlap-average", normalization=None)
    assert np.array_equal(labels, scores.argmax(0))


def test_overlap_defaults_to_two_halos_the_cost_of_the_exact_mode(small):
    _, pred = small
    plan = pred.plan((200, 260), 96, mode="overlap-average")
    exact = pred.grid((200, 260), 96)
    assert plan.overlap == (48, 48) and plan.stride == exact.zor_size


def test_naive_is_the_exact_engine_at_halo_zero_and_differs_from_whole(small, noise):
    _, pred = small
    naive = predict(pred, noise, 64, mode="naive", normalization=None)
    zero = predict(pred, noise, 64, halo=0, normalization=None)
    whole = predict(pred, noise, None, normalization=None)
    assert np.array_equal(naive, zero)
    assert np.abs(naive - whole).max() > 1e-2
    exact = predict(pred, noise, 64, normalization=None)
    assert np.abs(exact - whole).max() <= 1e-6


def test_region_reference_equals_whole_image_inference(small, noise):
    _, pred = small
    whole = predict(pred, noise, None, normalization=None)
    for region in ["0:37,0:260", "101:157,3:99", "150:200,200:260", (slice(7, 8), slice(9, 10))]:
        ref = reference(pred, noise, region, normalization=None)
        box = parse_region(region, noise.shape)
        assert ref.region == box and not ref.whole
        assert np.abs(ref.scores - whole[(slice(None), *box)]).max() <= 1e-6
        assert np.array_equal(ref.labels, whole[(slice(None), *box)].argmax(0))
    full = reference(pred, noise, normalization=None)
    assert full.whole and np.array_equal(full.scores, whole)


def test_region_tile_window_is_the_f_aligned_box_plus_the_halo():
    t = region_tile((200, 260), (slice(101, 157), slice(3, 99)), 24, 4)
    assert t.window == (slice(76, 184), slice(0, 124))  # 100 - 24 .. 160 + 24
    assert t.zor == (slice(101, 157), slice(3, 99)) and t.crop == (slice(25, 81), slice(3, 99))


def test_seam_report_on_the_nuclei_image_errors_sit_on_seams():
    from napari_seamless import data

    pred = Predictor("nuclei")
    img = data.nuclei()
    exact_halo = pred.halo[0]
    ref = reference(pred, img)
    reports = {}
    for halo in (exact_halo - pred.factor[0], exact_halo):
        scores = predict(pred, img, 256, halo=halo)
        grid = pred.grid(img.shape, 256, halo=halo)
        reports[halo] = (seam_report(ref, scores, pred.labels(scores), grid, 1.0), grid)
    low, low_grid = reports[exact_halo - pred.factor[0]]
    assert low.comparison.me > 0 and low.error_map.sum() == low.comparison.me
    assert not (low.error_map.astype(bool) & ~low.seam_pixels(low_grid, exact_halo)).any()
    assert low.profile[0] > 10 * low.profile[-1]  # errors live at the seams
    exact, _ = reports[exact_halo]
    assert exact.comparison.me == 0 and exact.comparison.rmse <= 1e-6
    assert exact.comparison.exact and not exact.error_map.any()


def test_bad_settings_are_refused_before_anything_runs(small, noise):
    _, pred = small
    store = ArrayStore(np.zeros((3, *noise.shape), np.float32))
    with pytest.raises(ArgumentError, match="halo 10 px is not a multiple of F=4 px.*use 8 or 12"):
        pred.run(noise, store, 64, halo=10)
    with pytest.raises(ArgumentError, match="mode must be 'exact'"):
        pred.run(noise, store, 64, mode="blend")
    with pytest.raises(ArgumentError, match="overlap is a setting of mode 'overlap-average'"):
        pred.run(noise, store, 64, overlap=8)
    with pytest.raises(ArgumentError, match="halo is set by the exact mode only"):
        pred.run(noise, store, 64, halo=8, mode="naive")
    with pytest.raises(ArgumentError, match=r"overlap 64 px must lie in \[0, window\)"):
        list(pred.run(noise, store, 64, mode="overlap-average", overlap=64))
    with pytest.raises(RegionError, match="outside the image, whose extent is 0:200,0:260"):
        reference(pred, noise, "190:210,0:10")
    with pytest.raises(RegionError, match="has 1 axes but the image has 2"):
        reference(pred, noise, "0:10")
    with pytest.raises(ReferenceTooLargeError, match="choose a region"):
        reference(pred, noise, budget=1000)
    with pytest.raises(ArgumentError, match="cannot change a Predictor"):
        segment(pred, noise, 64, device="cpu")


def test_tilegrid_and_region_tile_agree_on_interior_tiles():
    grid = TileGrid((300, 300), 128, 32, 16)
    for t in grid:
        r = region_tile((300, 300), t.zor, 32, 16)
        assert r.window == t.window and r.crop == t.crop
