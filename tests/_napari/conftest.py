"""Shared fixtures of the viewer tests: a real napari viewer with the dock widget under Xvfb."""

import os
from pathlib import Path

import pytest

from napari_seamless._napari.widget import SeamlessWidget

ARTIFACTS = Path(
    os.environ.get("SEAMLESS_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts")
)


@pytest.fixture
def widget(make_napari_viewer, qtbot):
    """The dock widget in a 1400 x 900 viewer, its default model loaded and analysed."""
    viewer = make_napari_viewer()
    viewer.window.resize(1400, 900)
    w = SeamlessWidget(viewer)
    viewer.window.add_dock_widget(w, name="Exact tiled segmentation", area="right")
    qtbot.waitUntil(lambda: w.predictor is not None, timeout=60_000)
    return w


def layer_names(viewer):
    """Names of the viewer's layers, bottom to top."""
    return [layer.name for layer in viewer.layers]


def level0(layer):
    """Full-resolution data of a layer, plain or multiscale, as numpy."""
    import numpy as np

    return np.asarray(layer.data[0] if layer.multiscale else layer.data)
