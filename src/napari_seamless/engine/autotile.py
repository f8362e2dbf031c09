"""The tile size chosen for the user: a short probe of the model, the fastest window that fits.

A tile computes ``(ZoR + 2 * halo)^d`` input pixels for ``ZoR^d`` output pixels, so larger
windows waste less work on halos, until they no longer fit in memory (paper section 4.1).
:func:`choose_tile` measures the model itself on a few F-aligned window sizes (peak memory
and the time of one forward pass), extrapolates to the sizes it did not run, and picks the
window whose predicted run over *this* image's grid (border windows, clipping and all) is
fastest among those within the memory budget::

    window sizes  208 256 384 512 768 1024 ... (multiples of F, > 2 * halo, at most the
                  |   |   |   |               padded image + 2 * halo: one window then
                  measured (a few seconds)    covers the whole image)
                                  extrapolated: memory and time are affine in the window's
                                  pixels for a fully convolutional network

How memory is measured:

``cuda``
    ``torch.cuda.max_memory_allocated`` over the forward pass (reset before each), above
    what was allocated before it; the default budget is the free memory
    (``torch.cuda.mem_get_info``) plus what torch's caching allocator holds unused, times
    :data:`CUDA_FRACTION`.
``cpu``
    The peak of the bytes held through torch's CPU allocator during the forward pass,
    replayed from the allocation and free events of ``torch.profiler``
    (``profile_memory=True``). Unlike summing layer outputs with forward hooks (which
    ignores what is freed as the pass goes, about 3x too high for the built-in U-Nets, and
    misses kernel workspaces such as the im2col buffers of float64 convolutions, 3.7x the
    activations) or the process's RSS (the allocator keeps freed pages, other threads
    allocate), it counts exactly what the pass needs. It is measured at the two smallest
    windows and extrapolated. The default budget is :data:`CPU_FRACTION` of the available
    memory (``psutil``, else Linux ``MemAvailable``), leaving the rest to the pipeline's
    windows, the output and everything else.

Nothing here imports Qt or napari; torch is imported when a probe runs.
"""

from __future__ import annotations

import math
import os
import re
import time
import weakref
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import numpy as np

from ..analysis.identity import KeyedCache, model_key
from ..errors import ArgumentError, ArgumentTypeError, SeamlessError
from ..grid import Border, TileGrid, pad_to_multiple
from ..io import _available_memory
from .backoff import is_out_of_memory

__all__ = [
    "CPU_FRACTION",
    "CUDA_FRACTION",
    "TileBudgetError",
    "TileChoice",
    "TileProbe",
    "choose_tile",
    "memory_budget",
    "parse_bytes",
]

SIZES_2D = (256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
"""Window sizes (pixels per axis) a 2D probe considers, besides the smallest valid one."""
SIZES_3D = (64, 96, 128, 160, 192, 256, 320, 384)
"""Window sizes (pixels per axis) a 3D probe considers, besides the smallest valid one."""
CUDA_FRACTION = 0.8
"""Share of the free GPU memory the default budget gives the forward pass."""
CPU_FRACTION = 0.5
"""Share of the available RAM the default budget gives the forward pass."""
PROBE_SECONDS = {"cpu": 3.0, "cuda": 10.0}
"""Seconds of timed forward passes a probe may spend, by device type (others: cpu's)."""


class TileBudgetError(SeamlessError, ValueError):
    """Not even the smallest window fits the memory budget, or the budget is not valid."""


@dataclass(frozen=True)
class TileProbe:
    """What one candidate tile size costs, measured or extrapolated.

    Attributes
    ----------
    tile : tuple of int
        The tile (window) size per axis in pixels, as :meth:`Predictor.run` takes it.
    window : tuple of int
        The largest window the grid runs at this tile: ``tile``, clipped to the F-padded
        image (pixels).
    zor : tuple of int
        Output pixels per axis of a full tile: ``tile - 2 * halo``, at most the image.
    peak_bytes : int
        Peak memory of one forward pass over ``batch_size`` windows of ``window`` (bytes).
    seconds : float
        Time of one forward pass over one window of ``window`` (seconds; a batched pass
        divided by the batch).
    seconds_per_zor_pixel : float
        ``seconds`` / ZoR area: the cost of one output pixel of a full tile.
    overhead : float
        Sum of the window areas of this image's grid / the image area (1.0: no pixel
        computed twice).
    estimate : float
        Predicted seconds of all forward passes of a run over this image at this tile.
    measured : bool
        True if ``seconds`` was measured, False if extrapolated from the measured sizes.
    memory_measured : bool
        True if ``peak_bytes`` was measured, False if extrapolated.
    fits : bool
        ``peak_bytes`` is within the budget.
    """

    tile: tuple[int, ...]
    window: tuple[int, ...]
    zor: tuple[int, ...]
    peak_bytes: int
    seconds: float
    seconds_per_zor_pixel: float
    overhead: float
    estimate: float
    measured: bool
    memory_measured: bool
    fits: bool


@dataclass(frozen=True)
class TileChoice:
    """The tile :func:`choose_tile` chose, and the measurements it chose from.

    Attributes
    ----------
    tile : tuple of int
        The chosen tile (window) size per axis in pixels; pass it as ``tile=`` to
        :meth:`Predictor.run`, :func:`predict` or :func:`segment`.
    probes : tuple of TileProbe
        Every candidate, smallest first.
    budget : int
        Memory budget of one forward pass (bytes).
    device : str
        Where the model ran, e.g. ``"cpu"`` or ``"cuda:0"``.
    shape : tuple of int
        Spatial shape of the image the choice is for (pixels).
    halo : tuple of int
        Halo per axis (pixels).
    memory : str
        How memory was measured: ``"cuda"``, ``"profiler"`` (CPU allocator events) or
        ``"layer outputs"`` (an upper bound, when the profiler gave no events).
    seconds : float
        Wall time of the probe (seconds; milliseconds when every size was measured
        before: no forward pass runs then).
    """

    tile: tuple[int, ...]
    probes: tuple[TileProbe, ...]
    budget: int
    device: str
    shape: tuple[int, ...]
    halo: tuple[int, ...]
    memory: str
    seconds: float

    @property
    def size(self) -> int:
        """One tile size for every axis with the same grid as :attr:`tile` (pixels).

        The largest of :attr:`tile`: along an axis where the image is smaller, the tile
        was capped at the F-padded image + ``2 * halo`` (one window over it), and any
        larger size gives that same window. For a square-tile control such as the widget's.
        """
        return max(self.tile)

    @property
    def chosen(self) -> TileProbe:
        """The probe of the chosen tile."""
        return next(p for p in self.probes if p.tile == self.tile)

    def describe(self) -> str:
        """One line for people: the tile, why, and what the probe cost."""
        p = self.chosen
        zor = tuple(t - 2 * h for t, h in zip(self.tile, self.halo, strict=True))
        fitting = sum(q.fits for q in self.probes)
        return (
            f"tile {_fmt(self.tile)} px (ZoR {_fmt(zor)} + 2 x halo {_fmt(self.halo)}) on "
            f"{self.device}: the fastest of {fitting} sizes within the memory budget of "
            f"{_bytes(self.budget)} (peak {_bytes(p.peak_bytes)}); "
            f"{p.seconds_per_zor_pixel * 1e6:.3g} us per output pixel, overhead "
            f"{p.overhead:.2f}x, forward passes about {_seconds(p.estimate)} for "
            f"{' x '.join(map(str, self.shape))}; probe {self.seconds:.1f} s"
        )


def _fmt(values: Sequence[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else " x ".join(map(str, values))


def _bytes(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.0f} min"


_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kib": 2**10,
    "kb": 10**3,
    "m": 2**20,
    "mib": 2**20,
    "mb": 10**6,
    "g": 2**30,
    "gib": 2**30,
    "gb": 10**9,
    "t": 2**40,
    "tib": 2**40,
    "tb": 10**12,
}


def parse_bytes(text: str | int | float) -> int:
    """Bytes from a size such as ``"4GB"``, ``"4 GiB"``, ``"512M"`` or ``2e9``.

    ``KB``, ``MB``, ``GB``, ``TB`` are powers of 1000; ``KiB``, ``MiB``, ``GiB``, ``TiB``
    and the single letters ``K``, ``M``, ``G``, ``T`` powers of 1024; case is ignored.

    Raises
    ------
    TileBudgetError
        If ``text`` is not a positive size.
    """
    if isinstance(text, (int, float, np.integer, np.floating)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(
            r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text)
        )
        if match is None or match.group(2).lower() not in _UNITS:
            raise TileBudgetError(
                f"memory budget {text!r} is not a size; write it like 4GB, 4GiB, 512M or "
                "2000000000 (bytes)"
            )
        value, unit = float(match.group(1)), match.group(2).lower()
    nbytes = value * _UNITS[unit]
    if not math.isfinite(nbytes) or nbytes < 1:
        raise TileBudgetError(f"memory budget {text!r} must be a positive size, e.g. 4GB")
    return int(nbytes)


def memory_budget(device: Any = "cpu") -> int:
    """The default memory budget of one forward pass on ``device`` (bytes).

    CUDA: (free memory from ``torch.cuda.mem_get_info`` + memory torch's caching
    allocator holds but does not use) x :data:`CUDA_FRACTION`. Elsewhere: available RAM x
    :data:`CPU_FRACTION` (8 GiB assumed available when it cannot be read).
    """
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int((free + max(cached, 0)) * CUDA_FRACTION)
    have = _available_memory()
    return int((have if have is not None else 8 * 2**30) * CPU_FRACTION)


# Measurements per model, by (device, dtype, batch, window): the model's own cost, so a
# second choice (another image, another budget) costs no forward pass.
_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple, tuple[float | None, int | None, str]]] = (
    weakref.WeakKeyDictionary()
)
# ... and by model_key where the model has one, so a model loaded again shares them
_MEASURED = KeyedCache(16)


def _measurements(model: Any, refresh: bool) -> dict:
    """Measurements of ``model`` so far (a new record if ``refresh``), to fill in place."""
    key = model_key(model)
    if key is not None:  # the same classes and weights: the same model, loaded again
        if refresh or _MEASURED.get(key) is None:
            _MEASURED.put(key, {})
        return _MEASURED.get(key)
    try:
        if refresh or model not in _CACHE:
            _CACHE[model] = {}
        return _CACHE[model]
    except TypeError:  # a model that takes no weak reference: measured every time
        return {}


def _candidates(
    predictor: Any, shape: Sequence[int], halo: tuple[int, ...], candidates: Any
) -> list[tuple[int, ...]]:
    """Candidate tiles (one size per axis), F-aligned, > 2 * halo, capped by the image."""
    factor = tuple(predictor.factor)
    padded = pad_to_multiple(shape, factor)
    cap = tuple(p + 2 * h for p, h in zip(padded, halo, strict=True))  # one window: the image
    smallest = tuple(2 * h + f for h, f in zip(halo, factor, strict=True))
    if candidates is None:
        sizes = SIZES_2D if len(shape) == 2 else SIZES_3D
        raw = [smallest] + [
            tuple(max(-(-s // f) * f, m) for f, m in zip(factor, smallest, strict=True))
            for s in sizes
        ]
        if all(c <= max(sizes) for c in cap):
            raw.append(cap)  # the whole image in one window, when it is not huge
    else:
        if isinstance(candidates, (str, bytes)) or not isinstance(candidates, Sequence):
            raise ArgumentTypeError(
                f"candidates must be a sequence of tile sizes (ints or per-axis tuples, "
                f"pixels), got {type(candidates).__name__}"
            )
        if not candidates:
            raise ArgumentError("candidates is empty; give at least one tile size (pixels)")
        raw = []
        for c in candidates:
            grid = predictor.grid(shape, c, halo=halo)  # TileSizeError for an invalid size
            raw.append(grid.tile)
    out = sorted({tuple(min(t, c) for t, c in zip(r, cap, strict=True)) for r in raw})
    return sorted(out, key=lambda t: (math.prod(t), t))


class _Line:
    """Measured ``(pixels, value)`` points, interpolated piecewise-linearly between them.

    Beyond them: ``"affine"`` follows the line through the two nearest points (memory:
    measured exactly, affine in the pixels); ``"rate"`` scales the nearest point by the
    pixels (time: the per-pixel rate of the largest window measured, the most like the
    large ones, and not thrown by the noise of two close, small timings).
    """

    def __init__(self, points: list[tuple[float, float]], beyond: str) -> None:
        self.x = np.array([p[0] for p in points], dtype=float)
        self.y = np.array([p[1] for p in points], dtype=float)
        self.beyond = beyond

    def __call__(self, x: float) -> float:
        xs, ys = self.x, self.y
        if xs[0] <= x <= xs[-1]:
            return float(np.interp(x, xs, ys))
        low = x < xs[0]
        xn, yn = (xs[0], ys[0]) if low else (xs[-1], ys[-1])
        if self.beyond == "affine" and len(xs) > 1:
            (x0, x1), (y0, y1) = (xs[:2], ys[:2]) if low else (xs[-2:], ys[-2:])
            slope = (y1 - y0) / (x1 - x0)
            if slope > 0:
                return float(max(yn + slope * (x - xn), 0.0))
        return float(yn * x / xn)


def _window_lengths(grid: TileGrid) -> list[Counter]:
    """Per axis, how many windows of each length the grid runs (pixels)."""
    out = []
    for ax, n in enumerate(grid.grid_shape):
        lengths = Counter()
        for k in range(n):
            gi = [0] * grid.ndim
            gi[ax] = k
            w = grid.tile_at(gi).window[ax]
            lengths[w.stop - w.start] += 1
        out.append(lengths)
    return out


def _estimate(grid: TileGrid, seconds: Callable[[float], float]) -> tuple[float, float]:
    """(predicted seconds of every window, sum of window areas / image area)."""
    total = area = 0.0
    for combo in product(*(c.items() for c in _window_lengths(grid))):
        pixels = float(math.prod(length for length, _ in combo))
        count = math.prod(n for _, n in combo)
        total += count * seconds(pixels)
        area += count * pixels
    return total, area / float(math.prod(grid.shape))


def _cpu_peak(run: Callable[[], Any]) -> int | None:
    """Peak bytes held through torch's CPU allocator while ``run()`` runs (None: no events)."""
    from torch.profiler import ProfilerActivity, profile

    # kineto reads its log level once, when first used: no "profiler_start" lines on stderr
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            run()
        events = sorted(
            (e.start_ns(), e.nbytes())
            for e in prof.profiler.kineto_results.events()
            if e.name() == "[memory]"
        )
    except Exception:  # noqa: BLE001 - a profiler without these events: fall back
        return None
    if not events:
        return None
    held = peak = 0
    for _, nbytes in events:
        held += nbytes
        peak = max(peak, held)
    return int(peak)


def _layer_outputs(predictor: Any, windows: list[np.ndarray]) -> int:
    """Bytes of every leaf module's output in one pass: an upper bound of the peak."""
    import torch

    total = 0

    def hook(_m: Any, _i: Any, out: Any) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    leaves = [m for m in predictor.model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        predictor._forward(windows)
    finally:
        for h in handles:
            h.remove()
    return total + sum(w.nbytes for w in windows)


class _Prober:
    """Runs the model on dummy windows: seconds and peak bytes per window shape."""

    def __init__(self, predictor: Any, batch_size: int, refresh: bool) -> None:
        import torch

        self.torch = torch
        self.p = predictor
        self.batch = batch_size
        self.device = predictor.device
        self.cuda = getattr(self.device, "type", "cpu") == "cuda"
        self.cache = _measurements(predictor.model, refresh)
        self.memory = "cuda" if self.cuda else "profiler"
        self.warm = False
        self.spent = 0.0  # seconds of timed passes
        self.rng = np.random.default_rng(0)

    def _key(self, window: tuple[int, ...]) -> tuple:
        # fast mode (bfloat16 autocast) costs other time and memory than float32
        return (str(self.device), self.p.dtype, self.p.fast, self.batch, window)

    def _windows(self, window: tuple[int, ...]) -> list[np.ndarray]:
        shape = (self.p.in_channels, *window)
        w = self.rng.standard_normal(shape).astype(self.p.np_dtype)
        return [w] * self.batch

    def known(self, window: tuple[int, ...]) -> tuple[float | None, int | None]:
        seconds, peak, how = self.cache.get(self._key(window), (None, None, ""))
        if peak is not None and how:
            self.memory = how
        return seconds, peak

    def _store(self, window: tuple, seconds: float | None, peak: int | None) -> None:
        old = self.cache.get(self._key(window), (None, None, self.memory))
        self.cache[self._key(window)] = (
            seconds if seconds is not None else old[0],
            peak if peak is not None else old[1],
            self.memory if peak is not None else old[2],
        )

    def memory_of(self, window: tuple[int, ...]) -> int:
        """Peak bytes of one forward pass (CPU: profiled; the pass also warms up)."""
        windows = self._windows(window)
        if self.cuda:
            self.time_of(window)
            return int(self.known(window)[1])
        peak = _cpu_peak(lambda: self.p._forward(windows))
        if peak is None:
            self.memory = "layer outputs"
            peak = _layer_outputs(self.p, windows)
        self.warm = True
        self._store(window, None, peak)
        return peak

    def time_of(self, window: tuple[int, ...]) -> float:
        """Seconds of one forward pass per window (CUDA: the peak memory too)."""
        torch = self.torch
        windows = self._windows(window)
        if self.cuda:
            self.p._forward(windows)  # warm-up: kernels for this shape
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
        elif not self.warm:
            self.p._forward(windows)
            self.warm = True
        seconds, started = math.inf, time.perf_counter()
        for _ in range(3):  # short passes again: one slow pass by chance misleads the rest
            t0 = time.perf_counter()
            self.p._forward(windows)
            if self.cuda:
                torch.cuda.synchronize(self.device)
            took = time.perf_counter() - t0
            seconds = min(seconds, took / self.batch)
            if took > 0.3:
                break
        self.spent += time.perf_counter() - started
        peak = None
        if self.cuda:
            peak = int(torch.cuda.max_memory_allocated(self.device) - base)
        self._store(window, seconds, peak)
        return seconds


def choose_tile(
    predictor: Any,
    shape: Sequence[int],
    budget: int | str | None = None,
    candidates: Sequence[int | Sequence[int]] | None = None,
    *,
    batch_size: int = 1,
    border: Border = "clip",
    halo: int | Sequence[int] | None = None,
    probe_seconds: float | None = None,
    tolerance: float = 0.05,
    refresh: bool = False,
) -> TileChoice:
    """The fastest F-aligned tile that fits the memory budget, from a short probe.

    The model runs on dummy windows of a few candidate sizes, smallest first: peak memory
    at the first two (and at every timed size on CUDA) and the time of one forward pass
    after a warm-up, until ``probe_seconds`` are spent; the other sizes are extrapolated
    (memory and time are affine in the window's pixels for a fully convolutional
    network). Each candidate's run over this image is then predicted window by window on
    its real grid (:meth:`Predictor.grid`: border windows, a window larger than the image
    clipped to it), and the fastest candidate within the budget wins; of candidates
    within ``tolerance`` of the fastest, the smallest (less memory, finer progress and
    resume). Measurements are kept per model, so a second call costs no forward pass.

    Parameters
    ----------
    predictor : Predictor
        The model, its device, dtype, halo and F.
    shape : sequence of int
        Spatial shape of the image (pixels).
    budget : int or str, optional
        Memory one forward pass may take, in bytes or as a size (``"4GB"``, see
        :func:`parse_bytes`); default :func:`memory_budget` of the predictor's device.
    candidates : sequence of int or of tuple of int, optional
        Tile sizes to consider (pixels, multiples of F larger than ``2 * halo``); default:
        the smallest valid one and :data:`SIZES_2D` (:data:`SIZES_3D` for 3D) rounded up to
        F, plus one window over the whole image when that is no larger. Sizes beyond the
        F-padded image + ``2 * halo`` are capped there.
    batch_size : int
        Windows per forward pass in the run to come; memory is measured for the batch.
    border : {"clip", "shift"}
        The run's border mode (see :class:`~napari_seamless.grid.TileGrid`).
    halo : int or tuple of int, optional
        The run's halo (pixels), in place of the predictor's.
    probe_seconds : float, optional
        Seconds of timed forward passes the probe may spend; at least the two smallest
        sizes are always timed. Default :data:`PROBE_SECONDS` for the device type.
    tolerance : float
        Relative slack on the predicted time within which the smaller tile is preferred.
    refresh : bool
        Measure again instead of using this model's earlier measurements.

    Returns
    -------
    TileChoice
        The tile (``.tile``, per axis, for ``tile=``), the measurements, and a line for
        people (``.describe()``).

    Raises
    ------
    TileBudgetError
        If the budget is not a positive size, or not even the smallest window fits it.
    TileSizeError
        If a candidate is not a valid tile size for this model.
    ArgumentError, ArgumentTypeError
        For a shape, batch size, border or candidates that cannot work.

    Examples
    --------
    >>> choice = choose_tile(predictor, image.shape, budget="2GB")  # doctest: +SKIP
    >>> print(choice.describe())  # doctest: +SKIP
    >>> labels = segment(predictor, image, tile=choice.tile)  # doctest: +SKIP
    """
    started = time.perf_counter()
    shape_t = tuple(int(s) for s in shape)
    if len(shape_t) != predictor.ndim or any(s < 1 for s in shape_t):
        raise ArgumentError(
            f"shape {shape_t} must be the image's {predictor.ndim} spatial sizes (pixels)"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ArgumentTypeError(f"batch_size must be an int, got {batch_size!r}")
    if batch_size < 1:
        raise ArgumentError(f"batch_size must be at least 1, got {batch_size}")
    if halo is None:
        halo_t = tuple(predictor.halo)
    else:
        from .predictor import _per_axis_arg

        halo_t = _per_axis_arg(halo, "halo", predictor.ndim, 0)
    nbytes = memory_budget(predictor.device) if budget is None else parse_bytes(budget)
    tiles = _candidates(predictor, shape_t, halo_t, candidates)
    grids = [predictor.grid(shape_t, t, border=border, halo=halo_t) for t in tiles]
    padded = pad_to_multiple(shape_t, predictor.factor)
    windows = [tuple(min(t, p) for t, p in zip(tile, padded, strict=True)) for tile in tiles]
    order = sorted(set(windows), key=lambda w: (math.prod(w), w))
    least = tuple(
        min(2 * h + f, p) for h, f, p in zip(halo_t, predictor.factor, padded, strict=True)
    )
    device = str(predictor.device)
    kind = getattr(predictor.device, "type", "cpu")
    allowance = (
        PROBE_SECONDS.get(kind, PROBE_SECONDS["cpu"])
        if probe_seconds is None
        else float(probe_seconds)
    )
    prober = _Prober(predictor, int(batch_size), refresh)
    memory: dict[tuple, int] = {}
    timed: dict[tuple, float] = {}
    measured_memory: set[tuple] = set()
    too_big: set[tuple] = set()
    for w in order:
        seconds, peak = prober.known(w)
        if seconds is not None:
            timed[w] = seconds
        if peak is not None:
            memory[w] = peak
            measured_memory.add(w)
    for w in order:
        pixels = math.prod(w)
        if memory and w not in memory:
            if (
                _Line(sorted((math.prod(k), v) for k, v in memory.items()), "affine")(pixels)
                > 1.25 * nbytes
            ):
                break  # larger windows only need more: no point running them
        if len(timed) >= 2 and w not in timed:
            line = _Line(sorted((math.prod(k), v) for k, v in timed.items()), "rate")
            if prober.spent + line(pixels) * batch_size > allowance:
                break
        try:
            if w not in memory and (prober.cuda or len(measured_memory) < 2):
                memory[w] = prober.memory_of(w)
                measured_memory.add(w)
                if prober.cuda:  # timed with it
                    timed[w] = float(prober.known(w)[0])
            if w not in timed and not (w == least and len(order) > 1):
                timed[w] = prober.time_of(w)  # (the least is never the fastest: not timed)
        except Exception as err:  # out of memory while probing: this size does not fit
            if not is_out_of_memory(err):
                raise
            too_big.add(w)
            break
    if memory and not timed and order[0] not in too_big:  # stopped after the least
        timed[order[0]] = prober.time_of(order[0])
    if too_big and getattr(predictor, "_release_memory", None) is not None:
        predictor._release_memory()  # CUDA: what the failed pass cached goes back
    if not memory:  # not even the smallest ran
        raise TileBudgetError(
            f"out of memory on {device} probing the smallest window, {_fmt(order[0])} px; "
            "free memory on the device, or run on another device"
        )
    mem_line = _Line(sorted((math.prod(k), v) for k, v in memory.items()), "affine")
    time_line = _Line(sorted((math.prod(k), v) for k, v in timed.items()), "rate")
    probes = []
    for tile, grid, w in zip(tiles, grids, windows, strict=True):
        pixels = math.prod(w)
        peak = memory[w] if w in memory else int(mem_line(pixels))
        seconds = timed[w] if w in timed else time_line(pixels)
        estimate, overhead = _estimate(grid, time_line)
        zor = tuple(min(z, n) for z, n in zip(grid.zor_size, shape_t, strict=True))
        probes.append(
            TileProbe(
                tile=tuple(tile),
                window=w,
                zor=zor,
                peak_bytes=int(peak),
                seconds=float(seconds),
                seconds_per_zor_pixel=float(seconds) / math.prod(zor),
                overhead=overhead,
                estimate=estimate,
                measured=w in timed,
                memory_measured=w in measured_memory,
                fits=peak <= nbytes and not any(pixels >= math.prod(b) for b in too_big),
            )
        )
    fitting = [p for p in probes if p.fits]
    if not fitting:
        p = probes[0]
        least = tuple(2 * h + f for h, f in zip(halo_t, predictor.factor, strict=True))
        what = "the smallest window" if p.window == least else "the smallest window tried"
        raise TileBudgetError(
            f"{what}, {_fmt(p.window)} px (the least is 2 x halo + F = {_fmt(least)}), needs "
            f"about {_bytes(p.peak_bytes)} in one forward pass on {device} but the memory "
            f"budget is {_bytes(nbytes)}; raise the budget or free memory on the device"
        )
    best = min(p.estimate for p in fitting)
    chosen = next(p for p in fitting if p.estimate <= best * (1 + tolerance))
    return TileChoice(
        tile=chosen.tile,
        probes=tuple(probes),
        budget=int(nbytes),
        device=device,
        shape=shape_t,
        halo=halo_t,
        memory=prober.memory,
        seconds=time.perf_counter() - started,
    )
