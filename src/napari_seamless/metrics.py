"""Agreement between a tiled result and a reference (numpy only).

RMSE of the softmax scores, misclassification error (ME) and normalised ME (NME) follow
Majurski & Bajcsy (2021), Eqs. 3-5, for one image (the paper averages over K images).
"""

from __future__ import annotations

import numpy as np

__all__ = ["rmse", "misclassification_error", "nme", "max_abs_difference", "dice"]


def rmse(reference: np.ndarray, tiled: np.ndarray) -> float:
    """Root mean squared difference of two score arrays of equal shape (paper Eq. 3)."""
    diff = np.asarray(reference, dtype=np.float64) - np.asarray(tiled, dtype=np.float64)
    return float(np.sqrt(np.mean(diff**2)))


def max_abs_difference(reference: np.ndarray, tiled: np.ndarray) -> float:
    """Largest absolute difference of two arrays of equal shape."""
    return float(np.max(np.abs(np.asarray(reference, np.float64) - np.asarray(tiled, np.float64))))


def misclassification_error(reference: np.ndarray, tiled: np.ndarray) -> int:
    """Number of pixels whose labels differ (paper Eq. 4), labels of shape (*spatial)."""
    return int(np.count_nonzero(np.asarray(reference) != np.asarray(tiled)))


def nme(reference: np.ndarray, tiled: np.ndarray) -> float:
    """Misclassification error divided by the number of pixels (paper Eq. 5)."""
    return misclassification_error(reference, tiled) / np.asarray(reference).size


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient ``2|A & B| / (|A| + |B|)`` of two boolean masks (1.0 if both empty)."""
    a = np.asarray(prediction, dtype=bool)
    b = np.asarray(truth, dtype=bool)
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else float(2 * np.logical_and(a, b).sum() / denom)
