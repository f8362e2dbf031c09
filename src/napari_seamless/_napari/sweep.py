"""The halo sweep dock: RMSE, ME and runtime at each halo, and where the errors live.

For halos 0, F, 2F, ... past the computed one, the image is run tiled and compared with
whole-image inference (:func:`~napari_seamless.qa.halo_sweep`, the paper's Tables 1 and 3),
one halo per worker step, and the figures of :mod:`napari_seamless.qa.plots` are redrawn in
the dock as the rows arrive: the sweep (log axes, the computed halo marked) and the error
profile against the distance to the nearest ZoR seam. The dock only wires signals.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import Container, Label, LineEdit, PushButton
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.qt.threading import create_worker
from qtpy.QtWidgets import QTabWidget, QVBoxLayout, QWidget

from ..errors import SeamlessError

if TYPE_CHECKING:
    from .widget import SeamlessWidget


def _sweep_steps(
    predictor: Any,
    data: Any,
    tile: int,
    halos: list[int],
    axes: str | None,
    normalization: Any,
):
    """Worker-thread generator: the reference once, then one SweepRow per halo."""
    from ..engine import predict
    from ..qa import halo_sweep

    t0 = time.perf_counter()
    ref = predict(predictor, data, None, axes=axes, normalization=normalization)
    seconds = time.perf_counter() - t0
    for h in halos:
        (row,) = halo_sweep(
            predictor,
            data,
            tile,
            [h],
            reference=ref,
            reference_seconds=seconds,
            axes=axes,
            normalization=normalization,
        )
        yield row


class SweepDock(QWidget):
    """Halo sweep of the main widget's image, model and tile, drawn as the rows arrive.

    Parameters
    ----------
    owner : SeamlessWidget
        Gives the image layer, the model (its computed halo and F), the tile and the
        memory budget.
    """

    def __init__(self, owner: SeamlessWidget) -> None:
        super().__init__()
        self.owner = owner
        self.rows: list[Any] = []
        self.worker: Any = None
        self.exact_halo: int | None = None
        self.title = ""
        self.halos = LineEdit(label="halos (px)", value="")
        self.run_button = PushButton(text="Run sweep")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(label="status", value="")
        self.status.native.setWordWrap(True)
        self.container = Container(
            widgets=[self.halos, self.run_button, self.cancel_button, self.status]
        )
        self.sweep_figure = Figure(figsize=(6.4, 7.4))
        self.profile_figure = Figure(figsize=(6.4, 4.2))
        self.sweep_canvas = FigureCanvasQTAgg(self.sweep_figure)
        self.profile_canvas = FigureCanvasQTAgg(self.profile_figure)
        self.sweep_canvas.setMinimumHeight(520)
        self.profile_canvas.setMinimumHeight(360)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.sweep_canvas, "halo sweep")
        self.tabs.addTab(self.profile_canvas, "error profile")
        layout = QVBoxLayout()
        layout.addWidget(self.container.native)
        layout.addWidget(self.tabs, 1)
        self.setLayout(layout)
        self.setMinimumWidth(420)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.reset_halos()

    def reset_halos(self) -> None:
        """Default halos: 0 to one F past the computed halo, in steps of F."""
        pred = self.owner.predictor
        if pred is not None:
            exact, f = pred.halo[0], pred.factor[0]
            self.halos.value = f"0:{exact + f}:{f}"

    def _set_status(self, text: str, error: bool = False) -> None:
        self.status.value = text
        self.status.native.setStyleSheet("color: #ff7070;" if error else "")

    def run(self, _value: Any = None) -> None:
        """Check the halos, then run the sweep in a worker thread (a message on bad input)."""
        from ..grid import TileGrid
        from ..qa import reference_bytes
        from ..qa.sweep import parse_range

        owner = self.owner
        if self.worker is not None:
            return
        if owner.worker is not None:
            self._set_status("Wait for the run in progress to finish.", error=True)
            return
        pred, image = owner.predictor, owner.image.value
        problem, _ = owner._validate()
        if problem is not None or pred is None:
            self._set_status(problem or "Waiting for the model...", error=True)
            return
        tile = int(owner.tile.value)
        data = image.data[0] if image.multiscale else image.data
        spatial = tuple(data.shape[:2] if image.rgb else data.shape[-pred.ndim :])
        try:
            halos = parse_range(self.halos.value, "halos")
            for h in halos:
                TileGrid(spatial, tile, h, pred.factor)  # a multiple of F, leaving a ZoR
        except SeamlessError as err:
            self._set_status(f"{err}.", error=True)
            return
        need, budget = reference_bytes(pred, spatial), owner.compare.budget()
        if need > budget:
            self._set_status(
                f"The whole-image reference needs about {need / 2**30:.1f} GiB, over the memory "
                f"budget of {budget / 2**30:.1f} GiB: sweep a crop of the image (add it as a "
                "layer) or raise the budget.",
                error=True,
            )
            return
        self.rows = []
        self.exact_halo = pred.halo[0]
        self.title = f"{image.name}, model {owner.model_name}, tile {tile} px"
        self._redraw()
        self._set_status(f"Sweeping {len(halos)} halos (reference first)...")
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        worker = create_worker(
            _sweep_steps,
            pred,
            data,
            tile,
            halos,
            "YXC" if image.rgb else None,
            owner.loaded.normalization if owner.loaded is not None else "percentile",
            _start_thread=False,
            _ignore_errors=True,
        )
        worker.yielded.connect(self._on_row)
        worker.errored.connect(lambda err: self._set_status(f"Sweep failed: {err}.", error=True))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        worker.start()

    def cancel(self, _value: Any = None) -> None:
        """Stop after the halo in progress; the rows so far stay drawn."""
        if self.worker is not None:
            self.worker.quit()

    def _on_row(self, row: Any) -> None:
        self.rows.append(row)
        c = row.comparison
        self._set_status(
            f"halo {row.halo}: RMSE {c.rmse:.3g}, ME {c.me}, runtime "
            f"{row.relative_runtime:.2f}x ({len(self.rows)} done)"
        )
        self._redraw()

    def _redraw(self) -> None:
        from ..qa.plots import profile_figure, sweep_figure

        sweep_figure(self.rows, self.exact_halo, figure=self.sweep_figure, title=self.title)
        profile_figure(
            self.rows, figure=self.profile_figure, exact_halo=self.exact_halo, title=self.title
        )
        self.sweep_canvas.draw_idle()
        self.profile_canvas.draw_idle()

    def _on_finished(self) -> None:
        self.worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        if self.status.value.startswith("Sweep failed"):
            return
        exact = [r for r in self.rows if r.comparison.exact]
        first = min((r.halo for r in exact), default=None)
        verdict = (
            f"exact (ME 0, max |diff| <= 1e-5) from halo {first} px"
            if first is not None
            else "no halo was exact"
        )
        self._set_status(
            f"{len(self.rows)} halos done: {verdict}; computed halo {self.exact_halo} px."
        )

    def rows_table(self) -> np.ndarray:
        """``(halo, RMSE, ME, relative runtime)`` per row, for tests and copying out."""
        return np.array(
            [(r.halo, r.comparison.rmse, r.comparison.me, r.relative_runtime) for r in self.rows]
        )
