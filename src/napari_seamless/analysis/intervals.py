"""Dependency intervals: what every element of a feature map depends on, along one axis.

For one spatial axis of the model's input (the *analysed* axis), every value flowing
through the recorded graph carries a :class:`Dep`: three float64 tensors of the value's
own shape,

* ``lo`` and ``hi``: the element depends on input indices ``lo .. hi`` (inclusive) along
  the analysed axis and on no others (``+inf`` / ``-inf``: on no input at all);
* ``pos``: where the element itself sits on the analysed axis, in input pixels (its
  lattice position ``index * stride``); ``nan`` when it sits nowhere (a constant, a
  padded value) and ``-inf`` when it mixes several positions (an attention score).

and ``stride``, the feature map's lattice step along the analysed axis in input pixels
(a :class:`fractions.Fraction`: 16 at the bottom of a 4-level U-Net).

Keeping the three as tensors of the value's shape makes every operation that only moves
values around (views, permutes, reshapes, slices, concatenation, padding, indexing,
pixel shuffles) exact for free: the same operation is applied to ``lo``, ``hi`` and
``pos``. ``pos`` is what tells a reduction over channels (per pixel) from a reduction
over space (statistics, global pooling, attention): the latter reduces elements whose
positions differ.

torch is imported here because this module runs on tensors; no Qt, no napari.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch

INF = float("inf")
NAN = float("nan")


@dataclass
class Dep:
    """Dependency of a tensor value along the analysed axis (see the module docstring).

    ``lo``, ``hi`` and ``pos`` are *compact*: each has as many dims as the value, and each
    dim is either the value's size or 1 (then constant along it and broadcast), so a
    feature map whose intervals do not vary over channels costs one channel.

    Attributes
    ----------
    lo, hi : torch.Tensor, float64, broadcastable to ``shape``
        Inclusive interval of input indices (pixels) each element depends on.
    pos : torch.Tensor, float64, broadcastable to ``shape``
        Position of each element on the analysed axis in input pixels; nan: none;
        -inf: mixed.
    stride : Fraction
        Lattice step of the feature map along the analysed axis, in input pixels.
    shape : tuple of int
        Shape of the value.
    """

    lo: torch.Tensor
    hi: torch.Tensor
    pos: torch.Tensor
    stride: Fraction
    shape: tuple[int, ...]

    def full(self, part: int) -> torch.Tensor:
        """``lo`` (0), ``hi`` (1) or ``pos`` (2) expanded to the value's shape (a view)."""
        return (self.lo, self.hi, self.pos)[part].expand(self.shape)

    def compact(self, dim: int) -> bool:
        """Whether ``dim`` is stored with size 1 (constant along it) while the value is longer."""
        return self.lo.shape[dim] == 1 and self.hi.shape[dim] == 1 and self.shape[dim] != 1


def make(
    lo: torch.Tensor, hi: torch.Tensor, pos: torch.Tensor, stride: Fraction, shape: Any
) -> Dep:
    """A :class:`Dep` whose parts are brought to the rank of ``shape`` (leading 1s)."""
    shape = tuple(int(x) for x in shape)
    parts = []
    for t in (lo, hi, pos):
        while t.dim() < len(shape):
            t = t.unsqueeze(0)
        parts.append(t)
    return Dep(parts[0], parts[1], parts[2], Fraction(stride), shape)


def const_parts(t: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compact ``lo``, ``hi``, ``pos`` of a value that depends on no input (rank of ``t``)."""
    one = (1,) * len(tuple(t.shape))
    return (
        torch.full(one, INF, dtype=torch.float64),
        torch.full(one, -INF, dtype=torch.float64),
        torch.full(one, NAN, dtype=torch.float64),
    )


def input_dep(shape: tuple[int, ...], dim: int) -> Dep:
    """The model input: element ``i`` along ``dim`` depends on input ``i`` and sits at ``i``."""
    n = shape[dim]
    view = [1] * len(shape)
    view[dim] = n
    ar = torch.arange(n, dtype=torch.float64).reshape(view)
    return Dep(ar, ar.clone(), ar.clone(), Fraction(1), tuple(shape))


def combine_pos(ps: list[torch.Tensor]) -> torch.Tensor:
    """Position of elements combining ``ps`` (broadcast): equal positions stay, else -inf."""
    p = torch.stack(torch.broadcast_tensors(*ps)) if len(ps) > 1 else ps[0].unsqueeze(0)
    return reduce_pos(p, (0,), keepdim=False)


def reduce_pos(p: torch.Tensor, dims: tuple[int, ...], keepdim: bool) -> torch.Tensor:
    """Combine positions over ``dims``: one position if all finite ones agree, else -inf."""
    if not dims:
        return p
    fin = torch.isfinite(p)
    big = torch.where(fin, p, INF).amin(dim=dims, keepdim=True)
    small = torch.where(fin, p, -INF).amax(dim=dims, keepdim=True)
    anyfin = fin.amax(dim=dims, keepdim=True) if fin.numel() else fin
    mixed = (p == -INF).amax(dim=dims, keepdim=True) if p.numel() else fin
    mixed = mixed | (anyfin & (big != small))
    res = torch.where(mixed, -INF, torch.where(anyfin, big, NAN))
    if not keepdim:
        for d in sorted(dims, reverse=True):
            res = res.squeeze(d)
    return res


def couples_space(p: torch.Tensor, dims: tuple[int, ...]) -> bool:
    """Whether elements reduced together over ``dims`` sit at different positions."""
    dims = tuple(d for d in dims if p.shape[d] > 1)
    if not dims or p.numel() == 0:
        return False
    r = reduce_pos(p, dims, keepdim=False)
    return bool((r == -INF).any())


def union(deps: list[Dep], shape: tuple[int, ...]) -> Dep:
    """Element-wise combination of ``deps`` broadcast to ``shape``."""
    shape = tuple(int(x) for x in shape)
    if len(deps) == 1 and deps[0].shape == shape:
        return deps[0]  # a per-element map of one input: the same dependency
    deps = [
        make(d.lo, d.hi, d.pos, d.stride, (1,) * (len(shape) - len(d.shape)) + d.shape)
        if len(d.shape) < len(shape)
        else d
        for d in deps
    ]
    lo = deps[0].lo
    hi = deps[0].hi
    for d in deps[1:]:
        lo = torch.minimum(lo, d.lo)
        hi = torch.maximum(hi, d.hi)
    ps = [d.pos for d in deps]
    if all(q.shape == ps[0].shape for q in ps) and all(
        q is ps[0] or torch.equal(q, ps[0]) for q in ps[1:]
    ):
        pos = ps[0]
    else:
        pos = combine_pos(ps)
    stride = max(deps, key=lambda d: _varies(d.pos)).stride if len(deps) > 1 else deps[0].stride
    return make(lo, hi, pos, stride, shape)


def varies_along(p: torch.Tensor, dim: int) -> bool:
    """Whether positions ``p`` differ along ``dim``.

    Looks along one line (through the middle of the other dims): positions are laid out on
    a lattice, so a line shows whether they vary along that dim.
    """
    dim = dim % p.dim()
    if p.shape[dim] < 2:
        return False
    idx: list = [s // 2 for s in p.shape]
    idx[dim] = slice(None)
    line = p[tuple(idx)]
    line = line[torch.isfinite(line)]
    return line.numel() > 1 and bool(line.max() > line.min())


def _varies(p: torch.Tensor) -> int:
    return int(any(varies_along(p, d) for d in range(p.dim())))


def analysed_dim(dep: Dep, dims: tuple[int, ...]) -> int | None:
    """The dim among ``dims`` along which positions vary (the analysed axis), if any."""
    return next((d for d in dims if varies_along(dep.pos, d)), None)


def lattice_pos(shape: tuple[int, ...], dim: int | None, stride: Fraction, base: float) -> Any:
    """Compact positions ``base + index * stride`` along ``dim`` (constant if ``dim`` is None)."""
    one = [1] * len(shape)
    if dim is None:
        return torch.full(one, base, dtype=torch.float64)
    one[dim] = shape[dim]
    ar = base + torch.arange(shape[dim], dtype=torch.float64) * float(stride)
    return ar.reshape(one)


def window_reduce(
    t: torch.Tensor,
    kernel: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    out_sizes: list[int],
    fill: float,
) -> torch.Tensor:
    """Min (``fill=+inf``) or max (``fill=-inf``) over each output's window on the last dims.

    Output ``j`` along a spatial dim covers inputs ``j * s - p + t * d`` for ``t < k``;
    positions outside the input count as ``fill`` (they depend on nothing). Works for 1 to
    3 spatial dims (the last ``len(kernel)`` dims of ``t``). A dim of size 1 in ``t``
    whose output is longer is compact (constant): it stays size 1.
    """
    nd = len(kernel)
    if nd > 3:
        raise NotImplementedError("more than 3 spatial axes")
    kernel, stride, padding, dilation, out_sizes = (
        list(kernel),
        list(stride),
        list(padding),
        list(dilation),
        list(out_sizes),
    )
    for i in range(nd):
        if t.shape[-nd + i] == 1 and out_sizes[i] != 1:
            kernel[i], stride[i], padding[i], dilation[i], out_sizes[i] = 1, 1, 0, 1, 1
    lead = t.shape[:-nd]
    x = t.reshape(-1, 1, *t.shape[-nd:])
    pads: list[int] = []
    for i in reversed(range(nd)):
        n = t.shape[-nd + i]
        need = (out_sizes[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1
        right = max(0, need - (n + padding[i]))
        pads += [padding[i], right]
    x = torch.nn.functional.pad(x, pads, value=fill)
    sign = -1.0 if fill == INF else 1.0
    pool = (
        torch.nn.functional.max_pool1d,
        torch.nn.functional.max_pool2d,
        torch.nn.functional.max_pool3d,
    )[nd - 1]
    y = sign * pool(sign * x, kernel, stride, 0, dilation)
    y = y[(Ellipsis, *[slice(0, o) for o in out_sizes])]
    return y.reshape(*lead, *y.shape[-nd:])
