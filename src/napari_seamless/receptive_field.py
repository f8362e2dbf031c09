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

__all__ = ["ReceptiveField", "receptive_field", "find_factor"]


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
    """

    factor: tuple[int, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    halo: tuple[int, ...]
    eq1: tuple[int, ...] | None

    def describe(self) -> str:
        """One line for people."""

        def fmt(v: tuple[int, ...] | None) -> str:
            if v is None:
                return "n/a"
            return str(v[0]) if len(set(v)) == 1 else " x ".join(map(str, v))

        return (
            f"F {fmt(self.factor)}, halo {fmt(self.halo)} px "
            f"(exact extents left {fmt(self.left)} / right {fmt(self.right)}; "
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


def _extent(reach: list[int], factor: int, side: str) -> int:
    """Largest distance outside an F-aligned ZoR edge that still reaches into the ZoR."""
    best = 0
    for d in range(1, max(reach) + 1):
        phase = (-d) % factor if side == "left" else (d - 1) % factor
        if reach[phase] >= d:
            best = d
    return best


def receptive_field(model, ndim: int = 2, in_channels: int = 1) -> ReceptiveField:
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

    Returns
    -------
    ReceptiveField
        ``factor`` (F), exact ``left`` / ``right`` extents, ``halo`` (rounded up to a
        multiple of F, paper Eq. 2) and ``eq1`` (paper Eq. 1), per axis in pixels.

    Raises
    ------
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
    >>> rf = receptive_field(UNet(width=4))
    >>> rf.factor, rf.halo, rf.eq1
    ((16, 16), (96, 96), (92, 92))
    """
    was_training = model.training
    model.eval()
    try:
        f = find_factor(model, ndim=ndim, in_channels=in_channels)
        eq1 = _eq1(model, ndim, in_channels, f)
        pos = _positive_copy(model)
        lefts, rights, halos = [], [], []
        for axis in range(ndim):
            reach_left, reach_right = _cone_extents(pos, axis, ndim, in_channels, f)
            left = _extent(reach_right, f, "left")
            right = _extent(reach_left, f, "right")
            lefts.append(left)
            rights.append(right)
            halos.append(int(math.ceil(max(left, right) / f) * f))
    finally:
        model.train(was_training)
    factor = (f,) * ndim
    return ReceptiveField(
        factor=factor, left=tuple(lefts), right=tuple(rights), halo=tuple(halos), eq1=eq1
    )
