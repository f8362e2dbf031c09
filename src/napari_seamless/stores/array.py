"""Where tiled results go: plain arrays (numpy, zarr) and multiscale label pyramids.

A store receives one ZoR block at a time through :meth:`write`. Stores never see the
model or the grid; the engine hands them image-coordinate slices. No torch, no Qt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Store", "ArrayStore", "LabelsStore", "PyramidStore", "pyramid_shapes"]


@runtime_checkable
class Store(Protocol):
    """Anything that can receive ZoR blocks.

    ``write(zor, block)`` stores ``block`` (shape ``(..., *zor_shape)``; leading axes such
    as classes are written whole) at the spatial slices ``zor`` (image pixels).
    """

    def write(self, zor: tuple[slice, ...], block: np.ndarray) -> None:
        """Store ``block`` at spatial slices ``zor``."""


class ArrayStore:
    """Write ZoR blocks into one array-like (numpy array, zarr array, memmap).

    Parameters
    ----------
    array : array-like
        Output of shape ``(..., *spatial)``; must support ``__setitem__`` with slices.
    """

    def __init__(self, array: Any) -> None:
        self.array = array

    def write(self, zor: tuple[slice, ...], block: np.ndarray) -> None:
        """Store ``block`` at ``array[..., *zor]``."""
        self.array[(Ellipsis, *zor)] = block


def pyramid_shapes(shape: Sequence[int], min_size: int = 256) -> list[tuple[int, ...]]:
    """Shapes of a 2x-per-level pyramid of ``shape`` down to about ``min_size`` pixels.

    Level ``k`` has shape ``ceil(shape / 2**k)`` and holds pixel ``j * 2**k`` of level 0
    (nearest-neighbour decimation, right for labels).
    """
    shapes = [tuple(int(s) for s in shape)]
    while max(shapes[-1]) > min_size:
        k = len(shapes)
        shapes.append(tuple(int(math.ceil(s / 2**k)) for s in shape))
    return shapes


class PyramidStore:
    """Write ZoR blocks into every level of a multiscale pyramid (labels).

    Level ``k`` keeps every ``2**k``-th pixel of level 0, so each ZoR is written into all
    levels as it arrives and a multiscale napari layer fills at every zoom.

    Parameters
    ----------
    levels : list of array-like
        Level ``k`` has spatial shape ``ceil(shape / 2**k)``; numpy or zarr arrays.
    """

    def __init__(self, levels: Sequence[Any]) -> None:
        if not levels:
            raise ValueError("a pyramid needs at least one level")
        self.levels = list(levels)

    @classmethod
    def zeros(
        cls, shape: Sequence[int], dtype: Any = np.uint8, min_size: int = 256
    ) -> PyramidStore:
        """Allocate a numpy pyramid of zeros for spatial ``shape`` (pixels)."""
        return cls([np.zeros(s, dtype=dtype) for s in pyramid_shapes(shape, min_size)])

    def write(self, zor: tuple[slice, ...], block: np.ndarray) -> None:
        """Store ``block`` (spatial shape of ``zor``) into every level."""
        for k, level in enumerate(self.levels):
            step = 2**k
            dst, src = [], []
            for sl in zor:
                j0 = -(-sl.start // step)  # ceil
                j1 = -(-sl.stop // step)
                dst.append(slice(j0, j1))
                src.append(slice(j0 * step - sl.start, None, step))
            if all(d.stop > d.start for d in dst):
                level[tuple(dst)] = block[tuple(src)]


class LabelsStore:
    """Turn score blocks into labels for one store, and keep the scores too if asked.

    A run writes probabilities ``(classes, *zor_shape)``; this store writes
    ``rule(block)`` (labels, ``(*zor_shape)``) into ``labels`` and, when ``scores`` is
    given, the block itself into ``scores[..., *zor]``, so a viewer shows labels while
    seam QA later compares the scores (paper Eq. 3 needs them).

    Parameters
    ----------
    labels : Store
        Receives the labels (e.g. a :class:`PyramidStore`).
    rule : callable
        ``(classes, *zor_shape)`` scores -> ``(*zor_shape)`` integer labels (e.g.
        :meth:`~napari_seamless.engine.Predictor.labels`).
    scores : array-like, shape (classes, *spatial), optional
        Where the scores are kept (float32).
    """

    def __init__(self, labels: Store, rule: Any, scores: Any = None) -> None:
        self.labels, self.rule, self.scores = labels, rule, scores

    def write(self, zor: tuple[slice, ...], block: np.ndarray) -> None:
        """Write ``rule(block)`` to the labels store and ``block`` to the scores."""
        if self.scores is not None:
            self.scores[(Ellipsis, *zor)] = block
        self.labels.write(zor, self.rule(block))
