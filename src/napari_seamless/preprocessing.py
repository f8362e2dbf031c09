"""Image-statistics preprocessing computed once for the whole image (numpy only).

Tiling stays exact only if every tile sees the same transformation. Percentile
normalisation therefore fits its low/high values on the whole image (or a fixed strided
sample of it, for images too large to read at once) and then applies the same affine
map to every window: ``(x - low) / (high - low)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PercentileNormalization"]


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
            Images with more pixels per channel are sampled on a regular stride along
            the first spatial axis, deterministically, so the fit is the same every run.

        Returns
        -------
        PercentileNormalization
        """
        if not 0 <= pmin < pmax <= 100:
            raise ValueError(f"need 0 <= pmin < pmax <= 100, got pmin={pmin}, pmax={pmax}")
        n = int(np.prod(image.shape[1:]))
        step = max(1, int(np.ceil(n / max_samples)))
        lows, highs = [], []
        for c in range(image.shape[0]):
            sample = np.asarray(image[c][::step] if step > 1 else image[c], dtype=np.float64)
            lo, hi = np.percentile(sample, [pmin, pmax])
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
