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
    TextEdit,
)
from napari.layers import Image
from napari.qt.threading import create_worker
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import QDockWidget, QSizePolicy, QVBoxLayout, QWidget

from ..engine import ChannelError, Predictor, TileEvent
from ..engine.stack import AxesChoice, StackRun, interpretations, no_reading
from ..errors import ArgumentError
from ..grid import RegionError, TileGrid, TileSizeError, count, viewport_order
from ..overlap import OverlapGrid
from ..stores import ArrayStore, LabelsStore, OmeZarrStore, PyramidStore
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
LABEL_CHOICES = [
    ("semantic (one number per class)", "semantic"),
    ("instances: connected components", "components"),
    ("instances: watershed (splits touching)", "watershed"),
]
REFRESH_INTERVAL_S = 0.2
REORDER_DELAY_MS = 150  # a pan or zoom re-orders pending tiles once the camera rests this long
SCORES_SHARE = 4  # scores are kept for Compare when they take under 1/4 of the budget
PLAIN_LABELS_MAX = 4096  # results up to this many pixels a side are one plain (editable,
# savable) Labels array; larger ones a multiscale pyramid, for display speed


SAMPLE_MENU = "Seamless tiled segmentation"  # napari's File > Open Sample submenu (display_name)


def spatial_shape(choice: AxesChoice) -> tuple[int, ...]:
    """The shape of one plane (or volume) the model sees: the last spatial axes, pixels."""
    return choice.labels_shape[-choice.ndim :]


def _duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"`` or ``"1 h 02 min"``: a time left for people."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _plain_meta(meta: dict) -> dict:
    """A result's settings as JSON-able data (tuples as lists, no objects), for files."""
    import json

    return json.loads(json.dumps(meta, default=str))


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


TIPS = {
    "image": "The image layer to segment. A newly opened image is chosen for you.",
    "axes": (
        "How the image's axes are read: which are the image plane (Y, X) or volume (Z, Y, X) "
        "the model sees, which are channels (C), and which are planes or time points run one "
        "after another (Z, T). Check it: a wrong reading gives a wrong result."
    ),
    "scope": "Run every plane of the stack (streamed one after another) or only the one in view.",
    "model": (
        "The network. Its halo and F are computed from the model itself when it is chosen "
        "(a few seconds)."
    ),
    "model_file": (
        "A TorchScript file, a state dict of the built-in U-Net, or a bioimage.io package "
        "(rdf.yaml or .zip). Run stays disabled until it loads."
    ),
    "tile": (
        "Window size in pixels: the input the model sees per tile, ZoR + 2 x halo. A "
        "multiple of F. Larger tiles waste less (overhead below) but need more memory."
    ),
    "halo": (
        "Halo in pixels: context added on each side of a tile's ZoR. At or above the "
        "computed value the result equals whole-image inference; below it, seams appear."
    ),
    "mode": (
        "exact: ZoR + halo, equals whole-image inference. naive (halo 0) and "
        "overlap-average are the usual shortcuts, kept for comparison: both leave seams."
    ),
    "overlap": "overlap-average only: pixels shared by neighbouring windows, blended.",
    "weights": "overlap-average only: how overlapping windows are weighted when blended.",
    "show_grid": "Draw the ZoR grid: each cell is one tile's output (zone of responsibility).",
    "show_halo": (
        "Draw the input window (halo box, cyan) around one tile's ZoR: the first tile, or "
        "the tile in the model while a run goes."
    ),
    "show_status": (
        "While a run goes: grey tiles are pending, the yellow tile is in the model, red "
        "tiles failed; done tiles are clear. Tiles in view are computed first."
    ),
    "run": "Start the tiled run. Tiles stream into a new Labels layer; settings lock until it ends.",
    "cancel": "Stop after the tile in the model; finished tiles are kept (marked incomplete).",
    "save": (
        "Save the selected result layer: OME-Zarr (.ome.zarr, multiscale) or TIFF (.tif). "
        "Large results cannot be saved with File > Save; use this."
    ),
    "instances": (
        "Turn the foreground into instance labels (one number per object) after the run: "
        "connected components, or split touching objects by a distance-transform watershed. "
        "Computed tile by tile and merged across ZoR borders: equal to labelling the whole "
        "image at once (up to numbering)."
    ),
    "F": (
        "F: the network's total downsampling factor (16 for a 4-level U-Net). Tile, ZoR "
        "and halo are multiples of F so the skip connections line up in every window."
    ),
    "halo_line": (
        "halo: how far an output pixel depends on the input, from the model's own graph "
        "(exact), rounded up to F (paper Eq. 2). Eq. 1 is the paper's estimate from "
        "kernel sizes; ERF the effective receptive field, where the gradient is "
        "non-negligible (usually smaller)."
    ),
    "zor_line": (
        "ZoR (zone of responsibility): the part of each window that is kept, tile - 2 x "
        "halo. The ZoRs tile the image without overlap; stride = ZoR."
    ),
    "overhead_line": (
        "Overhead: pixels the model computes (all windows, clipped at the border) per "
        "image pixel, for this image; 1.00x would be whole-image inference. The second "
        "figure is the per-tile ratio window/ZoR, which large images approach."
    ),
    "progress": "Tiles done of all tiles, and the time left at the pace so far.",
    "status": "What the widget is doing, and what went wrong and how to fix it.",
}
SCREEN_LINE_PX = 2.0  # overlay lines are this many screen pixels wide at every zoom


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
        self._choice: AxesChoice | None = None  # how the image's axes are read
        self.tile_run: Any = None  # the engine's StackRun while a run is in flight
        self._status_layer: Any = None
        # one status code per tile, grid-shaped (C order: .flat[Tile.index] is the tile)
        self._status: np.ndarray | None = None
        self._status_key: tuple | None = None  # (image, grid) the status layer was drawn for
        self._run_image: Any = None  # the image layer of the run in flight
        self._run_values: dict[str, Any] = {}  # the settings of the run in flight
        self._running_text = ""
        self._plane = 0  # the plane in flight (0 for a single image)
        self._models: dict[str, tuple[Any, Predictor, tuple[int, ...]]] = {}
        self.erf: tuple[int, ...] | None = None
        self._loader: Any = None
        self._prober: Any = None
        self._last_refresh = 0.0
        self._t0 = 0.0
        self._problem_shown = False
        self._updating = False
        self._restoring = False
        self._closed = False
        self._docked = False
        self._result_deleted = False
        self.runs: dict[int, dict] = {}  # id(result layer) -> its scores, plan and time
        self.sweep: Any = None  # the halo sweep dock, once opened
        self._sweep_dock: Any = None
        self.post: Any = None  # the instance-labelling worker, while it runs

        self.image = ComboBox(label="image", choices=self._image_choices)
        self.axes = ComboBox(label="axes", choices=self._axes_choices, visible=False)
        self.scope = ComboBox(
            label="planes",
            choices=[("all planes, one after another", "all"), ("current plane only", "current")],
            value="all",
            visible=False,
        )
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
        self.instances = ComboBox(label="labels", choices=LABEL_CHOICES, value="semantic")
        self.show_grid = CheckBox(text="ZoR grid", value=True)
        self.show_halo = CheckBox(text="halo box", value=True)
        self.show_status = CheckBox(text="tile status", value=True)
        self.geo_f = Label(label="F", value="")
        self.geo_halo = Label(label="halo", value="")
        self.geo_zor = Label(label="ZoR", value="")
        self.geo_overhead = Label(label="overhead", value="")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.save_button = PushButton(text="Save result...", enabled=False)
        self.progress = ProgressBar(label="tiles", value=0, max=1)
        self.status = TextEdit(label="status", value="")
        self.container = Container(
            widgets=[
                self.image,
                self.axes,
                self.scope,
                self.model,
                self.model_file,
                self.tile,
                self.auto_tile,
                self.mode,
                self.halo,
                self.halo_note,
                self.overlap,
                self.weights,
                self.instances,
                Container(
                    widgets=[self.show_grid, self.show_halo, self.show_status],
                    layout="horizontal",
                    labels=False,
                    label="show",
                ),
                self.geo_f,
                self.geo_halo,
                self.geo_zor,
                self.geo_overhead,
                Container(
                    widgets=[self.run_button, self.cancel_button, self.save_button],
                    layout="horizontal",
                    labels=False,
                ),
                self.progress,
                self.status,
            ]
        )
        for name, widget in (
            ("image", self.image),
            ("axes", self.axes),
            ("scope", self.scope),
            ("model", self.model),
            ("model_file", self.model_file),
            ("tile", self.tile),
            ("halo", self.halo),
            ("mode", self.mode),
            ("overlap", self.overlap),
            ("weights", self.weights),
            ("instances", self.instances),
            ("show_grid", self.show_grid),
            ("show_halo", self.show_halo),
            ("show_status", self.show_status),
            ("F", self.geo_f),
            ("halo_line", self.geo_halo),
            ("zor_line", self.geo_zor),
            ("overhead_line", self.geo_overhead),
            ("run", self.run_button),
            ("cancel", self.cancel_button),
            ("save", self.save_button),
            ("progress", self.progress),
            ("status", self.status),
        ):
            widget.tooltip = TIPS[name]
        self.halo_note.tooltip = TIPS["halo_line"]
        # the status never clips: it wraps, and scrolls when longer than its box
        self.status.read_only = True
        line = self.status.native.fontMetrics().lineSpacing()
        self.status.native.setMinimumHeight(5 * line + 8)
        self.status.native.setMaximumHeight(9 * line + 8)
        self.halo_note.native.setWordWrap(True)
        for label in (self.geo_f, self.geo_halo, self.geo_zor, self.geo_overhead):
            label.native.setWordWrap(True)
            label.native.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
            label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.progress.native.setFormat("%v of %m tiles")
        self.compare = ComparePanel(self)
        layout = QVBoxLayout()
        layout.addWidget(self.container.native)
        layout.addWidget(self.compare)
        layout.addStretch(1)
        self.setLayout(layout)
        self.setMinimumWidth(340)
        # the settings of a run: locked (disabled) while it goes, and the values of all but
        # the button kept, to be put back if one changes anyway
        self._settings_widgets = {
            name: getattr(self, name)
            for name in ("image", "axes", "scope", "model", "model_file", "tile", "auto_tile")
            + ("mode", "halo", "overlap", "weights", "instances")
        }

        self.image.changed.connect(self._on_image)
        self.axes.changed.connect(self._update)
        self.scope.changed.connect(self._update)
        self.model.changed.connect(self._on_model_choice)
        self.model_file.changed.connect(self._on_model_choice)
        self.tile.changed.connect(self._update)
        self.auto_tile.changed.connect(self.choose_tile)
        self.halo.changed.connect(self._update)
        self.mode.changed.connect(self._on_mode)
        self.overlap.changed.connect(self._update)
        self.weights.changed.connect(self._update)
        self.instances.changed.connect(self._update)
        self.show_grid.changed.connect(self._on_show_overlays)
        self.show_halo.changed.connect(self._on_show_overlays)
        self.show_status.changed.connect(self._on_show_status)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.save_button.changed.connect(self.save_result)
        self.viewer.layers.events.inserted.connect(self._on_inserted)
        self.viewer.layers.events.removed.connect(self._on_removed)
        self.viewer.layers.selection.events.active.connect(self._on_active)
        # the visible region first: a pan or zoom re-orders the pending tiles (debounced)
        self._reorder_timer = QTimer(self)
        self._reorder_timer.setSingleShot(True)
        self._reorder_timer.setInterval(REORDER_DELAY_MS)
        self._reorder_timer.timeout.connect(self._reorder)
        camera = ov.camera_of(self.viewer)
        camera.events.center.connect(self._on_camera)
        camera.events.zoom.connect(self._on_camera)
        camera.events.zoom.connect(self._on_zoom)  # overlay lines keep their screen width
        self.viewer.dims.events.current_step.connect(self._on_camera)  # a volume's slice
        self._poll = QTimer(self)  # the running tile is known only to the engine: look
        self._poll.setInterval(int(REFRESH_INTERVAL_S * 1000))
        self._poll.timeout.connect(self._show_progress)
        self._adopt_overlays()
        self._reset_layers()
        self._on_model_choice()

    # ------------------------------------------------------------------ choices
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, Image) and not ov.is_overlay(layer)
        ]

    def _image_shape(self) -> tuple[int, ...] | None:
        layer = self.image.value
        if not isinstance(layer, Image):
            return None
        return tuple((layer.data[0] if layer.multiscale else layer.data).shape)

    def _axes_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        """Every reading of the image's axes that fits the model, likeliest first."""
        layer, pred = self.image.value, self.predictor
        shape = self._image_shape()
        if pred is None or shape is None:
            return []
        found = interpretations(shape, pred.ndim, pred.in_channels, rgb=bool(layer.rgb))
        # the layer's own axis labels (e.g. from an OME file), when they are letters, win
        named = "".join(str(a).upper() for a in getattr(layer, "axis_labels", ()))
        found.sort(key=lambda c: c.axes.replace("C", "") != named.replace("C", ""))
        return [(c.describe(), c) for c in found]

    def _ours(self, layer: Any) -> bool:
        return layer is not None and layer in (
            self._grid_layer,
            self._halo_layer,
            self._status_layer,
        )

    def _on_inserted(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if self._ours(layer) or ov.is_overlay(layer):
            return  # our own overlays and QA maps come and go
        self.image.reset_choices()
        if isinstance(layer, Image) and self.worker is None and layer is not self.image.value:
            self.image.value = layer  # follow a newly opened image (its own grid is drawn)
        self._raise_overlays()  # never hidden under a new layer
        self._update()

    def _on_removed(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if self._ours(layer) or ov.is_overlay(layer):
            return  # a user who deletes an overlay is not overruled
        if layer is not None and layer is self.result_layer and self.worker is not None:
            self._result_deleted = True
            self._set_status(
                "The result layer was deleted: the run is cancelled after the current tile."
            )
            self.worker.quit()
        if layer is not None and layer is self._run_image and self.worker is not None:
            self._set_status("The image of the run was deleted: the run is cancelled.")
            self.worker.quit()
        self._reset_layers()

    def _on_active(self, _event: Any = None) -> None:
        """Save applies to the selected result layer (ours or one opened from a file)."""
        self.save_button.enabled = self.worker is None and self._save_target() is not None

    def _reset_layers(self, _event: Any = None) -> None:
        self.image.reset_choices()
        self._on_active()
        self._update()

    def _on_image(self, _value: Any = None) -> None:
        if self._guard():
            return
        self._update()

    def _adopt_overlays(self) -> None:
        """Reuse the overlays of an earlier widget on this viewer (one grid, never two)."""
        for layer in list(self.viewer.layers):
            if layer.name == ov.GRID_NAME and self._grid_layer is None:
                self._grid_layer = layer
            elif layer.name == ov.HALO_NAME and self._halo_layer is None:
                self._halo_layer = layer
            elif layer.name == ov.STATUS_NAME:
                self.viewer.layers.remove(layer)  # the status of a run that is gone

    # ------------------------------------------------------------------ lifecycle
    def _guard(self) -> bool:
        """True (and the run's settings put back) when a setting changes during a run."""
        if self.worker is None or self._restoring:
            return False
        self._restoring = True
        restored = False
        try:
            for name, value in self._run_values.items():
                widget = getattr(self, name)
                if widget.value != value:
                    try:
                        widget.value = value
                    except ValueError:  # a choice that is gone (its layer deleted)
                        continue
                    restored = True
        finally:
            self._restoring = False
        if not restored:
            return True
        self._set_status(
            f"{self._running_text} Settings are locked while a run goes (they show what is "
            "running): Cancel first to change them."
        )
        return True

    def _lock(self, running: bool) -> None:
        """Disable the run's settings while it goes (and keep what they were)."""
        if running:
            self._run_values = {
                name: widget.value
                for name, widget in self._settings_widgets.items()
                if not isinstance(widget, PushButton)
            }
        for widget in self._settings_widgets.values():
            widget.enabled = not running
        self.cancel_button.enabled = running
        self.run_button.enabled = not running and self._grid is not None
        self._on_active()

    def event(self, event: Any) -> bool:
        """A closed dock (napari takes its widget out of it) cancels the run, clears overlays.

        Docked, then parentless: napari's close button removes the dock widget and sets
        our parent to None. A hidden or floating dock keeps its widget.
        """
        if event.type() == QEvent.Type.ParentChange:
            if self._in_dock():
                self._docked = True
            elif self._docked:
                QTimer.singleShot(0, self._check_closed)
        return super().event(event)

    def _in_dock(self) -> bool:
        parent = self.parentWidget()
        while parent is not None:
            if isinstance(parent, QDockWidget):
                return True
            parent = parent.parentWidget()
        return False

    def _check_closed(self) -> None:
        try:
            closed = self._docked and not self._in_dock()
        except RuntimeError:  # Qt deleted us already
            closed = True
        if closed:
            self.close_widget()

    def close_widget(self) -> None:
        """Cancel the run, remove the overlays and stop listening to the viewer.

        Called when the dock is closed; finished tiles stay in the result layer.
        """
        if self._closed:
            return
        self._closed = True
        if self.worker is not None:
            self.worker.quit()
        self._reorder_timer.stop()
        self._poll.stop()
        self._remove_overlays()
        self._remove_status()
        viewer = self.viewer
        for emitter, slot in (
            (viewer.layers.events.inserted, self._on_inserted),
            (viewer.layers.events.removed, self._on_removed),
            (viewer.layers.selection.events.active, self._on_active),
            (ov.camera_of(viewer).events.center, self._on_camera),
            (ov.camera_of(viewer).events.zoom, self._on_camera),
            (ov.camera_of(viewer).events.zoom, self._on_zoom),
            (viewer.dims.events.current_step, self._on_camera),
        ):
            emitter.disconnect(slot)

    # ------------------------------------------------------------------ model
    def _model_spec(self) -> str | None:
        if self.model.value != FROM_FILE:
            return self.model.value
        path = Path(self.model_file.value)
        package = any((path / n).is_file() for n in ("rdf.yaml", "bioimageio.yaml"))
        return str(path) if path.is_file() or package else None

    def _forget_model(self) -> None:
        """No model is chosen that can run: Run stays disabled until one loads."""
        self.predictor = self.loaded = self.erf = None
        self.model_name = None
        self._warnings = []

    def _on_model_choice(self, _value: Any = None) -> None:
        if self._guard():
            return
        self.model_file.visible = self.model.value == FROM_FILE
        spec = self._model_spec()
        if spec is None:
            self._forget_model()  # the model shown is the model that runs: none yet
            path = str(self.model_file.value)
            missing = path not in ("", ".") and not Path(path).exists()
            self._set_status(
                (f"Model file not found: {path}. " if missing else "")
                + "Choose a model file: TorchScript, a state dict of the built-in U-Net, or a "
                "bioimage.io package (its rdf.yaml or .zip).",
                error=missing,
            )
            self._update(keep_status=True)
            return
        if spec in self._models:
            self._model_ready(spec, self._models[spec])
            return
        self._forget_model()
        self._set_status(f"Loading {spec} and computing its halo and F...")
        self._update(keep_status=True)
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
        self.axes.reset_choices()  # what a model can run on the image depends on the model
        self._update()

    def _model_failed(self, spec: str, err: Exception) -> None:
        from ..analysis import NotTileableError

        if spec != self._model_spec():
            return  # the user moved on while this one loaded
        what = "Model" if isinstance(err, NotTileableError) else "Could not load model"
        self._forget_model()
        self._set_status(
            f"{what} {spec}: {err}. Run is disabled: choose another model or file.", error=True
        )
        self._update(keep_status=True)

    # ------------------------------------------------------------------ tile size
    def choose_tile(self, _value: Any = None) -> None:
        """Probe the model (worker thread) and set the fastest tile within the budget."""
        from ..engine import choose_tile

        layer, pred = self.image.value, self.predictor
        if self.worker is not None or pred is None or not isinstance(layer, Image):
            self._set_status("Choose an image and wait for the model before probing.", True)
            return
        choice = self.axes.value
        if not isinstance(choice, AxesChoice):
            self._set_status(no_reading(self._image_shape(), pred.ndim, pred.in_channels), True)
            return
        halo = int(self.halo.value) if self.mode.value == "exact" else None
        self.auto_tile.enabled = self.run_button.enabled = False
        self._set_status("Probing the model at a few tile sizes...")
        worker = create_worker(
            choose_tile,
            pred,
            spatial_shape(choice),
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
        """Return (problem, grid): a message saying what is wrong, or the grid to run.

        The grid is that of one plane (or volume) of the image as :attr:`axes` reads it.
        """
        layer = self.image.value
        if layer is None or not isinstance(layer, Image):
            return (
                f"No image layer: open an image (File > Open Sample > {SAMPLE_MENU}) and "
                "choose it above. Labels, points and shapes layers cannot be segmented.",
                None,
            )
        if self.predictor is None:
            if self.model.value == FROM_FILE and self._model_spec() is None:
                return "Choose a model file above: Run is disabled until it loads.", None
            return "Waiting for the model...", None
        choice = self.axes.value
        self._choice = choice if isinstance(choice, AxesChoice) else None
        if self._choice is None:
            pred = self.predictor
            return no_reading(self._image_shape(), pred.ndim, pred.in_channels, layer.rgb), None
        try:
            grid = self.predictor.plan(
                spatial_shape(self._choice), int(self.tile.value), **self.settings()
            )
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
        if self._guard():
            return
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
        if self._closed or self._updating or self._guard():
            return
        if self.worker is not None:
            return  # geometry is fixed while a run is in flight; overlays re-enter here
        self._updating = True
        try:
            self._update_now(keep_status)
        finally:
            self._updating = False

    def geometry_text(self) -> str:
        """The geometry rows as one text (F, halo, ZoR and tiles, overhead)."""
        rows = (self.geo_f, self.geo_halo, self.geo_zor, self.geo_overhead)
        return "\n".join(f"{w.label} {w.value}" for w in rows if w.value)

    def _set_geometry(self, *rows: str) -> None:
        for widget, text in zip(
            (self.geo_f, self.geo_halo, self.geo_zor, self.geo_overhead), rows, strict=True
        ):
            widget.value = text

    def _update_now(self, keep_status: bool) -> None:
        self.axes.reset_choices()  # the readings of this image's axes for this model
        problem, grid = self._validate()
        self._grid = grid
        self.run_button.enabled = problem is None
        choice = self._choice
        stack = choice is not None and bool(choice.stack)
        # the reading is shown whenever there is one to check: a stack, channels, or a choice
        self.axes.visible = choice is not None and (
            stack or len(self.axes.choices) > 1 or "C" in choice.axes
        )
        self.scope.visible = stack
        if self._status_key is not None and self._status_key != self._plan_key(grid):
            self._remove_status()  # the last run's tile status belongs to another plan
        if problem is not None:
            self._set_geometry("", "", "", "")
            self._set_halo_note("", False)
            if not keep_status:
                self._set_status(
                    problem, error=self.predictor is not None or self.image.value is None
                )
                self._problem_shown = True
            self._remove_overlays()
            return
        assert self.predictor is not None and choice is not None
        rf = self.predictor.rf
        notes = []
        if rf is not None and rf.eq1:
            notes.append(f"Eq. 1: {rf.eq1[0]}")
        if self.erf:
            notes.append(f"ERF ~{self.erf[0]}")
        self._set_halo_note(*self._halo_text(grid))
        planes = ""
        if stack:
            n = 1 if self.scope.value == "current" else choice.planes
            planes = f" per plane, {count(n, 'plane')}"
        blend = isinstance(grid, OverlapGrid)
        self.geo_halo.label = "overlap" if blend else "halo"
        self.geo_zor.label = "windows" if blend else "ZoR"
        if isinstance(grid, OverlapGrid):
            self._set_geometry(
                f"{grid.factor[0]} px (window {grid.window[0]} px)",
                f"{grid.overlap[0]} px, stride {grid.stride[0]} px",
                f"{len(grid)} ({' x '.join(map(str, grid.grid_shape))}){planes}",
                f"{grid.overhead:.2f}x (computed/output)",
            )
        else:
            self._set_geometry(
                f"{grid.factor[0]} px",
                f"{grid.halo[0]} px" + (f" ({', '.join(notes)})" if notes else ""),
                f"{grid.zor_size[0]} px, {count(len(grid), 'tile')} "
                f"({' x '.join(map(str, grid.grid_shape))}){planes}",
                f"{grid.image_overhead:.2f}x for this image, {grid.overhead:.2f}x per tile",
            )
        total = len(grid) * (1 if not stack or self.scope.value == "current" else choice.planes)
        if self.progress.max != total:  # a new plan: "0 of N tiles"; else the last run's
            self.progress.max, self.progress.value = total, 0
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

    def _screen_width(self) -> float:
        """Overlay line width in data pixels that is :data:`SCREEN_LINE_PX` on screen."""
        layer = self.image.value if self._run_image is None else self._run_image
        scale = float(layer.scale[-1]) if layer is not None else 1.0
        zoom = float(ov.camera_of(self.viewer).zoom) or 1.0
        return SCREEN_LINE_PX / (zoom * scale)

    def _on_zoom(self, _event: Any = None) -> None:
        """Keep the grid and halo lines the same width on screen at every zoom."""
        width = self._screen_width()
        for layer in (self._grid_layer, self._halo_layer):
            if layer is not None and layer in self.viewer.layers:
                layer.edge_width = width

    def _on_show_overlays(self, _value: Any = None) -> None:
        """The grid and halo toggles: shown or hidden in place, also during a run."""
        if self.worker is None:
            self._update()
            return
        for layer, show in ((self._grid_layer, self.show_grid), (self._halo_layer, self.show_halo)):
            if layer is not None and layer in self.viewer.layers:
                layer.visible = bool(show.value)

    def _draw_overlays(self, grid: TileGrid, tile_index: int) -> None:
        layer = self.image.value
        if grid.ndim not in (2, 3) or layer is None:
            self._remove_overlays()
            return
        place = ov.placement(layer)
        width = self._screen_width()
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
        self._grid_layer.visible = bool(self.show_grid.value)
        self._draw_halo(grid, tile_index, place)
        if self.viewer.layers.selection.active in (self._grid_layer, self._halo_layer):
            self.viewer.layers.selection.active = layer

    def _draw_halo(self, grid: TileGrid, tile_index: int, place: dict | None = None) -> None:
        if grid.ndim not in (2, 3) or self._closed:
            return
        boxes = ov.tile_boxes(grid, grid[tile_index])
        place = place or ov.placement(self.image.value)
        if self._halo_layer is None or self._halo_layer not in self.viewer.layers:
            self._halo_layer = self.viewer.add_shapes(
                boxes,
                shape_type="rectangle",
                name=ov.HALO_NAME,
                edge_width=self._screen_width(),
                edge_color=ov.HALO_COLOR,
                face_color=["transparent", [0.0, 1.0, 1.0, 0.15]],
                **place,
            )
        else:
            self._halo_layer.data = boxes
            self._halo_layer.face_color = ["transparent", [0.0, 1.0, 1.0, 0.15]]
            self._halo_layer.edge_width = self._screen_width()
            self._halo_layer.scale, self._halo_layer.translate = place["scale"], place["translate"]
        self._halo_layer.visible = bool(self.show_halo.value)

    def _raise_overlays(self) -> None:
        for layer in (self._grid_layer, self._halo_layer):
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.move(self.viewer.layers.index(layer), len(self.viewer.layers))

    # ------------------------------------------------------------------ run
    def _positions(self, choice: AxesChoice) -> list[dict[str, int]]:
        """The planes to run: all, or the one the viewer shows now."""
        if not choice.stack or self.scope.value == "all":
            return choice.positions()
        layer = self.image.value
        point = layer.world_to_data(self.viewer.dims.point)
        here = {}
        for a, n in zip(choice.stack, choice.stack_shape, strict=True):
            k = int(np.round(point[choice.axes.index(a)]))
            here[a] = min(max(k, 0), n - 1)
        return [here]

    def run(self, _value: Any = None) -> None:
        """Start the tiled run in a worker thread (no-op with a message on bad input)."""
        if self.worker is not None or self._closed:
            return
        problem, grid = self._validate()
        choice = self._choice
        if problem is not None or grid is None or self.predictor is None or choice is None:
            self._set_status(problem or "Nothing to run.", error=True)
            return
        image = self.image.value
        data = image.data[0] if image.multiscale else image.data
        classes = self.predictor.classes()
        dtype = np.dtype(self.predictor.label_dtype(classes))
        positions = self._positions(choice)
        stack = bool(choice.stack)
        shape = choice.labels_shape
        disk = None
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if stack and nbytes > self.compare.budget():
            self._set_status(
                f"The labels of all {count(choice.planes, 'plane')} take "
                f"{nbytes / 2**30:.1f} GiB, over the memory budget: run one plane (planes: "
                "current plane only), raise the budget, or use seamless predict --index.",
                error=True,
            )
            return
        if stack:
            labels = np.zeros(shape, dtype=dtype)
            levels = [labels]
        elif nbytes * 4 // 3 > self.compare.budget():
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
        if not stack and need * SCORES_SHARE <= self.compare.budget():
            scores = np.zeros((classes, *grid.shape), dtype=np.float32)  # for Compare

        def store(position: dict[str, int]) -> LabelsStore:
            if not stack:
                return LabelsStore(labels, self.predictor.labels, scores)
            plane = levels[0][choice.labels_index(position)]
            return LabelsStore(ArrayStore(plane), self.predictor.labels)

        settings = self.settings()
        meta = {
            "complete": False,
            "tiles_done": 0,
            "tiles_total": len(grid) * len(positions),
            "model": self.model_name,
            "mode": settings["mode"],
            "tile": tuple(int(self.tile.value) for _ in grid.shape),
            "halo": grid.halo if isinstance(grid, TileGrid) else None,
            "exact_halo": tuple(self.predictor.halo),
            "factor": tuple(self.predictor.factor),
            "overlap": grid.overlap[0] if isinstance(grid, OverlapGrid) else None,
            "weights": settings.get("weights"),
            "image": image.name,
            "axes": choice.axes,
            "planes": positions if stack else None,
            "labels": self.instances.value,
            "seconds": None,
            "store": None if disk is None else str(disk.path),
        }
        self._grid, self._run_image, self._plane = grid, image, 0
        self.tile_run = StackRun(
            self.predictor,
            data,
            choice,
            store,
            int(self.tile.value),
            len(grid),
            positions,
            output="probabilities",
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
        self._result_deleted = False
        self._lock(True)
        # the engine starts now: its events queue up for this thread, which meanwhile
        # adds the layers they go to (adding a layer takes a second or more of GUI time)
        worker.start()
        tag = describe_run(meta)
        place = ov.placement_of(image, choice)
        where = ""
        if stack and len(positions) == 1:
            where = " " + ",".join(f"{a}={k}" for a, k in positions[0].items())
        self.result_layer = self.viewer.add_labels(
            levels if len(levels) > 1 else levels[0],
            multiscale=len(levels) > 1,
            name=f"{image.name} seamless{where}{' ' + tag if tag else ''}",
            opacity=0.6,
            metadata={"seamless": meta},
            **place,
        )
        self.runs[id(self.result_layer)] = {"scores": scores, "grid": grid, "image": image}
        self._raise_overlays()
        self.progress.max = meta["tiles_total"]
        self.progress.value = 0
        self.progress.native.setFormat("%v of %m tiles")
        note = ""
        if disk is not None:
            note = (
                f" The result is larger than the memory budget: it streams into {disk.path} "
                "(removed when napari closes; Save result... keeps it)."
            )
        self._running_text = f"Running {self.tile_run.describe()}...{note}"
        self._set_status(self._running_text)
        self._t0 = time.perf_counter()
        self._remove_status()
        self._draw_status()
        self._poll.start()
        self.viewer.layers.selection.active = self.result_layer
        ready.set()

    def cancel(self, _value: Any = None) -> None:
        """Stop after the tile in progress; finished tiles are kept."""
        if self.worker is not None:
            self._set_status("Cancelling after the current tile...")
            self.worker.quit()

    def _on_tile(self, event: TileEvent) -> None:
        self.progress.value = event.done
        layer = self.result_layer
        meta = layer.metadata["seamless"]
        meta["tiles_done"] = event.done
        grid = self._grid
        plane = (event.done - 1) // max(len(grid), 1) if grid is not None else 0
        if self._status is not None:
            if plane != self._plane:  # the next plane starts: all its tiles pending
                self._status[...] = ov.PENDING
            self._status.flat[event.tile.index] = ov.DONE
        self._plane = plane
        now = time.perf_counter()
        if now - self._last_refresh >= REFRESH_INTERVAL_S or event.done == 1:
            self._last_refresh = now
            if not self._result_deleted:
                layer.refresh(thumbnail=False, extent=False, highlight=False)
            elapsed = now - self._t0
            left = elapsed / event.done * (event.total - event.done)
            self.progress.native.setFormat(f"%v of %m tiles, {_duration(left)} left")
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
        elapsed = time.perf_counter() - self._t0
        meta["seconds"] = elapsed
        self.progress.native.setFormat("%v of %m tiles")
        if self.tile_run is not None:
            self.tile_run.close()
        self.tile_run = None
        self._run_image = None
        self.worker = None
        self._lock(False)
        if self._result_deleted or self._closed:
            self._remove_status()
            self.result_layer = None if self._result_deleted else layer
            if self._result_deleted:
                self._set_status(
                    f"Cancelled: the result layer was deleted ({done} of {total} tiles were "
                    "done). Nothing was kept.",
                    error=True,
                )
            self._update(keep_status=True)
            return
        layer.refresh()
        if done == total:
            self._remove_status()  # all clear: nothing left to show
            done_text = (
                f"Done: {count(total, 'tile')} in {elapsed:.1f} s ({elapsed / total:.2f} s per "
                "tile)."
            )
            tag = describe_run(meta)
            if tag:
                done_text += f" This result is {tag}: it does not equal whole-image inference."
            self._set_status(" ".join([done_text, *self._warnings]))  # warnings stay in view
            if meta["labels"] != "semantic":
                self.label_instances(layer, meta["labels"])
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
        self._update(keep_status=True)

    # ------------------------------------------------------------------ instances
    def label_instances(self, layer: Any, method: str) -> None:
        """Turn a finished semantic result into instance labels (worker thread), tile by tile.

        The instances are computed on the run's ZoR grid and merged across ZoR borders
        (:func:`napari_seamless.instances.label_instances`); they go into a new Labels
        layer beside the semantic one, which is kept.
        """
        from ..instances import label_instances

        grid = self.runs.get(id(layer), {}).get("grid")
        zor = grid.zor_size if isinstance(grid, TileGrid) else 512
        data = layer.data[0] if layer.multiscale else layer.data
        meta = layer.metadata["seamless"]
        stack = meta.get("planes") is not None
        n = data.ndim - len(zor)
        self._set_status(f"Labelling instances ({method}) tile by tile...")

        def job() -> Any:
            if not stack:
                return label_instances(np.asarray(data), zor, method=method)
            out = np.zeros(data.shape, dtype=np.uint32)
            offset = 0
            for index in np.ndindex(*data.shape[:n]):
                if not data[index].any():
                    continue
                plane = label_instances(np.asarray(data[index]), zor, method=method).labels
                out[index] = np.where(plane > 0, plane + offset, 0)
                offset = int(out[index].max(initial=offset))
            return out

        worker = create_worker(job, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(lambda result: self._instances_ready(layer, method, result))
        worker.errored.connect(
            lambda err: self._set_status(f"Could not label instances: {err}.", error=True)
        )
        self.post = worker
        worker.start()

    def _instances_ready(self, layer: Any, method: str, result: Any) -> None:
        self.post = None
        labels = np.asarray(getattr(result, "labels", result))
        objects = int(getattr(result, "count", labels.max(initial=0)))
        meta = dict(layer.metadata["seamless"], labels=method, objects=objects)
        self.viewer.add_labels(
            labels,
            name=f"{layer.name} instances",
            opacity=0.6,
            metadata={"seamless": meta},
            scale=layer.scale,
            translate=layer.translate,
        )
        layer.visible = False  # the instances replace it on screen; it is kept
        self._raise_overlays()
        self._set_status(
            f"{self.status.value} Instances ({method}): {count(objects, 'object')}, merged "
            "across ZoR borders (equal to labelling the whole image at once)."
        )

    # ------------------------------------------------------------------ results
    def _save_target(self) -> Any:
        """The selected Labels layer, if it can be saved (not one still being written)."""
        from napari.layers import Labels

        layer = self.viewer.layers.selection.active
        if not isinstance(layer, Labels):
            return None
        if self.worker is not None and layer is self.result_layer:
            return None
        return layer

    def save_result(self, _value: Any = None, path: str | Path | None = None) -> Path | None:
        """Save the selected Labels layer to OME-Zarr or TIFF (asks for a path if none).

        Never writes over an existing file or folder without asking; the file appears
        only once it is complete (written beside it, then swapped in).
        """
        from ..io import export_labels

        layer = self._save_target()
        if layer is None:
            self._set_status("Select a finished Labels layer to save.", error=True)
            return None
        overwrite = False
        if path is None:
            from qtpy.QtWidgets import QFileDialog

            path, _ = QFileDialog.getSaveFileName(
                self,
                "Save result",
                f"{layer.name}.ome.zarr",
                "OME-Zarr (*.ome.zarr *.zarr);;TIFF (*.tif *.tiff)",
            )
            if not path:
                return None
            overwrite = Path(path).exists()  # the dialog asked already
        from ..errors import SeamlessError

        try:
            written = export_labels(
                layer.data,
                Path(path),
                overwrite=overwrite,
                metadata=_plain_meta(layer.metadata.get("seamless", {})),
                name=layer.name,
            )
        except (SeamlessError, OSError) as err:  # one sentence; nothing half-written
            self._set_status(f"Could not save {layer.name}: {err}", error=True)
            return None
        self._set_status(f"Saved {layer.name} to {written}.")
        return Path(written)

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
