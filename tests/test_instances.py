"""Instance labels tile by tile equal whole-image labelling (components and watershed)."""

import numpy as np
import pytest
from scipy import ndimage

from napari_seamless.errors import ArgumentError, ArgumentTypeError, SeamlessError
from napari_seamless.instances import (
    InstanceResult,
    ObjectTooLargeError,
    label_instances,
    watershed_labels,
)
from napari_seamless.qa.metrics import match_f1, same_partition

TILES = [256, 384, 512]
METHODS = ["components", "watershed"]


def full(ndim):
    return np.ones((3,) * ndim, dtype=bool)


def reference(mask, method, min_distance=7):
    """Whole-image labelling by an independent route: plain scipy for the components,
    the whole-array watershed for the watershed."""
    if method == "components":
        return ndimage.label(mask, structure=full(mask.ndim))[0]
    return watershed_labels(mask, min_distance=min_distance)


def consecutive(labels, count):
    values = np.unique(np.asarray(labels))
    return np.array_equal(values[values > 0], np.arange(1, count + 1))


def check(semantic, zor, method, **kwargs):
    """Tiled == whole (independent reference) up to numbering; returns the result."""
    mask = np.asarray(semantic) > 0
    result = label_instances(semantic, zor, method=method, **kwargs)
    ref = reference(mask, method, kwargs.get("min_distance", 7))
    labels = np.asarray(result.labels)
    assert labels.dtype == np.uint32
    assert same_partition(labels, ref), (zor, method)
    assert result.count == len(np.unique(ref)) - 1
    assert consecutive(labels, result.count)
    return result


# ----------------------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def nuclei_run(nuclei_model, nuclei_image):
    """Semantic labels of the bundled nuclei image, and the ZoR of each tile size."""
    from napari_seamless.engine import segment

    pred = nuclei_model.predictor(device="cpu")
    semantic = segment(pred, nuclei_image, tile=512)
    zors = {t: pred.grid(nuclei_image.shape, t).zor_size for t in TILES}
    return semantic, zors


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("tile", TILES)
def test_tiled_equals_whole_on_nuclei(nuclei_run, tile, method):
    semantic, zors = nuclei_run
    assert zors == {256: (64, 64), 384: (192, 192), 512: (320, 320)}
    result = check(semantic, zors[tile], method)
    assert result.tiles == int(np.prod([-(-512 // z) for z in zors[tile]]))
    whole = label_instances(semantic, None, method=method)
    assert whole.tiles == 1 and same_partition(whole.labels, result.labels)


def test_watershed_on_nuclei_is_a_split_of_the_components(nuclei_run):
    semantic, _ = nuclei_run
    comps, n = ndimage.label(semantic > 0, structure=full(2))
    split = watershed_labels(semantic > 0)
    k = int(split.max())
    # every instance lies in one component, every component holds one or more instances
    table = np.unique(np.stack([split[split > 0], comps[split > 0]]), axis=1)
    assert table.shape[1] == k and np.array_equal(np.unique(table[1]), np.arange(1, n + 1))
    assert n < k < 2 * n  # it splits some touching nuclei, and not into crumbs
    # each instance is connected
    sizes = ndimage.sum_labels(np.ones_like(split), split, np.arange(1, k + 1))
    for i in np.flatnonzero(sizes > 0)[:: max(k // 40, 1)] + 1:
        assert ndimage.label(split == i, structure=full(2))[1] == 1


def test_instances_f1_against_annotation(nuclei_run, nuclei_image):
    from napari_seamless.data import nuclei_mask

    semantic, zors = nuclei_run
    truth = nuclei_mask()
    assert len(np.unique(truth)) - 1 == 125
    comp = match_f1(label_instances(semantic, zors[512]).labels, truth)
    ws = match_f1(label_instances(semantic, zors[512], method="watershed").labels, truth)
    # measured on this CPU: components 0.758 (86 TP / 102 objects), watershed 0.857 (114 / 141)
    assert comp["f1"] >= 0.72 and ws["f1"] >= 0.82
    assert ws["f1"] > comp["f1"] + 0.05 and ws["recall"] > comp["recall"]
    assert 0.8 < ws["mean_iou"] < 1


# ----------------------------------------------------------------------------- synthetic


def disk(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


@pytest.mark.parametrize("method", METHODS)
def test_object_across_a_four_tile_corner(method):
    img = disk((40, 40), (16, 16), 6).astype(np.uint8)
    result = check(img, 16, method)
    assert result.count == 1
    assert len(np.unique(result.labels[10:22, 10:22])) == 2


@pytest.mark.parametrize("method", METHODS)
def test_diagonal_touch_across_borders(method):
    img = np.zeros((20, 20), np.uint8)
    img[7, 7] = img[8, 8] = 1  # across the corner of four 8-px ZoRs
    img[3, 7] = img[4, 8] = 1  # across the vertical border at x = 8
    img[15, 3] = img[16, 2] = 1  # across the horizontal border at y = 16
    result = check(img, 8, method)
    assert result.count == 3
    assert result.labels[7, 7] == result.labels[8, 8] != result.labels[3, 7]


@pytest.mark.parametrize("method", METHODS)
def test_u_shape_joined_only_outside_the_tile(method):
    img = np.zeros((24, 24), np.uint8)
    img[1:11, 2] = img[1:11, 6] = 1  # two arms in ZoR (0, 0), 8 px
    img[10, 2:7] = 1  # the base, in ZoR (1, 0)
    ring = disk((24, 24), (12, 17), 5) & ~disk((24, 24), (12, 17), 3)  # a ring over 4 ZoRs
    img[ring] = 2
    result = check(img, 8, method)
    assert result.labels[1, 2] == result.labels[1, 6]
    if method == "components":
        assert result.count == 2


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("zor", [(5, 7, 6), 9, (32, 3, 40)])
def test_three_d(method, zor):
    rng = np.random.default_rng(3)
    vol = np.zeros((21, 30, 26), np.uint8)
    for _ in range(14):
        c, r = rng.uniform(0, (21, 30, 26)), rng.uniform(2, 5)
        vol[disk(vol.shape, c, r)] = 1
    result = check(vol, zor, method, min_distance=2)
    if method == "watershed":  # touching balls were split
        assert result.count > ndimage.label(vol, structure=full(3))[1]


@pytest.mark.parametrize("method", METHODS)
def test_object_larger_than_the_tile(method):
    img = np.zeros((70, 90), np.uint8)
    img[disk(img.shape, (30, 30), 22) | disk(img.shape, (35, 58), 20)] = 1  # two, touching
    result = check(img, 8, method)
    if method == "watershed":
        assert result.count == 2 and result.largest_window[0] > 50


def test_watershed_refuses_a_component_beyond_max_object():
    img = np.zeros((40, 200), np.uint8)
    img[20, 3:190] = 1
    assert check(img, 16, "watershed", max_object=256).count == 1
    with pytest.raises(ObjectTooLargeError, match="max_object=64 px past it") as err:
        label_instances(img, 16, method="watershed", max_object=64)
    assert isinstance(err.value, SeamlessError)
    assert label_instances(img, 16, max_object=64).count == 1  # components have no limit


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "shape,zor", [((37, 53), 8), ((5, 11), 3), ((64, 41), (13, 7)), ((9, 9), 100)]
)
@pytest.mark.parametrize("seed", [0, 1])
def test_random_blobs_odd_shapes(method, shape, zor, seed):
    rng = np.random.default_rng(seed)
    noise = ndimage.uniform_filter(rng.random(shape), 3) > 0.55
    check(noise.astype(np.uint16), zor, method)


@pytest.mark.parametrize("method", METHODS)
def test_foreground_classes_zarr_in_and_out_and_progress(method, tmp_path):
    import zarr

    rng = np.random.default_rng(5)
    sem = (ndimage.uniform_filter(rng.random((50, 70)), 5) * 6).astype(np.uint8) % 3
    src = zarr.open_array(
        str(tmp_path / "s.zarr"), mode="w", shape=sem.shape, dtype="u1", chunks=(16, 16)
    )
    src[:] = sem
    out = zarr.open_array(
        str(tmp_path / "o.zarr"), mode="w", shape=sem.shape, dtype="u4", chunks=(16, 16)
    )
    calls = []
    result = label_instances(
        src, 16, method=method, foreground=[2], out=out, progress=lambda d, t: calls.append((d, t))
    )
    assert result.labels is out
    ref = reference(sem == 2, method)
    assert same_partition(out[:], ref) and consecutive(out[:], result.count)
    steps = result.tiles * (2 if method == "components" else 1)
    assert calls == [(i, steps) for i in range(1, steps + 1)]


def test_result_and_whole_image_default():
    img = np.zeros((6, 9), np.uint8)
    img[1:5, 1:3] = img[2, 4:8] = 1
    r = label_instances(img)
    assert isinstance(r, InstanceResult) and r.zor == (6, 9) and r.tiles == 1 and r.count == 2
    assert label_instances(img.astype(bool), 4).count == 2
    assert label_instances(np.zeros((5, 5), np.uint8), 2, method="watershed").count == 0


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"semantic": np.zeros((4, 4), np.float32)}, ArgumentTypeError, "not scores"),
        ({"semantic": np.zeros((2, 4, 4, 4), np.uint8)}, ArgumentError, "2D"),
        ({"semantic": "labels.tif"}, ArgumentTypeError, "integer array"),
        ({"zor": 0}, ArgumentError, "positive"),
        ({"zor": (4, 4, 4)}, ArgumentError, "one per axis"),
        ({"zor": 2.5}, ArgumentError, "positive integer"),
        ({"method": "stardist"}, ArgumentError, "'components' or 'watershed'"),
        ({"min_distance": 0}, ArgumentError, "min_distance"),
        ({"out": np.zeros((4, 4), np.uint8)}, ArgumentError, "use uint32"),
        ({"out": np.zeros((3, 4), np.uint32)}, ArgumentError, "shape"),
    ],
)
def test_clear_errors(kwargs, error, message):
    args = {"semantic": np.zeros((4, 4), np.uint8), **kwargs}
    with pytest.raises(error, match=message):
        label_instances(args.pop("semantic"), args.pop("zor", 2), **args)


# ----------------------------------------------------------------------------- metrics


def test_same_partition():
    a = np.array([[1, 1, 0, 2], [3, 0, 0, 2]])
    assert same_partition(a, np.where(a > 0, 10 - a, 0))  # renumbered
    assert not same_partition(a, np.where(a == 3, 1, a))  # two merged
    assert not same_partition(np.where(a == 3, 1, a), a)  # split
    b = a.copy()
    b[0, 2] = 2
    assert not same_partition(a, b)  # background differs
    assert same_partition(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ArgumentError):
        same_partition(a, a[:1])


def test_match_f1_known_answers():
    truth = np.zeros((10, 20), np.uint16)
    truth[0:4, 0:4] = 7  # found exactly
    truth[5:9, 0:4] = 9  # found with IoU 12/16 = 0.75
    truth[0:4, 10:14] = 3  # split into two halves: IoU 0.5 each, one match at >= 0.5
    truth[6:10, 10:20] = 4  # missed
    pred = np.zeros_like(truth)
    pred[0:4, 0:4] = 1
    pred[5:8, 0:4] = 2
    pred[0:4, 10:12] = 5
    pred[0:4, 12:14] = 6
    pred[0:2, 16:18] = 8  # nothing there
    r = match_f1(pred, truth)
    assert (r["tp"], r["fp"], r["fn"], r["n_pred"], r["n_true"]) == (3, 2, 1, 5, 4)
    assert r["precision"] == 3 / 5 and r["recall"] == 3 / 4 and r["f1"] == 6 / 9
    assert r["mean_iou"] == pytest.approx((1 + 0.75 + 0.5) / 3)
    strict = match_f1(pred, truth, iou=0.7)
    assert (strict["tp"], strict["f1"]) == (2, 4 / 9)
    assert match_f1(truth, truth)["f1"] == 1.0
    empty = np.zeros_like(truth)
    assert match_f1(empty, empty)["f1"] == 1.0
    assert match_f1(empty, truth)["f1"] == 0.0 and match_f1(empty, truth)["recall"] == 0.0
    assert match_f1(pred, empty)["precision"] == 0.0
    with pytest.raises(ArgumentError, match="iou"):
        match_f1(pred, truth, iou=0)
