"""The stride-offset experiment (Majurski & Bajcsy 2021, Fig. 4).

Crop the image starting ``o`` pixels in, run the crop whole, and compare its scores with
those of the uncropped image where both see the same input (the shared interior, away from
every border by the halo). Only when ``o`` is a multiple of F do the network's
downsampling lattices line up, so only then do the scores agree; this is why ZoR, halo and
window starts are multiples of F. Torch is used only through the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ArgumentError

__all__ = ["OffsetRow", "offset_experiment"]


@dataclass(frozen=True)
class OffsetRow:
    """One offset of the experiment.

    Attributes
    ----------
    offset : int
        Pixels cropped from the start of every spatial axis.
    aligned : bool
        Whether ``offset`` is a multiple of F on every axis.
    max_abs : float
        Largest score difference in the shared interior.
    identical : bool
        Whether the interior scores are bit-identical.
    pixels : int
        Interior pixels compared.
    """

    offset: int
    aligned: bool
    max_abs: float
    identical: bool
    pixels: int


def offset_experiment(
    predictor: Any,
    image: Any,
    offsets: Iterable[int],
    *,
    margin: int | None = None,
    axes: str | None = None,
) -> list[OffsetRow]:
    """Scores of crops starting ``o`` pixels in, against the uncropped image's.

    Parameters
    ----------
    predictor : Predictor
        The model (F and halo from it). float64 (``dtype="float64"``) separates aligned
        from unaligned offsets by many orders of magnitude.
    image : array-like
        ``(*spatial)`` or with a channel axis; already normalised: the raw values go in
        (``normalization=None``), so every crop sees the same input values.
    offsets : iterable of int
        Offsets in pixels (the same on every spatial axis), each >= 0.
    margin : int, optional
        Pixels left out at every border of the interior; default halo + F.
    axes : str, optional
        Axes of ``image`` (see :func:`~napari_seamless.engine.to_channel_first`).

    Returns
    -------
    list of OffsetRow

    Raises
    ------
    ArgumentError
        If an offset is negative or leaves no interior to compare.
    """
    from ..engine import predict, to_channel_first

    arr, _ = to_channel_first(image, predictor.ndim, predictor.in_channels, axes)
    arr = np.asarray(arr)
    spatial = arr.shape[1:]
    if margin is None:
        margin = max(predictor.halo) + max(predictor.factor)
    channel_first = "C" + "ZYX"[-predictor.ndim :]

    def whole(x: np.ndarray) -> np.ndarray:
        return predict(predictor, x, None, axes=channel_first, normalization=None)

    reference = whole(arr)
    rows = []
    for o in offsets:
        o = int(o)
        if o < 0 or any(n - o - 2 * margin < 1 for n in spatial):
            raise ArgumentError(
                f"offset {o} leaves no interior to compare in an image of {tuple(spatial)} "
                f"with a margin of {margin} px; use offsets from 0 up to "
                f"{min(spatial) - 2 * margin - 1}"
            )
        crop = whole(arr[(slice(None), *(slice(o, None),) * len(spatial))])
        inner_ref = reference[(slice(None), *(slice(o + margin, n - margin) for n in spatial))]
        inner_crop = crop[(slice(None), *(slice(margin, n - o - margin) for n in spatial))]
        diff = np.abs(inner_ref.astype(np.float64) - inner_crop.astype(np.float64))
        rows.append(
            OffsetRow(
                offset=o,
                aligned=all(o % f == 0 for f in predictor.factor),
                max_abs=float(diff.max()),
                identical=bool(np.array_equal(inner_ref, inner_crop)),
                pixels=int(np.prod(inner_ref.shape[1:])),
            )
        )
    return rows
