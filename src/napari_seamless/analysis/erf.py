"""The effective receptive field (Luo et al. 2016): what a trained model actually uses.

torch is imported here because this module runs models; nothing here imports Qt or napari.
"""

from __future__ import annotations

import math

import numpy as np

from .halo import receptive_field
from .support import _device as _model_device
from .support import _out as _out_tensor
from .support import _torch

__all__ = ["effective_receptive_field"]


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
        F; found with :func:`~.halo.receptive_field` when omitted.
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
        f = factor or receptive_field(model, ndim=ndim, in_channels=in_channels).factor[0]
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
