"""Exact dependency analysis of a traced torch model, one spatial axis at a time.

For every tensor in the model's ``torch.fx`` graph and every index along one spatial axis,
this module follows the interval ``[lo, hi]`` of *input* indices that the value at that
index depends on, through every node: convolutions (any kernel, stride, padding,
dilation, padding mode), transposed convolutions, max/average pooling, max-unpooling,
nearest and (bi/tri)linear upsampling with ``align_corners=False``, padding layers,
slices and crops, concatenation, addition and other element-wise operations, and
normalisation or activation layers that act per pixel. An operation it does not know is
an error that names it (:class:`UnsupportedOperationError`), never a guess.

Each axis is analysed on a real forward pass of a ``(1, C, L, F, ...)`` probe (``L`` long
on the analysed axis), so that sizes computed inside the model are real; the intervals
are numpy arrays of length ``L`` and cost little next to the forward pass.

torch is imported here because this module runs models; no Qt, no napari.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

__all__ = [
    "UnsupportedOperationError",
    "dependency_intervals",
    "extents_from_intervals",
    "meta_copy",
    "trace",
]

EMPTY = np.int64(2**60)  # lo of an index that depends on no input; hi is -EMPTY


class UnsupportedOperationError(ValueError):
    """An operation the dependency analysis does not know; the message names it."""


class _Dep:
    """Input-index interval per output index along one axis: arrays ``lo``, ``hi``."""

    __slots__ = ("lo", "hi")

    def __init__(self, lo: np.ndarray, hi: np.ndarray) -> None:
        self.lo = lo
        self.hi = hi

    def __len__(self) -> int:
        return len(self.lo)

    @classmethod
    def empty(cls, n: int) -> _Dep:
        return cls(np.full(n, EMPTY), np.full(n, -EMPTY))

    def union(self, other: _Dep) -> _Dep:
        if len(other) == 1 and len(self) != 1:
            other = _Dep(np.repeat(other.lo, len(self)), np.repeat(other.hi, len(self)))
        if len(self) == 1 and len(other) != 1:
            return other.union(self)
        if len(self) != len(other):
            raise UnsupportedOperationError(
                f"element-wise operation on sizes {len(self)} and {len(other)} along one axis"
            )
        return _Dep(np.minimum(self.lo, other.lo), np.maximum(self.hi, other.hi))

    def gather(self, index: np.ndarray, valid: np.ndarray | None = None) -> _Dep:
        """Output ``o`` depends on inputs ``index[o, :]`` (where ``valid``)."""
        idx = np.clip(index, 0, len(self) - 1)
        lo, hi = self.lo[idx], self.hi[idx]
        if valid is not None:
            lo = np.where(valid, lo, EMPTY)
            hi = np.where(valid, hi, -EMPTY)
        if lo.ndim == 1:
            return _Dep(lo, hi)
        return _Dep(lo.min(axis=1), hi.max(axis=1))


def _pair(v: Any, axis: int, ndim: int) -> int:
    if isinstance(v, (tuple, list)):
        return int(v[axis] if len(v) == ndim else v[0])
    return int(v)


def _window(dep: _Dep, n_out: int, k: int, s: int, p: int, d: int) -> _Dep:
    """Convolution / pooling: ``out[j]`` reads ``in[j*s - p + t*d]``, ``t < k``."""
    j = np.arange(n_out)[:, None]
    idx = j * s - p + np.arange(k)[None, :] * d
    return dep.gather(idx, (idx >= 0) & (idx < len(dep)))


def _scatter(dep: _Dep, n_out: int, k: int, s: int, p: int, d: int) -> _Dep:
    """Transposed convolution / unpooling: ``in[j]`` writes ``out[j*s - p + t*d]``."""
    out = _Dep.empty(n_out)
    j = np.arange(len(dep))[:, None]
    o = j * s - p + np.arange(k)[None, :] * d
    src = np.broadcast_to(j, o.shape)
    ok = (o >= 0) & (o < n_out)
    np.minimum.at(out.lo, o[ok], dep.lo[src[ok]])
    np.maximum.at(out.hi, o[ok], dep.hi[src[ok]])
    return out


def _resample(dep: _Dep, n_out: int, mode: str, scale: float | None) -> _Dep:
    """Nearest or linear resampling with ``align_corners=False`` (PyTorch's index maths)."""
    n_in = len(dep)
    ratio = (1.0 / scale) if scale else n_in / n_out
    o = np.arange(n_out, dtype=np.float64)
    if mode == "nearest":
        return dep.gather(np.minimum(np.floor(o * ratio).astype(np.int64), n_in - 1))
    if mode in ("linear", "bilinear", "trilinear", "bicubic"):
        if mode == "bicubic":
            src = (o + 0.5) * ratio - 0.5
            i0 = np.floor(src).astype(np.int64)
            idx = i0[:, None] + np.arange(-1, 3)[None, :]
            return dep.gather(np.clip(idx, 0, n_in - 1))
        src = np.maximum((o + 0.5) * ratio - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        frac = src - i0
        idx = np.stack([i0, np.where(frac > 0, i1, i0)], axis=1)
        return dep.gather(idx)
    raise UnsupportedOperationError(f"interpolation mode {mode!r}")


def _pad(dep: _Dep, before: int, after: int, mode: str) -> _Dep:
    n = len(dep)
    o = np.arange(n + before + after) - before
    if mode in ("constant", "zeros"):
        return dep.gather(o, (o >= 0) & (o < n))
    if mode == "reflect":
        period = 2 * (n - 1) if n > 1 else 1
        m = np.mod(o, period)
        return dep.gather(np.where(m >= n, period - m, m))
    if mode == "replicate":
        return dep.gather(np.clip(o, 0, n - 1))
    raise UnsupportedOperationError(
        f"padding mode {mode!r}: it wraps the image around, which tiles cannot reproduce"
    )


_ELEMENTWISE_MODULES = (
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "SELU",
    "CELU",
    "GELU",
    "SiLU",
    "Mish",
    "Sigmoid",
    "Tanh",
    "Hardtanh",
    "Hardswish",
    "Hardsigmoid",
    "Softplus",
    "Softsign",
    "Identity",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "AlphaDropout",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "SyncBatchNorm",
    "LogSigmoid",
    "Threshold",
)
_ELEMENTWISE_NAMES = {
    "relu",
    "relu_",
    "relu6",
    "leaky_relu",
    "leaky_relu_",
    "elu",
    "selu",
    "celu",
    "gelu",
    "silu",
    "mish",
    "sigmoid",
    "tanh",
    "hardtanh",
    "hardswish",
    "hardsigmoid",
    "softplus",
    "softsign",
    "dropout",
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "batch_norm",
    "abs",
    "exp",
    "log",
    "sqrt",
    "neg",
    "clamp",
    "clip",
    "contiguous",
    "clone",
    "float",
    "double",
    "half",
    "to",
    "type_as",
    "detach",
    "sigmoid_",
    "tanh_",
    "square",
    "pow",
    "log_softmax_",
    "add",
    "sub",
    "mul",
    "div",
    "add_",
    "mul_",
    "sub_",
    "div_",
    "maximum",
    "minimum",
    "where",
    "true_divide",
    "rsub",
    "__add__",
    "__mul__",
    "__sub__",
    "__truediv__",
    "__radd__",
    "__rmul__",
    "__neg__",
    "logit",
}
_BINARY_OPERATORS = {
    operator.add,
    operator.mul,
    operator.sub,
    operator.truediv,
    operator.neg,
    operator.iadd,
    operator.imul,
    operator.pow,
}
_SIZE_METHODS = {"size", "dim", "numel", "shape", "dtype", "device", "__len__"}


def _name(target: Any) -> str:
    return getattr(target, "__name__", str(target))


def _torch_mod():
    import torch

    return torch


def trace(model: Any) -> Any:
    """``torch.fx.symbolic_trace(model)``, or :class:`UnsupportedOperationError` saying why not."""
    from torch import fx

    try:
        return fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 - any tracing failure means "cannot analyse"
        first = str(err).splitlines()[0] if str(err) else ""
        raise UnsupportedOperationError(
            f"torch.fx cannot trace this model ({type(err).__name__}: {first})"
        ) from None


def meta_copy(gm: Any) -> Any:
    """A copy of a traced model whose parameters live on the ``meta`` device (no data).

    Shapes are all the dependency analysis needs from a forward pass, and meta tensors
    compute them without arithmetic or memory.
    """
    import copy

    torch = _torch_mod()
    memo: dict[int, Any] = {}
    for p in gm.parameters():
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in gm.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(gm, memo)


def dependency_intervals(
    model: Any, ndim: int, in_channels: int, axis: int, length: int, other: int
) -> tuple[np.ndarray, np.ndarray]:
    """Input-index interval of every output index along ``axis``.

    Parameters
    ----------
    model : torch.nn.Module or torch.fx.GraphModule
        A model ``torch.fx.symbolic_trace`` can trace (or its trace, see :func:`trace`),
        in eval mode.
    ndim : int
        Spatial axes.
    in_channels : int
        Input channels.
    axis : int
        Spatial axis analysed (0-based among the spatial axes).
    length : int
        Probe length along ``axis`` in pixels (a multiple of F).
    other : int
        Probe size along the other spatial axes (a multiple of F).

    Returns
    -------
    lo, hi : numpy.ndarray of int64, shape (output length,)
        Output index ``o`` depends on input indices ``lo[o] .. hi[o]`` only (inclusive).

    Raises
    ------
    UnsupportedOperationError
        For an operation the analysis does not know (named in the message) or a model
        ``torch.fx`` cannot trace.
    """
    torch = _torch_mod()
    from torch import fx

    gm = model if isinstance(model, fx.GraphModule) else trace(model)
    nn = torch.nn
    spatial_dim = 2 + axis  # tensor dimension of the analysed axis

    class Interp(fx.Interpreter):
        def __init__(self) -> None:
            super().__init__(gm)
            self.deps: dict[fx.Node, Any] = {}

        def dep_of(self, a: Any) -> Any:
            if isinstance(a, fx.Node):
                return self.deps.get(a)
            if isinstance(a, (list, tuple)):
                return [self.dep_of(x) for x in a]
            return None

        def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
            # per-pixel layers keep the shape: skip their arithmetic (only shapes matter)
            mod = gm.get_submodule(target)
            if (
                type(mod).__name__ in _ELEMENTWISE_MODULES
                and args
                and isinstance(args[0], torch.Tensor)
            ):
                return args[0]
            return super().call_module(target, args, kwargs)

        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            self.deps[n] = self.rule(n, out)
            return out

        def first_dep(self, n: fx.Node) -> _Dep:
            for a in n.all_input_nodes:
                d = self.deps.get(a)
                if isinstance(d, _Dep):
                    return d
            raise UnsupportedOperationError(f"{n.format_node()}: no spatial input found")

        def union_all(self, n: fx.Node) -> _Dep | None:
            ds = [self.deps.get(a) for a in n.all_input_nodes]
            ds = [d for d in ds if isinstance(d, _Dep)]
            if not ds:
                return None
            res = ds[0]
            for d in ds[1:]:
                res = res.union(d)
            return res

        def spatial_len(self, out: Any) -> int:
            return int(out.shape[spatial_dim])

        def rule(self, n: fx.Node, out: Any) -> Any:
            if n.op == "placeholder":
                ar = np.arange(self.spatial_len(out), dtype=np.int64)
                return _Dep(ar, ar.copy())
            if n.op == "get_attr":
                return None
            if n.op == "output":
                return self.dep_of(n.args[0])
            if n.op == "call_module":
                return self.module_rule(n, gm.get_submodule(n.target), out)
            if n.op == "call_function":
                return self.function_rule(n, n.target, out)
            if n.op == "call_method":
                return self.method_rule(n, n.target, out)
            raise UnsupportedOperationError(f"graph node {n.op}")

        # ---------------------------------------------------------------- modules
        def module_rule(self, n: fx.Node, mod: Any, out: Any) -> Any:
            cls = type(mod).__name__
            where = f"{cls} at '{n.target}'"
            if cls in _ELEMENTWISE_MODULES:
                return self.first_dep(n)
            if isinstance(mod, nn.Softmax | nn.LogSoftmax):
                if mod.dim is not None and mod.dim % (ndim + 2) >= 2:
                    raise UnsupportedOperationError(f"{where}: softmax over a spatial axis")
                return self.first_dep(n)
            dep = self.first_dep(n)
            n_out = self.spatial_len(out)
            if isinstance(mod, nn.modules.conv._ConvTransposeNd | nn.modules.pooling._MaxUnpoolNd):
                return _scatter(
                    dep,
                    n_out,
                    _pair(mod.kernel_size, axis, ndim),
                    _pair(mod.stride, axis, ndim),
                    _pair(mod.padding, axis, ndim),
                    _pair(getattr(mod, "dilation", 1), axis, ndim),  # unpooling has none
                )
            if isinstance(mod, nn.modules.conv._ConvNd):
                k, d = _pair(mod.kernel_size, axis, ndim), _pair(mod.dilation, axis, ndim)
                s = _pair(mod.stride, axis, ndim)
                if isinstance(mod.padding, str):
                    total = d * (k - 1) if mod.padding == "same" else 0
                    p = total // 2
                else:
                    p = _pair(mod.padding, axis, ndim)
                if mod.padding_mode != "zeros" and p:
                    dep = _pad(dep, p, p, mod.padding_mode)
                    return _window(dep, n_out, k, s, 0, d)
                return _window(dep, n_out, k, s, p, d)
            if isinstance(mod, nn.modules.pooling._MaxPoolNd | nn.modules.pooling._AvgPoolNd):
                return _window(
                    dep,
                    n_out,
                    _pair(mod.kernel_size, axis, ndim),
                    _pair(mod.stride or mod.kernel_size, axis, ndim),
                    _pair(mod.padding, axis, ndim),
                    _pair(getattr(mod, "dilation", 1), axis, ndim),  # avg pools have none
                )
            if isinstance(mod, nn.Upsample):
                if mod.align_corners:
                    raise UnsupportedOperationError(f"{where}: align_corners=True")
                sf = mod.scale_factor
                sf = _pair(sf, axis, ndim) if isinstance(sf, (tuple, list)) else sf
                return _resample(dep, n_out, mod.mode, None if mod.size is not None else sf)
            if isinstance(
                mod,
                nn.modules.padding._ConstantPadNd
                | nn.modules.padding._ReflectionPadNd
                | nn.modules.padding._ReplicationPadNd,
            ):
                pads = mod.padding  # (last before, last after, ...) as in F.pad
                before, after = self.pad_amounts(pads)
                mode = (
                    "reflect"
                    if isinstance(mod, nn.modules.padding._ReflectionPadNd)
                    else "replicate"
                    if isinstance(mod, nn.modules.padding._ReplicationPadNd)
                    else "constant"
                )
                return _pad(dep, before, after, mode)
            raise UnsupportedOperationError(
                f"{where}: the dependency analysis does not know this module"
            )

        def pad_amounts(self, pads: Any) -> tuple[int, int]:
            pads = list(pads)
            k = ndim - 1 - axis  # F.pad lists the last axis first
            if 2 * k + 1 < len(pads):
                return int(pads[2 * k]), int(pads[2 * k + 1])
            return 0, 0

        # ---------------------------------------------------------------- functions
        def function_rule(self, n: fx.Node, f: Any, out: Any) -> Any:
            name = _name(f)
            if f is operator.getitem:
                src = n.args[0]
                base = self.dep_of(src)
                if isinstance(base, list):  # tuple output (e.g. return_indices)
                    return base[n.args[1]]
                if isinstance(base, _Dep):
                    return self.index_rule(n, out, base)
                return None
            if not isinstance(out, torch.Tensor) and not isinstance(out, (tuple, list)):
                return None
            if isinstance(out, (tuple, list)):
                if name in (
                    "max_pool1d_with_indices",
                    "max_pool2d_with_indices",
                    "max_pool3d_with_indices",
                    "max_pool1d",
                    "max_pool2d",
                    "max_pool3d",
                ):
                    d = self.pool_fn(n, out[0])
                    return [d, d]
                raise UnsupportedOperationError(f"function {name} returning a tuple")
            if out.ndim != ndim + 2:
                if any(isinstance(self.deps.get(a), _Dep) for a in n.all_input_nodes):
                    raise UnsupportedOperationError(
                        f"function {name} changes the number of axes (a size-dependent reshape "
                        "or a reduction over space)"
                    )
                return None
            if f in (torch.cat, torch.concat) or name in ("cat", "concat"):
                dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0) % (ndim + 2)
                parts = [self.dep_of(a) for a in n.args[0]]
                if dim == spatial_dim:
                    return _Dep(
                        np.concatenate([p.lo for p in parts]), np.concatenate([p.hi for p in parts])
                    )
                res = parts[0]
                for p in parts[1:]:
                    res = res.union(p)
                return res
            if f in _BINARY_OPERATORS or name in _ELEMENTWISE_NAMES:
                return self.union_all(n)
            if name in ("softmax", "log_softmax"):
                return self.softmax_rule(n, f"function {name}")
            dep = self.first_dep(n)
            n_out = self.spatial_len(out)
            if name in ("conv1d", "conv2d", "conv3d"):
                w = self.env[n.args[1]] if isinstance(n.args[1], fx.Node) else n.args[1]
                k = int(w.shape[spatial_dim])
                s = _pair(self.arg(n, 3, "stride", 1), axis, ndim)
                pad = self.arg(n, 4, "padding", 0)
                d = _pair(self.arg(n, 5, "dilation", 1), axis, ndim)
                p = (
                    (d * (k - 1)) // 2
                    if pad == "same"
                    else 0
                    if pad == "valid"
                    else _pair(pad, axis, ndim)
                )
                return _window(dep, n_out, k, s, p, d)
            if name in ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
                w = self.env[n.args[1]] if isinstance(n.args[1], fx.Node) else n.args[1]
                k = int(w.shape[spatial_dim])
                s = _pair(self.arg(n, 3, "stride", 1), axis, ndim)
                p = _pair(self.arg(n, 4, "padding", 0), axis, ndim)
                d = _pair(self.arg(n, 7, "dilation", 1), axis, ndim)
                return _scatter(dep, n_out, k, s, p, d)
            if name.startswith(("max_pool", "avg_pool")):
                return self.pool_fn(n, out)
            if name.startswith("max_unpool"):
                k = _pair(self.arg(n, 2, "kernel_size", None), axis, ndim)
                s = self.arg(n, 3, "stride", None)
                s = k if s is None else _pair(s, axis, ndim)
                p = _pair(self.arg(n, 4, "padding", 0), axis, ndim)
                return _scatter(dep, n_out, k, s, p, 1)
            if name == "interpolate":
                if self.arg(n, 4, "align_corners", None):
                    raise UnsupportedOperationError("F.interpolate with align_corners=True")
                mode = self.arg(n, 3, "mode", "nearest")
                sf = self.arg(n, 2, "scale_factor", None)
                sf = _pair(sf, axis, ndim) if isinstance(sf, (tuple, list)) else sf
                return _resample(
                    dep, n_out, mode, sf if self.arg(n, 1, "size", None) is None else None
                )
            if name == "pad":
                before, after = self.pad_amounts(self.arg(n, 1, "pad", ()))
                return _pad(dep, before, after, self.arg(n, 2, "mode", "constant"))
            raise UnsupportedOperationError(
                f"function {name}: the dependency analysis does not know this operation"
            )

        def softmax_rule(self, n: fx.Node, what: str) -> _Dep:
            """Softmax over channels is per pixel; over a spatial axis it is refused."""
            dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else None)
            if dim is None or dim % (ndim + 2) >= 2:
                raise UnsupportedOperationError(f"{what} over a spatial axis")
            return self.first_dep(n)

        def arg(self, n: fx.Node, pos: int, key: str, default: Any) -> Any:
            if key in n.kwargs:
                v = n.kwargs[key]
            elif len(n.args) > pos:
                v = n.args[pos]
            else:
                return default
            return self.env[v] if isinstance(v, fx.Node) else v

        def pool_fn(self, n: fx.Node, out: Any) -> _Dep:
            dep = self.first_dep(n)
            k = _pair(self.arg(n, 1, "kernel_size", None), axis, ndim)
            s = self.arg(n, 2, "stride", None)
            s = k if s in (None, [], ()) else _pair(s, axis, ndim)
            p = _pair(self.arg(n, 3, "padding", 0), axis, ndim)
            d = _pair(self.arg(n, 4, "dilation", 1), axis, ndim) if "max" in _name(n.target) else 1
            return _window(dep, self.spatial_len(out), k, s, p, d)

        def index_rule(self, n: fx.Node, out: Any, base: _Dep) -> Any:
            """Slices and crops: apply the same indexing to a tensor of positions."""
            src = self.env[n.args[0]]
            if not isinstance(out, torch.Tensor):
                return None
            shape = [1] * src.ndim
            shape[spatial_dim] = src.shape[spatial_dim]
            pos = torch.arange(src.shape[spatial_dim]).reshape(shape).expand(src.shape)
            picked = pos[n.args[1]]
            if picked.ndim != ndim + 2:
                raise UnsupportedOperationError("indexing that drops or adds an axis")
            line = picked.reshape(-1, *picked.shape[2:]).movedim(axis + 1, -1)
            line = line.reshape(-1, picked.shape[spatial_dim])[0].numpy()
            return base.gather(line.astype(np.int64))

        # ---------------------------------------------------------------- methods
        def method_rule(self, n: fx.Node, name: str, out: Any) -> Any:
            if name in _SIZE_METHODS:
                return None
            if not isinstance(out, torch.Tensor):
                return None
            if name in _ELEMENTWISE_NAMES:
                return self.union_all(n)
            if name in ("softmax", "log_softmax"):
                return self.softmax_rule(n, f"method {name}")
            if name in (
                "view",
                "reshape",
                "flatten",
                "permute",
                "transpose",
                "mean",
                "sum",
                "max",
                "amax",
                "squeeze",
                "unsqueeze",
                "expand",
                "repeat",
            ):
                if (
                    out.ndim == ndim + 2
                    and tuple(out.shape[2:]) == tuple(self.env[n.args[0]].shape[2:])
                    and name in ("view", "reshape", "expand", "squeeze", "unsqueeze")
                ):
                    return self.first_dep(n)
                raise UnsupportedOperationError(
                    f"method {name}: a size-dependent reshape or a reduction over space"
                )
            raise UnsupportedOperationError(
                f"method {name}: the dependency analysis does not know this operation"
            )

    shape = [other] * ndim
    shape[axis] = length
    p = next(iter(model.parameters()), None)
    x = torch.zeros(
        (1, in_channels, *shape),
        dtype=p.dtype if p is not None else torch.float32,
        device=p.device if p is not None else "cpu",
    )
    interp = Interp()
    with torch.inference_mode():
        interp.run(x)
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    dep = interp.deps[out_node]
    if not isinstance(dep, _Dep):
        raise UnsupportedOperationError("the model's output is not one spatial tensor")
    return dep.lo, dep.hi


def extents_from_intervals(lo: np.ndarray, hi: np.ndarray, factor: int) -> tuple[int, int] | None:
    """Exact left/right extents for ZoRs whose edges are multiples of F.

    For an output ``o`` the nearest F-aligned ZoR start at or before it is
    ``F * floor(o / F)`` and the nearest end after it is ``F * (floor(o / F) + 1)``; the
    left extent is the largest ``start - lo[o]`` and the right one the largest
    ``hi[o] - (end - 1)``. Only outputs whose interval stays clear of the probe's ends are
    used: near the ends the probe's own border clips the intervals.

    Parameters
    ----------
    lo, hi : numpy.ndarray of int, shape (n,)
        From :func:`dependency_intervals`.
    factor : int
        F in pixels.

    Returns
    -------
    (left, right) in pixels, or None if fewer than ``2 F`` outputs are clear of the ends
    (the probe is too short for this receptive field; use a longer one).
    """
    n = len(lo)
    o = np.flatnonzero((lo > 0) & (hi < n - 1) & (lo <= hi))
    if o.size < 2 * factor or (o[-1] - o[0] + 1) != o.size:
        return None
    l_, h_ = lo[o], hi[o]
    start = (o // factor) * factor
    end = start + factor
    left = int(max(0, (start - l_).max()))
    right = int(max(0, (h_ - (end - 1)).max()))
    return left, right
