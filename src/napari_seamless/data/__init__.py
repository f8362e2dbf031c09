"""Bundled sample data (numpy + tifffile only).

``nuclei2d.tif`` and ``nuclei2d_mask.tif`` come from the stardist 0.9.2 wheel
(``stardist/data/images/``), BSD 3-Clause licence, see ``LICENSE-stardist.txt`` beside them.
The image is from the 2018 Kaggle Data Science Bowl (BBBC038).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

__all__ = ["nuclei", "nuclei_mask", "mosaic", "DATA_DIR"]

DATA_DIR = Path(__file__).parent


def nuclei() -> np.ndarray:
    """Fluorescent nuclei, shape (512, 512) (Y, X), uint16."""
    return tifffile.imread(DATA_DIR / "nuclei2d.tif")


def nuclei_mask() -> np.ndarray:
    """Instance annotation of :func:`nuclei`, shape (512, 512), uint16, 0 = background."""
    return tifffile.imread(DATA_DIR / "nuclei2d_mask.tif")


def _dihedral(block: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th (0-7) rotation/flip of a square block."""
    out = np.rot90(block, k % 4)
    return out[:, ::-1] if k >= 4 else out


def mosaic(size: int = 4096, image: np.ndarray | None = None) -> np.ndarray:
    """A large image made on demand from ``image`` (default :func:`nuclei`).

    The ``(size, size)`` mosaic is tiled with the 8 rotations/flips of the image in a
    fixed pseudo-random order, so it is the same every time and nothing large is stored.

    Parameters
    ----------
    size : int
        Side length in pixels (>= 1).
    image : numpy.ndarray, optional
        Square 2D source image; :func:`nuclei` by default.

    Returns
    -------
    numpy.ndarray, shape (size, size)
        Same dtype as ``image``.
    """
    src = nuclei() if image is None else np.asarray(image)
    if src.ndim != 2 or src.shape[0] != src.shape[1]:
        raise ValueError(f"mosaic needs a square 2D image, got shape {src.shape}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    n = src.shape[0]
    reps = -(-size // n)
    rows = [
        np.concatenate([_dihedral(src, (3 * i + 5 * j + i * j) % 8) for j in range(reps)], axis=1)
        for i in range(reps)
    ]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:size, :size])
