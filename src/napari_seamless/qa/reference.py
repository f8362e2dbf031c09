"""The reference a tiled result is checked against, and the seam report of one comparison.

The reference is whole-image inference: the image reflection-padded to a multiple of F and
run in one forward pass (Majurski & Bajcsy 2021, section 4). For an image too big for
memory, a *region reference* gives the same numbers on a region: the region's F-aligned box
plus the full computed halo on every side, run as one window
(:func:`~napari_seamless.grid.region_tile`), equals whole-image inference there. Which of
the two fits is decided against a memory budget before anything runs.

Torch is used only through the engine (and once, to size a model's activations).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SeamlessError
from ..grid import TileGrid, pad_to_multiple, parse_region, region_tile
from .maps import error_map, error_profile, seam_distance
from .metrics import Comparison, compare

__all__ = [
    "Reference",
    "ReferenceTooLargeError",
    "SeamReport",
    "memory_budget",
    "reference",
    "reference_bytes",
    "seam_report",
]


class ReferenceTooLargeError(SeamlessError, MemoryError):
    """The whole-image (or region) reference would not fit the memory budget."""


_BYTES_PER_PIXEL: dict[int, float] = {}


def _bytes_per_pixel(predictor: Any) -> float:
    """Upper estimate of forward-pass memory per input pixel: every layer output kept."""
    key = id(predictor.model)
    if key in _BYTES_PER_PIXEL:
        return _BYTES_PER_PIXEL[key]
    import torch

    total = 0

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    size = tuple(f * max(1, math.ceil(64 / f)) for f in predictor.factor)
    leaves = [m for m in predictor.model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        x = torch.zeros(
            (1, predictor.in_channels, *size), dtype=predictor.torch_dtype, device=predictor.device
        )
        with torch.inference_mode():
            predictor.model(x)
    finally:
        for h in handles:
            h.remove()
    itemsize = np.dtype(predictor.np_dtype).itemsize
    per_pixel = max(total / float(np.prod(size)), (predictor.in_channels + 2) * itemsize)
    _BYTES_PER_PIXEL[key] = per_pixel
    return per_pixel


def reference_bytes(predictor: Any, shape: Sequence[int]) -> int:
    """Estimated memory (bytes) of one forward pass over a window of spatial ``shape``.

    An upper estimate: the bytes of every layer's output for a small probe input, per
    pixel, times the F-padded pixels of ``shape`` (torch frees most of them as it goes; on
    CPU the real peak is about a third of this for the built-in U-Nets).

    Parameters
    ----------
    predictor : Predictor
        Its model, F, channels and dtype.
    shape : sequence of int
        Spatial shape of the window (pixels).
    """
    padded = pad_to_multiple(shape, predictor.factor)
    return int(_bytes_per_pixel(predictor) * float(np.prod(padded)))


def memory_budget(predictor: Any = None) -> int:
    """Bytes a reference may take by default: half the free memory of the model's device.

    CUDA: half of ``torch.cuda.mem_get_info`` free memory; CPU (or no ``predictor``): half
    of the system's available memory (Linux ``MemAvailable``; 4 GiB when unknown).
    """
    if predictor is not None and getattr(predictor.device, "type", "cpu") == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(predictor.device)
        return int(free // 2)
    from ..io import _available_memory

    have = _available_memory()
    return int((have if have is not None else 8 * 2**30) // 2)


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**28 else f"{nbytes / 2**20:.0f} MiB"


@dataclass(frozen=True)
class Reference:
    """Whole-image inference on the whole image or on a region of it.

    Attributes
    ----------
    scores : numpy.ndarray, shape (classes, *region_shape)
        Probabilities by the model's activation (float32, float64 for a float64 predictor).
    labels : numpy.ndarray, shape (*region_shape)
        Labels by the model's rule (:meth:`~napari_seamless.engine.Predictor.labels`).
    region : tuple of slice
        Where ``scores`` lie in the image (pixels); the whole image when ``whole``.
    window : tuple of slice
        The window that was run (F-padded image pixels).
    whole : bool
        True for the whole image (one pass over the F-padded image).
    seconds : float
        Wall time of the run.
    """

    scores: np.ndarray
    labels: np.ndarray
    region: tuple[slice, ...]
    window: tuple[slice, ...]
    whole: bool
    seconds: float

    @property
    def window_pixels(self) -> int:
        """Pixels of the window that was run."""
        return int(np.prod([s.stop - s.start for s in self.window]))


class _Offset:
    """A store that writes image-coordinate blocks into a region-shaped array."""

    def __init__(self, array: np.ndarray, origin: Sequence[int]) -> None:
        self.array, self.origin = array, tuple(origin)

    def write(self, zor: tuple[slice, ...], block: np.ndarray) -> None:
        local = tuple(slice(s.start - o, s.stop - o) for s, o in zip(zor, self.origin, strict=True))
        self.array[(Ellipsis, *local)] = block


def reference(
    predictor: Any,
    image: Any,
    region: Any = None,
    *,
    budget: int | None = None,
    axes: str | None = None,
    normalization: Any = "default",
) -> Reference:
    """Whole-image inference on ``image``, or the exact region reference of ``region``.

    Parameters
    ----------
    predictor : Predictor
        The model; its computed halo is used for a region (it must be the exact halo for
        the region reference to equal whole-image inference).
    image : array-like
        ``(*spatial)`` or with a channel axis, as for
        :meth:`~napari_seamless.engine.Predictor.run`.
    region : str or sequence of slice, optional
        ``"Y0:Y1,X0:X1"`` or one slice per axis (image pixels). None: the whole image.
    budget : int, optional
        Bytes the forward pass may take (:func:`reference_bytes`); default
        :func:`memory_budget`.
    axes, normalization
        As for :meth:`~napari_seamless.engine.Predictor.run` (normalisation statistics
        come from the whole image either way, as in a tiled run).

    Returns
    -------
    Reference

    Raises
    ------
    ReferenceTooLargeError
        If the whole image (no region) or the region's window would exceed the budget;
        the message gives both sizes and what to do. Nothing has run then.
    RegionError
        If ``region`` is not inside the image.
    """
    from ..engine import to_channel_first

    arr, _ = to_channel_first(image, predictor.ndim, predictor.in_channels, axes)
    spatial = tuple(int(s) for s in arr.shape[1:])
    budget = memory_budget(predictor) if budget is None else int(budget)
    if region is None:
        region_t = tuple(slice(0, n) for n in spatial)
        window = tuple(slice(0, p) for p in pad_to_multiple(spatial, predictor.factor))
    else:
        region_t = parse_region(region, spatial)
        window = region_tile(spatial, region_t, predictor.halo, predictor.factor).window
    need = reference_bytes(predictor, [s.stop - s.start for s in window])
    if need > budget:
        size = " x ".join(str(s.stop - s.start) for s in window)
        what = "the whole-image reference" if region is None else "the region reference"
        advice = (
            "choose a region (the visible region, or a rectangle drawn on the image; "
            "--region Y0:Y1,X0:X1 on the command line)"
            if region is None
            else "choose a smaller region"
        )
        raise ReferenceTooLargeError(
            f"{what} runs one {size} px window, about {_gib(need)}, over the memory budget of "
            f"{_gib(budget)}: {advice}, or raise the budget"
        )
    classes = predictor.classes()
    shape = tuple(s.stop - s.start for s in region_t)
    scores = np.zeros((classes, *shape), dtype=predictor.np_dtype)
    store = _Offset(scores, [s.start for s in region_t])
    t0 = time.perf_counter()
    events = predictor.run(
        image,
        store,
        None,
        output="probabilities",
        axes=axes,
        normalization=normalization,
        region=None if region is None else region_t,
    )
    for _ in events:
        pass
    seconds = time.perf_counter() - t0
    return Reference(scores, predictor.labels(scores), region_t, window, region is None, seconds)


@dataclass(frozen=True)
class SeamReport:
    """A result against its reference, in numbers and in pictures.

    Attributes
    ----------
    comparison : Comparison
        RMSE, ME, NME (paper Eqs. 3-5) and max |difference| over the reference's region.
    error_map : numpy.ndarray of uint8, shape (*region_shape)
        1 where the label differs from the reference.
    difference : numpy.ndarray of float32, shape (*region_shape)
        Largest |score difference| over the classes, per pixel.
    region : tuple of slice
        Where the maps lie in the image (pixels).
    distances, profile : numpy.ndarray, shape (k,)
        Mean |score difference| against the distance (pixels) to the nearest ZoR seam
        (:func:`~napari_seamless.qa.error_profile`); empty without a tile grid.
    relative_runtime : float
        The result's run time over the reference's, the reference scaled to the whole
        image by pixels when it covered a region (NaN when a time is unknown).
    """

    comparison: Comparison
    error_map: np.ndarray
    difference: np.ndarray
    region: tuple[slice, ...]
    distances: np.ndarray
    profile: np.ndarray
    relative_runtime: float

    def seam_pixels(self, grid: TileGrid, reach: int | Sequence[int]) -> np.ndarray:
        """Mask of region pixels within ``reach`` pixels of a ZoR seam of ``grid``."""
        from .maps import _axis_distance

        reach_t = (reach,) * grid.ndim if np.isscalar(reach) else tuple(reach)
        mask = np.zeros(self.error_map.shape, dtype=bool)
        for ax, (sl, r) in enumerate(zip(self.region, reach_t, strict=True)):
            seams = [b for b in grid.boundaries(ax) if 0 < b < grid.shape[ax]]
            near = _axis_distance(grid.shape[ax], seams)[sl] < r
            shape = [1] * grid.ndim
            shape[ax] = -1
            mask |= near.reshape(shape)
        return mask


def seam_report(
    ref: Reference,
    scores: Any,
    labels: Any,
    grid: Any = None,
    seconds: float | None = None,
    image_shape: Sequence[int] | None = None,
) -> SeamReport:
    """Compare a result with ``ref`` on the reference's region.

    Parameters
    ----------
    ref : Reference
        From :func:`reference`.
    scores : array-like, shape (classes, *spatial)
        The result's scores over the whole image (only ``ref.region`` is read).
    labels : array-like, shape (*spatial)
        The result's labels over the whole image (e.g. a Labels layer's data).
    grid : TileGrid, optional
        The result's tile grid, for the error profile against the seams.
    seconds : float, optional
        The result's run time, for ``relative_runtime``.
    image_shape : sequence of int, optional
        The image's spatial shape, to scale a region reference's time; default the
        grid's shape.

    Raises
    ------
    ArgumentError
        If the arrays do not cover the region or their shapes disagree.
    """
    box = ref.region
    res_scores = np.asarray(scores[(slice(None), *box)])
    res_labels = np.asarray(labels[box])
    comparison = compare(ref.scores, res_scores, ref.labels, res_labels)
    emap = error_map(ref.labels, res_labels)
    diff = np.abs(ref.scores.astype(np.float64) - res_scores).max(axis=0).astype(np.float32)
    distances = profile = np.zeros(0)
    if isinstance(grid, TileGrid) and len(grid) > 1:
        dist = seam_distance(grid)[box]
        distances, profile = error_profile(diff, dist)
    relative = float("nan")
    shape = image_shape if image_shape is not None else getattr(grid, "shape", None)
    if seconds is not None and ref.seconds > 0:
        ref_seconds = ref.seconds
        if not ref.whole and shape is not None:
            ref_seconds *= float(np.prod(shape)) / ref.window_pixels
        relative = seconds / ref_seconds
    return SeamReport(comparison, emap, diff, box, distances, profile, relative)
