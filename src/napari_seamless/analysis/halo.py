"""F and the exact halo of a fully convolutional torch model, from the operations it runs.

Two numbers decide exact tiling (Majurski & Bajcsy 2021, section 4.2):

* **F**, the total downsampling factor: window sizes, ZoR and halo must be multiples of it
  (paper Eq. 2). Found here from the *lattice* of the recorded graph: every feature map
  has a step in input pixels along each axis (1 at the input, 2 after a stride-2 pooling,
  back to 1 after upsampling), and F is the least common multiple of the steps. Models
  that accept any size because they resize to their skip connections still get the F
  that makes every feature map line up between a tile and the whole image.
* **the halo**: how far an output pixel's dependency reaches into the input, rounded up
  to a multiple of F (Eq. 2). Found by following, for every output index, the interval of
  input indices it depends on through every recorded operation
  (:mod:`.trace`, :mod:`.rules`); the extents are exact for ZoRs whose edges are
  multiples of F (pixel phase within an F-block included). The paper's Eq. 1 (the sum of
  ``2 ** level * floor(k / 2)`` over the convolutions) is reported for comparison.

Operations that couple every pixel (statistics, pooling or attention over space, cyclic
shifts, ``align_corners=True``) are refused when they run, naming the module and the
source line; an operation with no rule is an error naming it. Every recorded graph is
checked against the model's own output before its answer is used.

torch is imported here because this module runs models; nothing here imports Qt or napari.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from .identity import KeyedCache, model_key
from .refusals import (
    AnalysisTimeoutError,
    ModelRunError,
    NotTileableError,
    Refusal,
    UnsupportedOperationError,
)

__all__ = ["ReceptiveField", "receptive_field", "extents_from_intervals"]

MAX_PROBE = 2**15  # pixels along the analysed axis
_ANALYSED = KeyedCache(16)  # model_key (+ ndim, in_channels, assume_eval) -> ReceptiveField


@dataclass(frozen=True)
class ReceptiveField:
    """Tiling parameters of a model, per spatial axis, in pixels.

    Attributes
    ----------
    factor : tuple of int
        F per axis, the total downsampling factor (paper Eq. 2).
    left, right : tuple of int
        Exact dependency extents for ZoRs whose start and end are multiples of F: an output
        in ``[a, b)`` depends on inputs in ``[a - left, b + right)`` and on nothing else.
    halo : tuple of int
        ``max(left, right)`` rounded up to a multiple of F (paper Eq. 2).
    eq1 : tuple of int or None
        The paper's Eq. 1 estimate, summed over the convolutions that ran.
    method : str
        How the extents were found: ``"aten graph"`` (dependency intervals followed
        through the recorded aten graph).
    seconds : float
        Wall time of the analysis (not part of equality).
    """

    factor: tuple[int, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    halo: tuple[int, ...]
    eq1: tuple[int, ...] | None
    method: str = "aten graph"
    seconds: float = field(default=0.0, compare=False)

    def describe(self) -> str:
        """One line for people."""

        def fmt(v: tuple[int, ...] | None) -> str:
            if v is None:
                return "n/a"
            return str(v[0]) if len(set(v)) == 1 else " x ".join(map(str, v))

        return (
            f"F {fmt(self.factor)}, halo {fmt(self.halo)} px "
            f"(exact extents left {fmt(self.left)} / right {fmt(self.right)} by {self.method}; "
            f"Eq. 1: {fmt(self.eq1)})"
        )


def extents_from_intervals(lo: np.ndarray, hi: np.ndarray, factor: int) -> tuple[int, int] | None:
    """Exact left/right extents for ZoRs whose edges are multiples of F.

    For an output ``o`` the nearest F-aligned ZoR start at or before it is
    ``F * floor(o / F)`` and the nearest end after it is ``F * (floor(o / F) + 1)``; the
    left extent is the largest ``start - lo[o]`` and the right one the largest
    ``hi[o] - (end - 1)``. Only outputs whose interval stays clear of the probe's ends are
    used: near the ends the probe's own border clips the intervals.

    Parameters
    ----------
    lo, hi : numpy.ndarray of float, shape (n,)
        Input interval of every output index (inclusive; ``+inf``/``-inf``: none).
    factor : int
        F in pixels.

    Returns
    -------
    (left, right) in pixels, or None if fewer than ``2 F`` consecutive outputs are clear of
    the ends (the probe is too short for this receptive field).
    """
    n = len(lo)
    ok = np.isfinite(lo) & np.isfinite(hi) & (lo > 0) & (hi < n - 1) & (lo <= hi)
    o = np.flatnonzero(ok)
    if o.size < 2 * factor or (o[-1] - o[0] + 1) != o.size:
        return None
    # whole F-blocks only: a block's every phase must be seen
    first = -(-o[0] // factor) * factor
    last = (o[-1] + 1) // factor * factor
    if last - first < factor:
        return None
    o = np.arange(first, last)
    start = (o // factor) * factor
    end = start + factor
    left = int(max(0, (start - lo[o]).max()))
    right = int(max(0, (hi[o] - (end - 1)).max()))
    return left, right


def _lcm(values: list[int]) -> int:
    out = 1
    for v in values:
        out = out * v // math.gcd(out, v)
    return out


def _factor(strides: set[Fraction]) -> int:
    """F: the least common multiple of the lattice steps (numerators of the strides)."""
    return _lcm([s.numerator for s in strides if s >= 1]) if strides else 1


def _guesser(model: Any) -> Any:
    """``aten name -> (path, class)`` for TorchScript models, whose calls cannot be followed."""
    hints = {
        "native_group_norm": ("GroupNorm",),
        "native_batch_norm": ("InstanceNorm", "BatchNorm"),
        "_native_batch_norm_legit": ("InstanceNorm", "BatchNorm"),
        "native_layer_norm": ("LayerNorm",),
        "upsample_bilinear2d": ("Upsample",),
        "upsample_linear1d": ("Upsample",),
        "upsample_trilinear3d": ("Upsample",),
        "mean": ("AdaptiveAvgPool", "AvgPool"),
        "_adaptive_avg_pool2d": ("AdaptiveAvgPool",),
        "adaptive_max_pool2d": ("AdaptiveMaxPool",),
        "_softmax": ("MultiheadAttention", "Softmax"),
    }
    mods = [
        (p, getattr(m, "original_name", None) or type(m).__name__) for p, m in model.named_modules()
    ]

    def guess(aten: str) -> tuple[str, str]:
        for prefix in hints.get(aten, ()):
            for p, cls in mods:
                if cls.startswith(prefix):
                    return p, cls
        return "", ""

    return guess


def receptive_field(
    model: Any,
    ndim: int = 2,
    in_channels: int = 1,
    assume_eval: bool = False,
    *,
    time_budget: float | None = 30.0,
) -> ReceptiveField:
    """Compute F, the exact dependency extents, the halo and Eq. 1 of ``model``.

    Parameters
    ----------
    model : torch.nn.Module or torch.jit.ScriptModule
        A fully convolutional model mapping ``(N, in_channels, *spatial)`` to
        ``(N, classes, *spatial)`` (one tensor). It is not modified: it is analysed on the
        CPU (a copy when it lives elsewhere) in eval mode, and its train/eval state is
        restored.
    ndim : int
        Number of spatial axes (2 for ``(Y, X)``, 3 for ``(Z, Y, X)``).
    in_channels : int
        Number of input channels.
    assume_eval : bool
        Do not refuse batch norm or dropout in train mode (the caller runs the model in
        ``eval()`` mode, as :class:`~napari_seamless.engine.Predictor` does).
    time_budget : float or None
        Seconds the analysis may take; None: no limit.

    Returns
    -------
    ReceptiveField
        ``factor`` (F), exact ``left`` / ``right`` extents, ``halo`` (rounded up to a
        multiple of F, paper Eq. 2) and ``eq1`` (paper Eq. 1), per axis in pixels.

    Raises
    ------
    NotTileableError
        If operations that ran make tiling inexact at any halo; the message names each
        with its module path and source line.
    UnsupportedOperationError
        For an operation without a dependency rule (named, with its module and source
        line), or a recorded graph that does not reproduce the model's output.
    ModelRunError
        If the model does not run on probe inputs, or changes the image size.
    AnalysisTimeoutError
        If the analysis takes longer than ``time_budget``.
    TypeError
        If the model does not return one tensor.

    Examples
    --------
    >>> from napari_seamless.models import UNet
    >>> rf = receptive_field(UNet(width=4).eval())
    >>> rf.factor, rf.halo, rf.eq1
    ((16, 16), (96, 96), (92, 92))

    Notes
    -----
    A result is kept for the rest of the process under the model's
    :func:`~napari_seamless.analysis.identity.model_key` (its classes, structure,
    train/eval state and weights, bit for bit), so analysing the same model again returns
    it at once; refusals and errors are not kept. Models without a key (TorchScript,
    hooks) are analysed every time.
    """
    key = model_key(model)
    if key is not None:
        key = (key, int(ndim), int(in_channels), bool(assume_eval))
    found = _ANALYSED.get(key)
    if found is not None:
        return found
    rf = _receptive_field(model, ndim, in_channels, assume_eval, time_budget)
    _ANALYSED.put(key, rf)
    return rf


def _receptive_field(
    model: Any, ndim: int, in_channels: int, assume_eval: bool, time_budget: float | None
) -> ReceptiveField:
    import torch

    from .trace import check_recording, propagate, record

    t0 = time.perf_counter()
    deadline = t0 + (time_budget if time_budget is not None else 1e12)
    model = _on_cpu(model)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32
        model = copy.deepcopy(model).float()
    guess = _guesser(model)

    def run(shape: tuple[int, ...], axis: int | None, what: str, stacks: bool = False) -> Any:
        try:
            rec = record(model, shape, dtype, stack_traces=stacks)
            axes = range(ndim) if axis is None else [axis]
            results = [propagate(rec, model, a, deadline, guess) for a in axes]
            if any(r.refusals for r in results):
                if not stacks:
                    return run(shape, axis, what, stacks=True)  # again, to name source lines
                return rec, results  # refused: no need to run the model for real
            check_recording(rec, model)
            return rec, results
        except UnsupportedOperationError:
            if stacks:
                raise
            return run(shape, axis, what, stacks=True)
        except AnalysisTimeoutError:
            raise AnalysisTimeoutError(
                f"the halo analysis ran past its {time_budget:g} s budget ({what}); pass a "
                "larger time_budget (CLI: --time-budget) or analyse a smaller model"
            ) from None

    # 1. a first strip, long on axis 0 and W wide on the others, followed along every axis:
    #    refusals, the lattice (F) and Eq. 1 per axis, and often the extents of axis 0
    last: Exception | None = None
    first = None
    long0, widths = _first_probe(ndim)
    for width in widths:
        shape = (1, in_channels, long0) + (width,) * (ndim - 1)
        try:
            first = run(shape, None, f"probe of {shape[2:]} px")
            break
        except ModelRunError as err:
            if "changes the image size" in str(err):
                raise
            last = err
    if first is None:
        _fixed_size(model, ndim, in_channels, run, assume_eval)
        raise ModelRunError(
            f"the model does not run on a {ndim}D input with {in_channels} channel(s) "
            f"({long0} px long, {', '.join(map(str, widths))} px wide): {last}. Check the "
            "number of input channels and spatial axes."
        )
    rec, results = first
    refusals: list[Refusal] = []
    for r in results:
        refusals += [x for x in r.refusals if x not in refusals]
    if not assume_eval:
        refusals += [
            Refusal(p, c, "is in train mode; call model.eval() first") for p, c in rec.train_mode
        ]
    if refusals:
        raise NotTileableError(refusals)
    factors = [_factor(r.strides) for r in results]
    eq1 = tuple(int(sum(s * d * (k // 2) for s, k, d in r.convs)) for r in results)
    width = rec.shape[3] if ndim > 1 else 1
    others = [int(math.ceil(width / f) * f) for f in factors]

    # 2. per axis: extents on strips (long on the axis, W wide elsewhere); where some
    #    resampling takes its size from another tensor, confirmed at two lengths so that a
    #    dependency that grows with the image size is never taken for a halo
    lefts, rights = [], []
    by_size = any(r.resampled_by_size for r in results)
    for axis in range(ndim):
        f = factors[axis]
        found = None
        n_axis = rec.shape[2 + axis]
        if n_axis % f == 0:
            found = extents_from_intervals(results[axis].lo.numpy(), results[axis].hi.numpy(), f)
        confirmed = found if not by_size else None
        length = max(16 * f, 2 * (max(found) if found else eq1[axis]) + 16 * f)
        length = int(math.ceil(length / f) * f)
        if length == n_axis:
            length *= 2
        strip = None
        while confirmed is None and length <= MAX_PROBE:
            strip = _strip(in_channels, axis, length, factors, others, run)
            now = extents_from_intervals(strip.lo.numpy(), strip.hi.numpy(), f)
            if now is not None and (now == found or not by_size):
                confirmed = now
            elif now is not None:
                # confirm at another length: a quarter longer is enough to tell a halo
                # from a dependency that grows with the image, and cheaper than double
                found = now
                length = int(math.ceil(length * 1.25 / f) * f)
                continue
            length *= 2
        if confirmed is None:
            raise _unbounded(axis, results[axis], strip)
        lefts.append(confirmed[0])
        rights.append(confirmed[1])
    halos = tuple(
        int(math.ceil(max(lr) / f) * f)
        for lr, f in zip(zip(lefts, rights, strict=False), factors, strict=False)
    )
    return ReceptiveField(
        factor=tuple(factors),
        left=tuple(lefts),
        right=tuple(rights),
        halo=halos,
        eq1=eq1,
        method="aten graph",
        seconds=time.perf_counter() - t0,
    )


def _fixed_size(model: Any, ndim: int, cin: int, run: Any, assume_eval: bool) -> None:
    """A model that runs on no strip: find a square size it runs at, and say why it fails.

    Raises
    ------
    NotTileableError
        If the model runs at some square size and refuses there (e.g. LayerNorm over a
        fixed spatial shape, a fixed-size position embedding with attention).
    ModelRunError
        If it runs only at a fixed size.
    """
    sizes = {2: [64, 96, 128, 224, 256], 3: [32, 64, 96]}.get(ndim, [64])
    for size in sizes:
        try:
            rec, results = run((1, cin) + (size,) * ndim, None, f"probe of {size} px")
        except ModelRunError:
            continue
        refusals: list[Refusal] = []
        for r in results:
            refusals += [x for x in r.refusals if x not in refusals]
        if refusals:
            raise NotTileableError(refusals)
        raise ModelRunError(
            f"the model runs at {size} px per axis but not on longer strips: it takes a fixed "
            "input size, so it cannot be tiled"
        )


def _first_probe(ndim: int) -> tuple[int, list[int]]:
    """Length along axis 0 and the widths tried on the other axes for the first probe."""
    return {1: (1024, [1]), 2: (512, [64, 128, 256]), 3: (128, [32, 64])}.get(ndim, (64, [16]))


def _strip(cin: int, axis: int, length: int, factors: list, others: list, run: Any) -> Any:
    """Propagate along ``axis`` on a strip: ``length`` on the axis, F (else W) elsewhere."""
    last: Exception | None = None
    for widths in (factors, others):
        shape = list(widths)
        shape[axis] = length
        try:
            _, (res,) = run((1, cin, *shape), axis, f"strip of {length} px along axis {axis}")
            return res
        except ModelRunError as err:
            if "changes the image size" in str(err):
                raise
            last = err
    raise ModelRunError(
        f"the model does not run on a strip of {length} px along axis {axis}: {last}"
    )


def _unbounded(axis: int, first: Any, strip: Any) -> Exception:
    """Name the first operation whose dependency spans (nearly) the whole probe."""
    from .trace import source_of

    res = strip or first
    n = len(res.lo)
    culprit = ""
    for node, width in res.widths:
        if width >= 0.9 * (n - 1):
            src = source_of(node)
            path = (node.meta.get("custom") or {}).get("module", "")
            name = getattr(node.target, "overloadpacket", node.target)
            culprit = (
                f" The first operation whose output depends on the whole probe is "
                f"aten.{getattr(name, '__name__', name)}"
                + (f" in '{path}'" if path else "")
                + (f" (called at {src})" if src else "")
                + "."
            )
            break
    return UnsupportedOperationError(
        f"the dependency along axis {axis} does not settle as the probe grows to {MAX_PROBE} "
        "px: the output depends on the whole image or on its size (a fixed-size resize, a "
        f"cyclic padding, a global operation), so no halo makes tiles exact.{culprit}"
    )


def _on_cpu(model: Any) -> Any:
    import torch

    for p in list(model.parameters()) + list(model.buffers()):
        if p.device.type != "cpu":
            return copy.deepcopy(model).to(torch.device("cpu"))
    return model
