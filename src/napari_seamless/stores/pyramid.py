"""Multiscale pyramids written tile by tile: level ``k`` keeps every ``2**k``-th pixel.

No torch, no Qt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ArgumentError

__all__ = ["PyramidStore", "level_slices", "pyramid_shapes"]


def pyramid_shapes(shape: Sequence[int], min_size: int = 256) -> list[tuple[int, ...]]:
    """Shapes of a 2x-per-level pyramid of ``shape`` down to about ``min_size`` pixels.

    Level ``k`` has shape ``ceil(shape / 2**k)`` and holds pixel ``j * 2**k`` of level 0
    (nearest-neighbour decimation, right for labels).

    Parameters
    ----------
    shape : sequence of int
        Spatial shape of level 0 in pixels (``(Y, X)`` or ``(Z, Y, X)``).
    min_size : int
        Levels are added while the largest axis of the last one exceeds this many pixels.

    Returns
    -------
    list of tuple of int
        One spatial shape per level, level 0 first.

    Examples
    --------
    >>> pyramid_shapes((1000, 1373))
    [(1000, 1373), (500, 687), (250, 344), (125, 172)]
    """
    shapes = [tuple(int(s) for s in shape)]
    while max(shapes[-1]) > min_size:
        k = len(shapes)
        shapes.append(tuple(int(math.ceil(s / 2**k)) for s in shape))
    return shapes


def level_slices(
    zor: Sequence[slice], k: int
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Where a ZoR lands in pyramid level ``k``, and which of its pixels go there.

    Parameters
    ----------
    zor : sequence of slice
        Spatial slices of the block in level-0 pixels (integer ``start`` and ``stop``).
    k : int
        Pyramid level; it keeps level-0 pixels ``j * 2**k``.

    Returns
    -------
    tuple of (dst, src) or None
        ``level[(..., *dst)] = block[(..., *src)]`` writes the block's share of level ``k``;
        ``None`` when the ZoR holds no pixel of that level.
    """
    step = 2**k
    dst, src = [], []
    for sl in zor:
        j0 = -(-sl.start // step)  # ceil
        j1 = -(-sl.stop // step)
        if j1 <= j0:
            return None
        dst.append(slice(j0, j1))
        src.append(slice(j0 * step - sl.start, None, step))
    return tuple(dst), tuple(src)


class PyramidStore:
    """Write ZoR blocks into every level of a multiscale pyramid.

    Level ``k`` keeps every ``2**k``-th pixel of level 0 (nearest decimation, right for
    labels and exact for any block), so each ZoR is written into all levels as it arrives
    and a multiscale napari layer fills at every zoom.

    Parameters
    ----------
    levels : sequence of array-like
        Level ``k`` has shape ``(*lead, *ceil(shape / 2**k))``: optional leading axes
        (e.g. classes ``C``) kept whole, then the spatial axes; numpy or zarr arrays, any
        dtype the blocks cast to.

    Raises
    ------
    ArgumentError
        If ``levels`` is empty (a :class:`ValueError` too).
    """

    def __init__(self, levels: Sequence[Any]) -> None:
        if not levels:
            raise ArgumentError("a pyramid needs at least one level")
        self.levels = list(levels)

    @classmethod
    def zeros(
        cls,
        shape: Sequence[int],
        dtype: Any = np.uint8,
        min_size: int = 256,
        *,
        lead: Sequence[int] = (),
    ) -> PyramidStore:
        """Allocate a numpy pyramid of zeros.

        Parameters
        ----------
        shape : sequence of int
            Spatial shape of level 0 in pixels.
        dtype : numpy dtype
            Element type of every level.
        min_size : int
            See :func:`pyramid_shapes`.
        lead : sequence of int
            Leading axes kept whole at every level, e.g. ``(C,)`` for probabilities.

        Returns
        -------
        PyramidStore
            Levels of shape ``(*lead, *pyramid_shapes(shape, min_size)[k])``.
        """
        lead = tuple(int(n) for n in lead)
        return cls([np.zeros(lead + s, dtype=dtype) for s in pyramid_shapes(shape, min_size)])

    def write(self, zor: tuple[slice, ...], block: np.ndarray) -> None:
        """Store ``block`` into every level.

        Parameters
        ----------
        zor : tuple of slice
            Spatial slices of the block in level-0 pixels.
        block : numpy.ndarray
            Shape ``(*lead, *zor_shape)``; leading axes (classes) are written whole.
        """
        for k, level in enumerate(self.levels):
            where = level_slices(zor, k)
            if where is not None:
                dst, src = where
                level[(Ellipsis, *dst)] = block[(Ellipsis, *src)]

    def fill_coarse(self, zors: Sequence[tuple[slice, ...]]) -> None:
        """Write the share of every level above 0 of ZoRs already written into level 0.

        For ZoRs that another process wrote into level 0 only (a cluster's workers): the
        coarse levels share chunks between ZoRs, so one writer fills them afterwards.

        Parameters
        ----------
        zors : sequence of tuple of slice
            Spatial slices in level-0 pixels, each read back from level 0.
        """
        for zor in zors:
            block = None
            for k in range(1, len(self.levels)):
                where = level_slices(zor, k)
                if where is None:
                    continue
                if block is None:
                    block = np.asarray(self.levels[0][(Ellipsis, *zor)])
                dst, src = where
                self.levels[k][(Ellipsis, *dst)] = block[(Ellipsis, *src)]
