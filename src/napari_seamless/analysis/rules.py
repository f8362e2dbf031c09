"""One rule per operation: how an aten operation maps dependency intervals.

Each rule receives the propagation context, the graph node, the operation's real
arguments (``args``, ``kwargs``), the :class:`~.intervals.Dep` of each argument (``deps``,
same structure, ``None`` where an argument depends on no input) and the real output, and
returns the output's ``Dep`` (a list for operations returning several tensors, ``None``
for a value that depends on no input). :data:`RULES` maps aten operation names (the
overload packet, e.g. ``"convolution"``) to rules. An operation without a rule is an
:class:`~.refusals.UnsupportedOperationError` that names it, never a guess.

Conventions checked against PyTorch's kernels (ATen ``native/``): convolution output
``j`` reads inputs ``j * s - p + t * d``; transposed convolution is the convolution of the
``s``-dilated input with padding ``d * (k - 1) - p``; pooling windows as convolution;
linear and cubic resampling with ``align_corners=False`` read source index
``(o + 0.5) * scale - 0.5`` (clamped at 0 for linear), where ``scale`` is ``1 /
scale_factor`` when one is given and ``n_in / n_out`` otherwise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from .intervals import (
    INF,
    NAN,
    Dep,
    analysed_dim,
    combine_pos,
    const_parts,
    couples_space,
    lattice_pos,
    make,
    reduce_pos,
    union,
    varies_along,
    window_reduce,
)

Rule = Callable[..., Any]
RULES: dict[str, Rule] = {}

_GLOBAL = "couples every pixel of the image, so no halo can make tiles exact"


def rule(*names: str | list[str]) -> Callable[[Rule], Rule]:
    """Register a rule for the aten operations ``names``."""

    def deco(fn: Rule) -> Rule:
        for group in names:
            for name in [group] if isinstance(group, str) else group:
                RULES[name] = fn
        return fn

    return deco


def _tensors(deps: Any) -> list[Dep]:
    out: list[Dep] = []
    if isinstance(deps, Dep):
        out.append(deps)
    elif isinstance(deps, (list, tuple)):
        for d in deps:
            out += _tensors(d)
    elif isinstance(deps, dict):
        for d in deps.values():
            out += _tensors(d)
    return out


def _ints(v: Any, nd: int, default: int | None = None) -> list[int]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        if default is None:
            raise ValueError("missing window parameter")
        return [default] * nd
    if isinstance(v, (list, tuple)):
        return [int(v[i] if len(v) == nd else v[0]) for i in range(nd)]
    return [int(v)] * nd


# ------------------------------------------------------------------ element-wise
ELEMENTWISE = (
    "abs acos add addcdiv addcmul asin atan atan2 bitwise_and bitwise_not bitwise_or "
    "bitwise_xor ceil clamp clamp_max clamp_min cos cosh div elu eq erf erfc exp exp2 expm1 "
    "floor floor_divide fmod frac ge gelu gt hardshrink hardsigmoid hardswish hardtanh "
    "heaviside isfinite isinf isnan le leaky_relu lerp lgamma log log10 log1p log2 "
    "log_sigmoid_forward logical_and logical_not logical_or logical_xor logit lt masked_fill "
    "maximum minimum mish mul nan_to_num ne neg pow reciprocal relu relu6 remainder round "
    "rrelu_with_noise rsqrt rsub selu sgn sigmoid sign silu sin sinh softplus softshrink sqrt "
    "square sub tan tanh threshold trunc where xlogy _prelu_kernel celu glu_jvp "
    "_native_batch_norm_legit_no_training"
).split()


@rule(*ELEMENTWISE)
def elementwise(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Per-element maps (activations, arithmetic, eval-mode batch norm): union of inputs."""
    ds = _tensors(deps)
    if not ds:
        return None
    outs = out if isinstance(out, (tuple, list)) else [out]
    res = [union(ds, tuple(o.shape)) if o.shape == outs[0].shape else None for o in outs]
    return res if isinstance(out, (tuple, list)) else res[0]


@rule("native_batch_norm", "_native_batch_norm_legit")
def batch_norm(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Batch norm: per pixel with running statistics; statistics over space in training."""
    training = bool(args[5]) if len(args) > 5 and not isinstance(args[5], float) else False
    if n.target.overloadpacket.__name__ == "_native_batch_norm_legit" and len(args) == 6:
        training = True  # the .no_stats overload: always statistics of the input
    if training and deps[0] is not None:
        dims = (0, *range(2, len(deps[0].shape)))
        if couples_space(deps[0].pos, dims):
            cls = p.module_class(n)
            if cls.startswith("InstanceNorm"):
                reason = f"normalises each image with its own statistics over space; it {_GLOBAL}"
            elif cls.startswith(("BatchNorm", "SyncBatchNorm")):
                reason = (
                    "is in train mode, so it normalises with statistics of the input; "
                    "call model.eval() first"
                )
            else:
                reason = f"normalises with statistics of the input over space; it {_GLOBAL}"
            p.refuse(n, reason)
        return _reduced(p, deps[0], dims, out)
    return elementwise(p, n, args, kwargs, deps[:1], out)


# ------------------------------------------------------------------ identity-like
@rule("clone", "alias", "detach", "lift_fresh_copy", "_to_copy", "contiguous", "to", "lift_fresh")
def identity(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Copies and dtype casts: the dependency is the input's."""
    return deps[0]


@rule("copy")
def copy(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """``copy(self, src)``: self's shape, src's values."""
    src = deps[1]
    if src is None:
        return None
    return union([src], tuple(out.shape))


@rule(
    "empty_like zeros_like ones_like full_like new_zeros new_ones new_empty new_full "
    "fill zeros ones full empty arange rand randn randint scalar_tensor empty_strided "
    "new_empty_strided _local_scalar_dense sym_size sym_numel sym_stride linspace eye".split()
)
def nothing(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Factories and shape queries: no dependency on the image's values."""
    return None


# ------------------------------------------------------------------ value movers
AGNOSTIC = (
    "view _unsafe_view reshape permute transpose t expand squeeze unsqueeze select "
    "narrow split split_with_sizes chunk unbind stack flip index index_select gather "
    "slice_scatter select_scatter unfold repeat repeat_interleave channel_shuffle im2col "
    "movedim reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d "
    "replication_pad2d replication_pad3d _unsafe_index view_as expand_as"
).split()

_DATA_ONLY_FIRST = {"index", "index_select", "gather", "_unsafe_index"}


def _substitute(args: Any, deps: Any, part: int, data_first_only: bool, top: bool = True) -> Any:
    """Replace tensors by ``lo`` (0), ``hi`` (1) or ``pos`` (2) of their dependency."""
    if isinstance(args, (list, tuple)):
        res = []
        for i, (a, d) in enumerate(zip(args, deps, strict=True)):
            if top and data_first_only and i > 0:
                if _tensors(d):
                    raise _DataDependent()
                res.append(a)
            else:
                res.append(_substitute(a, d, part, data_first_only, top=False))
        return type(args)(res) if isinstance(args, tuple) else res
    if isinstance(args, torch.Tensor):
        if isinstance(deps, Dep):
            return deps.full(part)
        if args.is_floating_point() or args.is_complex():
            return const_parts(args)[part].expand(tuple(args.shape))
        return args
    return args


class _DataDependent(Exception):
    pass


@rule(*AGNOSTIC)
def agnostic(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Operations that only move values: apply the same operation to lo, hi and pos."""
    ds = _tensors(deps)
    if not ds:
        return None
    name = n.target.overloadpacket.__name__
    func = n.target
    if all(d.lo.numel() == 1 and d.hi.numel() == 1 and d.pos.numel() == 1 for d in ds):
        # uniform (e.g. after a refusal): moving values around changes nothing
        outs = out if isinstance(out, (tuple, list)) else [out]
        res = [_everything_dep(ds, tuple(o.shape)) for o in outs]
        return res if isinstance(out, (tuple, list)) else res[0]
    if max(math.prod(d.shape) for d in ds) > 2**27:
        p.unsupported(n, "a value too large to follow (more than 2**27 elements)")
    if name in ("view", "_unsafe_view"):  # lo/hi may be laid out differently: reshape
        func = torch.ops.aten.reshape.default
    try:
        parts = [
            func(*_substitute(args, deps, k, name in _DATA_ONLY_FIRST), **kwargs) for k in range(3)
        ]
    except _DataDependent:
        p.unsupported(n, "indexes with positions computed from the image (data-dependent)")
    stride = ds[0].stride
    if isinstance(parts[0], (list, tuple)):
        return [
            make(a, b, c, stride, tuple(o.shape)) for a, b, c, o in zip(*parts, out, strict=True)
        ]
    return make(parts[0], parts[1], parts[2], stride, tuple(out.shape))


@rule("cat")
def cat(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Concatenation; dims other than the joined one stay compact where all parts are."""
    ds = deps[0]
    if not _tensors(ds):
        return None
    tensors = args[0]
    dim = kwargs.get("dim", args[1] if len(args) > 1 else 0) % out.dim()
    shape = tuple(out.shape)
    parts = []
    for t, d in zip(tensors, ds, strict=True):
        if tuple(t.shape) == (0,):
            continue  # legacy empty tensors are skipped by torch.cat
        trio = (d.lo, d.hi, d.pos) if d is not None else const_parts(t)
        parts.append((trio, tuple(t.shape)))
    target = []
    for k in range(len(shape)):
        if k == dim:
            target.append(None)
        else:
            target.append(1 if all(tr[0].shape[k] == 1 for tr, _ in parts) else shape[k])
    res = []
    for j in range(3):
        pieces = []
        for tr, tshape in parts:
            size = [tshape[k] if k == dim else target[k] for k in range(len(shape))]
            pieces.append(tr[j].expand(size))
        res.append(torch.cat(pieces, dim=dim))
    stride = _tensors(ds)[0].stride
    return make(res[0], res[1], res[2], stride, shape)


@rule("slice")
def slice_(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Slices and crops; a compact dim stays compact."""
    d = deps[0]
    if d is None:
        return None
    dim = (args[1] if len(args) > 1 else 0) % len(d.shape)
    start = args[2] if len(args) > 2 else None
    end = args[3] if len(args) > 3 else None
    step = args[4] if len(args) > 4 else 1
    sl = slice(start, end, step)
    parts = []
    for t in (d.lo, d.hi, d.pos):
        if t.shape[dim] == 1 and d.shape[dim] != 1:
            parts.append(t)
        else:
            idx = [slice(None)] * t.dim()
            idx[dim] = sl
            parts.append(t[tuple(idx)])
    return make(parts[0], parts[1], parts[2], d.stride, tuple(out.shape))


@rule("constant_pad_nd")
def constant_pad(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Zero (constant) padding: padded values depend on nothing and sit nowhere."""
    d = deps[0]
    if d is None:
        return None
    pad = list(args[1])
    parts = []
    for t, fill in ((d.lo, INF), (d.hi, -INF), (d.pos, NAN)):
        size = list(t.shape)
        for i in range(len(pad) // 2):
            k = len(size) - 1 - i
            if (pad[2 * i] or pad[2 * i + 1]) and size[k] == 1:
                size[k] = d.shape[k]
        parts.append(torch.nn.functional.pad(t.expand(size), pad, value=fill))
    return make(parts[0], parts[1], parts[2], d.stride, tuple(out.shape))


@rule("roll")
def roll(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """A cyclic shift along a spatial axis wraps the image around: refused."""
    d = deps[0]
    if d is None:
        return None
    dims = args[2] if len(args) > 2 else kwargs.get("dims", [])
    dims = [dims] if isinstance(dims, int) else list(dims)
    if not dims or any(couples_space(d.pos, (k % len(d.shape),)) for k in dims):
        p.refuse(n, "shifts pixels cyclically (torch.roll), wrapping the image around its border")
    return agnostic(p, n, args, kwargs, deps, out)


@rule("pixel_shuffle", "pixel_unshuffle")
def pixel_shuffle(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Space-to-depth and back: values move; the lattice step changes by the factor."""
    res = agnostic(p, n, args, kwargs, deps, out)
    if res is None:
        return None
    r = int(args[1])
    up = n.target.overloadpacket.__name__ == "pixel_shuffle"
    res.stride = deps[0].stride / r if up else deps[0].stride * r
    return res


# ------------------------------------------------------------------ windows
def _spatial(d: Dep, nd: int) -> tuple[int, ...]:
    return tuple(range(len(d.shape) - nd, len(d.shape)))


def _windowed_pos(
    p: Any, n: Any, d: Dep, out_shape: tuple[int, ...], nd: int, step: Any
) -> tuple[Any, Fraction, int | None]:
    """Output lattice: positions ``index * stride`` along the analysed dim."""
    dims = _spatial(d, nd)
    adim = analysed_dim(d, dims)
    if adim is None:
        stride = d.stride
    else:
        stride = step(adim - dims[0])
    out_adim = None if adim is None else adim - len(d.shape) + len(out_shape)
    p.note_stride(stride)
    return lattice_pos(out_shape, out_adim, stride, 0.0), stride, adim


@rule("convolution", "_convolution", "convolution_overrideable")
def convolution(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Convolution and transposed convolution, any kernel, stride, padding, dilation, groups."""
    x, w = args[0], args[1]
    stride_, padding_, dilation_, transposed, output_padding, groups = args[3:9]
    if deps[1] is not None:
        p.unsupported(n, "convolves with weights computed from the image")
    d = deps[0]
    bias = deps[2] if len(deps) > 2 else None
    if d is None:
        return None if bias is None else union([bias], tuple(out.shape))
    nd = w.dim() - 2
    lo, hi = d.lo, d.hi
    batched = x.dim() == w.dim()
    if not batched:
        lo, hi = lo.unsqueeze(0), hi.unsqueeze(0)
    kernel = list(w.shape[2:])
    s, dil = _ints(stride_, nd), _ints(dilation_, nd)
    pad = _ints(padding_, nd) if not isinstance(padding_, str) else None
    if pad is None:
        pad = [(dil[i] * (kernel[i] - 1)) // 2 if padding_ == "same" else 0 for i in range(nd)]
    n_, c = lo.shape[:2]
    g = int(groups)
    sp = lo.shape[2:]
    if c == 1:  # compact over channels: every group sees the same intervals
        lo_g, hi_g = lo, hi
    else:
        lo_g = lo.reshape(n_, g, c // g, *sp).amin(2)
        hi_g = hi.reshape(n_, g, c // g, *sp).amax(2)
    out_t = out if batched else out.unsqueeze(0)
    out_sp = list(out_t.shape[2:])
    if transposed:
        lo_g, hi_g = _dilate(lo_g, s, nd, INF), _dilate(hi_g, s, nd, -INF)
        eff = [dil[i] * (kernel[i] - 1) - pad[i] for i in range(nd)]
        ones = [1] * nd
        lo_w = window_reduce(lo_g, kernel, ones, eff, dil, out_sp, INF)
        hi_w = window_reduce(hi_g, kernel, ones, eff, dil, out_sp, -INF)
    else:
        lo_w = window_reduce(lo_g, kernel, s, pad, dil, out_sp, INF)
        hi_w = window_reduce(hi_g, kernel, s, pad, dil, out_sp, -INF)
    if lo_w.shape[1] != 1:
        reps = out_t.shape[1] // g
        lo_w = lo_w.repeat_interleave(reps, dim=1)
        hi_w = hi_w.repeat_interleave(reps, dim=1)
    if not batched:
        lo_w, hi_w = lo_w[0], hi_w[0]

    def step(i: int) -> Fraction:
        return d.stride / s[i] if transposed else d.stride * s[i]

    pos, stride, adim = _windowed_pos(p, n, d, tuple(out.shape), nd, step)
    if adim is not None and not transposed:
        i = adim - (len(d.shape) - nd)
        p.note_conv(d.stride, kernel[i], dil[i])
    res = make(lo_w, hi_w, pos, stride, tuple(out.shape))
    if bias is not None:
        res = union([res, bias], tuple(out.shape))
        res.pos, res.stride = pos, stride
    _check_global_window(p, n, d, nd, kernel, pad, out_sp)
    return res


def _dilate(t: torch.Tensor, s: list[int], nd: int, fill: float) -> torch.Tensor:
    sp = t.shape[-nd:]
    size = [(sp[i] - 1) * s[i] + 1 for i in range(nd)]
    res = torch.full((*t.shape[:-nd], *size), fill, dtype=t.dtype)
    res[(Ellipsis, *[slice(None, None, s[i]) for i in range(nd)])] = t
    return res


def _check_global_window(
    p: Any, n: Any, d: Dep, nd: int, kernel: list[int], pad: list[int], out_sp: list[int]
) -> None:
    dims = _spatial(d, nd)
    adim = analysed_dim(d, dims)
    if adim is None:
        return
    i = adim - dims[0]
    n_in = d.shape[adim]
    if out_sp[i] == 1 and kernel[i] >= n_in + 2 * pad[i] and n_in > 1:
        p.refuse(n, f"pools or convolves over the whole input (kernel = input size); it {_GLOBAL}")


@rule(
    "max_pool1d max_pool2d max_pool3d max_pool1d_with_indices max_pool2d_with_indices "
    "max_pool3d_with_indices avg_pool1d avg_pool2d avg_pool3d".split()
)
def pooling(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Max and average pooling, any kernel, stride, padding, dilation, ceil mode."""
    d = deps[0]
    if d is None:
        return None
    name = n.target.overloadpacket.__name__
    nd = int(re.search(r"pool(\d)d", name).group(1))
    first = out[0] if isinstance(out, (tuple, list)) else out
    kernel = _ints(args[1], nd)
    stride_arg = args[2] if len(args) > 2 else None
    s = kernel if stride_arg is None or len(stride_arg) == 0 else _ints(stride_arg, nd)
    pad = _ints(args[3] if len(args) > 3 else 0, nd)
    dil = _ints(args[4], nd) if name.startswith("max") and len(args) > 4 else [1] * nd
    out_sp = list(first.shape[-nd:])
    lo = window_reduce(d.lo, kernel, s, pad, dil, out_sp, INF)
    hi = window_reduce(d.hi, kernel, s, pad, dil, out_sp, -INF)
    pos, stride, _ = _windowed_pos(p, n, d, tuple(first.shape), nd, lambda i: d.stride * s[i])
    _check_global_window(p, n, d, nd, kernel, pad, out_sp)
    res = make(lo, hi, pos, stride, tuple(first.shape))
    return [res, res] if isinstance(out, (tuple, list)) else res


@rule("max_unpool2d", "max_unpool3d")
def max_unpool(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Unpooling writes input ``j`` into its pooling window; which cell depends on the indices."""
    ds = [d for d in deps[:2] if d is not None]
    if not ds:
        return None
    nd = 2 if n.target.overloadpacket.__name__.endswith("2d") else 3
    src = union(ds, ds[0].shape)
    in_sp = src.shape[-nd:]
    out_sp = out.shape[-nd:]
    s = [out_sp[i] // in_sp[i] for i in range(nd)]
    if any(out_sp[i] != in_sp[i] * s[i] for i in range(nd)):
        p.unsupported(n, f"unpooling from {tuple(in_sp)} to {tuple(out_sp)} (not a whole factor)")
    lo, hi = src.lo, src.hi
    for i in range(nd):
        dim = lo.dim() - nd + i
        if lo.shape[dim] != 1:
            lo = lo.repeat_interleave(s[i], dim=dim)
            hi = hi.repeat_interleave(s[i], dim=dim)
    pos, stride, _ = _windowed_pos(p, n, src, tuple(out.shape), nd, lambda i: src.stride / s[i])
    return make(lo, hi, pos, stride, tuple(out.shape))


# ------------------------------------------------------------------ resampling
def _resampled(p: Any, d: Dep, lo: torch.Tensor, hi: torch.Tensor, out: Any, by_size: bool) -> Dep:
    nd = out.dim() - 2
    dims = _spatial(d, nd)
    adim = analysed_dim(d, dims)

    def step(i: int) -> Fraction:
        return d.stride * Fraction(d.shape[dims[i]], out.shape[dims[i]])

    pos, stride, _ = _windowed_pos(p, None, d, tuple(out.shape), nd, step)
    if adim is not None:
        p.note_resample(by_size)
    return make(lo, hi, pos, stride, tuple(out.shape))


def _scales(n: Any, args: Any, nd: int, first_scale: int) -> list:
    """Scale factors of an upsample call (None where the output size decides)."""
    if n.target._overloadname == "vec":
        sf = args[first_scale] if len(args) > first_scale else None
        return list(sf) if sf is not None else [None] * nd
    scales = list(args[first_scale : first_scale + nd]) + [None] * nd
    return scales[:nd]


@rule(
    "upsample_nearest1d upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d "
    "_upsample_nearest_exact2d _upsample_nearest_exact3d".split()
)
def nearest_resample(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Nearest resampling: every output copies one source index."""
    d = deps[0]
    if d is None:
        return None
    nd = out.dim() - 2
    exact = n.target.overloadpacket.__name__.startswith("_upsample_nearest_exact")
    scales = _scales(n, args, nd, 2)
    lo, hi = d.lo, d.hi
    for i in range(nd):
        dim = lo.dim() - nd + i
        if lo.shape[dim] == 1:
            continue
        n_in, n_out = d.shape[dim], out.shape[dim]
        ratio = (1.0 / scales[i]) if scales[i] else n_in / n_out
        o = np.arange(n_out, dtype=np.float32)
        src = np.floor((o + (0.5 if exact else 0.0)) * np.float32(ratio)).astype(np.int64)
        idx = torch.from_numpy(np.clip(src, 0, n_in - 1))
        lo, hi = lo.index_select(dim, idx), hi.index_select(dim, idx)
    return _resampled(p, d, lo, hi, out, all(x is None for x in scales))


def _source_indices(n_in: int, n_out: int, scale: float | None, cubic: bool, dtype: Any) -> list:
    """Source indices with a non-zero weight for every output index (align_corners=False)."""
    ratio = (1.0 / scale) if scale else n_in / n_out
    o = np.arange(n_out, dtype=dtype)
    src = (o + dtype(0.5)) * dtype(ratio) - dtype(0.5)
    if not cubic:
        src = np.maximum(src, dtype(0))
    i0 = np.floor(src).astype(np.int64)
    frac = src - i0
    if cubic:
        taps = [i0 - 1, i0, i0 + 1, i0 + 2]
        taps = [np.where(frac > 0, t, i0) for t in taps]
    else:
        i0 = np.minimum(i0, n_in - 1)
        taps = [i0, np.where(frac > 0, np.minimum(i0 + 1, n_in - 1), i0)]
    return [torch.from_numpy(np.clip(t, 0, n_in - 1)) for t in taps]


@rule("upsample_linear1d upsample_bilinear2d upsample_trilinear3d upsample_bicubic2d".split())
def linear_resample(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """(Bi/tri)linear and bicubic resampling with ``align_corners=False``."""
    d = deps[0]
    if d is None:
        return None
    name = n.target.overloadpacket.__name__
    nd = out.dim() - 2
    align = bool(args[2]) if len(args) > 2 else False
    scales = _scales(n, args, nd, 3)
    if align:
        p.refuse(
            n,
            "resamples with align_corners=True, which scales by (n - 1) / (m - 1) and so "
            "depends on the input size; use align_corners=False",
        )
    single = args[0].dtype in (torch.float32, torch.float16, torch.bfloat16)
    dtype = np.float32 if single else np.float64
    lo, hi = d.lo, d.hi
    for i in range(nd):
        dim = lo.dim() - nd + i
        if lo.shape[dim] == 1:
            continue
        taps = _source_indices(
            d.shape[dim], out.shape[dim], scales[i], name.endswith("bicubic2d"), dtype
        )
        lo = torch.stack([lo.index_select(dim, t) for t in taps]).amin(0)
        hi = torch.stack([hi.index_select(dim, t) for t in taps]).amax(0)
    return _resampled(p, d, lo, hi, out, all(x is None for x in scales))


@rule(
    "adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d _adaptive_avg_pool2d "
    "_adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d".split()
)
def adaptive_pool(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Adaptive pooling: the identity at the input's size, else size-dependent windows."""
    d = deps[0]
    if d is None:
        return None
    first = out[0] if isinstance(out, (tuple, list)) else out
    nd = len(_ints(args[1], 1)) if isinstance(args[1], (list, tuple)) else 1
    nd = len(args[1]) if isinstance(args[1], (list, tuple)) else nd
    if tuple(first.shape) == d.shape:
        return [d, d] if isinstance(out, (tuple, list)) else d
    dims = _spatial(d, nd)
    if couples_space(d.pos, dims) or analysed_dim(d, dims) is not None:
        p.refuse(n, f"pools to a fixed output size (adaptive pooling); it {_GLOBAL}")
    res = _reduced(p, d, dims, first)
    return [res, res] if isinstance(out, (tuple, list)) else res


# ------------------------------------------------------------------ reductions
def _dims(v: Any, ndim: int) -> tuple[int, ...]:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        return tuple(range(ndim))
    if isinstance(v, int):
        return (v % ndim,)
    return tuple(sorted(int(x) % ndim for x in v))


def _reduced(p: Any, d: Dep, dims: tuple[int, ...], out: Any) -> Any:
    """Union over ``dims``, shaped like ``out`` (same rank: broadcast back; else squeezed)."""
    outs = out if isinstance(out, (tuple, list)) else [out]
    lo_k = d.lo.amin(dim=dims, keepdim=True) if dims else d.lo
    hi_k = d.hi.amax(dim=dims, keepdim=True) if dims else d.hi
    pos_k = reduce_pos(d.pos, dims, keepdim=True)
    res = []
    for o in outs:
        if not isinstance(o, torch.Tensor):
            res.append(None)
            continue
        shape = tuple(o.shape)
        parts = [lo_k, hi_k, pos_k]
        if len(shape) == len(d.shape) - len(dims):
            for k in sorted(dims, reverse=True):
                parts = [t.squeeze(k) for t in parts]
        elif len(shape) != len(d.shape):
            parts = _everything(d, shape)
        try:
            for t in parts:
                torch.broadcast_shapes(tuple(t.shape), shape)
        except RuntimeError:
            parts = _everything(d, shape)
        res.append(make(*parts, d.stride, shape))
    return res if isinstance(out, (tuple, list)) else res[0]


def _everything(d: Dep, shape: tuple[int, ...]) -> list[torch.Tensor]:
    """Every element depends on all of ``d`` (a safe superset, e.g. for norm statistics)."""
    one = (1,) * len(shape)
    alldims = tuple(range(d.pos.dim()))
    return [
        d.lo.amin().reshape(one),
        d.hi.amax().reshape(one),
        reduce_pos(d.pos, alldims, keepdim=False).reshape(one),
    ]


REDUCTIONS = {
    # name: (position of the dim argument, reason when it couples space)
    "sum": 1,
    "mean": 1,
    "amax": 1,
    "amin": 1,
    "max": 1,
    "min": 1,
    "var": 1,
    "std": 1,
    "var_mean": 1,
    "std_mean": 1,
    "logsumexp": 1,
    "prod": 1,
    "argmax": 1,
    "argmin": 1,
    "any": 1,
    "all": 1,
    "cumsum": 1,
    "cumprod": 1,
    "cummax": 1,
    "cummin": 1,
    "sort": 1,
    "norm": 2,
    "linalg_vector_norm": 2,
    "nansum": 1,
    "count_nonzero": 1,
    "median": 1,
    "mode": 1,
    "_softmax": 1,
    "_log_softmax": 1,
    "softmax": 1,
    "log_softmax": 1,
    "topk": 2,
}


@rule(*REDUCTIONS)
def reduction(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Reductions, softmax, sorting: per pixel over channels; over space they are refused."""
    d = deps[0]
    if d is None:
        return None
    name = n.target.overloadpacket.__name__
    k = REDUCTIONS[name]
    dim = kwargs.get("dim", args[k] if len(args) > k else None)
    if name in ("sort",) and dim is None:
        dim = -1
    if name == "topk" and dim is None:
        dim = -1
    if name in ("max", "min") and (len(args) < 2 or isinstance(args[1], torch.Tensor)):
        if len(args) >= 2 and isinstance(args[1], torch.Tensor):  # max.other: element-wise
            return elementwise(p, n, args, kwargs, deps, out)
        dim = None
    dims = _dims(dim, len(d.shape))
    if couples_space(d.pos, dims):
        if "softmax" in name:
            reason = f"takes a softmax over image positions (attention); it {_GLOBAL}"
        else:
            reason = (
                f"reduces over image positions (global pooling or image statistics); it {_GLOBAL}"
            )
        p.refuse(n, reason)
    return _reduced(p, d, dims, out)


@rule("native_layer_norm")
def layer_norm(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """LayerNorm over the last dims: per pixel over channels, refused over space."""
    d = deps[0]
    if d is None:
        return None
    k = len(args[1])
    dims = tuple(range(len(d.shape) - k, len(d.shape)))
    if couples_space(d.pos, dims):
        p.refuse(n, f"normalises over spatial axes (LayerNorm over space); it {_GLOBAL}")
    return _reduced(p, d, dims, out)


@rule("native_group_norm")
def group_norm(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """GroupNorm: statistics over channel groups and all of space: refused."""
    d = deps[0]
    if d is None:
        return None
    dims = tuple(range(1, len(d.shape)))
    if couples_space(d.pos, dims):
        p.refuse(n, f"normalises with statistics over space (GroupNorm); it {_GLOBAL}")
    return _reduced(p, d, dims, out)


@rule("native_dropout")
def dropout(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Dropout: random in train mode (refused), the identity otherwise."""
    if len(args) > 2 and args[2]:
        p.refuse(n, "is random in train mode; call model.eval() first")
    return [deps[0], deps[0]]


@rule("bernoulli")
def bernoulli(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Random sampling inside the forward pass: refused."""
    p.refuse(n, "draws random numbers, so tiles and the whole image differ")
    return None


# ------------------------------------------------------------------ matrix products
def _contract(p: Any, n: Any, a: Dep | None, b: Dep | None, out: Any) -> Any:
    """``out[..., i, j]`` depends on row ``a[..., i, :]`` and column ``b[..., :, j]``."""
    shape = tuple(out.shape)
    los, his, poss = [], [], []
    for dep, kdim in ((a, -1), (b, -2)):
        if dep is None:
            continue
        k = len(dep.shape) + kdim
        if couples_space(dep.pos, (k,)):
            p.refuse(
                n,
                "multiplies matrices over image positions (attention or a dense layer over "
                f"space); it {_GLOBAL}",
            )
        los.append(dep.lo.amin(dim=k, keepdim=True))
        his.append(dep.hi.amax(dim=k, keepdim=True))
        poss.append(reduce_pos(dep.pos, (k,), keepdim=True))
    if not los:
        return None
    if len(poss) == 2 and varies_along(poss[0], -2) and varies_along(poss[1], -1):
        # out[i, j] pairs position i with position j: attention scores. Refused, and not
        # materialised (it can be as large as the square of the number of pixels).
        p.refuse(n, f"pairs features of different image positions (attention); it {_GLOBAL}")
        return _everything_dep([a, b], shape)
    lo, hi = los[0], his[0]
    for x, y in zip(los[1:], his[1:], strict=True):
        lo, hi = torch.minimum(lo, x), torch.maximum(hi, y)
    pos = combine_pos(poss) if len(poss) > 1 else poss[0]
    return make(lo, hi, pos, (a or b).stride, shape)


def _everything_dep(deps: list, shape: tuple[int, ...]) -> Dep:
    """A compact dependency on everything ``deps`` depend on (after a refusal)."""
    ds = [d for d in deps if d is not None]
    one = (1,) * len(shape)
    lo = torch.stack([d.lo.amin() for d in ds]).amin().reshape(one)
    hi = torch.stack([d.hi.amax() for d in ds]).amax().reshape(one)
    return make(lo, hi, torch.full(one, -INF, dtype=torch.float64), ds[0].stride, shape)


@rule("mm", "bmm")
def mm(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Matrix products: a dense layer over channels is per pixel; over positions, refused."""
    return _contract(p, n, deps[0], deps[1], out)


@rule("addmm", "baddbmm", "addbmm")
def addmm(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """``bias + a @ b``."""
    res = _contract(p, n, deps[1], deps[2], out)
    if deps[0] is None:
        return res
    bias = union([deps[0]], tuple(out.shape))
    return bias if res is None else union([res, bias], tuple(out.shape))


@rule(
    "_scaled_dot_product_flash_attention_for_cpu _scaled_dot_product_attention_math "
    "_scaled_dot_product_flash_attention _scaled_dot_product_efficient_attention "
    "scaled_dot_product_attention".split()
)
def attention(p: Any, n: Any, args: Any, kwargs: Any, deps: Any, out: Any) -> Any:
    """Scaled dot-product attention: over image positions it is refused."""
    q, k, v = deps[0], deps[1], deps[2]
    for dep in (k, v):
        if dep is not None and couples_space(dep.pos, (len(dep.shape) - 2,)):
            p.refuse(n, f"attends over image positions (attention); it {_GLOBAL}")
    first = out[0] if isinstance(out, (tuple, list)) else out
    ds = [x for x in (q, k, v) if x is not None]
    if not ds:
        return None
    lo = torch.stack([x.lo.amin() for x in ds]).amin()
    hi = torch.stack([x.hi.amax() for x in ds]).amax()
    shape = tuple(first.shape)
    one = (1,) * len(shape)
    res = make(
        lo.reshape(one),
        hi.reshape(one),
        torch.full(one, -INF, dtype=torch.float64),
        ds[0].stride,
        shape,
    )
    if isinstance(out, (tuple, list)):
        return [res] + [None] * (len(out) - 1)
    return res
