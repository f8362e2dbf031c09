"""napari sample-data contributions (see ``napari.yaml``)."""

from __future__ import annotations

from typing import Any

from .. import data


def nuclei() -> list[tuple[Any, dict, str]]:
    """The real 512 x 512 fluorescent nuclei image (stardist / BBBC038, BSD-3)."""
    return [(data.nuclei(), {"name": "nuclei", "colormap": "gray"}, "image")]


def mosaic() -> list[tuple[Any, dict, str]]:
    """A 4096 x 4096 mosaic of the nuclei image, made on demand by flips and rotations."""
    return [(data.mosaic(4096), {"name": "nuclei mosaic", "colormap": "gray"}, "image")]
