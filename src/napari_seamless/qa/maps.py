"""Where a tiled result differs: error maps, distance to the nearest ZoR seam, profiles.

Tiling errors live at the seams: a pixel far inside its ZoR sees the same input as in the
whole image even with a small halo; one next to a seam does not. ``seam_distance`` gives
every pixel's distance to the nearest seam, and ``error_profile`` the mean difference
against that distance (the picture that shows where the errors are). numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ArgumentError

__all__ = ["error_map", "error_profile", "seam_distance"]


def error_map(reference_labels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pixels whose label differs from the reference.

    Parameters
    ----------
    reference_labels, labels : numpy.ndarray, shape (*spatial)
        Integer labels of the reference and of the result.

    Returns
    -------
    numpy.ndarray of uint8, shape (*spatial)
        1 where the labels differ, 0 elsewhere (a napari Labels layer as it is).

    Raises
    ------
    ArgumentError
        If the shapes differ.
    """
    a, b = np.asarray(reference_labels), np.asarray(labels)
    if a.shape != b.shape:
        raise ArgumentError(f"cannot compare labels of shapes {a.shape} and {b.shape}")
    return (a != b).astype(np.uint8)


def _axis_distance(n: int, seams: list[int]) -> np.ndarray:
    """Per pixel of an axis of length ``n``: pixels to the nearest seam.

    A seam at ``b`` lies between pixels ``b - 1`` and ``b``; both are at distance 0.
    """
    i = np.arange(n)
    if not seams:
        return np.full(n, np.iinfo(np.int32).max, dtype=np.int64)
    s = np.asarray(seams)
    # left of a seam: b - 1 - i; right of it: i - b
    d = np.where(i[:, None] >= s[None, :], i[:, None] - s[None, :], s[None, :] - 1 - i[:, None])
    return d.min(axis=1)


def seam_distance(grid: Any) -> np.ndarray:
    """Each pixel's distance (pixels) to the nearest ZoR seam of ``grid``.

    Parameters
    ----------
    grid : TileGrid
        The tile grid of the run (its ZoR boundaries inside the image are the seams).

    Returns
    -------
    numpy.ndarray of int32, shape ``grid.shape`` (spatial)
        The smallest distance over the axes, 0 for the pixels on either side of a seam;
        ``2**31 - 1`` everywhere when the grid has one tile (no seam).
    """
    per_axis = []
    for ax, n in enumerate(grid.shape):
        seams = [b for b in grid.boundaries(ax) if 0 < b < n]
        per_axis.append(_axis_distance(int(n), seams))
    out = per_axis[0]
    for ax, d in enumerate(per_axis[1:], start=1):
        out = np.minimum(out[..., None], d.reshape((1,) * ax + (-1,)))
    return out.astype(np.int32)


def error_profile(
    difference: np.ndarray, distance: np.ndarray, max_distance: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``difference`` against the distance to the nearest seam.

    Parameters
    ----------
    difference : numpy.ndarray, shape (*spatial) or (classes, *spatial)
        Absolute differences (e.g. ``|scores - reference|``); classes are averaged.
    distance : numpy.ndarray, shape (*spatial)
        From :func:`seam_distance`.
    max_distance : int, optional
        Last distance kept (pixels); default the largest finite distance.

    Returns
    -------
    distances : numpy.ndarray of int, shape (k,)
        0, 1, ... up to ``max_distance``, only those with pixels.
    mean : numpy.ndarray of float64, shape (k,)
        Mean difference of the pixels at each distance.

    Raises
    ------
    ArgumentError
        If the spatial shapes differ.
    """
    diff = np.asarray(difference, dtype=np.float64)
    distance = np.asarray(distance)
    if diff.shape != distance.shape:
        if diff.shape[1:] != distance.shape:
            raise ArgumentError(
                f"differences of shape {diff.shape} do not match distances of shape "
                f"{distance.shape}"
            )
        diff = diff.mean(axis=0)
    finite = distance < np.iinfo(np.int32).max
    if max_distance is None:
        max_distance = int(distance[finite].max()) if finite.any() else 0
    keep = finite & (distance <= max_distance)
    d = distance[keep].astype(np.int64)
    counts = np.bincount(d, minlength=max_distance + 1)
    sums = np.bincount(d, weights=diff[keep], minlength=max_distance + 1)
    has = counts > 0
    return np.flatnonzero(has), sums[has] / counts[has]
