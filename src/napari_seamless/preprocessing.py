"""Image-statistics preprocessing computed once for the whole image (numpy only).

Tiling stays exact only if every tile sees the same transformation. Percentile
normalisation therefore fits its low/high values once, on the whole image or, for images
too large to read at once, on a bounded deterministic sample of it (:func:`sample`:
square blocks on a regular lattice over the whole image), and then applies the same
affine map to every window: ``(x - low) / (high - low)``.

Models that declare their own preprocessing (bioimage.io packages) get a
:class:`Preprocessing`: a sequence of steps whose statistics (percentiles, mean, standard
deviation) are fitted ONCE on the whole image by :meth:`Preprocessing.fit`, giving a
:class:`FittedPreprocessing` of fixed per-channel maps that the engine applies to every
window. A statistic computed per tile would change the answer from tile to tile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import SeamlessError

__all__ = [
    "PercentileNormalization",
    "Preprocessing",
    "FittedPreprocessing",
    "ScaleRange",
    "ZeroMeanUnitVariance",
    "Affine",
    "Clip",
    "Binarize",
    "Sigmoid",
    "Cast",
    "describe_steps",
    "sample",
    "whole_image_sample",
]


class NonFiniteInputError(SeamlessError, ValueError):
    """The image holds NaN or infinite values, which would poison the statistics and result."""


def read_local(block: Any, dtype: Any = None) -> np.ndarray:
    """``block`` read into numpy in this process.

    A lazy dask block is computed with the local threaded scheduler: with a
    dask.distributed Client alive, dask would otherwise send the read (and an open file
    handle inside the graph) to the cluster.

    Parameters
    ----------
    block : array-like
        numpy, zarr, memmap or dask.
    dtype : numpy dtype, optional
        Cast to this type.

    Returns
    -------
    numpy.ndarray
    """
    if type(block).__module__.split(".")[0] == "dask":
        block = block.compute(scheduler="threads")
    return np.asarray(block, dtype)


def check_finite(values: np.ndarray, where: str) -> None:
    """Refuse non-finite values (policy: never guess a replacement).

    Parameters
    ----------
    values : numpy.ndarray
        Pixel values (any shape); integer arrays always pass.
    where : str
        Where they come from, for the message (e.g. ``"channel 0"``, ``"the tile at ..."``).

    Raises
    ------
    NonFiniteInputError
        If any value is NaN or +/-inf; the message gives the count and what to do.
    """
    if values.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(values)
    if bad.any():
        raise NonFiniteInputError(
            f"the image holds {int(bad.sum())} non-finite value(s) (NaN or +/-inf) in {where}; "
            "they would poison the normalisation and the result, so the run stops. "
            "Replace or mask them first (e.g. numpy.nan_to_num, or the background value)"
        )


@dataclass(frozen=True)
class PercentileNormalization:
    """Per-channel affine normalisation ``(x - low) / (high - low)``.

    Attributes
    ----------
    low, high : tuple of float
        One value per channel, in image intensity units.
    """

    low: tuple[float, ...]
    high: tuple[float, ...]

    @classmethod
    def fit(
        cls,
        image: np.ndarray,
        pmin: float = 1.0,
        pmax: float = 99.8,
        max_samples: int = 2**24,
    ) -> PercentileNormalization:
        """Fit low/high percentiles per channel on the whole image.

        Parameters
        ----------
        image : array-like, shape (C, *spatial)
            Channel-first image, any numeric dtype; numpy, zarr or dask.
        pmin, pmax : float
            Percentiles (0-100) mapped to 0 and 1.
        max_samples : int
            Images with more pixels per channel are fitted on a bounded, deterministic
            sample of blocks spread over the whole image (:func:`sample`), so the fit
            never reads the whole image and is the same every run.

        Returns
        -------
        PercentileNormalization

        Raises
        ------
        ValueError
            If not ``0 <= pmin < pmax <= 100``.
        NonFiniteInputError
            If the pixels read hold NaN or +/-inf.
        """
        if not 0 <= pmin < pmax <= 100:
            raise ValueError(f"need 0 <= pmin < pmax <= 100, got pmin={pmin}, pmax={pmax}")
        values = sample(image, max_samples)
        lows, highs = [], []
        for c, row in enumerate(values):
            check_finite(row, f"channel {c}")
            lo, hi = np.percentile(row, [pmin, pmax])
            if hi <= lo:
                hi = lo + 1.0
            lows.append(float(lo))
            highs.append(float(hi))
        return cls(tuple(lows), tuple(highs))

    def __call__(self, window: np.ndarray, dtype: type = np.float32) -> np.ndarray:
        """Apply to a channel-first window ``(C, *spatial)``; returns ``dtype``."""
        shape = (-1,) + (1,) * (window.ndim - 1)
        low = np.asarray(self.low, dtype=np.float64).reshape(shape)
        scale = 1.0 / (np.asarray(self.high, dtype=np.float64) - low.ravel()).reshape(shape)
        return ((window.astype(np.float64) - low) * scale).astype(dtype)


#: Side of the sampled blocks by number of spatial axes (2D: 256 x 256, 3D: 64^3).
_BLOCK_SIDE = {1: 2**16, 2: 256, 3: 64}


def sample(image: Any, max_samples: int = 2**24) -> np.ndarray:
    """Pixels to fit statistics on: the whole image, or a fixed sample of blocks of it.

    An image with at most ``max_samples`` pixels per channel is read whole. A larger
    one is sampled as ``K`` blocks (squares of side 256 in 2D, cubes of side 64 in 3D,
    clipped to the image, and smaller if ``max_samples`` is), one centred in each cell
    of a regular lattice laid over the whole image, with as many cells per axis as the
    budget allows in proportion to the image's extent, so that at most
    ``max_samples`` pixels per channel are read. Each block is one read
    ``image[(slice(None), *box)]``, so a chunked, compressed array (zarr, a TIFF
    through tifffile's zarr store, dask) decodes only the chunks under the blocks.

    Why: a strided sample (every k-th row) touches every chunk and so reads the whole
    image; a random sample differs from run to run. This one never reads more than the
    budget, gives the same statistics every run, and depends only on the image's shape,
    not on its chunks or on the tiling of the run, so every tile gets the same map.

    Parameters
    ----------
    image : array-like, shape (C, *spatial)
        Channel-first image of any numeric dtype: numpy, memmap, zarr or dask (anything
        with ``shape`` whose indexing with a tuple of slices gives an array).
    max_samples : int
        Most pixels per channel to read.

    Returns
    -------
    numpy.ndarray, shape (C, n), float64
        Per channel, the pixels read, flattened: the whole image in C order when
        ``n = prod(spatial) <= max_samples``, else the blocks one after another in
        lattice order (``n <= max_samples``).

    Raises
    ------
    ValueError
        If ``max_samples`` is not positive or ``image`` has no channel axis.
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    shape = tuple(int(s) for s in image.shape)
    if len(shape) < 1:
        raise ValueError("sample needs a channel-first image (C, *spatial)")
    channels, spatial = shape[0], shape[1:]
    if int(np.prod(spatial, dtype=np.int64)) <= max_samples:
        whole = read_local(image[(slice(None),) * len(shape)], np.float64)
        return whole.reshape(channels, -1)
    reads = [
        read_local(image[(slice(None), *box)], np.float64).reshape(channels, -1)
        for box in _sample_boxes(spatial, max_samples)
    ]
    return np.concatenate(reads, axis=1)


def _sample_boxes(spatial: tuple[int, ...], max_samples: int) -> list[tuple[slice, ...]]:
    """The blocks :func:`sample` reads: one per lattice cell, centred, not overlapping."""
    d = len(spatial)
    side = _BLOCK_SIDE.get(d, 16)
    while side > 1 and side**d > max_samples:  # a single block must fit the budget
        side = min(side - 1, int(max_samples ** (1 / d)))
    block = [min(side, s) for s in spatial]
    budget = max(1, max_samples // int(np.prod(block)))  # blocks allowed
    room = [max(1, s // b) for s, b in zip(spatial, block, strict=True)]  # cells that fit
    if int(np.prod(room)) <= budget:
        cells = room
    else:  # shrink every axis by the same factor, then fill up what rounding left
        f = (budget / float(np.prod(room))) ** (1 / d)
        cells = [max(1, min(r, int(r * f))) for r in room]
        while int(np.prod(cells)) > budget:
            cells[int(np.argmax(cells))] -= 1
        grown = True
        while grown:
            grown = False
            for i in sorted(range(d), key=lambda i: cells[i] / room[i]):
                if (
                    cells[i] < room[i]
                    and int(np.prod(cells)) // cells[i] * (cells[i] + 1) <= budget
                ):
                    cells[i] += 1
                    grown = True
    starts = []
    for s, b, k in zip(spatial, block, cells, strict=True):
        centres = (np.arange(k) + 0.5) * (s / k)
        starts.append([int(min(max(0, np.floor(c - b / 2)), s - b)) for c in centres])
    return [
        tuple(slice(starts[i][j], starts[i][j] + block[i]) for i, j in enumerate(cell))
        for cell in np.ndindex(*cells)
    ]


def whole_image_sample(image: Any, max_samples: int = 2**24) -> np.ndarray:
    """The pixels statistics are fitted on, float64 ``(C, n)``: same as :func:`sample`.

    Kept for callers of its old name; see :func:`sample` for the blocks read.
    """
    return sample(image, max_samples)


def _shape(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((-1,) + (1,) * (ndim - 1))


@dataclass(frozen=True)
class Affine:
    """Fixed per-channel map ``(x - low) * scale``.

    Attributes
    ----------
    low, scale : tuple of float
        One value per channel, or one for all channels (intensity units).
    """

    low: tuple[float, ...]
    scale: tuple[float, ...]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Apply to a float64 channel-first array ``(C, *spatial)``."""
        return (x - _shape(np.asarray(self.low), x.ndim)) * _shape(np.asarray(self.scale), x.ndim)

    @classmethod
    def gain_offset(cls, gain: Any, offset: Any) -> Affine:
        """``x * gain + offset`` (bioimage.io ``scale_linear``), per channel or scalar."""
        g, o = (
            np.atleast_1d(np.asarray(gain, np.float64)),
            np.atleast_1d(np.asarray(offset, np.float64)),
        )
        g, o = np.broadcast_arrays(g, o)
        if np.any(g == 0):
            raise ValueError("scale_linear with gain 0 maps every pixel to the offset")
        return cls(tuple(map(float, -o / g)), tuple(map(float, g)))


def _stats_axes(x: np.ndarray, per_channel: bool) -> tuple[np.ndarray, ...]:
    """Per-channel rows (or one row for all channels) to compute statistics over."""
    return tuple(x.reshape(x.shape[0], -1)) if per_channel else (x.ravel(),)


@dataclass(frozen=True)
class ScaleRange:
    """Percentile scaling ``(x - p_low) / (p_high - p_low + eps)`` (bioimage.io ``scale_range``).

    Attributes
    ----------
    pmin, pmax : float
        Percentiles (0-100) mapped to 0 and (nearly) 1.
    eps : float
        Added to the denominator.
    per_channel : bool
        Percentiles per channel (True) or jointly over all channels.
    """

    pmin: float = 1.0
    pmax: float = 99.8
    eps: float = 1e-6
    per_channel: bool = True

    def fit(self, x: np.ndarray) -> Affine:
        """Fit the percentiles on the whole image ``x`` (float64 ``(C, *spatial)``)."""
        rows = _stats_axes(x, self.per_channel)
        lo, hi = zip(*(np.percentile(r, [self.pmin, self.pmax]) for r in rows), strict=True)
        lo_a, hi_a = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
        return Affine(tuple(map(float, lo_a)), tuple(map(float, 1.0 / (hi_a - lo_a + self.eps))))


@dataclass(frozen=True)
class ZeroMeanUnitVariance:
    """``(x - mean) / (std + eps)`` with mean and std of the whole image.

    Attributes
    ----------
    eps : float
        Added to the standard deviation.
    per_channel : bool
        Statistics per channel (True) or jointly over all channels.
    """

    eps: float = 1e-6
    per_channel: bool = True

    def fit(self, x: np.ndarray) -> Affine:
        """Fit mean and standard deviation on the whole image ``x``."""
        rows = _stats_axes(x, self.per_channel)
        mean = np.asarray([r.mean() for r in rows])
        std = np.asarray([r.std() for r in rows])
        return Affine(tuple(map(float, mean)), tuple(map(float, 1.0 / (std + self.eps))))


@dataclass(frozen=True)
class Clip:
    """Clip to ``[low, high]``, given or as percentiles of the whole image.

    Attributes
    ----------
    low, high : float or None
        Fixed bounds (None: no bound, unless a percentile is given).
    pmin, pmax : float or None
        Percentiles (0-100) of the image at this step used as bounds.
    per_channel : bool
        Percentiles per channel or jointly.
    """

    low: float | tuple[float, ...] | None = None
    high: float | tuple[float, ...] | None = None
    pmin: float | None = None
    pmax: float | None = None
    per_channel: bool = True

    def fit(self, x: np.ndarray) -> Clip:
        """Replace percentiles by their values on the whole image (fixed bounds)."""
        if self.pmin is None and self.pmax is None:
            return self
        rows = _stats_axes(x, self.per_channel)
        low, high = self.low, self.high
        if self.pmin is not None:
            low = tuple(float(np.percentile(r, self.pmin)) for r in rows)
        if self.pmax is not None:
            high = tuple(float(np.percentile(r, self.pmax)) for r in rows)
        return Clip(low, high, None, None, self.per_channel)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Apply the fixed bounds to a float64 ``(C, *spatial)`` array."""
        lo = (
            None
            if self.low is None
            else _shape(np.atleast_1d(np.asarray(self.low, np.float64)), x.ndim)
        )
        hi = (
            None
            if self.high is None
            else _shape(np.atleast_1d(np.asarray(self.high, np.float64)), x.ndim)
        )
        return np.clip(x, lo, hi)


@dataclass(frozen=True)
class Binarize:
    """``x > threshold`` as 0.0 / 1.0, one threshold per channel or for all.

    Attributes
    ----------
    threshold : tuple of float
    """

    threshold: tuple[float, ...]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Apply to a float64 ``(C, *spatial)`` array."""
        return (x > _shape(np.asarray(self.threshold, np.float64), x.ndim)).astype(np.float64)


@dataclass(frozen=True)
class Sigmoid:
    """The logistic function, per pixel."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Apply to a float64 array."""
        return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Cast:
    """Cast to an integer dtype (float dtypes are kept at float64 until the end).

    Attributes
    ----------
    dtype : str
        numpy dtype name, e.g. ``"uint8"``.
    """

    dtype: str

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Cast (with numpy's truncation) and return float64 again."""
        if np.dtype(self.dtype).kind == "f":
            return x
        return x.astype(self.dtype).astype(np.float64)


@dataclass(frozen=True)
class FittedPreprocessing:
    """Fixed per-channel maps applied to every window; the same for every tile.

    Attributes
    ----------
    steps : tuple
        Fitted steps (:class:`Affine`, :class:`Clip`, :class:`Binarize`, ...), in order.
    """

    steps: tuple[Any, ...]

    def __call__(self, window: np.ndarray, dtype: type = np.float32) -> np.ndarray:
        """Apply to a channel-first window ``(C, *spatial)``; compute in float64, return ``dtype``."""
        x = np.asarray(window, np.float64)
        for step in self.steps:
            x = step(x)
        return x.astype(dtype)


@dataclass(frozen=True)
class Preprocessing:
    """Declared preprocessing: steps whose statistics are fitted once on the whole image.

    Attributes
    ----------
    steps : tuple
        :class:`ScaleRange`, :class:`ZeroMeanUnitVariance`, :class:`Clip` (with
        percentiles) have a ``fit``; :class:`Affine`, :class:`Binarize`,
        :class:`Sigmoid`, :class:`Cast` are fixed.
    description : str
        For people, e.g. ``"scale_range 1-99.8 % per channel"``.

    Examples
    --------
    >>> import numpy as np
    >>> pre = Preprocessing((ScaleRange(1.0, 99.8),))
    >>> image = np.arange(100.0).reshape(1, 10, 10)
    >>> fitted = pre.fit(image)           # percentiles of the whole image, once
    >>> fitted(image[:, :2, :2]).shape    # then the same map for every window
    (1, 2, 2)
    """

    steps: tuple[Any, ...]
    description: str = ""

    def fit(self, image: Any, max_samples: int = 2**24) -> FittedPreprocessing:
        """Fit every statistic on the whole image, in order (each on the previous output).

        Parameters
        ----------
        image : array-like, shape (C, *spatial)
            Channel-first image, numpy, zarr or dask; see :func:`sample`.
        max_samples : int
            Pixels per channel above which a fixed sample of blocks is used.

        Returns
        -------
        FittedPreprocessing
        """
        x = sample(image, max_samples)
        check_finite(np.asarray(x), "the image")
        fitted = []
        for step in self.steps:
            f = step.fit(x) if hasattr(step, "fit") else step
            x = f(x)
            fitted.append(f)
        return FittedPreprocessing(tuple(fitted))

    def __bool__(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self.steps)


def describe_steps(steps: Sequence[Any]) -> str:
    """Short text of a sequence of steps, e.g. for the widget's status line."""
    names = []
    for s in steps:
        if isinstance(s, ScaleRange):
            names.append(
                f"scale_range {s.pmin:g}-{s.pmax:g} % "
                + ("per channel" if s.per_channel else "joint")
            )
        elif isinstance(s, ZeroMeanUnitVariance):
            names.append("zero_mean_unit_variance")
        else:
            names.append(type(s).__name__.lower())
    return ", ".join(names) or "none"
