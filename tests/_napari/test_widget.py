"""The widget in a real napari viewer under Xvfb: stream, cancel, refuse bad input."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_seamless._napari import layers as ov
from napari_seamless._napari.widget import FROM_FILE
from napari_seamless.cli import main as cli_main
from napari_seamless.data import DATA_DIR

from .conftest import ARTIFACTS, level0
from .conftest import layer_names as _layer_names

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_run_streams_labels_equal_to_cli(widget, qtbot, tmp_path):
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "nuclei")
    assert widget.image.value is viewer.layers["nuclei"]
    widget.tile.value = 256  # ZoR 64: 8 x 8 tiles
    grid_layer = viewer.layers[ov.GRID_NAME]
    assert len(grid_layer.data) == (8 + 1) + (8 + 1)
    assert "ZoR 64 px, 64 tiles (8 x 8)" in widget.geometry_text()
    widget.tile.value = 512  # the overlay follows the tile size: ZoR 320, 2 x 2
    assert len(viewer.layers[ov.GRID_NAME].data) == 3 + 3
    widget.tile.value = 256

    seen = []
    widget.run()
    widget.worker.yielded.connect(lambda ev: seen.append(ev.done))
    with qtbot.waitSignal(widget.worker.finished, timeout=300_000):
        pass
    layer = widget.result_layer
    # a 512 x 512 result is one plain array: a layer a person can edit and save
    assert not layer.multiscale and layer.metadata["seamless"]["complete"] is True
    assert isinstance(layer.data, np.ndarray) and layer.data.shape == (512, 512)
    assert seen[-1] == 64 and widget.progress.value == 64
    assert "Done: 64 tiles" in widget.status.value

    out = tmp_path / "cli.tif"
    assert cli_main(["predict", str(DATA_DIR / "nuclei2d.tif"), "-o", str(out), "-q"]) == 0
    expected = tifffile.imread(out)
    assert np.array_equal(level0(layer), expected)

    # paint into it with the Labels layer's own brush, save it to TIFF, open it again
    layer.brush_size = 9
    layer.paint((100, 120), 7)
    edited = np.asarray(layer.data).copy()
    assert (edited == 7).sum() > 40 and np.array_equal(edited[edited != 7], expected[edited != 7])
    saved = tmp_path / "edited.tif"
    assert layer.save(str(saved))
    back = viewer.open(str(saved), layer_type="labels")[0]
    assert back._type_string == "labels" and np.array_equal(np.asarray(back.data), edited)
    viewer.layers.remove(back)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = viewer.screenshot(str(ARTIFACTS / "widget_nuclei.png"), canvas_only=False, flash=False)
    assert shot.ndim == 3 and shot.shape[0] > 400
    # the labels are visible on the canvas: reddish pixels where nuclei are
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert (canvas[..., 0].astype(int) - canvas[..., 2] > 60).mean() > 0.05


def test_cancel_keeps_partial_result_marked_incomplete(widget, qtbot):
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "nuclei")
    widget.tile.value = 208  # ZoR 16: 32 x 32 = 1024 tiles
    zors, cells = [], []
    handle = widget._on_tile

    def on_tile(ev):  # the widget's own slot, seeing every event it handles
        handle(ev)
        zors.append(ev.tile.zor)
        cells.append(ev.tile.grid_index)
        if ev.done == 2:
            widget.cancel()

    widget._on_tile = on_tile  # run() connects it before the engine starts
    widget.run()
    with qtbot.waitSignal(widget.worker.finished, timeout=300_000):
        pass
    layer = widget.result_layer
    meta = layer.metadata["seamless"]
    assert meta["complete"] is False and 2 <= meta["tiles_done"] < meta["tiles_total"] == 1024
    assert layer.name.endswith("(incomplete)")
    assert "INCOMPLETE" in widget.status.value
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    # what was done is kept and exact; the rest is still empty
    from napari_seamless.engine import segment

    data = level0(layer)
    ref = segment(widget.predictor, viewer.layers["nuclei"].data, tile=None)
    done = np.zeros(data.shape, bool)
    assert len(zors) == meta["tiles_done"]
    for zor in zors:
        done[zor] = True
    assert np.array_equal(data[done], ref[done])
    assert not data[~done].any()
    # the tile status overlay keeps what is missing in view: done clear, the rest pending
    expected = np.full((32, 32), ov.PENDING, np.uint8)
    for cell in cells:
        expected[cell] = ov.DONE
    status = viewer.layers[ov.STATUS_NAME]
    assert np.array_equal(status.data, ov.status_rgba(expected))
    assert status.data[..., 3].astype(bool).sum() == 1024 - len(zors)  # done tiles are clear


def test_no_image_layer_is_refused(widget):
    viewer = widget.viewer
    viewer.add_labels(np.zeros((64, 64), np.uint8), name="my labels")
    before = _layer_names(viewer)
    assert widget.image.value is None
    assert "No image layer" in widget.status.value and not widget.run_button.enabled
    widget.run()
    assert _layer_names(viewer) == before


def test_tile_below_two_halos_is_refused(widget):
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "nuclei")
    widget.tile.value = 192
    assert "larger than 2 * halo = 192" in widget.status.value
    assert "nearest: 208, 224" in widget.status.value
    assert not widget.run_button.enabled
    before = _layer_names(viewer)
    widget.run()
    assert _layer_names(viewer) == ["nuclei"] == before  # overlays removed, nothing added


def test_model_shown_is_the_model_that_runs_no_file_missing_file_broken_file(
    widget, qtbot, tmp_path
):
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "nuclei")
    assert widget.run_button.enabled
    # "from file..." with no file yet: nothing can run (the last model is not kept)
    widget.model.value = FROM_FILE
    assert widget.predictor is None and not widget.run_button.enabled
    assert "Choose a model file" in widget.status.value
    # a path that does not exist: told, Run stays disabled
    widget.model_file.value = tmp_path / "nowhere.pt"
    assert "Model file not found" in widget.status.value and not widget.run_button.enabled
    # a file that does not load: told why, Run stays disabled, run() does nothing
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a model")
    widget.model_file.value = bad
    qtbot.waitUntil(lambda: "Could not load model" in widget.status.value, timeout=30_000)
    assert "broken.pt" in widget.status.value and "Run is disabled" in widget.status.value
    assert widget.predictor is None and not widget.run_button.enabled
    before = _layer_names(viewer)
    widget.run()
    assert _layer_names(viewer) == before and widget.worker is None
    # back to the built-in model: it runs again (analysed once, kept)
    widget.model.value = "nuclei"
    assert widget.predictor is not None and widget.model_name == "nuclei"
    assert widget.run_button.enabled


def test_image_with_wrong_channels_is_refused(widget):
    viewer = widget.viewer
    viewer.add_image(np.zeros((128, 128, 3), np.uint8), rgb=True, name="rgb")
    widget.image.value = viewer.layers["rgb"]
    assert "expects 1 input channel(s)" in widget.status.value
    assert "has 3" in widget.status.value
    assert not widget.run_button.enabled


def test_npe2_manifest_validates_and_samples_load():
    out = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-seamless"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    from napari_seamless._napari.sample_data import mosaic

    [(data, kwargs, kind)] = mosaic()
    assert data.shape == (4096, 4096) and kind == "image"


def test_model_that_cannot_be_tiled_is_refused_with_reason(widget, qtbot, tmp_path):
    import torch
    from torch import nn

    widget.viewer.open_sample("napari-seamless", "nuclei")
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.Conv2d(4, 2, 1))
    path = tmp_path / "groupnorm.pt"
    torch.jit.script(model.eval()).save(str(path))
    widget.model.value = FROM_FILE
    widget.model_file.value = path
    qtbot.waitUntil(lambda: "cannot be tiled exactly" in widget.status.value, timeout=30_000)
    assert "GroupNorm at '1'" in widget.status.value
    # the model shown (this file) cannot run, and no other model runs in its place
    assert widget.predictor is None and not widget.run_button.enabled


def test_bioimageio_package_runs_with_declared_preprocessing_and_halo_warning(
    widget, qtbot, tmp_path
):
    pytest.importorskip("bioimageio.spec")
    from bioimageio_package import build_package

    from napari_seamless.preprocessing import Preprocessing

    package = build_package(tmp_path / "pkg", halo=32, as_zip=False)
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "nuclei")
    widget.model.value = FROM_FILE
    widget.model_file.value = package / "rdf.yaml"
    qtbot.waitUntil(lambda: widget.model_name == str(package / "rdf.yaml"), timeout=120_000)
    status = widget.status.value
    assert "declares a halo of 32 px" in status and "exact halo of 96 px" in status
    assert "Preprocessing: scale_range 1-99.8 % per channel" in status
    assert isinstance(widget.loaded.normalization, Preprocessing)
    widget.tile.value = 512
    widget.run()
    with qtbot.waitSignal(widget.worker.finished, timeout=300_000):
        pass
    layer = widget.result_layer
    assert layer.metadata["seamless"]["complete"] is True
    assert "Done" in widget.status.value and "declares a halo of 32 px" in widget.status.value
    out = tmp_path / "builtin.tif"
    assert cli_main(["predict", str(DATA_DIR / "nuclei2d.tif"), "-o", str(out), "-q"]) == 0
    labels = level0(layer)
    assert labels.mean() > 0.1 and np.array_equal(labels, tifffile.imread(out))


def _screen_box(viewer, shape):
    """The visible image pixels, from the camera by hand (image at scale 1, translate 0)."""
    camera = viewer.scene.camera
    h, w = viewer.canvas.size
    cy, cx = camera.center[-2:]
    lo = (max(0, cy - h / 2 / camera.zoom), max(0, cx - w / 2 / camera.zoom))
    hi = (min(shape[0], cy + h / 2 / camera.zoom), min(shape[1], cx + w / 2 / camera.zoom))
    return lo, hi


def _tiles_meeting(grid, lo, hi):
    return {
        t.index
        for t in grid
        if all(z.start < b and a < z.stop for z, a, b in zip(t.zor, lo, hi, strict=True))
    }


def test_visible_tiles_first_and_a_pan_reorders_the_rest(widget, qtbot):
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "mosaic")
    image = viewer.layers["nuclei mosaic"]
    widget.tile.value = 512  # ZoR 320: 13 x 13 tiles
    grid = widget._grid
    assert len(grid) == 169
    camera = viewer.scene.camera
    h, w = viewer.canvas.size
    camera.zoom = 1.5
    camera.center = (h / 3.0, w / 3.0)  # the top-left corner of the mosaic fills the canvas
    lo, hi = _screen_box(viewer, image.data.shape)
    visible = _tiles_meeting(grid, lo, hi)
    assert 2 <= len(visible) <= 30 and 0 in visible and 168 not in visible

    seen = []
    state = {}
    handle = widget._on_tile

    def on_tile(ev):  # the widget's own slot, seeing every event it handles
        handle(ev)
        seen.append(ev.tile.index)
        if len(seen) == len(visible):  # pan to the opposite corner
            camera.center = (4096 - h / 3.0, 4096 - w / 3.0)
            state["new"] = _tiles_meeting(grid, *_screen_box(viewer, image.data.shape))

    widget._on_tile = on_tile  # run() connects it before the engine starts
    widget.run()
    # after the pan: the re-order lands once the camera rests; remember where it did
    qtbot.waitUntil(lambda: "new" in state, timeout=120_000)
    new = state["new"]
    assert 168 in new and not new & visible
    qtbot.waitUntil(lambda: widget.tile_run.pending()[0] in new, timeout=10_000)
    state["at"] = len(seen)
    status_layer = viewer.layers[ov.STATUS_NAME]
    qtbot.waitUntil(lambda: new <= set(seen), timeout=120_000)
    widget.cancel()
    with qtbot.waitSignal(widget.worker.finished, timeout=60_000):
        pass

    # every tile in view was done before any other tile started (serial engine: done
    # order is start order), nearest the centre of the view first
    assert set(seen[: len(visible)]) == visible
    # after the pan: the tile in flight when the order changed, then the new view
    after = seen[state["at"] :]
    assert new <= set(after[: len(new) + 1])
    # the status overlay lies over the ZoRs: one label pixel per tile
    assert status_layer.data.shape == (*grid.grid_shape, 4)
    assert tuple(status_layer.scale) == (320.0, 320.0)
    clear = {i for i in range(len(grid)) if status_layer.data[grid[i].grid_index][3] == 0}
    assert clear == set(seen)  # done: clear; the rest: pending grey (none failed or running)
    grey = ov.status_rgba(np.array([ov.PENDING], np.uint8))[0]
    assert all(
        (status_layer.data[grid[i].grid_index] == grey).all() for i in set(range(169)) - clear
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(ARTIFACTS / "widget_visible_first.png"), canvas_only=False, flash=False)


def test_result_over_the_memory_budget_streams_into_an_ome_zarr_pyramid(widget, qtbot, tmp_path):
    import zarr

    from napari_seamless._napari.reader import get_reader
    from napari_seamless.data import mosaic
    from napari_seamless.engine import segment
    from napari_seamless.stores import OmeZarrStore

    viewer = widget.viewer
    image = viewer.add_image(mosaic(1536), name="mosaic 1536")
    widget.image.value = image
    widget.tile.value = 1024  # ZoR 832: 2 x 2 tiles
    widget.compare.budget_gib.value = 0.001  # 1 MiB < the 2.25 MiB of labels
    widget.run()
    assert "larger than the memory budget" in widget.status.value
    with qtbot.waitSignal(widget.worker.finished, timeout=300_000):
        pass
    layer = widget.result_layer
    meta = layer.metadata["seamless"]
    assert meta["complete"] and meta["store"] is not None
    assert layer.multiscale and isinstance(layer.data[0], zarr.Array)
    # the on-disk pyramid equals whole-image inference, computed here in one pass
    expected = segment(widget.predictor, image.data, tile=None)
    assert np.array_equal(np.asarray(layer.data[0]), expected)
    assert np.array_equal(np.asarray(layer.data[1]), expected[::2, ::2])
    store = OmeZarrStore.open(meta["store"], mode="r")
    assert store.complete and not store.missing
    # and it is an OME-Zarr labels image that the project's reader opens as labels
    data, kwargs, kind = get_reader(meta["store"])(meta["store"])[0]
    assert kind == "labels" and kwargs.get("multiscale", len(data) > 1)
    assert np.array_equal(np.asarray(data[0]), expected)

    # napari cannot save a multiscale Labels layer; Save result... exports it, atomically,
    # and never over an existing file unless asked
    viewer.layers.selection.active = layer
    assert widget.save_button.enabled
    out = tmp_path / "result.ome.zarr"
    assert widget.save_result(path=out) == out and "Saved" in widget.status.value
    back = viewer.open(str(out), plugin="napari-seamless")[0]
    assert back._type_string == "labels" and back.multiscale
    assert np.array_equal(np.asarray(back.data[0]), expected)
    assert back.metadata["napari_seamless"]["settings"]["model"] == "nuclei"  # settings travel
    tif = tmp_path / "result.tif"
    viewer.layers.selection.active = layer
    assert widget.save_result(path=tif) == tif
    again = viewer.open(str(tif), plugin="napari-seamless")[0]
    assert again._type_string == "labels" and np.array_equal(level0(again), expected)
    viewer.layers.selection.active = layer
    before = tif.stat().st_mtime_ns
    assert widget.save_result(path=tif) is None  # exists: refused, told, untouched
    assert "Could not save" in widget.status.value and tif.stat().st_mtime_ns == before


def test_choose_tile_probes_the_model_and_sets_a_tile_that_fits(widget, qtbot):
    viewer = widget.viewer
    viewer.open_sample("napari-seamless", "mosaic")
    widget.tile.value = 256
    widget.choose_tile()
    qtbot.waitUntil(lambda: widget.auto_tile.enabled, timeout=120_000)
    assert widget.status.value.startswith("Chose tile"), widget.status.value
    f, halo = widget.predictor.factor[0], widget.predictor.halo[0]
    tile = widget.tile.value
    assert tile % f == 0 and tile > 2 * halo and tile != 256  # 256 is the slowest per pixel
    assert widget.run_button.enabled and f"{tile}" in widget.status.value
    assert widget._grid.tile == (tile, tile)
    # a budget below the smallest window is refused with the reason, the tile kept
    widget.compare.budget_gib.value = 0.001
    widget.choose_tile()
    qtbot.waitUntil(lambda: widget.auto_tile.enabled, timeout=120_000)
    assert "Could not choose a tile" in widget.status.value and widget.tile.value == tile


def test_volume_streams_with_the_grid_and_status_on_the_current_slice(widget, qtbot, tmp_path):
    import torch

    from napari_seamless.engine import segment
    from napari_seamless.models.architectures import unet

    torch.manual_seed(0)
    path = tmp_path / "unet3d.pt"
    torch.jit.script(unet(in_channels=1, classes=2, ndim=3, width=4, depth=2).eval()).save(path)
    viewer = widget.viewer
    source = SHARED_DATA / "nuclei3d.tif"
    if not source.exists():
        pytest.skip("shared/data/nuclei3d.tif not available")
    vol = tifffile.imread(source)  # (Z, Y, X) = (31, 61, 57), real nuclei
    viewer.add_image(vol, name="volume")
    widget.model.value = FROM_FILE
    widget.model_file.value = path
    qtbot.waitUntil(lambda: widget.model_name == str(path), timeout=60_000)
    assert widget.predictor.ndim == 3 and widget.predictor.halo == (24, 24, 24)
    widget.tile.value = 64  # ZoR 16: 2 x 4 x 4 tiles
    grid = widget._grid
    assert grid.ndim == 3 and grid.grid_shape == (2, 4, 4)
    # the (Y, X) grid is drawn and shows on every slice
    assert len(viewer.layers[ov.GRID_NAME].data) == (4 + 1) + (4 + 1)
    viewer.dims.set_current_step(0, 20)  # the second row of tiles along Z
    camera = viewer.scene.camera
    camera.zoom = 40.0
    h, w = viewer.canvas.size
    camera.center = (20, h / 80.0, w / 80.0)  # the corner at (Y, X) = (0, 0)
    lo, hi = _screen_box(viewer, vol.shape[1:])
    visible = {
        t.index
        for t in grid
        if t.zor[0].start <= 20 < t.zor[0].stop
        and all(z.start < b and a < z.stop for z, a, b in zip(t.zor[1:], lo, hi, strict=True))
    }
    assert 1 <= len(visible) < 16

    seen, shapes = [], []
    handle = widget._on_tile

    def on_tile(ev):
        handle(ev)
        seen.append(ev.tile.index)
        shapes.append(viewer.layers[ov.STATUS_NAME].data.shape)

    widget._on_tile = on_tile
    widget.run()
    with qtbot.waitSignal(widget.worker.finished, timeout=300_000):
        pass
    assert set(seen[: len(visible)]) == visible and len(seen) == 32
    assert shapes[0] == (2, 4, 4, 4)  # one RGBA pixel per tile: the slice shows its row
    layer = widget.result_layer
    assert layer.metadata["seamless"]["complete"]
    expected = segment(widget.predictor, vol, tile=None)
    assert np.array_equal(level0(layer), expected)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(ARTIFACTS / "widget_volume.png"), canvas_only=False, flash=False)
