"""An independent check of a computed halo: tiled inference against the whole image.

Shared by the analysis tests. The check shares nothing with the analysis but the numbers
it is given: it runs the real model in float64 on a random, odd-shaped image, once whole
(the reference) and once tiled with several windows, and compares.
"""

from __future__ import annotations

import numpy as np

from napari_seamless import predict
from napari_seamless.engine import Predictor


def tiled_error(model, halo, factor, ndim=2, cin=1, shape=None, seed=0, activation="identity"):
    """Max |tiled - whole| in float64 with ``halo`` and ``factor`` (tuples, pixels)."""
    f = factor[0]
    zor = 2 * f if max(halo) >= 2 * f else 4 * f
    tile = tuple(z + 2 * h for z, h in zip((zor,) * ndim, halo, strict=True))
    if shape is None:
        shape = tuple(3 * zor + 5 + 7 * i for i in range(ndim))  # odd: padding and 3+ tiles
    rng = np.random.default_rng(seed)
    img = rng.standard_normal((cin, *shape))
    pred = Predictor(
        model,
        ndim=ndim,
        in_channels=cin,
        halo=halo,
        factor=factor,
        device="cpu",
        dtype="float64",
        activation=activation,
    )
    kw = dict(ndim=ndim, normalization=None, axes="C" + "ZYX"[-ndim:])
    ref = predict(pred, img, tile=None, **kw)
    tiled = predict(pred, img, tile=tile, **kw)
    return float(np.abs(ref - tiled).max())


def assert_halo_exact(model, rf, ndim=2, cin=1, activation="identity"):
    """Tiled equals whole at ``rf.halo`` (<= 1e-12) and differs one F-step below."""
    err = tiled_error(model, rf.halo, rf.factor, ndim, cin, activation=activation)
    assert err <= 1e-12, f"tiled differs from whole by {err} at the computed halo {rf.halo}"
    if any(rf.halo):
        below = tuple(max(h - f, 0) for h, f in zip(rf.halo, rf.factor, strict=True))
        err_below = tiled_error(model, below, rf.factor, ndim, cin, activation=activation)
        assert err_below > 1e-9, f"halo {below} (one F-step below) is still exact: not tight"
