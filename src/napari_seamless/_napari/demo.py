"""``seamless demo``: napari on the mosaic, the widget docked, the default model running."""

from __future__ import annotations

from pathlib import Path


def run_demo(
    size: int = 4096, tile: int = 1024, model: str = "nuclei", screenshot: str | None = None
) -> int:
    """Open napari on a ``size`` x ``size`` nuclei mosaic and run the widget.

    Parameters
    ----------
    size : int
        Mosaic side in pixels.
    tile : int
        Tile (window) size in pixels.
    model : str
        Built-in model name or model file.
    screenshot : str, optional
        When given, save a screenshot of the whole window to this PNG once the run has
        finished, then close napari.

    Returns
    -------
    int
        Exit status (0 on success).
    """
    import napari
    from qtpy.QtCore import QTimer

    from .. import data
    from .widget import MODEL_CHOICES, SeamlessWidget

    viewer = napari.Viewer(title="napari-seamless demo")
    viewer.window.resize(1500, 950)
    viewer.add_image(data.mosaic(size), name="nuclei mosaic", colormap="gray")
    widget = SeamlessWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Exact tiled segmentation", area="right")
    if model in [value for _, value in MODEL_CHOICES]:
        widget.model.value = model
    else:
        widget.model.value = "from file..."
        widget.model_file.value = model
    status = {"code": 0}

    def shoot() -> None:
        path = Path(screenshot).expanduser().resolve()
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        print(f"seamless: screenshot saved to {path}")
        viewer.close()

    def start() -> None:
        if widget.predictor is None:
            QTimer.singleShot(100, start)
            return
        widget.tile.value = tile
        widget.run()
        if widget.worker is None:
            print(f"seamless: could not start: {widget.status.value}")
            status["code"] = 1
            if screenshot:
                shoot()
            return
        if screenshot:
            widget.worker.finished.connect(lambda: QTimer.singleShot(500, shoot))

    QTimer.singleShot(0, start)
    napari.run()
    return status["code"]
