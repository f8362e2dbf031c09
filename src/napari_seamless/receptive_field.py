"""Halo and F of a fully convolutional torch model, computed from the model itself.

Two numbers decide exact tiling (Majurski & Bajcsy 2021, section 4.2):

* **F**, the total downsampling factor: window sizes, ZoR and halo must be multiples of it
  (paper Eq. 2). Found here as the smallest size ``n`` for which the model maps inputs of
  ``n``, ``2n`` and ``3n`` pixels per axis to outputs of the same size.
* **the halo**, how far an output pixel's dependency reaches into the input. The paper's
  Eq. 1 (sum over the convolutions on the longest path of ``2 ** level * floor(k / 2)``) is
  reported for comparison; the halo itself is measured exactly by an *impulse cone*:
  a copy of the model in float64 with every kernel weight positive, biases zero and
  normalisation layers set to the identity is fed an impulse on a zero background. With
  no negative weights nothing can cancel and ReLU zeros cannot hide a dependency, so the
  set of outputs that change is exactly the set that depends on the impulse pixel. One
  impulse per phase inside an F-block (the phase matters: pooling windows are F-aligned)
  gives the exact left and right extents for F-aligned ZoRs; the halo is the larger of
  the two rounded up to a multiple of F (Eq. 2).

torch is imported here because this module runs models; nothing here imports Qt or napari.
"""

from __future__ import annotations

import copy
import io
import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ReceptiveField",
    "receptive_field",
    "find_factor",
    "Refusal",
    "NotTileableError",
    "find_refusals",
    "SupportTest",
    "verify_halo",
    "effective_receptive_field",
]


@dataclass(frozen=True)
class Refusal:
    """One reason why a model cannot be tiled exactly at any halo.

    Attributes
    ----------
    path : str
        Module path in the model (``""`` for the root), or ``"<functional>"`` for a call
        seen during a forward pass that does not belong to a module.
    op : str
        The module class or function name.
    reason : str
        What it does and what to do about it.
    """

    path: str
    op: str
    reason: str

    def __str__(self) -> str:
        return f"{self.op} at '{self.path or '<model>'}': {self.reason}"


class NotTileableError(ValueError):
    """The model contains operations that make tiled inference inexact at any halo.

    Attributes
    ----------
    refusals : list of Refusal
        Every offending operation, with its module path and the reason.
    """

    def __init__(self, refusals: list[Refusal]) -> None:
        self.refusals = list(refusals)
        groups: dict[tuple[str, str], list[str]] = {}
        for r in self.refusals:
            groups.setdefault((r.op, r.reason), []).append(r.path or "<model>")
        parts = []
        for (op, reason), paths in groups.items():
            where = ", ".join(f"'{p}'" for p in paths[:3])
            more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
            parts.append(f"{op} at {where}{more}: {reason}")
        super().__init__("this model cannot be tiled exactly: " + "; ".join(parts))


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
        The paper's Eq. 1 estimate, summed over the model's convolutions as they run
        (``None`` when the model's calls cannot be observed, e.g. TorchScript).
    method : str
        ``"graph"``: exact dependency analysis of the ``torch.fx`` graph
        (:mod:`napari_seamless.dependency`); ``"impulse cone"``: measured on a positive
        float64 copy, for models ``torch.fx`` cannot trace (TorchScript).
    """

    factor: tuple[int, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    halo: tuple[int, ...]
    eq1: tuple[int, ...] | None
    method: str = "graph"

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


def _torch():
    import torch

    return torch


def _model_device(model) -> object:
    torch = _torch()
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _out_tensor(out):
    torch = _torch()
    if isinstance(out, torch.Tensor):
        return out
    raise TypeError(
        f"model returned {type(out).__name__}; napari-seamless needs a model whose forward "
        "returns one tensor (N, classes, *spatial)"
    )


def find_factor(model, ndim: int = 2, in_channels: int = 1, max_factor: int = 256) -> int:
    """Return F, the smallest size accepted at every multiple, for ``model``.

    F is the smallest ``n`` for which inputs of ``n``, ``2n`` and ``3n`` pixels on every
    spatial axis run and give outputs of the same spatial size.

    Parameters
    ----------
    model : torch.nn.Module
        The model, in eval mode.
    ndim : int
        Number of spatial axes.
    in_channels : int
        Input channels the model expects.
    max_factor : int
        Largest F tried, in pixels.

    Returns
    -------
    int
        F in pixels.

    Raises
    ------
    ValueError
        If no ``n <= max_factor`` works: the model is not fully convolutional with
        same-size output, or it expects a different number of channels or axes.
    """
    torch = _torch()
    device = _model_device(model)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    last_error: Exception | None = None
    with torch.inference_mode():
        for n in range(1, max_factor + 1):
            ok = True
            for m in (1, 2, 3):
                size = (n * m,) * ndim
                try:
                    x = torch.zeros((1, in_channels, *size), dtype=dtype, device=device)
                    out = _out_tensor(model(x))
                except (RuntimeError, ValueError, IndexError) as err:
                    last_error = err
                    ok = False
                    break
                if tuple(out.shape[2:]) != size:
                    ok = False
                    last_error = ValueError(f"input {size} gave output {tuple(out.shape[2:])}")
                    break
            if ok:
                return n
    raise ValueError(
        f"could not find F <= {max_factor} for this model with {in_channels} input channel(s) "
        f"and {ndim} spatial axes: it must be fully convolutional and return an output of the "
        f"input's spatial size. Last error: {last_error}"
    )


def _positive_copy(model):
    """Copy ``model`` to float64 with positive kernels, zero biases, identity norms."""
    torch = _torch()
    try:
        pos = copy.deepcopy(model)
    except Exception:  # TorchScript modules that refuse deepcopy: round-trip instead
        buf = io.BytesIO()
        torch.jit.save(model, buf)
        buf.seek(0)
        pos = torch.jit.load(buf)
    pos = pos.to(torch.float64).eval()
    with torch.no_grad():
        for name, p in pos.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if p.ndim >= 2:
                p.fill_(1.0 / max(1, p[0].numel()))
            elif leaf == "bias":
                p.zero_()
            else:
                p.fill_(1.0)
        for name, b in pos.named_buffers():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "running_mean":
                b.zero_()
            elif leaf == "running_var":
                b.fill_(1.0)
    return pos


def _cone_extents(pos, axis: int, ndim: int, in_channels: int, factor: int) -> tuple[list, list]:
    """Per phase within an F-block: how far left/right an impulse's output cone reaches."""
    torch = _torch()
    device = _model_device(pos)
    length = 16 * factor
    while True:
        if length > 2**16:
            raise ValueError(
                "the receptive field is larger than 65536 pixels; cannot tile this model"
            )
        shape = [factor] * ndim
        shape[axis] = length
        centre = (length // 2 // factor) * factor
        x = torch.zeros((factor, in_channels, *shape), dtype=torch.float64, device=device)
        for phase in range(factor):
            idx = [phase, slice(None)] + [slice(None)] * ndim
            idx[2 + axis] = centre + phase
            x[tuple(idx)] = 1.0
        with torch.inference_mode():
            base = _out_tensor(pos(torch.zeros_like(x[:1])))
            out = _out_tensor(pos(x))
        diff = (out - base).abs()
        other = [d for d in range(diff.ndim) if d not in (0, 2 + axis)]
        touched = diff.amax(dim=other).cpu().numpy() > 0  # (phase, length)
        if touched[:, 0].any() or touched[:, -1].any():
            length *= 2  # the cone reached the border: look again with more room
            continue
        lefts, rights = [], []
        for phase in range(factor):
            hit = np.flatnonzero(touched[phase])
            if hit.size == 0:
                raise ValueError("an input pixel influences no output: cannot measure the halo")
            i = centre + phase
            lefts.append(int(i - hit[0]))
            rights.append(int(hit[-1] - i))
        return lefts, rights


def _eq1(model, ndim: int, in_channels: int, factor: int) -> tuple[int, ...] | None:
    """Paper Eq. 1 summed over the convolutions as they run: ``2**level * floor(k/2)``."""
    torch = _torch()
    convs = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    modules = [m for m in model.modules() if isinstance(m, convs)]
    if not modules:
        return None
    size = 4 * factor
    total = np.zeros(ndim, dtype=np.int64)

    def hook(mod, inputs, _out):
        feat = inputs[0].shape[2:]
        scale = [size // int(s) for s in feat]
        k = mod.kernel_size
        d = mod.dilation
        for ax in range(ndim):
            total[ax] += scale[ax] * d[ax] * (k[ax] // 2)

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        device = _model_device(model)
        dtype = next((p.dtype for p in model.parameters()), torch.float32)
        with torch.inference_mode():
            model(torch.zeros((1, in_channels) + (size,) * ndim, dtype=dtype, device=device))
    finally:
        for h in handles:
            h.remove()
    return tuple(int(t) for t in total)


_GLOBAL = "couples every pixel of the image, so no halo can make tiles exact"
_TRAIN = "is in train mode, so its output depends on the batch; call model.eval() first"


def _module_refusals(model) -> list[Refusal]:
    """Check modules by class name.

    TorchScript modules keep the class name in ``original_name`` and keep their
    attributes, so they are checked like Python ones.
    """
    out: list[Refusal] = []
    for path, mod in model.named_modules():
        name = getattr(mod, "original_name", None) or type(mod).__name__
        training = bool(getattr(mod, "training", False))
        if name == "GroupNorm":
            reason = f"normalises over space with statistics of the input; it {_GLOBAL}"
            out.append(Refusal(path, name, reason))
        elif name.startswith("InstanceNorm"):
            if not (getattr(mod, "track_running_stats", False) and not training):
                out.append(Refusal(path, name, f"normalises each image over space; it {_GLOBAL}"))
        elif name == "LayerNorm" and len(getattr(mod, "normalized_shape", ())) >= 2:
            out.append(Refusal(path, name, f"normalises over spatial axes; it {_GLOBAL}"))
        elif name.startswith(("AdaptiveAvgPool", "AdaptiveMaxPool")):
            out.append(Refusal(path, name, f"global or adaptive pooling {_GLOBAL}"))
        elif name in ("MultiheadAttention", "TransformerEncoderLayer", "TransformerDecoderLayer"):
            out.append(Refusal(path, name, f"attention {_GLOBAL}"))
        elif name.startswith("Upsample") and getattr(mod, "align_corners", False):
            reason = (
                "align_corners=True scales by (n-1)/(m-1), which depends on the input size; "
                "use align_corners=False"
            )
            out.append(Refusal(path, name, reason))
        elif name.startswith(("BatchNorm", "SyncBatchNorm")) and training:
            out.append(Refusal(path, name, _TRAIN))
        elif name.startswith(("Dropout", "AlphaDropout")) and training and getattr(mod, "p", 0) > 0:
            out.append(Refusal(path, name, _TRAIN))
    return out


def _functional_refusals(model, ndim: int, in_channels: int, size: int) -> list[Refusal]:
    """Run one forward pass and look at torch function calls made outside known modules."""
    torch = _torch()
    F = torch.nn.functional
    from torch.overrides import TorchFunctionMode

    found: list[Refusal] = []

    def spatial_reduction(args, kwargs) -> bool:
        x = args[0] if args else None
        dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if not isinstance(x, torch.Tensor) or x.ndim < 3:
            return False
        if dims is None:
            return True
        dims = [dims] if isinstance(dims, int) else list(dims)
        return any(d % x.ndim >= x.ndim - ndim for d in dims)

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", str(func))
            if func is F.interpolate and kwargs.get("align_corners"):
                found.append(
                    Refusal(
                        "<functional>",
                        "interpolate",
                        "align_corners=True depends on the input size; use align_corners=False",
                    )
                )
            elif func in (
                F.adaptive_avg_pool1d,
                F.adaptive_avg_pool2d,
                F.adaptive_avg_pool3d,
                F.adaptive_max_pool1d,
                F.adaptive_max_pool2d,
                F.adaptive_max_pool3d,
            ):
                found.append(Refusal("<functional>", name, f"global or adaptive pooling {_GLOBAL}"))
            elif func in (F.group_norm, F.instance_norm):
                found.append(Refusal("<functional>", name, f"normalises over space; it {_GLOBAL}"))
            elif func is F.layer_norm and len(args) > 1 and len(args[1]) >= 2:
                found.append(
                    Refusal("<functional>", name, f"normalises over spatial axes; it {_GLOBAL}")
                )
            elif func is F.scaled_dot_product_attention:
                found.append(Refusal("<functional>", name, f"attention {_GLOBAL}"))
            elif name in (
                "mean",
                "sum",
                "amax",
                "amin",
                "max",
                "min",
                "std",
                "var",
                "logsumexp",
            ) and spatial_reduction(args, kwargs):
                found.append(
                    Refusal(
                        "<functional>",
                        name,
                        f"reduces over spatial axes (global pooling) and {_GLOBAL}",
                    )
                )
            return func(*args, **kwargs)

    device = _model_device(model)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    x = torch.zeros((1, in_channels) + (size,) * ndim, dtype=dtype, device=device)
    with torch.inference_mode(), Watch():
        model(x)
    unique = {(r.op, r.reason): r for r in found}
    return list(unique.values())


def find_refusals(model, ndim: int = 2, in_channels: int = 1, size: int = 64) -> list[Refusal]:
    """List the operations in ``model`` that make exact tiling impossible at any halo.

    Modules are inspected by type and state (GroupNorm, InstanceNorm, LayerNorm over
    space, adaptive pooling, attention, ``align_corners=True`` upsampling, BatchNorm or
    Dropout in train mode); functional calls are caught during one forward pass of a
    ``(1, in_channels, size, ...)`` input (``F.interpolate(align_corners=True)``, adaptive
    pooling, group/instance/layer norm, attention, reductions over spatial axes).

    Parameters
    ----------
    model : torch.nn.Module
        The model as the user gives it (train/eval state matters).
    ndim : int
        Number of spatial axes.
    in_channels : int
        Input channels.
    size : int
        Spatial size of the probe input in pixels (a multiple of F).

    Returns
    -------
    list of Refusal
        Empty when nothing forbids exact tiling.
    """
    refusals = _module_refusals(model)
    was_training = model.training
    model.eval()  # the functional probe must not update BatchNorm running statistics
    try:
        refusals += _functional_refusals(model, ndim, in_channels, size)
    except Exception:  # noqa: BLE001 - the size may not suit the model; modules were checked
        pass
    finally:
        model.train(was_training)
    return refusals


class _NotTraceable(Exception):
    pass


def _graph_extents(
    gm, meta, axis: int, ndim: int, in_channels: int, f: int, guess: int
) -> tuple[int, int]:
    """Exact extents along ``axis`` from the fx graph; probe doubled until long enough.

    ``meta`` is a parameter-free copy of ``gm`` (or None) used first, since only shapes
    matter; ops without a meta kernel fall back to the real model.
    """
    from .dependency import UnsupportedOperationError, dependency_intervals, extents_from_intervals

    length = 16 * f
    while length < 2 * guess + 8 * f:  # start near Eq. 1 so one pass is usually enough
        length *= 2
    while length <= 2**16:
        lo = hi = None
        if meta is not None:
            try:
                lo, hi = dependency_intervals(meta, ndim, in_channels, axis, length, f)
            except UnsupportedOperationError:
                raise
            except (NotImplementedError, RuntimeError):
                meta = None
        if lo is None:
            lo, hi = dependency_intervals(gm, ndim, in_channels, axis, length, f)
        found = extents_from_intervals(lo, hi, f)
        if found is not None:
            return found
        length *= 2
    raise ValueError("the receptive field is larger than 65536 pixels; cannot tile this model")


def _extent(reach: list[int], factor: int, side: str) -> int:
    """Largest distance outside an F-aligned ZoR edge that still reaches into the ZoR."""
    best = 0
    for d in range(1, max(reach) + 1):
        phase = (-d) % factor if side == "left" else (d - 1) % factor
        if reach[phase] >= d:
            best = d
    return best


def receptive_field(
    model, ndim: int = 2, in_channels: int = 1, assume_eval: bool = False
) -> ReceptiveField:
    """Compute F, the exact dependency extents, the halo and Eq. 1 of ``model``.

    Parameters
    ----------
    model : torch.nn.Module or torch.jit.ScriptModule
        A fully convolutional model mapping ``(N, in_channels, *spatial)`` to
        ``(N, classes, *spatial)``. It is not modified (a copy is analysed).
    ndim : int
        Number of spatial axes (2 for ``(Y, X)``, 3 for ``(Z, Y, X)``).
    in_channels : int
        Number of input channels.
    assume_eval : bool
        Do not refuse BatchNorm/Dropout in train mode (the caller runs the model in
        ``eval()`` mode, as :class:`~napari_seamless.engine.Predictor` does).

    Returns
    -------
    ReceptiveField
        ``factor`` (F), exact ``left`` / ``right`` extents, ``halo`` (rounded up to a
        multiple of F, paper Eq. 2) and ``eq1`` (paper Eq. 1), per axis in pixels.

    Raises
    ------
    NotTileableError
        If the model holds operations that make tiling inexact at any halo (see
        :func:`find_refusals`); the message names each one with its module path.
    ValueError
        If F cannot be found (see :func:`find_factor`) or the receptive field is unbounded.
    TypeError
        If the model does not return a single tensor.

    Notes
    -----
    The impulse-cone measurement is exact for convolutions, transposed convolutions, max
    and average pooling, nearest/linear upsampling, concatenation, addition, ReLU-like
    and other monotone activations, and BatchNorm in eval mode. Operations that couple
    every pixel (global pooling, GroupNorm, attention) show up as a cone that covers the
    whole input and are refused.

    Examples
    --------
    >>> from napari_seamless.models import UNet
    >>> rf = receptive_field(UNet(width=4).eval())
    >>> rf.factor, rf.halo, rf.eq1
    ((16, 16), (96, 96), (92, 92))
    """
    refusals = [r for r in _module_refusals(model) if not (assume_eval and r.reason == _TRAIN)]
    if refusals:  # before any forward pass: such models may not even run at probe sizes
        raise NotTileableError(refusals)
    was_training = model.training
    model.eval()
    try:
        f = find_factor(model, ndim=ndim, in_channels=in_channels)
        refusals = _functional_refusals(model, ndim, in_channels, 4 * f)
        if refusals:
            raise NotTileableError(refusals)
        eq1 = _eq1(model, ndim, in_channels, f)
        try:
            from .dependency import UnsupportedOperationError, meta_copy, trace

            try:
                gm = trace(model)
            except UnsupportedOperationError as err:
                raise _NotTraceable(str(err)) from None
            meta = meta_copy(gm)
            guess = max(eq1) if eq1 else 0
            pairs = [
                _graph_extents(gm, meta, axis, ndim, in_channels, f, guess) for axis in range(ndim)
            ]
            method = "graph"
        except _NotTraceable:
            pos = _positive_copy(model)
            pairs = []
            for axis in range(ndim):
                reach_left, reach_right = _cone_extents(pos, axis, ndim, in_channels, f)
                pairs.append((_extent(reach_right, f, "left"), _extent(reach_left, f, "right")))
            method = "impulse cone"
        lefts = [p[0] for p in pairs]
        rights = [p[1] for p in pairs]
        halos = [int(math.ceil(max(p) / f) * f) for p in pairs]
    finally:
        model.train(was_training)
    factor = (f,) * ndim
    return ReceptiveField(
        factor=factor,
        left=tuple(lefts),
        right=tuple(rights),
        halo=tuple(halos),
        eq1=eq1,
        method=method,
    )


@dataclass(frozen=True)
class SupportTest:
    """Result of :func:`verify_halo`: the support test of a halo, per axis.

    Attributes
    ----------
    halo : tuple of int
        The halo tested (pixels).
    leaks_at_halo : bool
        True if an input outside the window of ``halo`` changed an output in the ZoR
        (the halo is too small). Must be False.
    leaks_below : bool
        True if an input outside the window of ``halo - F`` changed an output in the ZoR
        (the halo is tight: one F-step less is not enough). Expected True.
    """

    halo: tuple[int, ...]
    leaks_at_halo: bool
    leaks_below: bool

    @property
    def confirmed(self) -> bool:
        """The halo is sufficient and one F-step smaller is not."""
        return not self.leaks_at_halo and self.leaks_below

    def describe(self) -> str:
        """One line for people."""
        h = self.halo[0] if len(set(self.halo)) == 1 else self.halo
        below = (
            "a dependency outside it"
            if self.leaks_below
            else "NO dependency outside it (halo not tight)"
        )
        at = (
            "no dependency outside it"
            if not self.leaks_at_halo
            else "A DEPENDENCY OUTSIDE IT (halo too small)"
        )
        return f"support test: halo {h}: {at}; one F-step smaller: {below}"


def _leaks(
    pos,
    ndim: int,
    in_channels: int,
    zor: tuple[int, ...],
    halo: tuple[int, ...],
    margin: tuple[int, ...],
) -> bool:
    """Does any input outside ZoR + halo change an output inside the ZoR? (positive copy)."""
    torch = _torch()
    device = _model_device(pos)
    shape = tuple(z + 2 * h + 2 * m for z, h, m in zip(zor, halo, margin, strict=True))
    inside = tuple(slice(m, m + z + 2 * h) for z, h, m in zip(zor, halo, margin, strict=True))
    zor_sl = tuple(slice(m + h, m + h + z) for z, h, m in zip(zor, halo, margin, strict=True))
    base = torch.zeros((1, in_channels, *shape), dtype=torch.float64, device=device)
    outside = torch.ones_like(base)
    outside[(slice(None), slice(None), *inside)] = 0.0
    with torch.inference_mode():
        diff = (_out_tensor(pos(outside)) - _out_tensor(pos(base)))[
            (slice(None), slice(None), *zor_sl)
        ]
    return bool((diff.abs() > 0).any())


def verify_halo(
    model, rf: ReceptiveField, ndim: int = 2, in_channels: int = 1, per_axis: bool = True
) -> SupportTest:
    """Prove a halo with a support test independent of the impulse-cone measurement.

    A float64 copy of ``model`` with positive kernels, zero biases and identity
    normalisation is run twice on a window of ``ZoR + 2 * halo`` pixels plus a margin of
    ``halo`` (at least F) around it: once on zeros, once with every pixel *outside* the window set
    to 1. With no negative weight nothing can cancel and no ReLU can hide a change, so an
    output inside the ZoR that changes is a real dependency outside the window. The same
    is done for ``halo - F``, which must show a dependency when the halo is tight.

    Parameters
    ----------
    model : torch.nn.Module
        The model (not modified).
    rf : ReceptiveField
        F and the halo to test, from :func:`receptive_field` or chosen by hand.
    ndim, in_channels : int
        Spatial axes and input channels.
    per_axis : bool
        Test one axis at a time on a strip (``ZoR + 2 * (halo + margin)`` long, F wide),
        perturbing everything outside the window along that axis: cheap even for
        FC-DenseNet-103. ``False`` tests the full nD window at once (costly for large halos).

    Returns
    -------
    SupportTest
    """
    was_training = model.training
    model.eval()
    try:
        pos = _positive_copy(model)
    finally:
        model.train(was_training)
    f = rf.factor

    def test(halo: tuple[int, ...], extra: tuple[int, ...], axes: tuple[int, ...]) -> bool:
        # axes not tested get a window covering the whole (F-wide) probe: nothing outside
        zor = tuple(fi for fi in f)
        h = tuple(halo[a] if a in axes else 0 for a in range(ndim))
        m = tuple(max(halo[a], f[a]) + extra[a] if a in axes else 0 for a in range(ndim))
        return _leaks(pos, ndim, in_channels, zor, h, m)

    smaller = tuple(max(h - fi, 0) for h, fi in zip(rf.halo, f, strict=True))
    step = tuple(h - s for h, s in zip(rf.halo, smaller, strict=True))
    zero = (0,) * ndim
    groups = [(a,) for a in range(ndim)] if per_axis else [tuple(range(ndim))]
    at = any(test(rf.halo, zero, g) for g in groups)
    below = any(rf.halo) and all(
        test(smaller, step, g) for g in groups if any(rf.halo[a] for a in g)
    )
    return SupportTest(halo=rf.halo, leaks_at_halo=at, leaks_below=bool(below))


def effective_receptive_field(
    model,
    ndim: int = 2,
    in_channels: int = 1,
    factor: int | None = None,
    size: int | None = None,
    threshold: float = 1e-3,
    seed: int = 0,
) -> tuple[int, ...]:
    """Estimate the halo from the effective receptive field (Luo et al. 2016).

    As in Majurski & Bajcsy (2021), section 4.6: the gradient of the centre output pixel
    (summed over classes) is back-propagated to a random input; the estimate is the
    largest distance from the centre at which ``|gradient|`` exceeds ``threshold`` times
    its maximum, rounded up to a multiple of F. It uses the real weights, so it reflects
    what the trained model *uses*, and it tends to fall short of the exact halo: far
    dependencies are real but weak.

    Parameters
    ----------
    model : torch.nn.Module
        The model with its weights (not modified).
    ndim, in_channels : int
        Spatial axes and input channels.
    factor : int, optional
        F; found with :func:`find_factor` when omitted.
    size : int, optional
        Length of the probe strip along the analysed axis in pixels (default: 32 F, at
        least 512); the other axes are 2 F wide.
    threshold : float
        Fraction of the peak gradient magnitude that counts as influence.
    seed : int
        Seed of the random normal input.

    Returns
    -------
    tuple of int
        ERF halo estimate per axis, in pixels (a multiple of F).
    """
    torch = _torch()
    was_training = model.training
    model.eval()
    extents = []
    try:
        f = factor or find_factor(model, ndim=ndim, in_channels=in_channels)
        n = size or max(512, 32 * f)
        n = int(math.ceil(n / f) * f)
        gen = torch.Generator().manual_seed(seed)
        dtype = next((p.dtype for p in model.parameters()), torch.float32)
        device = _model_device(model)
        for axis in range(ndim):
            # a strip, long on the analysed axis and 2 F wide on the others, keeps deep
            # models affordable; the centre output sits mid-strip
            shape = [2 * f] * ndim
            shape[axis] = n
            x = torch.randn((1, in_channels, *shape), generator=gen, dtype=torch.float64)
            x = x.to(device=device, dtype=dtype).requires_grad_(True)
            out = _out_tensor(model(x))
            centre = tuple(sz // 2 for sz in shape)
            (grad,) = torch.autograd.grad(out[(0, slice(None), *centre)].sum(), x)
            g = grad.abs().sum(1)[0].detach().cpu().numpy()  # the model's .grad is untouched
            profile = g.max(axis=tuple(d for d in range(ndim) if d != axis)) if ndim > 1 else g
            hit = np.flatnonzero(profile > threshold * profile.max())
            c = centre[axis]
            reach = int(max(c - hit[0], hit[-1] - c))
            extents.append(int(math.ceil(reach / f) * f))
    finally:
        model.train(was_training)
    return tuple(extents)
