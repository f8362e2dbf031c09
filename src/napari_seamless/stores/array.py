"""The Store protocol and the plain stores: one array, and labels-plus-scores.

A store receives one ZoR block at a time through ``write(zor, block)``. Stores never see
the model or the grid; the engine hands them image-coordinate slices. No torch, no Qt.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Store", "ArrayStore", "LabelsStore"]


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
