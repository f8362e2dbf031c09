"""Agreement between a tiled result and a reference (numpy only).

RMSE of the softmax scores, misclassification error (ME) and normalised ME (NME) follow
Majurski & Bajcsy (2021), Eqs. 3-5, for one image (the paper averages over K images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ArgumentError

__all__ = [
    "Comparison",
    "compare",
    "rmse",
    "misclassification_error",
    "nme",
    "max_abs_difference",
    "dice",
]


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


@dataclass(frozen=True)
class Comparison:
    """How a result agrees with its reference (one image).

    Attributes
    ----------
    rmse : float
        Root mean squared difference of the scores (paper Eq. 3).
    me : int
        Pixels whose label differs (paper Eq. 4).
    nme : float
        ``me`` over the number of pixels (paper Eq. 5).
    max_abs : float
        Largest absolute score difference.
    pixels : int
        Pixels compared (spatial).
    """

    rmse: float
    me: int
    nme: float
    max_abs: float
    pixels: int

    @property
    def exact(self) -> bool:
        """Labels identical and scores equal to float32 rounding (max difference <= 1e-5)."""
        return self.me == 0 and self.max_abs <= 1e-5

    def describe(self) -> str:
        """One line: ``RMSE 3.1e-08, ME 0 (NME 0), max |diff| 1.2e-07: exact``."""
        verdict = "exact" if self.exact else "differs from the reference"
        return (
            f"RMSE {self.rmse:.3g}, ME {self.me} (NME {self.nme:.3g}), max |diff| "
            f"{self.max_abs:.3g}: {verdict}"
        )


def compare(
    reference: np.ndarray,
    result: np.ndarray,
    reference_labels: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> Comparison:
    """Paper metrics of ``result`` against ``reference`` (Eqs. 3-5).

    Parameters
    ----------
    reference, result : numpy.ndarray, shape (classes, *spatial)
        Scores (probabilities) of the reference and of the result, any float dtype.
    reference_labels, labels : numpy.ndarray, shape (*spatial), optional
        Labels; default the argmax over classes (the softmax convention).

    Returns
    -------
    Comparison

    Raises
    ------
    ArgumentError
        If the shapes differ.
    """
    reference, result = np.asarray(reference), np.asarray(result)
    if reference.shape != result.shape or reference.ndim < 2:
        raise ArgumentError(
            f"cannot compare scores of shapes {reference.shape} and {result.shape}: both must "
            "be (classes, *spatial) of one image"
        )
    ref_l = reference.argmax(0) if reference_labels is None else np.asarray(reference_labels)
    res_l = result.argmax(0) if labels is None else np.asarray(labels)
    if ref_l.shape != reference.shape[1:] or res_l.shape != reference.shape[1:]:
        raise ArgumentError(
            f"labels of shapes {ref_l.shape} and {res_l.shape} do not match the spatial shape "
            f"{reference.shape[1:]} of the scores"
        )
    me = misclassification_error(ref_l, res_l)
    return Comparison(
        rmse=rmse(reference, result),
        me=me,
        nme=me / ref_l.size,
        max_abs=max_abs_difference(reference, result),
        pixels=int(ref_l.size),
    )
