"""The widget never misleads: locked settings, deleted layers, new images, closing, stacks."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_seamless._napari import layers as ov
from napari_seamless._napari.widget import SeamlessWidget
from napari_seamless.engine import segment
from napari_seamless.engine.stack import AxesChoice

from .conftest import ARTIFACTS, level0

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def _run_and_wait(widget, qtbot, timeout=300_000):
    """Run and wait for the end (a short run may end before a signal spy could connect)."""
    widget.run()
    assert widget.worker is not None
    qtbot.waitUntil(lambda: widget.worker is None, timeout=timeout)


def _start_many_tiles(widget, qtbot, stop_at=None):
    """Run the nuclei sample at tile 208 (1024 tiles): long enough to act mid-run."""
    viewer = widget.viewer
    if "nuclei" not in viewer.layers:
        viewer.open_sample("napari-seamless", "nuclei")
    widget.tile.value = 208
    widget.run()
    assert widget.worker is not None
    qtbot.waitUntil(lambda: widget.progress.value >= 2, timeout=60_000)


def test_settings_lock_during_a_run_and_show_what_runs(widget, qtbot):
    _start_many_tiles(widget, qtbot)
    for w in (widget.image, widget.model, widget.tile, widget.halo, widget.mode, widget.axes):
        assert not w.enabled
    assert not widget.run_button.enabled and widget.cancel_button.enabled
    # a change that gets through (scripted, or a queued event) is put back and told
    widget.tile.value = 512
    assert widget.tile.value == 208 and widget._grid.tile == (208, 208)
    widget.model.value = "unet-random"
    assert widget.model.value == "nuclei" and widget.model_name == "nuclei"
    assert widget.status.value.startswith("Running 1024 tiles")  # not overwritten
    assert "Settings are locked" in widget.status.value
    assert "of 1024 tiles" in widget.progress.native.text()
    widget.cancel()
    with qtbot.waitSignal(widget.worker.finished, timeout=60_000):
        pass
    assert widget.tile.enabled and widget.model.enabled and widget.run_button.enabled
    assert "Cancelled" in widget.status.value


def test_deleting_the_result_layer_mid_run_cancels_and_never_says_done(widget, qtbot):
    _start_many_tiles(widget, qtbot)
    viewer = widget.viewer
    worker = widget.worker
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        viewer.layers.remove(widget.result_layer)
    assert "result layer was deleted" in widget.status.value
    assert "Done" not in widget.status.value
    assert widget.result_layer is None and widget.run_button.enabled
    assert ov.STATUS_NAME not in viewer.layers  # no tile status left for a deleted result
    assert [layer.name for layer in viewer.layers] == ["nuclei", ov.GRID_NAME, ov.HALO_NAME]


def test_a_newly_opened_image_is_followed_with_its_grid_on_top(widget, qtbot):
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "nuclei")
    widget.tile.value = 256
    assert widget._grid.shape == (512, 512)
    viewer.add_image(np.random.default_rng(0).random((300, 700), np.float32), name="second")
    assert widget.image.value is viewer.layers["second"]
    assert widget._grid.shape == (300, 700)
    names = [layer.name for layer in viewer.layers]
    assert names.index(ov.GRID_NAME) > names.index("second")  # not hidden under it
    lines = viewer.layers[ov.GRID_NAME].data
    assert lines[:, 0, 1].max() <= 700 and lines[:, 1, 0].max() == 300  # this image's grid


def test_closing_the_dock_cancels_the_run_and_removes_its_overlays(
    make_napari_viewer, qtbot, widget
):
    viewer = widget.viewer
    _start_many_tiles(widget, qtbot)
    worker = widget.worker
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        viewer.window.remove_dock_widget(widget)  # what the dock's close button does
    names = [layer.name for layer in viewer.layers]
    assert ov.GRID_NAME not in names and ov.HALO_NAME not in names
    assert ov.STATUS_NAME not in names
    result = [layer for layer in viewer.layers if layer.name.startswith("nuclei seamless")]
    assert len(result) == 1 and result[0].metadata["seamless"]["complete"] is False
    # reopening draws one grid, not a second one beside a leftover
    again = SeamlessWidget(viewer)
    viewer.window.add_dock_widget(again, name="Exact tiled segmentation", area="right")
    qtbot.waitUntil(lambda: again.predictor is not None, timeout=60_000)
    names = [layer.name for layer in viewer.layers]
    assert names.count(ov.GRID_NAME) == 1 and names.count(ov.HALO_NAME) == 1


def test_reopening_beside_leftover_overlays_reuses_them(make_napari_viewer, qtbot, widget):
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "nuclei")
    assert ov.GRID_NAME in viewer.layers
    second = SeamlessWidget(viewer)  # e.g. a second dock of the plugin on the same viewer
    qtbot.waitUntil(lambda: second.predictor is not None, timeout=60_000)
    names = [layer.name for layer in viewer.layers]
    assert names.count(ov.GRID_NAME) == 1 and names.count(ov.HALO_NAME) == 1
    assert second._grid_layer is viewer.layers[ov.GRID_NAME]


def test_grid_lines_keep_their_screen_width_and_toggles_are_separate(widget):
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "mosaic")  # 4096 x 4096
    widget.tile.value = 512
    camera = ov.camera_of(viewer)
    grid_layer, halo_layer = viewer.layers[ov.GRID_NAME], viewer.layers[ov.HALO_NAME]
    for zoom in (0.1, 1.0, 16.0):
        camera.zoom = zoom
        assert grid_layer.edge_width * zoom == pytest.approx(2.0)  # 2 screen pixels
        assert np.allclose(np.asarray(halo_layer.edge_width) * zoom, 2.0)
    widget.show_halo.value = False
    assert grid_layer.visible and not halo_layer.visible
    widget.show_grid.value = False
    widget.show_halo.value = True
    assert not grid_layer.visible and halo_layer.visible
    assert [layer.name for layer in viewer.layers].count(ov.GRID_NAME) == 1


def _leaves(container):
    from magicgui.widgets import Container

    for w in container:
        if isinstance(w, Container):
            yield from _leaves(w)
        else:
            yield w


def test_every_control_and_number_has_a_tooltip(widget):
    widget.viewer.open_sample("napari-seamless", "nuclei")
    leaves = list(_leaves(widget.container))
    assert len(leaves) > 20
    assert [w.label or w.text for w in leaves if not w.tooltip] == []
    tips = " ".join(w.tooltip for w in leaves)
    for term in ("F:", "Eq. 1", "ERF", "ZoR (zone of responsibility)", "halo:", "Overhead"):
        assert term in tips, term
    overhead = widget.geo_overhead.value  # for this image: clipped border windows counted
    assert overhead == "1.89x for this image, 2.56x per tile"


def _stack_widget(widget, qtbot):
    source = SHARED_DATA / "nuclei3d.tif"
    if not source.exists():
        pytest.skip("shared/data/nuclei3d.tif not available")
    vol = tifffile.imread(source)  # (Z, Y, X) = (31, 61, 57), real nuclei
    widget.viewer.add_image(vol, name="stack")
    return vol


def test_zstack_with_the_2d_model_runs_plane_by_plane(widget, qtbot):
    vol = _stack_widget(widget, qtbot)
    viewer = widget.viewer
    assert widget.image.value is viewer.layers["stack"]
    choice = widget.axes.value
    assert isinstance(choice, AxesChoice) and choice.axes == "ZYX" and choice.stack == "Z"
    assert not widget.axes.native.isHidden() and not widget.scope.native.isHidden()
    assert "ZYX: 31 Z planes, 2D model per plane" in widget.axes.current_choice
    assert [c.axes for c in widget.axes.choices] == ["ZYX", "TYX"]  # the user can say T
    assert "31 planes" in widget.geo_zor.value
    _run_and_wait(widget, qtbot)
    layer = widget.result_layer
    meta = layer.metadata["seamless"]
    assert meta["complete"] and meta["tiles_total"] == 31 and meta["axes"] == "ZYX"
    data = level0(layer)
    assert data.shape == vol.shape
    for z in (0, 15, 30):  # each plane equals whole-image inference on that plane alone
        assert np.array_equal(data[z], segment(widget.predictor, vol[z], tile=None))
    assert "Done: 31 tiles" in widget.status.value
    assert widget.progress.native.text() == "31 of 31 tiles"

    # only the plane in view: the rest stays empty, and the layer says which plane
    viewer.dims.set_current_step(0, 12)
    widget.scope.value = "current"
    assert "1 plane" in widget.geo_zor.value
    _run_and_wait(widget, qtbot)
    one = widget.result_layer
    assert "Z=12" in one.name and one.metadata["seamless"]["planes"] == [{"Z": 12}]
    got = level0(one)
    assert np.array_equal(got[12], data[12]) and not np.delete(got, 12, axis=0).any()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(ARTIFACTS / "widget_stack.png"), canvas_only=False, flash=False)


def test_a_stack_the_model_cannot_read_is_refused_with_the_reason(widget):
    viewer = widget.viewer
    viewer.add_image(np.zeros((2, 3, 4, 5, 64, 64), np.uint8), name="6d")
    assert widget.image.value is viewer.layers["6d"]
    assert not widget.run_button.enabled and widget.axes.value is None
    assert "at most 2 (T and Z) can be run one after another" in widget.status.value


def test_instance_labels_after_the_run_equal_whole_image_labelling(widget, qtbot):
    from napari_seamless.instances import label_instances
    from napari_seamless.qa.metrics import same_partition

    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "nuclei")
    widget.tile.value = 256  # ZoR 64: 8 x 8 tiles, objects cut by many ZoR borders
    widget.instances.value = "watershed"
    _run_and_wait(widget, qtbot)
    name = f"{widget.result_layer.name} instances"
    qtbot.waitUntil(lambda: name in viewer.layers, timeout=120_000)
    inst = viewer.layers[name]
    semantic = level0(widget.result_layer)
    whole = label_instances(semantic, None, method="watershed")  # one tile: the whole image
    assert same_partition(np.asarray(inst.data), whole.labels)
    assert inst.metadata["seamless"]["objects"] == whole.count > 100
    assert f"{whole.count} objects" in widget.status.value
    assert not widget.result_layer.visible  # the semantic result is kept, hidden
