"""Halo sweep: how far a tiled result is from the whole-image reference at each halo.

The paper's Tables 1 and 3 as data: for halos 0, F, 2F, ... the RMSE, ME and NME of the
tiled scores against whole-image inference, and the runtime relative to the reference.
Below the exact halo the result differs; at and above it, it equals the reference to
float rounding. The window (tile) stays fixed, so a larger halo means a smaller ZoR and
more tiles, as in the paper. Torch is used only through the engine.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ArgumentError
from .maps import error_profile, seam_distance
from .metrics import Comparison, compare

__all__ = ["SweepRow", "halo_sweep", "parse_range"]


@dataclass(frozen=True)
class SweepRow:
    """One halo of a sweep.

    Attributes
    ----------
    halo : int
        Halo in pixels (all axes).
    comparison : Comparison
        Against the whole-image reference (paper Eqs. 3-5); labels by the predictor's
        output convention (:meth:`Predictor.labels`).
    seconds : float
        Wall time of the tiled run.
    relative_runtime : float
        ``seconds`` over the wall time of the whole-image reference.
    tiles : int
        Tiles run.
    profile_distances : numpy.ndarray of int, shape (k,), optional
        Distances (pixels) to the nearest ZoR seam of this halo's grid that have pixels:
        the x of the error profile (:func:`~napari_seamless.qa.error_profile`). Empty when
        the grid has one tile (no seam); ``None`` for rows made without a profile.
    profile_mean : numpy.ndarray of float64, shape (k,), optional
        Mean ``|scores - reference|`` (averaged over classes) of the pixels at each of
        ``profile_distances``.
    """

    halo: int
    comparison: Comparison
    seconds: float
    relative_runtime: float
    tiles: int
    # arrays: left out of == and repr (an array has no single truth value)
    profile_distances: np.ndarray | None = field(default=None, compare=False, repr=False)
    profile_mean: np.ndarray | None = field(default=None, compare=False, repr=False)


def parse_range(text: str, what: str = "halos") -> list[int]:
    """``"0:128:16"`` (START:STOP:STEP, STOP included; STEP 1 if left out) or ``"0,16,96"``.

    Raises
    ------
    ArgumentError
        If ``text`` is neither form (one sentence naming ``what``).
    """
    try:
        if ":" in text:
            parts = [int(v) for v in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop, step = (parts + [1])[:3]
            if step < 1:
                raise ValueError
            return list(range(start, stop + 1, step))
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ArgumentError(
            f"{what} {text!r} is not START:STOP:STEP or a comma list (e.g. 0:128:16)"
        ) from None


def _timed(
    pred: Any, image: Any, tile: Any, kwargs: dict, halo: int | None = None
) -> tuple[np.ndarray, float]:
    """Scores of ``image`` by :func:`~napari_seamless.engine.predict`, and the seconds taken."""
    from ..engine import predict

    t0 = time.perf_counter()
    scores = predict(pred, image, tile, halo=halo, **kwargs)
    return scores, time.perf_counter() - t0


def halo_sweep(
    predictor: Any,
    image: Any,
    tile: int | Sequence[int],
    halos: Iterable[int],
    *,
    reference: np.ndarray | None = None,
    reference_seconds: float | None = None,
    **run_kwargs: Any,
) -> list[SweepRow]:
    """Run ``image`` tiled at each halo and compare every result with the reference.

    Parameters
    ----------
    predictor : Predictor
        Gives the model, F and the exact halo (``predictor.halo``); it is not changed.
    image : array-like
        ``(*spatial)`` or with a channel axis, as for :meth:`Predictor.run`.
    tile : int or tuple of int
        Window size in pixels, kept for every halo (ZoR = tile - 2 * halo).
    halos : iterable of int
        Halos in pixels, each a multiple of F and below ``tile / 2``.
    reference : numpy.ndarray, shape (classes, *spatial), optional
        Whole-image scores; computed (one pass, timed) when omitted.
    reference_seconds : float, optional
        Wall time of a given ``reference``, for ``relative_runtime`` (NaN without it).
    **run_kwargs
        ``axes``, ``normalization``, ``border``, ``batch_size`` for :meth:`Predictor.run`.

    Returns
    -------
    list of SweepRow
        One per halo, in the order given, each with its error profile (mean
        ``|scores - reference|`` against the distance to the nearest ZoR seam).

    Raises
    ------
    ArgumentError
        If a halo is not a non-negative multiple of F, or leaves no ZoR in the tile.
    """
    ref_seconds = float("nan") if reference_seconds is None else float(reference_seconds)
    if reference is None:
        reference, ref_seconds = _timed(predictor, image, None, run_kwargs)
    reference_labels = predictor.labels(reference)  # the model's own rule, not always argmax
    spatial = reference.shape[1:]
    rows = []
    for h in halos:
        if not isinstance(h, (int, np.integer)) or h < 0:
            raise ArgumentError(f"halos must be non-negative integers (pixels), got {h!r}")
        scores, seconds = _timed(predictor, image, tile, run_kwargs, halo=int(h))
        comparison = compare(reference, scores, reference_labels, predictor.labels(scores))
        grid = predictor.grid(spatial, tile, run_kwargs.get("border", "clip"), halo=int(h))
        # averaged over classes here: error_profile then takes one (*spatial) array
        difference = np.abs(scores - reference).mean(axis=0, dtype=np.float64)
        distances, mean = error_profile(difference, seam_distance(grid))
        del scores, difference
        rows.append(
            SweepRow(int(h), comparison, seconds, seconds / ref_seconds, len(grid), distances, mean)
        )
    return rows
