"""Agreement between a tiled result and a reference (numpy only).

RMSE of the softmax scores, misclassification error (ME) and normalised ME (NME) follow
Majurski & Bajcsy (2021), Eqs. 3-5, for one image (the paper averages over K images).
For instance labels: :func:`same_partition` (the same objects, however numbered) and
:func:`match_f1` (matched-object precision, recall and F1 at an IoU threshold).
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
    "match_f1",
    "same_partition",
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


def _label_table(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(a, b)`` of nonzero labels that share pixels, and how many pixels each."""
    both = (a != 0) & (b != 0)
    pairs, counts = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
    return pairs[0], pairs[1], counts


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two label images are the same objects, however numbered.

    True when the background (label 0) is the same pixels in both and the nonzero labels
    correspond one to one: every object of ``a`` is exactly one object of ``b``.

    Parameters
    ----------
    a, b : numpy.ndarray of int, same shape (any number of axes)
        Label images, 0 = background, any nonzero values (not necessarily consecutive).

    Returns
    -------
    bool

    Raises
    ------
    ArgumentError
        If the shapes differ.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ArgumentError(f"cannot compare label images of shapes {a.shape} and {b.shape}")
    if not np.array_equal(a == 0, b == 0):
        return False
    left, right, _ = _label_table(a, b)
    # a bijection: as many distinct pairs as distinct labels on either side
    return left.size == np.unique(left).size == np.unique(right).size


def match_f1(pred: np.ndarray, truth: np.ndarray, iou: float = 0.5) -> dict[str, float]:
    """Matched-object precision, recall and F1 of instance labels against a ground truth.

    A predicted object and a true object match when their intersection over union
    (pixels) is at least ``iou``; each object matches at most once, pairs taken by
    decreasing IoU (ties: lower labels first). Above 0.5 an object can overlap only one
    other by more than half of their union, so the matching is unique and this greedy
    choice is the optimal one; at 0.5 and below it is the usual greedy matching.

    Parameters
    ----------
    pred, truth : numpy.ndarray of int, same shape (any number of axes)
        Instance labels, 0 = background; the labels need not be consecutive.
    iou : float
        IoU threshold in (0, 1].

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn`` (int counts of matched predictions, unmatched predictions,
        unmatched true objects), ``n_pred``, ``n_true``, ``precision`` = tp / n_pred,
        ``recall`` = tp / n_true, ``f1`` = 2 tp / (n_pred + n_true) (each 1.0 when its
        denominator is 0, i.e. nothing to find and nothing found), ``mean_iou`` (mean IoU
        of the matched pairs; 0.0 without any) and ``iou`` (the threshold).

    Raises
    ------
    ArgumentError
        If the shapes differ or ``iou`` is not in (0, 1].

    Examples
    --------
    >>> a = np.array([[1, 1, 0, 2, 2, 2]])
    >>> b = np.array([[5, 5, 0, 0, 0, 7]])
    >>> r = match_f1(a, b)
    >>> r["tp"], r["fp"], r["fn"], r["f1"]
    (1, 1, 1, 0.5)
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ArgumentError(
            f"pred has shape {pred.shape} but truth has {truth.shape}: both must label one image"
        )
    if not 0 < float(iou) <= 1:
        raise ArgumentError(f"iou must be in (0, 1], got {iou!r}")
    p_ids, p_area = np.unique(pred[pred != 0], return_counts=True)
    t_ids, t_area = np.unique(truth[truth != 0], return_counts=True)
    left, right, inter = _label_table(pred, truth)
    union = p_area[np.searchsorted(p_ids, left)] + t_area[np.searchsorted(t_ids, right)] - inter
    scores = inter / union
    order = np.lexsort((right, left, -scores))
    used_p, used_t, matched = set(), set(), []
    for k in order.tolist():
        if scores[k] < iou:
            break
        if left[k] in used_p or right[k] in used_t:
            continue
        used_p.add(left[k])
        used_t.add(right[k])
        matched.append(float(scores[k]))
    tp, n_pred, n_true = len(matched), int(p_ids.size), int(t_ids.size)

    def ratio(num: int, den: int) -> float:
        return 1.0 if den == 0 else num / den

    return {
        "tp": tp,
        "fp": n_pred - tp,
        "fn": n_true - tp,
        "n_pred": n_pred,
        "n_true": n_true,
        "precision": ratio(tp, n_pred),
        "recall": ratio(tp, n_true),
        "f1": ratio(2 * tp, n_pred + n_true),
        "mean_iou": float(np.mean(matched)) if matched else 0.0,
        "iou": float(iou),
    }
