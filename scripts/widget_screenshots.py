"""Screenshots of the dock widget in each state, for the docs (run under a display).

    xvfb-run -a python scripts/widget_screenshots.py [--out docs/images]

Writes ``widget_ready.png``, ``widget_running.png``, ``widget_cancelled.png``,
``widget_error.png``, ``widget_stack.png`` (a Z-stack, 2D model per plane) and
``widget_3d.png`` (a volume, 3D model). Each is the whole napari window, as a person sees
it. Needs ../shared/data/nuclei3d.tif for the two stack pictures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _wait(app, until, timeout=300.0):
    t0 = time.perf_counter()
    while not until():
        app.processEvents()
        time.sleep(0.02)
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("the widget did not reach the state in time")
    for _ in range(20):  # let the canvas draw
        app.processEvents()
        time.sleep(0.02)


def main() -> None:
    """Open napari with the widget, drive it through its states, save the pictures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import napari
    import tifffile
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_seamless._napari.widget import FROM_FILE, SeamlessWidget
    from napari_seamless.models.architectures import unet

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    app = QApplication.instance()
    w = SeamlessWidget(viewer)
    viewer.window.add_dock_widget(w, name="Exact tiled segmentation", area="right")
    _wait(app, lambda: w.predictor is not None)

    def shot(name: str) -> None:
        from PIL import Image

        path = args.out / f"widget_{name}.png"
        rgba = viewer.screenshot(canvas_only=False, flash=False)
        # 256 colours are plenty for a UI picture and keep the docs small
        Image.fromarray(rgba[..., :3]).quantize(256).save(path, optimize=True)
        print("wrote", path)

    viewer.open_sample("napari-seamless", "mosaic")
    w.tile.value = 512
    _wait(app, lambda: w.run_button.enabled)
    shot("ready")

    w.run()  # 169 tiles: a run to watch, tiles in view first
    _wait(app, lambda: w.progress.value >= 40)
    shot("running")
    w.cancel()
    _wait(app, lambda: w.worker is None)
    shot("cancelled")

    bad = Path(tempfile.mkdtemp()) / "broken.pt"
    bad.write_bytes(b"not a model")
    w.model.value = FROM_FILE
    w.model_file.value = bad
    _wait(app, lambda: "Could not load model" in w.status.value)
    shot("error")

    viewer.layers.clear()
    vol = tifffile.imread(SHARED / "nuclei3d.tif")  # (Z, Y, X) = (31, 61, 57), real nuclei
    w.model.value = "nuclei"
    _wait(app, lambda: w.predictor is not None)
    viewer.add_image(vol, name="nuclei3d")
    w.tile.value = 208
    viewer.dims.set_current_step(0, 15)
    w.run()
    _wait(app, lambda: w.worker is None)
    viewer.scene.camera.zoom = 8.0 if hasattr(viewer, "scene") else 8.0
    viewer.reset_view()
    _wait(app, lambda: True)
    shot("stack")

    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp()) / "unet3d.pt"
    torch.jit.script(unet(in_channels=1, classes=2, ndim=3, width=4, depth=2).eval()).save(path)
    w.model.value = FROM_FILE
    w.model_file.value = path
    _wait(app, lambda: w.model_name == str(path))
    w.tile.value = 64
    w.run()
    _wait(app, lambda: w.worker is None)
    shot("3d")
    viewer.close()


if __name__ == "__main__":
    main()
