"""Overlap-average tiling: the common practice the exact method is compared against.

Overlapping windows of one size slide over the image with a fixed stride, every window's
output is multiplied by a weight map (constant, or a Gaussian that trusts the window's
centre), and each output pixel is the weighted mean of the windows that cover it. This is
MONAI's ``sliding_window_inference`` (and, with small variations, Cellpose and TIAToolbox).
Reina et al. (2020) show that it changes the answer near window edges; Majurski & Bajcsy
(2021) show that ZoR + halo does not. Here it is built to be *fair*: the window positions
and weights follow MONAI's so the two give the same scores (tested to <= 1e-5), and it
streams like the exact mode.

One axis of length ``n``, window ``w``, stride ``s = w - overlap``::

    starts 0, s, 2s, ... while the previous window stops before n; the last start is
    moved back to n - w so no window leaves the image.

Each window has a *final box*: the pixels no later window (in row-major order) covers,
``[start_i, start_{i+1})`` per axis and ``[start_last, n)`` for the last. When window ``i``
has been blended in, its final box holds its final value, so the final boxes are written
once each, as ZoRs are in the exact mode. numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Literal

import numpy as np

from .errors import ArgumentError
from .grid import Tile, _fmt, _tile, pad_to_multiple

__all__ = ["OverlapGrid", "WEIGHTS", "importance_map"]

Weights = Literal["gaussian", "constant"]
WEIGHTS = ("gaussian", "constant")
SIGMA_SCALE = 0.125  # MONAI's default: sigma = 0.125 * window size
MIN_WEIGHT = 1e-3  # MONAI's floor: no weight is 0, so no pixel divides by 0


def importance_map(
    shape: Sequence[int], weights: Weights = "gaussian", sigma_scale: float = SIGMA_SCALE
) -> np.ndarray:
    """Per-pixel weight of a window's output in the overlap average.

    Parameters
    ----------
    shape : sequence of int
        Window shape in pixels.
    weights : {"gaussian", "constant"}
        ``"constant"``: all ones (a plain mean). ``"gaussian"``: the product over axes of
        ``exp(-x**2 / (2 sigma**2))``, ``x`` the distance from the window centre in pixels
        and ``sigma = sigma_scale * size``, floored at ``max(min, 1e-3)`` so no weight is
        0 (MONAI's ``compute_importance_map``).
    sigma_scale : float
        Gaussian width as a fraction of the window size.

    Returns
    -------
    numpy.ndarray of float32, shape ``shape``

    Raises
    ------
    ArgumentError
        For unknown ``weights`` or a non-positive ``sigma_scale``.
    """
    if weights not in WEIGHTS:
        raise ArgumentError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if weights == "constant":
        return np.ones(tuple(shape), dtype=np.float32)
    if not sigma_scale > 0:
        raise ArgumentError(f"sigma_scale must be positive, got {sigma_scale!r}")
    out = np.ones((), dtype=np.float32)
    for n in shape:
        x = np.arange(n, dtype=np.float32) - np.float32((n - 1) / 2.0)
        sigma = np.float32(n * sigma_scale)
        g = np.exp(x**2 / (np.float32(-2.0) * sigma**2)).astype(np.float32)
        out = out[..., None] * g
    return np.maximum(out, max(float(out.min()), MIN_WEIGHT)).astype(np.float32)


def _axis_starts(n: int, window: int, stride: int) -> list[int]:
    """Window starts along one axis: stride apart, the last moved back to end at ``n``."""
    if window >= n:
        return [0]
    starts = []
    k = 0
    while True:
        start = k * stride
        if start + window >= n:
            starts.append(n - window)
            break
        starts.append(start)
        k += 1
    return starts


@dataclass(frozen=True)
class OverlapGrid:
    """Windows of the overlap-average mode over an image, and their final boxes.

    Parameters
    ----------
    shape : tuple of int
        Spatial shape of the image (pixels).
    window : int or tuple of int
        Window size per axis in pixels; a multiple of ``factor``. An axis shorter than
        the window gets one window over the image reflection-padded to a multiple of F.
    overlap : int, float or tuple
        Overlap of neighbouring windows per axis: pixels (int, ``0 <= overlap < window``)
        or a fraction of the window (float in ``[0, 1)``, MONAI's convention:
        ``stride = int(window * (1 - overlap))``).
    factor : int or tuple of int
        F per axis (pixels): the window must be a multiple of it for the model's skips.

    Raises
    ------
    ArgumentError
        For a window that is not a positive multiple of F, or an overlap outside its range.
    """

    shape: tuple[int, ...]
    window: tuple[int, ...]
    stride: tuple[int, ...]
    factor: tuple[int, ...]

    def __init__(
        self,
        shape: Sequence[int],
        window: int | Sequence[int],
        overlap: int | float | Sequence[int | float],
        factor: int | Sequence[int] = 1,
    ) -> None:
        shape_t = tuple(int(s) for s in shape)
        ndim = len(shape_t)

        def per_axis(value, name):  # noqa: ANN001, ANN202
            vals = list(value) if isinstance(value, (Sequence, np.ndarray)) else [value] * ndim
            if len(vals) != ndim:
                raise ArgumentError(f"{name} has {len(vals)} values but the image has {ndim} axes")
            return vals

        factor_t = tuple(int(f) for f in per_axis(factor, "factor"))
        window_t = tuple(int(w) for w in per_axis(window, "window"))
        stride = []
        for ax, (w, f, o) in enumerate(
            zip(window_t, factor_t, per_axis(overlap, "overlap"), strict=True)
        ):
            if w < 1 or w % f:
                raise ArgumentError(
                    f"window {w} on axis {ax} is not a positive multiple of F={f}; use "
                    f"{max(f, math.ceil(w / f) * f)}"
                )
            if isinstance(o, (float, np.floating)):
                if not 0 <= o < 1:
                    raise ArgumentError(
                        f"overlap {o} is a fraction of the window and must lie in [0, 1), e.g. "
                        "0.25 (MONAI's default)"
                    )
                step = int(w * (1 - o))
            elif isinstance(o, (int, np.integer)) and not isinstance(o, bool):
                if not 0 <= o < w:
                    raise ArgumentError(
                        f"overlap {o} px must lie in [0, window) = [0, {w}) on axis {ax}"
                    )
                step = w - int(o)
            else:
                raise ArgumentError(
                    f"overlap must be pixels (int) or a fraction of the window (float), got {o!r}"
                )
            stride.append(max(step, 1))
        object.__setattr__(self, "shape", shape_t)
        object.__setattr__(self, "window", window_t)
        object.__setattr__(self, "stride", tuple(stride))
        object.__setattr__(self, "factor", factor_t)

    @property
    def ndim(self) -> int:
        """Number of spatial axes."""
        return len(self.shape)

    @property
    def extent(self) -> tuple[int, ...]:
        """Per axis: the image size, or the F-padded size where the image is below a window."""
        padded = pad_to_multiple(self.shape, self.factor)
        return tuple(
            p if n < w else n for n, p, w in zip(self.shape, padded, self.window, strict=True)
        )

    @property
    def overlap(self) -> tuple[int, ...]:
        """Overlap of neighbouring windows per axis in pixels (``window - stride``)."""
        return tuple(max(w - s, 0) for w, s in zip(self.window, self.stride, strict=True))

    def starts(self, axis: int) -> list[int]:
        """Window starts along ``axis`` in pixels."""
        n, w = self.extent[axis], min(self.window[axis], self.extent[axis])
        return _axis_starts(n, w, self.stride[axis])

    def boundaries(self, axis: int) -> list[int]:
        """Final-box boundaries along ``axis`` in image pixels, including 0 and the image size.

        Where one window's output stops being the last word: the seams of this mode, as
        :meth:`TileGrid.boundaries <napari_seamless.grid.TileGrid.boundaries>` gives ZoR
        boundaries.
        """
        n = self.shape[axis]
        return sorted({min(a, n) for a in self.starts(axis)} | {n})

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Windows along each axis."""
        return tuple(len(self.starts(ax)) for ax in range(self.ndim))

    def __len__(self) -> int:
        return int(np.prod(self.grid_shape))

    @property
    def overhead(self) -> float:
        """Pixels computed over pixels output: window volume times windows / image volume."""
        computed = np.prod([min(w, e) for w, e in zip(self.window, self.extent, strict=True)])
        return float(computed * len(self) / np.prod(self.shape))

    def _axis_tile(self, axis: int, k: int) -> tuple[slice, slice, slice]:
        """Window ``k`` along ``axis``: its window, final box and the box in the window."""
        starts = self.starts(axis)
        w, n = min(self.window[axis], self.extent[axis]), self.shape[axis]
        a = starts[k]
        stop = starts[k + 1] if k + 1 < len(starts) else n
        box = slice(min(a, n), min(stop, n))
        return slice(a, a + w), box, slice(box.start - a, box.stop - a)

    def tile_at(self, grid_index: Sequence[int]) -> Tile:
        """The window at grid coordinates ``grid_index`` as a :class:`Tile` (``zor``: final box).

        Raises
        ------
        IndexError
            If ``grid_index`` is outside :attr:`grid_shape`.
        """
        gi = tuple(int(k) for k in grid_index)
        shape = self.grid_shape
        if len(gi) != self.ndim or any(not 0 <= k < n for k, n in zip(gi, shape, strict=False)):
            raise IndexError(f"window {gi} outside grid of shape {shape}")
        parts = [self._axis_tile(ax, k) for ax, k in enumerate(gi)]
        return _tile(int(np.ravel_multi_index(gi, shape)), gi, parts)

    def __iter__(self) -> Iterator[Tile]:
        """Windows in row-major order as :class:`Tile`: ``zor`` is the final box."""
        for gi in product(*(range(n) for n in self.grid_shape)):
            yield self.tile_at(gi)

    def __getitem__(self, index: int) -> Tile:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window index {index} out of range for {len(self)} windows")
        return self.tile_at(np.unravel_index(index % len(self), self.grid_shape))

    def describe(self) -> str:
        """One line for people: window, overlap, stride, windows and overhead."""
        fmt = _fmt
        return (
            f"overlap-average: window {fmt(self.window)} px, overlap {fmt(self.overlap)} px "
            f"(stride {fmt(self.stride)}); {len(self)} windows "
            f"({' x '.join(map(str, self.grid_shape))}); overhead {self.overhead:.2f}x"
        )
