"""Halo tuning and seam QA in a real viewer: the halo box, Compare, the region reference.

The error map is checked against the grid's seams (computed independently of the map), the
region reference against whole-image inference, and every refusal leaves the layers as
they were.
"""

import numpy as np

from napari_seamless._napari import compare as cmp
from napari_seamless.engine import predict
from napari_seamless.grid import TileGrid

from .conftest import ARTIFACTS, layer_names, level0


def _run(widget, qtbot):
    widget.run()
    with qtbot.waitSignal(widget.worker.finished, timeout=300_000):
        pass
    return widget.result_layer


def _compare(widget, qtbot):
    widget.compare.compare()
    assert widget.compare.worker is not None, widget.status.value
    with qtbot.waitSignal(widget.compare.worker.finished, timeout=300_000):
        pass
    assert widget.status.value.startswith("Compared"), widget.status.value
    return widget.compare.report


def test_halo_one_step_short_shows_errors_on_seams_and_exact_halo_none(widget, qtbot):
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "nuclei")
    exact, f = widget.predictor.halo[0], widget.predictor.factor[0]
    assert (exact, f) == (96, 16)
    assert widget.halo.value == exact and widget.halo.step == f
    assert widget.halo.max >= 2 * exact
    assert "exact from 96 px" in widget.halo_note.value
    widget.tile.value = 256

    widget.halo.value = exact - f  # one F-step too small
    assert "inexact: halo 80 < 96 px" in widget.halo_note.value
    assert "NOT equal whole-image inference" in widget.halo_note.value
    assert "ZoR 96 px, 36 tiles (6 x 6)" in widget.geometry_text()  # the grid follows the halo
    short = _run(widget, qtbot)
    meta = short.metadata["seamless"]
    assert short.name == "nuclei seamless inexact (halo 80 < 96)"
    assert meta["mode"] == "exact" and meta["halo"] == (80, 80) and meta["exact_halo"] == (96, 96)
    assert meta["complete"] is True and meta["tile"] == (256, 256) and meta["factor"] == (16, 16)
    report = _compare(widget, qtbot)
    emap = np.asarray(viewer.layers[cmp.ERROR_NAME].data)
    assert emap.shape == (512, 512) and emap.sum() == report.comparison.me > 0
    # every differing pixel lies within the computed halo of a ZoR seam of that run
    grid = TileGrid((512, 512), 256, exact - f, f)
    near = np.zeros((512, 512), bool)
    for ax in (0, 1):
        for b in grid.boundaries(ax)[1:-1]:
            idx = [slice(None)] * 2
            idx[ax] = slice(max(b - exact, 0), b + exact)
            near[tuple(idx)] = True
    assert not (emap.astype(bool) & ~near).any()
    marks = viewer.layers[cmp.MARKS_NAME]
    assert len(marks.data) == report.comparison.me and marks.visible
    assert "NOT EXACT" in widget.compare.metrics.value
    assert "RMSE" in widget.compare.metrics.value and "NME" in widget.compare.metrics.value
    diff = viewer.layers[cmp.DIFF_NAME]
    assert diff.data.max() > -3  # log10 |diff| > 1e-3 somewhere
    assert not widget.compare.legend.isHidden()  # shown (the test window itself is hidden)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(ARTIFACTS / "compare_inexact.png"), canvas_only=False, flash=False)

    widget.halo.value = exact
    assert "exact from 96 px" in widget.halo_note.value
    full = _run(widget, qtbot)
    assert full.name == "nuclei seamless" and full is not short  # a new layer, the old kept
    assert short in viewer.layers
    report = _compare(widget, qtbot)
    assert not np.asarray(viewer.layers[cmp.ERROR_NAME].data).any()
    assert report.comparison.me == 0 and report.comparison.rmse <= 1e-6
    assert "EXACT: equals whole-image inference" in widget.compare.metrics.value
    assert not viewer.layers[cmp.MARKS_NAME].visible
    # the ZoR seams stay drawn over the maps
    names = layer_names(viewer)
    assert names.index("seamless ZoR grid") > names.index(cmp.ERROR_NAME)


def test_overlap_average_streams_into_a_layer_and_differs(widget, qtbot):
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "nuclei")
    widget.tile.value = 256
    widget.mode.value = "overlap-average"
    shown = [not w.native.isHidden() for w in (widget.overlap, widget.weights)]
    assert all(shown) and not widget.halo.enabled
    assert widget.overlap.value == 192  # two halos: the exact mode's stride and cost
    widget.overlap.value = 128
    assert "overlap 128 px, stride 128 px\nwindows 9 (3 x 3)" in widget.geometry_text()
    assert "NOT equal whole-image inference" in widget.halo_note.value
    layer = _run(widget, qtbot)
    assert layer.name == "nuclei seamless overlap-average (overlap 128 px, gaussian)"
    meta = layer.metadata["seamless"]
    assert meta["mode"] == "overlap-average" and meta["overlap"] == 128 and meta["complete"]
    image = viewer.layers["nuclei"].data
    scores = predict(widget.predictor, image, 256, mode="overlap-average", overlap=128)
    assert np.array_equal(level0(layer), scores.argmax(0))
    report = _compare(widget, qtbot)
    assert not report.comparison.exact and report.comparison.rmse > 1e-4


def test_bad_input_is_refused_and_changes_nothing(widget, qtbot):
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "nuclei")
    widget.tile.value = 512  # 4 tiles: a finished result is all this test needs
    before = layer_names(viewer)
    widget.compare.compare()  # no result yet
    assert "Compare needs a finished result: press Run first" in widget.status.value
    widget.halo.value = 70
    assert "halo 70 px is not a multiple of F=16 px" in widget.status.value
    assert "use 64 or 80" in widget.status.value and not widget.run_button.enabled
    widget.run()
    assert layer_names(viewer) == ["nuclei"]  # overlays gone, nothing added
    widget.halo.value = 96
    assert widget.run_button.enabled
    layer = _run(widget, qtbot)
    before = layer_names(viewer)

    widget.compare.budget_gib.value = 0.001  # the whole-image reference does not fit
    widget.compare.compare()
    assert "Cannot compare: the whole-image reference (512 x 512 px) needs" in widget.status.value
    assert "choose 'visible region' or draw a rectangle" in widget.status.value
    assert widget.compare.worker is None and layer_names(viewer) == before

    widget.compare.reference.value = "rectangle"
    widget.compare.compare()
    assert "no rectangle is drawn: press Draw region" in widget.status.value
    widget.compare.draw_region()
    shapes = viewer.layers[cmp.REGION_NAME]
    assert shapes.mode == "add_rectangle"
    shapes.add_rectangles(np.array([[600.0, 600.0], [700.0, 700.0]]))
    before = layer_names(viewer)
    widget.compare.compare()
    assert "lies outside the image (extent 0:512,0:512 px)" in widget.status.value
    assert layer_names(viewer) == before and widget.compare.worker is None
    assert layer.metadata["seamless"]["complete"] is True


def test_rectangle_region_reference_is_the_whole_reference_there(widget, qtbot):
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "nuclei")
    widget.tile.value = 384  # 9 tiles whose seams cross the rectangle
    _run(widget, qtbot)
    widget.compare.draw_region()
    viewer.layers[cmp.REGION_NAME].add_rectangles(np.array([[100.5, 37.2], [299.5, 259.9]]))
    widget.compare.budget_gib.value = 0.15  # the whole 512 x 512 (~0.2 GiB) does not fit
    report = _compare(widget, qtbot)
    assert report.region == (slice(100, 300), slice(37, 260))
    assert report.comparison.exact and report.comparison.pixels == 200 * 223
    assert "region 100:300,37:260" in widget.compare.metrics.value
    emap = viewer.layers[cmp.ERROR_NAME]
    assert tuple(emap.translate) == (100.0, 37.0) and emap.data.shape == (200, 223)


def test_visible_region_reference_on_the_mosaic_equals_the_whole_reference(widget, qtbot):
    from napari_seamless.qa import reference

    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "mosaic")
    image = viewer.layers["nuclei mosaic"]
    camera = viewer.scene.camera
    camera.center = (1500.0, 2600.0)
    camera.zoom = 2.0
    h, w = viewer.canvas.size
    widget.compare.reference.value = "visible"
    region = widget.compare.region(image, image.data.shape)
    assert region == (slice(1500 - h // 4, 1500 + h // 4), slice(2600 - w // 4, 2600 + w // 4))
    pred = widget.predictor
    ref = reference(pred, image.data, region)
    # independent route: one plain forward pass of the model on an F-aligned crop that adds
    # at least the halo on every side (interior region, so no padding), normalised with the
    # statistics of the whole image; by exactness this is the whole-image reference there
    import torch

    from napari_seamless.engine import Predictor

    f, halo = pred.factor[0], pred.halo[0]
    lo = [(s.start - halo) // f * f for s in region]
    hi = [-(-(s.stop + halo) // f) * f for s in region]
    assert all(a >= 0 for a in lo) and all(
        b <= n for b, n in zip(hi, image.data.shape, strict=True)
    )
    crop = np.asarray(image.data[lo[0] : hi[0], lo[1] : hi[1]])
    fitted = Predictor.fit_normalization(image.data[None], widget.loaded.normalization)
    norm = Predictor._normalization(fitted, np.float32)
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(norm(crop[None])))[None]
        direct = torch.softmax(pred.model(x), 1)[0].numpy()
    inside = (
        slice(None),
        *(slice(s.start - a, s.stop - a) for s, a in zip(region, lo, strict=True)),
    )
    assert np.abs(ref.scores - direct[inside]).max() <= 1e-5
    assert np.array_equal(ref.labels, direct[inside].argmax(0))


def test_halo_sweep_dock_draws_the_sweep_as_rows_arrive(widget, qtbot):
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "nuclei")
    widget.tile.value = 256
    dock = widget.open_sweep()
    assert dock.halos.value == "0:112:16"  # 0 to one F past the computed halo
    dock.halos.value = "64,70"
    dock.run()
    assert dock.worker is None and "halo 70 on axis 0 is not a non-negative multiple of F=16" in (
        dock.status.value
    )
    dock.halos.value = "0:x"
    dock.run()
    assert "is not START:STOP:STEP or a comma list" in dock.status.value
    dock.halos.value = "64:96:16"
    seen = []
    dock.run()
    dock.worker.yielded.connect(lambda row: seen.append(len(dock.sweep_figure.axes)))
    with qtbot.waitSignal(dock.worker.finished, timeout=300_000):
        pass
    assert len(seen) == 3 and all(n >= 3 for n in seen)  # redrawn after every row
    table = dock.rows_table()
    assert list(table[:, 0]) == [64, 80, 96]
    assert table[0, 2] > 0 and table[1, 2] > 0 and table[2, 2] == 0  # ME
    assert table[2, 1] <= 1e-6 and np.isfinite(table[:, 3]).all()  # RMSE, runtime
    assert "exact (ME 0, max |diff| <= 1e-5) from halo 96 px" in dock.status.value
    # the computed halo is marked on the plot (a vertical line at x = 96)
    score_ax = dock.sweep_figure.axes[0]
    assert any(list(line.get_xdata()) == [96, 96] for line in score_ax.get_lines())
    assert score_ax.get_yscale() == "log"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    widget._sweep_dock.grab().save(str(ARTIFACTS / "halo_sweep_dock.png"))
    assert widget.open_sweep() is dock  # a second click shows the same dock
