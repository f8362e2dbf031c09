"""Stacks and time series (engine.stack): how axes are read, and runs over their planes.

Every run here is checked against an independent answer: whole-image inference on each
plane (or volume) alone, with numpy indexing picking the plane, never against StackRun
itself. The models are tiny random U-Nets in float64, so tiled equals whole to rounding.
"""

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA

from napari_seamless.engine import Predictor, predict, segment
from napari_seamless.engine.stack import AxesChoice, StackRun, interpretations, no_reading
from napari_seamless.models import UNet
from napari_seamless.stores import ArrayStore, LabelsStore

TILE2 = 72  # halo 24 (width 4, depth 2): ZoR 24, a 3 x 3 grid on a 61 x 57 plane
TILE3 = 64  # 3D: ZoR 16


# --------------------------------------------------------------------------- fixtures


def _predictor(in_channels=1, ndim=2, width=4, seed=0):
    torch.manual_seed(seed)
    model = UNet(in_channels=in_channels, classes=2, width=width, depth=2, ndim=ndim)
    return Predictor(model, ndim=ndim, device="cpu", dtype="float64")


@pytest.fixture(scope="module")
def pred2():
    return _predictor()


@pytest.fixture(scope="module")
def pred3():
    return _predictor(ndim=3, width=2, seed=1)


@pytest.fixture(scope="module")
def pred_rgb():
    return _predictor(in_channels=3, seed=2)


@pytest.fixture(scope="module")
def volume():
    tifffile = pytest.importorskip("tifffile")
    path = SHARED_DATA / "nuclei3d.tif"
    if not path.exists():
        pytest.skip("shared/data/nuclei3d.tif not available")
    vol = tifffile.imread(path)
    assert vol.shape == (31, 61, 57)
    return vol


@pytest.fixture(scope="module")
def zstack(volume):
    """Four real planes, far apart (different content, different statistics)."""
    return np.ascontiguousarray(volume[[3, 10, 17, 24]])


@pytest.fixture(scope="module")
def zstack_reference(pred2, zstack):
    """Whole-image inference on each plane alone: (scores, labels) per plane."""
    return [(predict(pred2, p, tile=None), segment(pred2, p, tile=None)) for p in zstack]


# --------------------------------------------------------------------------- helpers


class Outputs:
    """Per-plane stores into NaN-filled scores and sentinel labels, with a call log."""

    def __init__(self, pred, choice, classes=2):
        self.pred, self.choice = pred, choice
        self.scores = np.full((classes, *choice.labels_shape), np.nan)
        self.labels = np.full(choice.labels_shape, 255, np.uint8)
        self.calls = []

    def __call__(self, position):
        self.calls.append(dict(position))
        index = self.choice.labels_index(position)
        return LabelsStore(
            ArrayStore(self.labels[index]),
            self.pred.labels,
            scores=self.scores[(slice(None), *index)],
        )


def _run(pred, data, choice, tile, **kwargs):
    outputs = Outputs(pred, choice)
    n = len(pred.grid(_plane_shape(choice, pred.ndim), tile))
    stack = StackRun(pred, data, choice, outputs, tile, n, **kwargs)
    events = []
    for event in stack:
        events.append((dict(stack.position), event))
    return stack, outputs, events


def _plane_shape(choice, ndim):
    return choice.labels_shape[-ndim:]


def _assert_exact(scores, labels, ref_scores, ref_labels):
    assert not np.isnan(scores).any()
    assert np.abs(scores - ref_scores).max() <= 1e-12
    assert np.array_equal(labels, ref_labels)


# --------------------------------------------------------------------------- interpretations


def test_three_axes_with_a_2d_model_are_a_z_stack_or_a_time_series():
    found = interpretations((31, 61, 57), ndim=2, in_channels=1)
    assert [c.axes for c in found] == ["ZYX", "TYX"]
    z, t = found
    assert (z.stack, z.stack_shape, z.planes) == ("Z", (31,), 31)
    assert (t.stack, t.stack_shape, t.planes) == ("T", (31,), 31)
    for c in found:
        assert c.labels_shape == (31, 61, 57)
        assert c.spatial == "YX" and c.plane_axes() == "YX" and c.channels == 1
    assert "31 Z planes" in z.describe() and "2D model" in z.describe()
    assert "31 time points" in t.describe() and "Z planes" not in t.describe()


def test_three_axes_with_a_3d_model_are_one_volume():
    found = interpretations((31, 61, 57), ndim=3, in_channels=1)
    assert [c.axes for c in found] == ["ZYX"]
    (c,) = found
    assert (c.stack, c.stack_shape, c.planes, c.positions()) == ("", (), 1, [{}])
    assert c.labels_shape == (31, 61, 57) and c.plane_axes() == "ZYX"
    assert c.labels_index({}) == ()
    text = c.describe()
    assert "one volume" in text and "3D model" in text and "planes" not in text


def test_four_axes_are_a_series_of_z_stacks():
    (c2,) = interpretations((5, 31, 61, 57), ndim=2, in_channels=1)
    assert (c2.axes, c2.stack, c2.stack_shape, c2.planes) == ("TZYX", "TZ", (5, 31), 155)
    assert c2.labels_shape == (5, 31, 61, 57) and c2.plane_axes() == "YX"
    text = c2.describe()
    assert "5 time points" in text and "31 Z planes" in text and "2D model" in text

    (c3,) = interpretations((5, 31, 61, 57), ndim=3, in_channels=1)
    assert (c3.axes, c3.stack, c3.stack_shape, c3.planes) == ("TZYX", "T", (5,), 5)
    assert c3.labels_shape == (5, 31, 61, 57) and c3.plane_axes() == "ZYX"
    text = c3.describe()
    assert "5 time points" in text and "volume" in text and "3D model" in text
    assert "plane" not in text  # a 3D model runs volumes, not planes


def test_channels_of_a_3_channel_model():
    (one,) = interpretations((3, 64, 64), ndim=2, in_channels=3)
    assert (one.axes, one.stack, one.planes, one.channels) == ("CYX", "", 1, 3)
    assert one.labels_shape == (64, 64) and one.plane_axes() == "CYX"
    assert "one image" in one.describe() and "3 channels" in one.describe()

    found = interpretations((5, 3, 64, 64), ndim=2, in_channels=3)
    assert [c.axes for c in found] == ["ZCYX", "TCYX"]
    for c in found:
        assert c.labels_shape == (5, 64, 64) and c.planes == 5 and c.channels == 3
        assert c.plane_axes() == "CYX"
    assert "5 Z planes" in found[0].describe() and "3 channels" in found[0].describe()
    assert "5 time points" in found[1].describe()

    found = interpretations((3, 5, 64, 64), ndim=2, in_channels=3)
    assert [c.axes for c in found] == ["CZYX", "CTYX"]
    for c in found:
        assert c.labels_shape == (5, 64, 64) and c.planes == 5 and c.plane_axes() == "CYX"


def test_rgb_layers_keep_their_channels_last():
    (one,) = interpretations((64, 64, 3), ndim=2, in_channels=3, rgb=True)
    assert (one.axes, one.stack, one.labels_shape) == ("YXC", "", (64, 64))
    assert one.plane_axes() == "YXC"
    found = interpretations((4, 64, 64, 3), ndim=2, in_channels=3, rgb=True)
    assert [c.axes for c in found] == ["ZYXC", "TYXC"]
    for c in found:
        assert c.labels_shape == (4, 64, 64) and c.planes == 4 and c.plane_axes() == "YXC"
    # an RGB layer never has its channels read from a leading axis
    assert interpretations((3, 64, 64, 4), ndim=2, in_channels=3, rgb=True) == []


def test_too_many_stack_axes_have_no_reading():
    shape = (2, 2, 2, 2, 64, 64)
    assert interpretations(shape, ndim=2, in_channels=1) == []
    why = no_reading(shape, ndim=2, in_channels=1)
    assert "at most 2 (T and Z)" in why and "4 axes" in why and str(shape) in why
    shape3 = (2, 3, 10, 20, 20)
    assert interpretations(shape3, ndim=3, in_channels=1) == []
    why = no_reading(shape3, ndim=3, in_channels=1)
    assert "at most 1 (T)" in why and "2 axes" in why


def test_no_axis_with_the_model_channels_has_no_reading():
    assert interpretations((4, 64, 64), ndim=2, in_channels=3) == []
    why = no_reading((4, 64, 64), ndim=2, in_channels=3)
    assert "3 input channel(s)" in why and "3 entries" in why and "(4, 64, 64)" in why
    assert interpretations((64, 64, 4), ndim=2, in_channels=3, rgb=True) == []
    why = no_reading((64, 64, 4), ndim=2, in_channels=3, rgb=True)
    assert "3 input channel(s)" in why and "RGB image has 4" in why


def test_a_3d_model_on_2d_data_has_no_reading():
    assert interpretations((64, 64), ndim=3, in_channels=1) == []
    why = no_reading((64, 64), ndim=3, in_channels=1)
    assert "3D" in why and "fewer axes" in why and "2D model" in why
    assert interpretations((64, 64, 3), ndim=3, in_channels=3, rgb=True) == []
    assert "fewer axes" in no_reading((64, 64, 3), ndim=3, in_channels=3, rgb=True)


def test_a_multichannel_3d_model_on_2d_channel_data_says_fewer_axes():
    assert interpretations((3, 64, 64), ndim=3, in_channels=3) == []
    assert "fewer axes" in no_reading((3, 64, 64), ndim=3, in_channels=3)


@pytest.mark.parametrize(
    "shape, ndim, channels, rgb, which",
    [
        ((2, 3, 5, 7), 2, 1, False, 0),  # TZYX
        ((4, 5, 7), 2, 1, False, 1),  # TYX
        ((4, 3, 5, 7), 2, 3, False, 0),  # ZCYX
        ((3, 4, 5, 7), 2, 3, False, 1),  # CTYX
        ((2, 3, 3, 5, 7), 2, 3, False, 0),  # TZCYX or TCZYX: the first reading
        ((2, 4, 5, 7, 3), 2, 3, True, 0),  # TZYXC
        ((3, 4, 5, 6), 3, 1, False, 0),  # TZYX, 3D
    ],
)
def test_positions_and_labels_index_agree_with_numpy_indexing(shape, ndim, channels, rgb, which):
    choice = interpretations(shape, ndim=ndim, in_channels=channels, rgb=rgb)[which]
    data = np.arange(np.prod(shape)).reshape(shape)
    stack_axes = [i for i, a in enumerate(choice.axes) if a in choice.stack]
    c_axis = choice.axes.find("C")
    # labels: the data's shape without C; each plane's index there, independently
    labels = data.take(0, axis=c_axis) if c_axis >= 0 else data
    assert labels.shape == choice.labels_shape
    expected = list(np.ndindex(*(shape[i] for i in stack_axes)))  # C order
    positions = choice.positions()
    assert len(positions) == choice.planes == len(expected)
    for position, index in zip(positions, expected, strict=True):
        assert list(position) == list(choice.stack)
        assert tuple(position.values()) == index
        assert choice.labels_index(position) == index
        # the plane at this position, by numpy alone
        key = [slice(None)] * len(shape)
        for i, k in zip(stack_axes, index, strict=True):
            key[i] = k
        plane = data[tuple(key)]
        assert plane.ndim == len(choice.plane_axes())
        want = plane.take(0, axis=choice.plane_axes().find("C")) if c_axis >= 0 else plane
        assert np.array_equal(labels[choice.labels_index(position)], want)


def test_axes_choice_is_a_plain_value():
    a = AxesChoice("ZYX", (31, 61, 57), 2)
    assert a == interpretations((31, 61, 57), 2, 1)[0]
    assert a != AxesChoice("TYX", (31, 61, 57), 2)
    with pytest.raises(AttributeError):
        a.axes = "TYX"


# --------------------------------------------------------------------------- StackRun


def test_z_stack_equals_whole_image_inference_plane_by_plane(pred2, zstack, zstack_reference):
    choice = interpretations(zstack.shape, 2, 1)[0]
    assert choice.axes == "ZYX"
    grid = pred2.grid(zstack.shape[1:], TILE2)
    n = len(grid)
    assert n == 9
    stack, out, events = _run(pred2, zstack, choice, TILE2)
    assert stack.total == 4 * n
    assert out.calls == [{"Z": z} for z in range(4)]
    for z, (ref_scores, ref_labels) in enumerate(zstack_reference):
        _assert_exact(out.scores[:, z], out.labels[z], ref_scores, ref_labels)
    # the planes differ, so a plane written to the wrong place would show
    assert np.abs(zstack_reference[0][0] - zstack_reference[1][0]).max() > 1e-3
    # one stream of events: done 1..total, each plane's tiles in turn, each its own tile
    assert [e.done for _, e in events] == list(range(1, 4 * n + 1))
    assert {e.total for _, e in events} == {4 * n}
    assert [p for p, _ in events] == [{"Z": z} for z in range(4) for _ in range(n)]
    for z in range(4):
        tiles = [e.tile for p, e in events if p == {"Z": z}]
        assert [t.index for t in tiles] == list(range(n))  # row-major, unprioritized
        for t in tiles:
            assert t == grid[t.index]
    # the run is over: nothing in flight
    assert stack.current is None and stack.pending() == []
    with pytest.raises(StopIteration):
        next(stack)


def test_time_series_of_planes_runs_in_c_order(pred2, zstack, zstack_reference):
    data = zstack.reshape(2, 2, *zstack.shape[1:])  # T=2, Z=2
    (choice,) = interpretations(data.shape, 2, 1)
    assert choice.axes == "TZYX"
    stack, out, events = _run(pred2, data, choice, TILE2)
    order = [{"T": t, "Z": z} for t in range(2) for z in range(2)]
    assert out.calls == order
    for k, pos in enumerate(order):
        ref_scores, ref_labels = zstack_reference[k]  # zstack[k] == data[t, z]
        t, z = pos["T"], pos["Z"]
        _assert_exact(out.scores[:, t, z], out.labels[t, z], ref_scores, ref_labels)
    assert [e.done for _, e in events] == list(range(1, stack.total + 1))


def test_one_position_runs_only_that_plane(pred2, zstack, zstack_reference):
    choice = interpretations(zstack.shape, 2, 1)[0]
    stack, out, events = _run(pred2, zstack, choice, TILE2, positions=[{"Z": 2}])
    n = len(pred2.grid(zstack.shape[1:], TILE2))
    assert stack.total == n and len(events) == n
    assert [e.done for _, e in events] == list(range(1, n + 1))
    assert out.calls == [{"Z": 2}]
    _assert_exact(out.scores[:, 2], out.labels[2], *zstack_reference[2])
    for z in (0, 1, 3):  # untouched
        assert np.isnan(out.scores[:, z]).all() and (out.labels[z] == 255).all()


def test_close_mid_run_stops_between_tiles(pred2, zstack, zstack_reference):
    choice = interpretations(zstack.shape, 2, 1)[0]
    grid = pred2.grid(zstack.shape[1:], TILE2)
    n = len(grid)
    out = Outputs(pred2, choice)
    stack = StackRun(pred2, zstack, choice, out, TILE2, n)
    seen = []
    for event in stack:
        seen.append((stack.position["Z"], event.tile))
        if event.done == n + 3:  # three tiles into the second plane
            stack.close()
    assert len(seen) == n + 3
    assert stack.current is None
    with pytest.raises(StopIteration):
        next(stack)
    assert out.calls == [{"Z": 0}, {"Z": 1}]
    _assert_exact(out.scores[:, 0], out.labels[0], *zstack_reference[0])
    # plane 1: exactly the ZoRs of the three finished tiles, each exact; nothing else
    ref_scores, ref_labels = zstack_reference[1]
    written = np.zeros(zstack.shape[1:], bool)
    for z, t in seen[n:]:
        assert z == 1
        written[t.zor] = True
        assert (
            np.abs(out.scores[(slice(None), 1, *t.zor)] - ref_scores[(slice(None), *t.zor)]).max()
            <= 1e-12
        )
        assert np.array_equal(out.labels[(1, *t.zor)], ref_labels[t.zor])
    assert 0 < written.sum() < written.size
    assert np.array_equal(~np.isnan(out.scores[0, 1]), written)
    assert np.array_equal(out.labels[1] != 255, written)
    for z in (2, 3):
        assert np.isnan(out.scores[:, z]).all() and (out.labels[z] == 255).all()


def test_close_before_start_runs_nothing(pred2, zstack):
    choice = interpretations(zstack.shape, 2, 1)[0]
    out = Outputs(pred2, choice)
    stack = StackRun(pred2, zstack, choice, out, TILE2, 9)
    stack.close()
    assert list(stack) == [] and out.calls == []
    assert np.isnan(out.scores).all()


def _indices_by_plane(events):
    planes = {}
    for p, e in events:
        planes.setdefault(p["Z"], []).append(e.tile.index)
    return planes


def test_prioritize_before_start_puts_those_tiles_first_on_every_plane(
    pred2, zstack, zstack_reference
):
    data = zstack[:2]
    choice = interpretations(data.shape, 2, 1)[0]
    out = Outputs(pred2, choice)
    stack = StackRun(pred2, data, choice, out, TILE2, 9)
    assert stack.pending() == []
    assert stack.prioritize([8, 0, 4]) == 0  # nothing in flight yet
    events = [(dict(stack.position), e) for e in stack]
    want = [8, 0, 4, 1, 2, 3, 5, 6, 7]
    assert _indices_by_plane(events) == {0: want, 1: want}
    assert [e.done for _, e in events] == list(range(1, 19))
    for z in range(2):  # order changes nothing in the result
        _assert_exact(out.scores[:, z], out.labels[z], *zstack_reference[z])


def test_prioritize_during_a_run_reorders_this_plane_and_the_next(pred2, zstack, zstack_reference):
    data = zstack[:2]
    choice = interpretations(data.shape, 2, 1)[0]
    out = Outputs(pred2, choice)
    stack = StackRun(pred2, data, choice, out, TILE2, 9)
    events = []
    first = next(stack)
    events.append((dict(stack.position), first))
    assert first.tile.index == 0 and stack.position == {"Z": 0}
    assert stack.pending() == [1, 2, 3, 4, 5, 6, 7, 8]
    # tile 0 has started already: only 7 moves on this plane; the next plane takes both
    assert stack.prioritize([0, 7, 3]) == 2
    assert stack.pending() == [7, 3, 1, 2, 4, 5, 6, 8]
    events += [(dict(stack.position), e) for e in stack]
    assert _indices_by_plane(events) == {
        0: [0, 7, 3, 1, 2, 4, 5, 6, 8],
        1: [0, 7, 3, 1, 2, 4, 5, 6, 8],
    }
    # a second call replaces the first for later planes
    out2 = Outputs(pred2, choice)
    stack = StackRun(pred2, data, choice, out2, TILE2, 9)
    stack.prioritize([5])
    first = next(stack)
    events = [(dict(stack.position), first)]
    assert stack.prioritize([2, 6]) == 2
    events += [(dict(stack.position), e) for e in stack]
    assert _indices_by_plane(events) == {
        0: [5, 2, 6, 0, 1, 3, 4, 7, 8],
        1: [2, 6, 0, 1, 3, 4, 5, 7, 8],
    }
    assert [e.done for _, e in events] == list(range(1, 19))
    for o in (out, out2):
        for z in range(2):
            _assert_exact(o.scores[:, z], o.labels[z], *zstack_reference[z])


def test_3d_model_runs_each_volume_of_a_time_series(pred3, volume):
    series = np.stack([volume[0:12, 0:30, 0:28], volume[14:26, 25:55, 22:50]])
    (choice,) = interpretations(series.shape, 3, 1)
    assert (choice.axes, choice.stack, choice.planes) == ("TZYX", "T", 2)
    n = len(pred3.grid(series.shape[1:], TILE3))
    assert n > 1
    stack, out, events = _run(pred3, series, choice, TILE3)
    assert stack.total == 2 * n and out.calls == [{"T": 0}, {"T": 1}]
    assert [e.done for _, e in events] == list(range(1, 2 * n + 1))
    for t in range(2):
        ref = predict(pred3, series[t], tile=None)
        _assert_exact(out.scores[:, t], out.labels[t], ref, segment(pred3, series[t], tile=None))


def test_3_channel_model_on_zcyx_runs_plane_by_plane(pred_rgb, volume):
    data = np.stack([volume[3 * z : 3 * z + 3] for z in (1, 4, 7, 9)])  # (Z=4, C=3, Y, X)
    found = interpretations(data.shape, 2, 3)
    assert [c.axes for c in found] == ["ZCYX", "TCYX"]
    stack, out, events = _run(pred_rgb, data, found[0], TILE2)
    assert out.scores.shape == (2, 4, 61, 57) and out.calls == [{"Z": z} for z in range(4)]
    for z in range(4):
        ref = predict(pred_rgb, data[z], tile=None, axes="CYX")
        labels = segment(pred_rgb, data[z], tile=None, axes="CYX")
        _assert_exact(out.scores[:, z], out.labels[z], ref, labels)


def test_rgb_stack_runs_plane_by_plane(pred_rgb, volume):
    rgb = np.stack([volume[z : z + 3] for z in (2, 12)]).transpose(0, 2, 3, 1)  # (Z, Y, X, C)
    rgb = (rgb // 64).astype(np.uint8)
    choice = interpretations(rgb.shape, 2, 3, rgb=True)[0]
    assert choice.axes == "ZYXC"
    _, out, _ = _run(pred_rgb, rgb, choice, TILE2)
    for z in range(2):
        ref = predict(pred_rgb, rgb[z], tile=None, axes="YXC")
        labels = segment(pred_rgb, rgb[z], tile=None, axes="YXC")
        _assert_exact(out.scores[:, z], out.labels[z], ref, labels)


def test_run_kwargs_reach_each_plane(pred2, zstack):
    """normalization=None and output='labels' are passed on to every plane's run."""
    data = zstack[:2].astype(np.float64) / 1000
    choice = interpretations(data.shape, 2, 1)[0]
    labels = np.full(data.shape, 255, np.uint8)
    stack = StackRun(
        pred2,
        data,
        choice,
        lambda p: ArrayStore(labels[choice.labels_index(p)]),
        TILE2,
        9,
        output="labels",
        normalization=None,
    )
    assert len(list(stack)) == 18
    for z in range(2):
        want = segment(pred2, data[z], tile=None, normalization=None)
        assert np.array_equal(labels[z], want)
    # the keyword matters: the default (percentile) normalisation gives other scores
    raw = predict(pred2, data[0], tile=None, normalization=None)
    assert np.abs(predict(pred2, data[0], tile=None) - raw).max() > 1e-3


def test_describe_counts_planes_and_tiles(pred2, zstack):
    choice = interpretations(zstack.shape, 2, 1)[0]
    text = StackRun(pred2, zstack, choice, lambda p: None, TILE2, 9).describe()
    assert "4" in text and "plane" in text and "9 tiles" in text
    one = StackRun(pred2, zstack, choice, lambda p: None, TILE2, 9, positions=[{"Z": 1}])
    assert one.describe() == "1 Z plane x 9 tiles"
    (single,) = interpretations(zstack.shape[1:], 2, 1)
    assert StackRun(pred2, zstack[0], single, lambda p: None, TILE2, 9).describe() == "9 tiles"


def test_describe_names_the_stack_axis_as_documented(pred2, zstack):
    choice = interpretations(zstack.shape, 2, 1)[0]
    assert StackRun(pred2, zstack, choice, lambda p: None, TILE2, 9).describe() == (
        "4 Z planes x 9 tiles"
    )
