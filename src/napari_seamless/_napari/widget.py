"""The dock widget: pick an image, a model and a tile size; see the grid; Run; watch tiles.

The widget only wires signals. Geometry comes from :class:`~napari_seamless.grid.TileGrid`
(through :class:`~napari_seamless.engine.Predictor`), models from
:func:`~napari_seamless.models.load_model`, and inference runs in a napari worker thread
that yields one small :class:`~napari_seamless.engine.TileEvent` per tile; every layer
change happens on the GUI thread in the slots below.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image
from napari.qt.threading import create_worker
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QVBoxLayout, QWidget

from ..engine import ChannelError, Predictor, TileEvent, to_channel_first
from ..errors import ArgumentError
from ..grid import RegionError, TileGrid, TileSizeError, count, viewport_order
from ..overlap import OverlapGrid
from ..stores import LabelsStore, OmeZarrStore, PyramidStore
from . import layers as ov
from .compare import ComparePanel

if TYPE_CHECKING:
    import napari

FROM_FILE = "from file..."
MODEL_CHOICES = [
    ("nuclei (default, trained)", "nuclei"),
    ("U-Net, random weights", "unet-random"),
    ("file: TorchScript, state dict, bioimage.io...", FROM_FILE),
]
MODE_CHOICES = [
    ("exact (ZoR + halo)", "exact"),
    ("naive: halo 0 (comparison only)", "naive"),
    ("overlap-average (comparison only)", "overlap-average"),
]
REFRESH_INTERVAL_S = 0.2
REORDER_DELAY_MS = 150  # a pan or zoom re-orders pending tiles once the camera rests this long
SCORES_SHARE = 4  # scores are kept for Compare when they take under 1/4 of the budget
PLAIN_LABELS_MAX = 4096  # results up to this many pixels a side are one plain (editable,
# savable) Labels array; larger ones a multiscale pyramid, for display speed


def _load_and_analyse(spec: str) -> tuple[Any, Predictor, tuple[int, ...]]:
    """Worker-thread job: load a model, compute F and the halo, and the ERF estimate."""
    from ..analysis import effective_receptive_field
    from ..models import load_model

    loaded = load_model(spec)
    pred = loaded.predictor()
    erf = effective_receptive_field(
        pred.model, ndim=pred.ndim, in_channels=pred.in_channels, factor=pred.factor[0]
    )
    return loaded, pred, erf


def _events(run: Any, ready: threading.Event, disk: OmeZarrStore | None = None):
    """Worker-thread generator: compute the tiles of ``run`` (a TileRun), yield each event.

    The first tile is computed while the GUI thread adds the layers; its event waits for
    ``ready`` (set once they are there), so the run cannot race ahead of a widget that is
    not listening yet. With ``disk`` (a result streamed to OME-Zarr), each tile is
    recorded as done there, and the record is finished or flushed at the end.
    """
    try:
        for event in run:
            if disk is not None:
                disk.mark_done(event.tile.index)
            ready.wait()
            yield event
    finally:
        if disk is not None:
            disk.flush() if disk.missing else disk.finish()


_SCRATCH: list[Path] = []


def scratch_dir() -> Path:
    """A folder for results too large for memory, removed when Python exits."""
    if not _SCRATCH:
        path = Path(tempfile.mkdtemp(prefix="napari-seamless-"))
        atexit.register(shutil.rmtree, path, ignore_errors=True)
        _SCRATCH.append(path)
    return _SCRATCH[0]


def describe_run(meta: dict) -> str:
    """What a result layer is, in the words of its name: mode, and why it is not exact.

    ``meta`` is the layer's ``metadata["seamless"]``; the text is empty for an exact run
    at or above the computed halo.
    """
    mode = meta["mode"]
    if mode == "naive":
        return "naive (halo 0)"
    if mode == "overlap-average":
        return f"overlap-average (overlap {meta['overlap']} px, {meta['weights']})"
    halo, exact = meta["halo"][0], meta["exact_halo"][0]
    return f"inexact (halo {halo} < {exact})" if halo < exact else ""


class SeamlessWidget(QWidget):
    """Exact tiled segmentation of an image layer, streamed into a Labels layer.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (injected by napari).
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.predictor: Predictor | None = None
        self._warnings: list[str] = []  # about the model, shown again after each run
        self.loaded: Any = None
        self.model_name: str | None = None
        self.worker: Any = None
        self.result_layer: Any = None
        self._grid_layer: Any = None
        self._halo_layer: Any = None
        self._grid: TileGrid | None = None
        self.tile_run: Any = None  # the engine's TileRun while a run is in flight
        self._status_layer: Any = None
        # one status code per tile, grid-shaped (C order: .flat[Tile.index] is the tile)
        self._status: np.ndarray | None = None
        self._status_key: tuple | None = None  # (image, grid) the status layer was drawn for
        self._run_image: Any = None  # the image layer of the run in flight
        self._models: dict[str, tuple[Any, Predictor, tuple[int, ...]]] = {}
        self.erf: tuple[int, ...] | None = None
        self._loader: Any = None
        self._prober: Any = None
        self._last_refresh = 0.0
        self._t0 = 0.0
        self._problem_shown = False
        self._updating = False
        self.runs: dict[int, dict] = {}  # id(result layer) -> its scores, plan and time
        self.sweep: Any = None  # the halo sweep dock, once opened
        self._sweep_dock: Any = None

        self.image = ComboBox(label="image", choices=self._image_choices)
        self.model = ComboBox(label="model", choices=MODEL_CHOICES, value="nuclei")
        self.model_file = FileEdit(
            label="model file",
            mode="r",
            filter="*.pt *.pth *.ts *.pts *.yaml *.yml *.zip",
            visible=False,
        )
        self.tile = SpinBox(label="tile (px)", min=1, max=16384, step=16, value=512)
        self.auto_tile = PushButton(text="Choose tile for me")
        self.auto_tile.tooltip = (
            "Probe the model at a few window sizes (a few seconds) and set the fastest "
            "F-aligned tile whose forward pass fits the memory budget below."
        )
        self.halo = SpinBox(label="halo (px)", min=0, max=4096, step=16, value=0)
        self.halo_note = Label(label="", value="")
        self.mode = ComboBox(label="mode", choices=MODE_CHOICES, value="exact")
        self.overlap = SpinBox(label="overlap (px)", min=0, max=16384, value=0, visible=False)
        self.weights = ComboBox(
            label="weights", choices=["gaussian", "constant"], value="gaussian", visible=False
        )
        self.show_grid = CheckBox(text="show ZoR grid and halo", value=True)
        self.show_status = CheckBox(text="show tile status", value=True)
        self.show_status.tooltip = (
            "While a run goes: grey tiles are pending, the yellow tile is in the model, "
            "red tiles failed; done tiles are clear. Tiles in view are computed first."
        )
        self.info = Label(label="geometry", value="")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="tiles", value=0, max=1)
        self.status = Label(label="status", value="")
        self.container = Container(
            widgets=[
                self.image,
                self.model,
                self.model_file,
                self.tile,
                self.auto_tile,
                self.mode,
                self.halo,
                self.halo_note,
                self.overlap,
                self.weights,
                self.show_grid,
                self.show_status,
                self.info,
                self.run_button,
                self.cancel_button,
                self.progress,
                self.status,
            ]
        )
        self.status.native.setWordWrap(True)
        self.halo_note.native.setWordWrap(True)
        line = self.info.native.fontMetrics().lineSpacing()
        self.info.native.setMinimumHeight(4 * line + 4)  # never clip the geometry lines
        self.status.native.setMinimumHeight(4 * line + 4)
        self.compare = ComparePanel(self)
        layout = QVBoxLayout()
        layout.addWidget(self.container.native)
        layout.addWidget(self.compare)
        layout.addStretch(1)
        self.setLayout(layout)
        self.setMinimumWidth(320)

        self.image.changed.connect(self._update)
        self.model.changed.connect(self._on_model_choice)
        self.model_file.changed.connect(self._on_model_choice)
        self.tile.changed.connect(self._update)
        self.auto_tile.changed.connect(self.choose_tile)
        self.halo.changed.connect(self._update)
        self.mode.changed.connect(self._on_mode)
        self.overlap.changed.connect(self._update)
        self.weights.changed.connect(self._update)
        self.show_grid.changed.connect(self._update)
        self.show_status.changed.connect(self._on_show_status)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._reset_layers)
        self.viewer.layers.events.removed.connect(self._reset_layers)
        # the visible region first: a pan or zoom re-orders the pending tiles (debounced)
        self._reorder_timer = QTimer(self)
        self._reorder_timer.setSingleShot(True)
        self._reorder_timer.setInterval(REORDER_DELAY_MS)
        self._reorder_timer.timeout.connect(self._reorder)
        camera = ov.camera_of(self.viewer)
        camera.events.center.connect(self._on_camera)
        camera.events.zoom.connect(self._on_camera)
        self.viewer.dims.events.current_step.connect(self._on_camera)  # a volume's slice
        self._poll = QTimer(self)  # the running tile is known only to the engine: look
        self._poll.setInterval(int(REFRESH_INTERVAL_S * 1000))
        self._poll.timeout.connect(self._show_progress)
        self._reset_layers()
        self._on_model_choice()

    # ------------------------------------------------------------------ choices
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _reset_layers(self, event: Any = None) -> None:
        changed = getattr(event, "value", None)
        if changed is not None and changed in (
            self._grid_layer,
            self._halo_layer,
            self._status_layer,
        ):
            return  # our own overlays come and go; a user who deletes one is not overruled
        self.image.reset_choices()
        self._update()

    # ------------------------------------------------------------------ model
    def _model_spec(self) -> str | None:
        if self.model.value != FROM_FILE:
            return self.model.value
        path = Path(self.model_file.value)
        package = any((path / n).is_file() for n in ("rdf.yaml", "bioimageio.yaml"))
        return str(path) if path.is_file() or package else None

    def _on_model_choice(self, _value: Any = None) -> None:
        self.model_file.visible = self.model.value == FROM_FILE
        spec = self._model_spec()
        if spec is None:
            self._set_status(
                "Choose a model file: TorchScript, a state dict of the built-in U-Net, or a "
                "bioimage.io package (its rdf.yaml or .zip)."
            )
            return
        if spec in self._models:
            self._model_ready(spec, self._models[spec])
            return
        self._set_status(f"Loading {spec} and computing its halo and F...")
        self.run_button.enabled = False
        worker = create_worker(_load_and_analyse, spec, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda result, spec=spec: self._model_ready(spec, result))
        worker.errored.connect(lambda err, spec=spec: self._model_failed(spec, err))
        self._loader = worker
        worker.start()

    def _model_ready(self, spec: str, result: tuple[Any, Predictor, tuple[int, ...]]) -> None:
        self._models[spec] = result
        if spec != self._model_spec():
            return  # the user moved on while this one loaded
        self.loaded = result[0]
        self.predictor = result[1]
        self.erf = result[2]
        self.model_name = spec
        factor = self.predictor.factor[0]
        exact = self.predictor.halo[0]
        self._updating = True  # one geometry update below, not one per box
        try:
            self.halo.step = factor
            self.halo.max = max(2 * exact, 4 * factor)
            self.halo.value = exact
            self.overlap.value = 2 * exact
            self.tile.step = factor
            value = max(self.tile.value, 2 * exact + factor)
            self.tile.value = int(np.ceil(value / factor) * factor)
        finally:
            self._updating = False
        status = (
            f"Model {Path(spec).name}: {self.predictor.rf.describe() if self.predictor.rf else ''}."
        )
        notes = [f"Output: {self.predictor.convention}."]
        notes += list(self.loaded.meta.get("notes", []))
        self._warnings = []
        if self.predictor.rf is not None:
            warning = self.loaded.declared_halo_warning(self.predictor.rf)
            self._warnings = [f"Warning: {warning}."] * bool(warning)
            notes = self._warnings + notes
        if self.loaded.meta.get("kind") == "bioimageio":
            notes.append(f"Preprocessing: {self.loaded.meta.get('preprocessing')}.")
        self._set_status(" ".join([status, *notes]))
        self._update()

    def _model_failed(self, spec: str, err: Exception) -> None:
        from ..analysis import NotTileableError

        keep = f" Still using {self.model_name}." if self.model_name else ""
        what = "Model" if isinstance(err, NotTileableError) else "Could not load model"
        self._set_status(f"{what} {spec}: {err}.{keep}", error=True)
        self._update(keep_status=True)

    # ------------------------------------------------------------------ tile size
    def choose_tile(self, _value: Any = None) -> None:
        """Probe the model (worker thread) and set the fastest tile within the budget."""
        from ..engine import choose_tile

        layer, pred = self.image.value, self.predictor
        if self.worker is not None or pred is None or not isinstance(layer, Image):
            self._set_status("Choose an image and wait for the model before probing.", True)
            return
        data = layer.data[0] if layer.multiscale else layer.data
        try:
            arr, _ = to_channel_first(
                data, pred.ndim, pred.in_channels, "YXC" if layer.rgb else None
            )
        except ChannelError as err:
            self._set_status(str(err), error=True)
            return
        halo = int(self.halo.value) if self.mode.value == "exact" else None
        self.auto_tile.enabled = self.run_button.enabled = False
        self._set_status("Probing the model at a few tile sizes...")
        worker = create_worker(
            choose_tile,
            pred,
            arr.shape[1:],
            budget=self.compare.budget(),
            halo=halo,
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.returned.connect(self._tile_chosen)
        worker.errored.connect(self._tile_failed)
        self._prober = worker
        worker.start()

    def _tile_chosen(self, choice: Any) -> None:
        self.auto_tile.enabled = True
        self.tile.value = int(choice.size)  # updates the grid and enables Run
        self._set_status(f"Chose {choice.describe()}.")

    def _tile_failed(self, err: Exception) -> None:
        self.auto_tile.enabled = True
        self._set_status(f"Could not choose a tile: {err}.", error=True)
        self._update(keep_status=True)

    # ------------------------------------------------------------------ geometry
    def _validate(self) -> tuple[str | None, TileGrid | None]:
        """Return (problem, grid): a message saying what is wrong, or the grid to run."""
        layer = self.image.value
        if layer is None or not isinstance(layer, Image):
            return (
                "No image layer: open an image (File > Open Sample > napari-seamless) and "
                "choose it above. Labels, points and shapes layers cannot be segmented.",
                None,
            )
        if self.predictor is None:
            return "Waiting for the model...", None
        data = layer.data[0] if layer.multiscale else layer.data
        try:
            arr, _ = to_channel_first(
                data, self.predictor.ndim, self.predictor.in_channels, "YXC" if layer.rgb else None
            )
            grid = self.predictor.plan(arr.shape[1:], int(self.tile.value), **self.settings())
        except (ChannelError, TileSizeError, ArgumentError, RegionError) as err:
            return str(err), None
        return None, grid

    def settings(self) -> dict[str, Any]:
        """The run settings of the boxes: mode, and its halo or overlap and weights (pixels)."""
        mode = self.mode.value
        if mode == "exact":
            return {"mode": mode, "halo": int(self.halo.value)}
        if mode == "overlap-average":
            return {"mode": mode, "overlap": int(self.overlap.value), "weights": self.weights.value}
        return {"mode": mode}

    def _on_mode(self, _value: Any = None) -> None:
        blend = self.mode.value == "overlap-average"
        self.overlap.visible = self.weights.visible = blend
        self.halo.enabled = self.mode.value == "exact"
        self._update()

    def _halo_text(self, grid: Any) -> tuple[str, bool]:
        """The line under the halo box, and whether it is a warning."""
        assert self.predictor is not None
        exact = self.predictor.halo[0]
        if isinstance(grid, OverlapGrid):
            return (
                "overlap-average blends overlapping windows: the result will NOT equal "
                "whole-image inference (for comparison).",
                True,
            )
        if self.mode.value == "naive":
            return (
                "naive: halo 0, hard tiles: the result will NOT equal whole-image inference; "
                "seams expected (for comparison).",
                True,
            )
        halo = grid.halo[0]
        if halo < exact:
            return (
                f"inexact: halo {halo} < {exact} px. The result will NOT equal whole-image "
                f"inference (exact from {exact} px).",
                True,
            )
        return f"exact from {exact} px (computed from the model)", False

    def _update(self, _value: Any = None, keep_status: bool = False) -> None:
        if self.worker is not None or self._updating:
            return  # geometry is fixed while a run is in flight; overlays re-enter here
        self._updating = True
        try:
            self._update_now(keep_status)
        finally:
            self._updating = False

    def _update_now(self, keep_status: bool) -> None:
        problem, grid = self._validate()
        self._grid = grid
        self.run_button.enabled = problem is None
        if self._status_key is not None and self._status_key != self._plan_key(grid):
            self._remove_status()  # the last run's tile status belongs to another plan
        if problem is not None:
            self.info.value = ""
            self._set_halo_note("", False)
            if not keep_status:
                self._set_status(
                    problem, error=self.predictor is not None or self.image.value is None
                )
                self._problem_shown = True
            self._remove_overlays()
            return
        assert self.predictor is not None
        rf = self.predictor.rf
        notes = []
        if rf is not None and rf.eq1:
            notes.append(f"Eq. 1: {rf.eq1[0]}")
        if self.erf:
            notes.append(f"ERF ~{self.erf[0]}")
        self._set_halo_note(*self._halo_text(grid))
        if isinstance(grid, OverlapGrid):
            self.info.value = (
                f"F {grid.factor[0]} px, window {grid.window[0]} px\n"
                f"overlap {grid.overlap[0]} px, stride {grid.stride[0]} px, {len(grid)} "
                f"windows ({' x '.join(map(str, grid.grid_shape))})\n"
                f"overhead {grid.overhead:.2f}x (computed/output)"
            )
        else:
            self.info.value = (
                f"F {grid.factor[0]} px, halo {grid.halo[0]} px"
                + (f"\n{', '.join(notes)}" if notes else "")
                + f"\nZoR {grid.zor_size[0]} px, {count(len(grid), 'tile')} "
                + f"({' x '.join(map(str, grid.grid_shape))})\n"
                + f"overhead {grid.overhead:.2f}x (window/ZoR)"
            )
        if not keep_status and self._problem_shown:
            self._set_status(f"Ready: model {self.model_name}.")
        self._draw_overlays(grid, 0)

    # ------------------------------------------------------------------ overlays
    def _plan_key(self, grid: Any) -> tuple | None:
        """What identifies a drawn plan: the image layer and the grid geometry."""
        if not isinstance(grid, TileGrid):
            return None
        return (id(self.image.value), grid.shape, grid.tile, grid.halo)

    def _remove_status(self) -> None:
        layer = self._status_layer
        self._status_layer = self._status_key = None
        if layer is not None and layer in self.viewer.layers:
            self.viewer.layers.remove(layer)

    def _draw_status(self) -> None:
        """Show the tile status array (add the layer once, then refresh it in place)."""
        grid, status = self._grid, self._status
        if status is None or not isinstance(grid, TileGrid) or grid.ndim not in (2, 3):
            return
        if not self.show_status.value:
            self._remove_status()
            return
        layer = self._status_layer
        if layer is None or layer not in self.viewer.layers:
            self._status_layer = self.viewer.add_image(
                ov.status_rgba(status),
                rgb=True,
                name=ov.STATUS_NAME,
                blending="translucent",
                interpolation2d="nearest",
                **ov.status_placement(
                    self.image.value if self._run_image is None else self._run_image, grid
                ),
            )
            self._status_key = self._plan_key(grid)
            self._raise_overlays()
            self.viewer.layers.selection.active = self.result_layer or self.image.value
        else:
            layer.data = ov.status_rgba(status)

    def _on_show_status(self, _value: Any = None) -> None:
        if self.show_status.value:
            self._draw_status()
        else:
            self._remove_status()

    def _remove_overlays(self) -> None:
        for layer in (self._grid_layer, self._halo_layer):
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._grid_layer = self._halo_layer = None

    def _set_halo_note(self, text: str, warning: bool) -> None:
        self.halo_note.value = text
        self.halo_note.native.setStyleSheet("color: #ffb040;" if warning else "")

    def _draw_overlays(self, grid: TileGrid, tile_index: int) -> None:
        layer = self.image.value
        if not self.show_grid.value or grid.ndim not in (2, 3) or layer is None:
            self._remove_overlays()
            return
        place = ov.placement(layer)
        width = ov.line_width(grid)
        lines = ov.grid_lines(grid)
        if self._grid_layer is None or self._grid_layer not in self.viewer.layers:
            self._grid_layer = self.viewer.add_vectors(
                lines,
                name=ov.GRID_NAME,
                edge_width=width,
                edge_color=ov.GRID_COLOR,
                vector_style="line",
                opacity=0.8,
                **place,
            )
        else:
            self._grid_layer.data = lines
            self._grid_layer.edge_width = width
            self._grid_layer.scale, self._grid_layer.translate = place["scale"], place["translate"]
        self._draw_halo(grid, tile_index, place)
        if self.viewer.layers.selection.active in (self._grid_layer, self._halo_layer):
            self.viewer.layers.selection.active = layer

    def _draw_halo(self, grid: TileGrid, tile_index: int, place: dict | None = None) -> None:
        if not self.show_grid.value or grid.ndim not in (2, 3):
            return
        boxes = ov.tile_boxes(grid, grid[tile_index])
        if self._halo_layer is None or self._halo_layer not in self.viewer.layers:
            place = place or ov.placement(self.image.value)
            self._halo_layer = self.viewer.add_shapes(
                boxes,
                shape_type="rectangle",
                name=ov.HALO_NAME,
                edge_width=ov.line_width(grid),
                edge_color=ov.HALO_COLOR,
                face_color=["transparent", [0.0, 1.0, 1.0, 0.15]],
                **place,
            )
        else:
            self._halo_layer.data = boxes
            self._halo_layer.face_color = ["transparent", [0.0, 1.0, 1.0, 0.15]]

    def _raise_overlays(self) -> None:
        for layer in (self._grid_layer, self._halo_layer):
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.move(self.viewer.layers.index(layer), len(self.viewer.layers))

    # ------------------------------------------------------------------ run
    def run(self, _value: Any = None) -> None:
        """Start the tiled run in a worker thread (no-op with a message on bad input)."""
        if self.worker is not None:
            return
        problem, grid = self._validate()
        if problem is not None or grid is None or self.predictor is None:
            self._set_status(problem or "Nothing to run.", error=True)
            return
        image = self.image.value
        data = image.data[0] if image.multiscale else image.data
        classes = self.predictor.classes()
        dtype = np.dtype(self.predictor.label_dtype(classes))
        disk = None
        if int(np.prod(grid.shape)) * dtype.itemsize * 4 // 3 > self.compare.budget():
            # larger than the memory budget: stream into an OME-Zarr pyramid on disk
            disk = OmeZarrStore.create(
                scratch_dir() / f"result-{len(self.runs) + 1}.ome.zarr",
                grid.shape,
                dtype,
                chunks=grid.zor_size if isinstance(grid, TileGrid) else 512,
                n_tiles=len(grid),
                kind="labels",
                name=f"{image.name} seamless",
            )
            labels, levels = disk, disk.levels
        else:
            labels = PyramidStore.zeros(grid.shape, dtype=dtype, min_size=PLAIN_LABELS_MAX)
            levels = labels.levels
        scores = None
        need = 4 * classes * int(np.prod(grid.shape))
        if need * SCORES_SHARE <= self.compare.budget():
            scores = np.zeros((classes, *grid.shape), dtype=np.float32)  # for Compare
        store = LabelsStore(labels, self.predictor.labels, scores)
        settings = self.settings()
        meta = {
            "complete": False,
            "tiles_done": 0,
            "tiles_total": len(grid),
            "model": self.model_name,
            "mode": settings["mode"],
            "tile": tuple(int(self.tile.value) for _ in grid.shape),
            "halo": grid.halo if isinstance(grid, TileGrid) else None,
            "exact_halo": tuple(self.predictor.halo),
            "factor": tuple(self.predictor.factor),
            "overlap": grid.overlap[0] if isinstance(grid, OverlapGrid) else None,
            "weights": settings.get("weights"),
            "image": image.name,
            "seconds": None,
            "store": None if disk is None else str(disk.path),
        }
        self._grid, self._run_image = grid, image
        self.tile_run = self.predictor.run(
            data,
            store,
            int(self.tile.value),
            output="probabilities",
            axes="YXC" if image.rgb else None,
            normalization=self.loaded.normalization if self.loaded is not None else "percentile",
            **settings,
        )
        self._status = None
        if isinstance(grid, TileGrid) and grid.ndim in (2, 3):
            self._status = np.full(grid.grid_shape, ov.PENDING, dtype=np.uint8)
            self._reorder()  # tiles in view first, then outward from the view
        ready = threading.Event()
        worker = create_worker(
            _events, self.tile_run, ready, disk, _start_thread=False, _ignore_errors=True
        )
        worker.yielded.connect(self._on_tile)
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        # the engine starts now: its events queue up for this thread, which meanwhile
        # adds the layers they go to (adding a layer takes a second or more of GUI time)
        worker.start()
        tag = describe_run(meta)
        place = ov.placement(image, grid.ndim)
        self.result_layer = self.viewer.add_labels(
            levels if len(levels) > 1 else levels[0],
            multiscale=len(levels) > 1,
            name=f"{image.name} seamless{' ' + tag if tag else ''}",
            opacity=0.6,
            metadata={"seamless": meta},
            **place,
        )
        self.runs[id(self.result_layer)] = {"scores": scores, "grid": grid, "image": image}
        self._raise_overlays()
        self.progress.max = len(grid)
        self.progress.value = 0
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        where = ""
        if disk is not None:
            where = (
                f" The result is larger than the memory budget: it streams into {disk.path} "
                "(removed when napari closes)."
            )
        self._set_status(f"Running {count(len(grid), 'tile')}...{where}")
        self._t0 = time.perf_counter()
        self._remove_status()
        self._draw_status()
        self._poll.start()
        ready.set()

    def cancel(self, _value: Any = None) -> None:
        """Stop after the tile in progress; finished tiles are kept."""
        if self.worker is not None:
            self._set_status("Cancelling after the current tile...")
            self.worker.quit()

    def _on_tile(self, event: TileEvent) -> None:
        self.progress.value = event.done
        meta = self.result_layer.metadata["seamless"]
        meta["tiles_done"] = event.done
        if self._status is not None:
            self._status.flat[event.tile.index] = ov.DONE
        now = time.perf_counter()
        if now - self._last_refresh >= REFRESH_INTERVAL_S or event.done == 1:
            self._last_refresh = now
            self.result_layer.refresh(thumbnail=False, extent=False, highlight=False)
            self._show_progress()

    def _show_progress(self) -> None:
        """Mark the tiles the engine has started but not finished as running; draw them."""
        run, grid, status = self.tile_run, self._grid, self._status
        if run is None or status is None or not isinstance(grid, TileGrid):
            return
        pending = run.pending()
        if not pending and not self.progress.value:
            return  # not started yet (or every tile in flight at once): nothing to tell
        started = status.flat[:] != ov.DONE  # a started tile stays out of the schedule
        started[pending] = False
        status.flat[started] = ov.RUNNING
        if started.any():
            self._draw_halo(grid, int(np.flatnonzero(started)[0]))
        self._draw_status()

    def _on_camera(self, _event: Any = None) -> None:
        if self.tile_run is not None:
            self._reorder_timer.start()  # restarts: one re-order once the camera rests

    def _reorder(self) -> None:
        """Put the pending tiles in view first, nearest the centre of the view first."""
        run, grid = self.tile_run, self._grid
        if run is None or not isinstance(grid, TileGrid) or grid.ndim not in (2, 3):
            return
        if self.viewer.dims.ndisplay != 2 or self._run_image is None:
            return
        box = ov.visible_slices(self.viewer, self._run_image, grid.shape)
        if box is not None:
            run.prioritize(viewport_order(grid, box))

    def _on_error(self, err: Exception) -> None:
        if self._status is not None:
            self._status[self._status == ov.RUNNING] = ov.FAILED
            self._draw_status()
        self._set_status(f"Run failed: {err}. The layer holds only the finished tiles.", error=True)

    def _on_finished(self) -> None:
        self._poll.stop()
        self._reorder_timer.stop()
        layer = self.result_layer
        meta = layer.metadata["seamless"]
        done, total = meta["tiles_done"], meta["tiles_total"]
        meta["complete"] = done == total
        layer.refresh()
        elapsed = time.perf_counter() - self._t0
        meta["seconds"] = elapsed
        if done == total:
            self._remove_status()  # all clear: nothing left to show
            done_text = f"Done: {count(total, 'tile')} in {elapsed:.1f} s ({elapsed / total:.2f} s per tile)."
            tag = describe_run(meta)
            if tag:
                done_text += f" This result is {tag}: it does not equal whole-image inference."
            self._set_status(" ".join([done_text, *self._warnings]))  # warnings stay in view
        else:
            if self._status is not None:  # stopped before they were written:
                self._status[self._status == ov.RUNNING] = ov.PENDING
                self._draw_status()  # what is still missing stays marked
            layer.name = f"{layer.name} (incomplete)"
            if not self.status.value.startswith("Run failed"):
                self._set_status(
                    f"Cancelled: {done} of {total} tiles done. The result is INCOMPLETE "
                    "(unfinished tiles are 0 = background).",
                    error=True,
                )
        if self.tile_run is not None:
            self.tile_run.close()
        self.tile_run = None
        self._run_image = None
        self.worker = None
        self.cancel_button.enabled = False
        self._update(keep_status=True)

    def open_sweep(self) -> Any:
        """Dock the halo sweep for this widget's image, model and tile (once; then show it)."""
        from .sweep import SweepDock

        if self.sweep is not None:
            try:
                self.sweep.reset_halos()
                self._sweep_dock.show()
                self._sweep_dock.raise_()
                return self.sweep
            except RuntimeError:  # the user closed the dock: Qt deleted it
                self.sweep = None
        self.sweep = SweepDock(self)
        self._sweep_dock = self.viewer.window.add_dock_widget(
            self.sweep, name="Halo sweep", area="right"
        )
        # a window of its own, as large as the figures were drawn for: squeezed into the
        # right-hand column the three panels become unreadable
        self._sweep_dock.setFloating(True)
        self._sweep_dock.resize(700, 940)
        return self.sweep

    def _set_status(self, text: str, error: bool = False) -> None:
        self._problem_shown = False
        self.status.value = text
        self.status.native.setStyleSheet("color: #ff7070;" if error else "")
