"""Compare a finished result with whole-image inference, in the viewer.

The reference, the metrics and the maps come from :mod:`napari_seamless.qa` (Qt-free); this
panel picks the result and the region, runs the reference in a worker thread, and shows the
answer: an error-map Labels layer (pixels whose label differs), an Image layer of
|score difference| on a log scale with its legend here, and the metrics (paper Eqs. 3-5).
Every layer change happens on the GUI thread in the slots below.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton
from napari.layers import Shapes
from napari.qt.threading import create_worker
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ..grid import RegionError, TileGrid, parse_region
from . import layers as ov

if TYPE_CHECKING:
    from .widget import SeamlessWidget

REFERENCE_CHOICES = [
    ("whole image (if it fits the budget)", "whole"),
    ("visible region", "visible"),
    ("drawn rectangle", "rectangle"),
]
REGION_NAME = "seamless region"
ERROR_NAME = "seamless error map"
DIFF_NAME = "seamless |score difference| (log10)"
MARKS_NAME = "seamless error locations"
QA_KEY = "seamless_qa"  # metadata marker of the layers this panel owns


def _compare_job(
    predictor: Any,
    data: Any,
    region: Any,
    budget: int,
    axes: str | None,
    normalization: Any,
    scores: np.ndarray,
    labels: np.ndarray,
    grid: Any,
    seconds: float | None,
) -> Any:
    """Worker-thread job: the reference, then the seam report against it."""
    from ..qa import reference, seam_report

    ref = reference(predictor, data, region, budget=budget, axes=axes, normalization=normalization)
    tile_grid = grid if isinstance(grid, TileGrid) else None
    return ref, seam_report(ref, scores, labels, tile_grid, seconds, grid.shape)


def _default_budget_gib() -> float:
    from ..qa import memory_budget

    return round(memory_budget() / 2**30, 1)


class ComparePanel(QWidget):
    """Compare, region choice, metrics and legend: the seam-QA part of the dock widget.

    Parameters
    ----------
    owner : SeamlessWidget
        The dock widget whose model, runs and status line this panel uses.
    """

    def __init__(self, owner: SeamlessWidget) -> None:
        super().__init__()
        self.owner = owner
        self.viewer = owner.viewer
        self.worker: Any = None
        self.report: Any = None
        self.error_layer: Any = None
        self.diff_layer: Any = None
        self.marks_layer: Any = None
        self.reference = ComboBox(label="reference", choices=REFERENCE_CHOICES, value="whole")
        self.budget_gib = FloatSpinBox(
            label="memory budget (GiB)", min=0.001, max=1e5, step=0.5, value=_default_budget_gib()
        )
        self.draw_button = PushButton(text="Draw region")
        self.compare_button = PushButton(text="Compare with reference")
        self.sweep_button = PushButton(text="Halo sweep...")
        self.metrics = Label(label="metrics", value="")
        self.container = Container(
            widgets=[
                self.reference,
                self.budget_gib,
                self.draw_button,
                self.compare_button,
                self.sweep_button,
                self.metrics,
            ]
        )
        self.metrics.native.setWordWrap(True)
        line = self.metrics.native.fontMetrics().lineSpacing()
        self.metrics.native.setMinimumHeight(8 * line + 4)  # never clip the numbers
        self.legend = QWidget()
        bar = QLabel()
        bar.setPixmap(self._legend_pixmap())
        bar.setScaledContents(True)  # the bar spans the panel, ticks at both ends
        bar.setFixedHeight(12)
        row = QHBoxLayout()
        for i, text in enumerate(ov.LEGEND_TICKS):
            if i:
                row.addStretch(1)
            row.addWidget(QLabel(text))
        legend_layout = QVBoxLayout()
        legend_layout.setContentsMargins(0, 0, 0, 0)
        legend_layout.addWidget(QLabel("|score difference| (log scale, inferno):"))
        legend_layout.addWidget(bar)
        legend_layout.addLayout(row)
        self.legend.setLayout(legend_layout)
        self.legend.setVisible(False)
        layout = QVBoxLayout()
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.container.native)
        layout.addWidget(self.legend)
        self.setLayout(layout)
        self.draw_button.changed.connect(self.draw_region)
        self.compare_button.changed.connect(self.compare)
        self.sweep_button.changed.connect(lambda _v=None: owner.open_sweep())

    # ------------------------------------------------------------------ settings
    def budget(self) -> int:
        """Memory budget in bytes for a reference (and for keeping a run's scores)."""
        return int(self.budget_gib.value * 2**30)

    @staticmethod
    def _legend_pixmap() -> QPixmap:
        rgba = np.ascontiguousarray(ov.legend_rgba(width=256, height=12))
        image = QImage(rgba.data, rgba.shape[1], rgba.shape[0], QImage.Format.Format_RGBA8888)
        return QPixmap.fromImage(image.copy())

    # ------------------------------------------------------------------ regions
    def draw_region(self, _value: Any = None) -> None:
        """Add (or select) the rectangle layer and switch the viewer to drawing rectangles."""
        layer = self._region_layer()
        image = self.owner.image.value
        if layer is None:
            place = ov.placement(image) if image is not None else {}
            layer = self.viewer.add_shapes(
                name=REGION_NAME,
                edge_color="magenta",
                face_color="transparent",
                edge_width=ov.line_width_for(image),
                **place,
            )
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"
        self.reference.value = "rectangle"
        self.owner._set_status("Drag a rectangle on the image, then press Compare.")

    def _region_layer(self) -> Any:
        for layer in self.viewer.layers:
            if isinstance(layer, Shapes) and layer.name == REGION_NAME:
                return layer
        return None

    def region(self, image: Any, shape: tuple[int, ...]) -> tuple[slice, ...] | None:
        """The chosen region of ``image`` in data pixels; None for the whole image.

        Raises
        ------
        RegionError
            With what to do: no rectangle drawn, or a rectangle outside the image.
        """
        choice = self.reference.value
        if choice == "whole":
            return None
        if choice == "visible":
            lo, hi = ov.visible_data_box(self.viewer, image)
        else:
            layer = self._region_layer()
            if layer is None or len(layer.data) == 0:
                raise RegionError(
                    "no rectangle is drawn: press Draw region and drag a rectangle on the image, "
                    "or choose another reference"
                )
            pts = np.asarray(layer.data[-1], dtype=float)
            world = np.array([layer.data_to_world(p) for p in pts])
            data = np.array([image.world_to_data(w) for w in world])[:, -2:]
            lo, hi = data.min(axis=0), data.max(axis=0)
        lo = [max(0, math.floor(v)) for v in lo]
        hi = [min(n, math.ceil(v)) for v, n in zip(hi, shape, strict=True)]
        if any(b <= a for a, b in zip(lo, hi, strict=True)):
            extent = ",".join(f"0:{n}" for n in shape)
            raise RegionError(
                f"the {'rectangle' if choice == 'rectangle' else 'visible region'} lies outside "
                f"the image (extent {extent} px): draw it on the image"
            )
        return parse_region([(a, b) for a, b in zip(lo, hi, strict=True)], shape)

    # ------------------------------------------------------------------ compare
    def _result_layer(self) -> Any:
        active = self.viewer.layers.selection.active
        if active is not None and id(active) in self.owner.runs and active in self.viewer.layers:
            return active
        layer = self.owner.result_layer
        return layer if layer is not None and layer in self.viewer.layers else None

    def _refuse(self, text: str) -> None:
        self.owner._set_status(text, error=True)

    def compare(self, _value: Any = None) -> None:
        """Compare the selected (else the latest) finished result with the reference."""
        from ..qa import ReferenceTooLargeError, reference_bytes

        owner = self.owner
        if self.worker is not None or owner.worker is not None:
            self._refuse("Wait for the run in progress to finish before comparing.")
            return
        layer = self._result_layer()
        if layer is None:
            self._refuse(
                "Compare needs a finished result: press Run first (or select a seamless "
                "result layer)."
            )
            return
        meta = layer.metadata["seamless"]
        if not meta["complete"]:
            self._refuse(
                f"{layer.name} is incomplete ({meta['tiles_done']} of {meta['tiles_total']} "
                "tiles): Run to the end before comparing."
            )
            return
        run = owner.runs[id(layer)]
        if owner.predictor is None or meta["model"] != owner.model_name:
            self._refuse(
                f"{layer.name} was made with model {meta['model']}: choose that model again "
                "to compare it."
            )
            return
        if run["scores"] is None:
            self._refuse(
                f"The scores of {layer.name} were not kept (over a quarter of the memory "
                "budget): raise the budget and Run again, or use seamless compare --region."
            )
            return
        image = run["image"]
        grid = run["grid"]
        try:
            region = self.region(image, grid.shape)
            need = reference_bytes(owner.predictor, grid.shape) / 2**30
            if region is None and need * 2**30 > self.budget():
                raise ReferenceTooLargeError(
                    f"the whole-image reference ({' x '.join(map(str, grid.shape))} px) needs "
                    f"about {need:.1f} GiB, over the memory budget of "
                    f"{self.budget() / 2**30:.1f} GiB: choose 'visible region' or draw a "
                    "rectangle"
                )
        except (RegionError, ReferenceTooLargeError) as err:
            self._refuse(f"Cannot compare: {err}.")
            return
        data = image.data[0] if image.multiscale else image.data
        labels = np.asarray(layer.data[0] if layer.multiscale else layer.data)
        where = (
            "the whole image"
            if region is None
            else "region " + ",".join(f"{s.start}:{s.stop}" for s in region)
        )
        owner._set_status(f"Computing the reference on {where}...")
        self.compare_button.enabled = False
        worker = create_worker(
            _compare_job,
            owner.predictor,
            data,
            region,
            self.budget(),
            "YXC" if image.rgb else None,
            owner.loaded.normalization if owner.loaded is not None else "percentile",
            run["scores"],
            labels,
            grid,
            meta.get("seconds"),
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.returned.connect(lambda result, layer=layer: self._show(layer, *result))
        worker.errored.connect(self._failed)
        worker.finished.connect(self._done)
        self.worker = worker
        worker.start()

    def _failed(self, err: Exception) -> None:
        self._refuse(f"Compare failed: {err}.")

    def _done(self) -> None:
        self.worker = None
        self.compare_button.enabled = True

    def _mark_errors(self, report: Any, image: Any, place: dict, origin: np.ndarray) -> None:
        """Red rings around the differing pixels: one pixel is invisible at full view."""
        points = ov.error_marks(report.error_map) + origin
        size = ov.line_width_for(image) * 12
        if self.marks_layer is None or self.marks_layer not in self.viewer.layers:
            self.marks_layer = self.viewer.add_points(
                points,
                name=MARKS_NAME,
                size=size,
                face_color="transparent",
                border_color="red",
                border_width=0.15,
                scale=place["scale"],
                translate=place["translate"],
                metadata={QA_KEY: {}},
            )
        else:
            self.marks_layer.data = points
            self.marks_layer.size = size
        self.marks_layer.visible = len(points) > 0

    def _show(self, layer: Any, ref: Any, report: Any) -> None:
        """Add or update the error map and |difference| layers; fill the metrics panel."""
        self.report = report
        image = self.owner.runs[id(layer)]["image"]
        place = ov.placement(image)
        origin = np.array([s.start for s in report.region], dtype=float)
        translate = tuple(np.asarray(place["translate"]) + origin * np.asarray(place["scale"]))
        log_diff = ov.log_difference(report.difference)
        qa_meta = {
            QA_KEY: {"result": layer.name, "region": [(s.start, s.stop) for s in ref.region]}
        }
        if self.diff_layer is None or self.diff_layer not in self.viewer.layers:
            self.diff_layer = self.viewer.add_image(
                log_diff,
                name=DIFF_NAME,
                colormap="inferno",
                contrast_limits=ov.LOG_LIMITS,
                blending="additive",
                opacity=0.8,
                scale=place["scale"],
                translate=translate,
                metadata=qa_meta,
            )
        else:
            self.diff_layer.data = log_diff
            self.diff_layer.translate = translate
            self.diff_layer.contrast_limits = ov.LOG_LIMITS
            self.diff_layer.metadata.update(qa_meta)
        if self.error_layer is None or self.error_layer not in self.viewer.layers:
            self.error_layer = self.viewer.add_labels(
                report.error_map,
                name=ERROR_NAME,
                colormap=ov.error_colormap(),
                opacity=1.0,
                scale=place["scale"],
                translate=translate,
                metadata=qa_meta,
            )
        else:
            self.error_layer.data = report.error_map
            self.error_layer.translate = translate
            self.error_layer.metadata.update(qa_meta)
        self._mark_errors(report, image, place, origin)
        self.owner._raise_overlays()  # the ZoR seams stay drawn over the maps
        self.legend.setVisible(True)
        self.metrics.value = ov.metrics_text(layer.name, ref, report)
        c = report.comparison
        verdict = (
            "exact: equals whole-image inference"
            if c.exact
            else f"{c.me} pixel(s) differ from whole-image inference"
        )
        self.owner._set_status(f"Compared {layer.name}: {verdict}.", error=not c.exact)
