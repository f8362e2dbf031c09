"""Prove a halo by two support tests that do not share the analysis's blind spots.

Both tests run the model on a window of ``ZoR + 2 * halo`` pixels inside a larger probe,
change only the pixels *outside* the window, and ask whether any output inside the ZoR
changes. They share nothing with the interval analysis of :mod:`.trace` (no graph, no
rules): only the model's own forward pass.

* **positive copy**: a float64 copy with every kernel weight positive, biases zero and
  normalisation set to the identity (LayerNorm modules included); the outside is set
  from 0 to 1. Nothing can cancel and no ReLU can hide a change, so every structural
  dependency shows. Its blind spot: operations that erase a uniform signal and are not
  modules it can replace (a functional layer norm over channels outputs 0 when all
  channels are equal, as they are in such a copy).
* **perturbation**: the model with its real weights in float64 on a random input; the
  outside is replaced by large random values, several draws. LayerNorm, sign
  cancellations, masking and attention cannot hide a dependency from that. Its blind
  spot: a dependency too weak to change a float64 result (the positive copy sees those).

For a halo to be *confirmed*, neither test may see a dependency outside the window, and
one F-step less must show one (the halo is tight).

torch is imported here because this module runs models; nothing here imports Qt or napari.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass
from typing import Any

__all__ = ["SupportTest", "verify_halo"]


@dataclass(frozen=True)
class SupportTest:
    """Result of :func:`verify_halo`: the two support tests of a halo.

    Attributes
    ----------
    halo : tuple of int
        The halo tested (pixels, per axis).
    leaks_at_halo : bool
        Either test saw an input outside the window of ``halo`` change an output in the
        ZoR (the halo is too small). Must be False.
    leaks_below : bool
        Either test saw a dependency outside the window of ``halo - F`` (the halo is
        tight). Expected True.
    positive : tuple of (bool, bool)
        ``(leaks_at_halo, leaks_below)`` of the positive-copy test.
    perturbation : tuple of (bool, bool)
        ``(leaks_at_halo, leaks_below)`` of the perturbation test with the real weights.
    dtype : str
        Precision of the perturbation test (``"float64"``, or ``"float32"`` for models
        that cast internally).
    """

    halo: tuple[int, ...]
    leaks_at_halo: bool
    leaks_below: bool
    positive: tuple[bool, bool] = (False, False)
    perturbation: tuple[bool, bool] = (False, False)
    dtype: str = "float64"

    @property
    def confirmed(self) -> bool:
        """The halo is sufficient and one F-step smaller is not."""
        return not self.leaks_at_halo and self.leaks_below

    def describe(self) -> str:
        """Two lines for people: one per test."""
        h = self.halo[0] if len(set(self.halo)) == 1 else self.halo

        def line(name: str, at: bool, below: bool) -> str:
            a = "A DEPENDENCY OUTSIDE IT (halo too small)" if at else "no dependency outside it"
            b = "a dependency outside it" if below else "none outside it"
            return f"support test ({name}): halo {h}: {a}; one F-step smaller: {b}"

        return "\n".join(
            [
                line("positive copy", *self.positive),
                line(f"perturbation, real weights, {self.dtype}", *self.perturbation),
            ]
        )


def _torch() -> Any:
    import torch

    return torch


def _device(model: Any) -> Any:
    torch = _torch()
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _copy(model: Any) -> Any:
    torch = _torch()
    try:
        return copy.deepcopy(model)
    except Exception:  # noqa: BLE001 - TorchScript modules that refuse deepcopy
        buf = io.BytesIO()
        torch.jit.save(model, buf)
        buf.seek(0)
        return torch.jit.load(buf)


def positive_copy(model: Any) -> Any:
    """Copy ``model`` to float64 with positive kernels, zero biases, identity norms."""
    torch = _torch()
    pos = _copy(model).to(torch.float64).eval()
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
    # a LayerNorm over channels maps equal channels to 0 and would hide everything behind
    # it; it is per pixel, so the identity has the same dependency structure
    for mod in pos.modules():
        if isinstance(mod, torch.nn.LayerNorm):
            mod.forward = _identity
    return pos


def _identity(x: Any, *args: Any, **kwargs: Any) -> Any:
    return x


def _out(y: Any) -> Any:
    torch = _torch()
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"model returned {type(y).__name__}; expected one tensor")
    return y


def _geometry(
    zor: tuple[int, ...], halo: tuple[int, ...], margin: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[slice, ...], tuple[slice, ...]]:
    shape = tuple(z + 2 * h + 2 * m for z, h, m in zip(zor, halo, margin, strict=True))
    inside = tuple(slice(m, m + z + 2 * h) for z, h, m in zip(zor, halo, margin, strict=True))
    zor_sl = tuple(slice(m + h, m + h + z) for z, h, m in zip(zor, halo, margin, strict=True))
    return shape, inside, zor_sl


def _leaks_positive(pos: Any, cin: int, zor: Any, halo: Any, margin: Any) -> bool:
    """Positive copy: whether setting the outside from 0 to 1 changes the ZoR."""
    torch = _torch()
    shape, inside, zor_sl = _geometry(zor, halo, margin)
    base = torch.zeros((1, cin, *shape), dtype=torch.float64, device=_device(pos))
    outside = torch.ones_like(base)
    outside[(slice(None), slice(None), *inside)] = 0.0
    with torch.no_grad():
        diff = (_out(pos(outside)) - _out(pos(base)))[(slice(None), slice(None), *zor_sl)]
    return bool((diff != 0).any())


def _leaks_perturbed(
    real: Any, dtype: Any, cin: int, zor: Any, halo: Any, margin: Any, draws: int, seed: int
) -> bool:
    """Real weights: whether replacing the outside by large random values changes the ZoR."""
    torch = _torch()
    shape, inside, zor_sl = _geometry(zor, halo, margin)
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn((1, cin, *shape), generator=gen, dtype=torch.float64)
    with torch.no_grad():
        ref = _out(real(base.to(dtype=dtype, device=_device(real))))[
            (slice(None), slice(None), *zor_sl)
        ]
        for k in range(draws):
            noisy = torch.randn(base.shape, generator=gen, dtype=torch.float64) * (10.0**k) * 10
            noisy[(slice(None), slice(None), *inside)] = base[(slice(None), slice(None), *inside)]
            y = _out(real(noisy.to(dtype=dtype, device=_device(real))))
            y = y[(slice(None), slice(None), *zor_sl)]
            if (
                not torch.equal(torch.nan_to_num(y), torch.nan_to_num(ref))
                or (torch.isnan(y) != torch.isnan(ref)).any()
            ):
                return True
    return False


def verify_halo(
    model: Any,
    rf: Any,
    ndim: int = 2,
    in_channels: int = 1,
    per_axis: bool = True,
    draws: int = 3,
    seed: int = 0,
) -> SupportTest:
    """Prove a halo with the positive-copy and the perturbation support tests.

    On a strip per axis (``per_axis=True``: ``ZoR + 2 * (halo + margin)`` long on the
    tested axis, F wide on the others, with ZoR = F and a margin of ``max(halo, F)``) or
    on the full nD window (``per_axis=False``), the pixels outside the window are changed
    and the ZoR's outputs compared, bit for bit. The same is done at ``halo - F``, which
    must show a dependency when the halo is tight.

    Parameters
    ----------
    model : torch.nn.Module
        The model with its weights (not modified; copies are tested).
    rf : ReceptiveField
        ``factor`` (F) and ``halo`` to test, per axis in pixels.
    ndim, in_channels : int
        Spatial axes and input channels.
    per_axis : bool
        Test one axis at a time on strips (cheap) or the full window at once.
    draws : int
        Random outside fillings of the perturbation test (scales 10, 100, 1000, ...).
    seed : int
        Seed of the random inputs.

    Returns
    -------
    SupportTest
    """
    torch = _torch()
    was = model.training
    model.eval()
    try:
        pos = positive_copy(model)
        real = _copy(model).eval()
    finally:
        model.train(was)
    dtype = torch.float64
    try:
        real = real.to(torch.float64)
        with torch.no_grad():
            real(
                torch.zeros((1, in_channels, *rf.factor), dtype=torch.float64, device=_device(real))
            )
    except RuntimeError:  # the model casts internally (e.g. ends with .float())
        real = _copy(model).eval().float()
        dtype = torch.float32
    f = rf.factor

    def geometry(halo: tuple[int, ...], extra: tuple[int, ...], axes: tuple[int, ...]) -> Any:
        zor = tuple(f)
        h = tuple(halo[a] if a in axes else 0 for a in range(ndim))
        m = tuple(max(halo[a], f[a]) + extra[a] if a in axes else 0 for a in range(ndim))
        return zor, h, m

    smaller = tuple(max(h - fi, 0) for h, fi in zip(rf.halo, f, strict=True))
    step = tuple(h - s for h, s in zip(rf.halo, smaller, strict=True))
    zero = (0,) * ndim
    groups = [(a,) for a in range(ndim)] if per_axis else [tuple(range(ndim))]

    def test(kind: str, halo: tuple[int, ...], extra: tuple[int, ...]) -> tuple[bool, ...]:
        out = []
        for g in groups:
            if halo is smaller and not any(rf.halo[a] for a in g):
                out.append(True)  # nothing below a zero halo to show
                continue
            geo = geometry(halo, extra, g)
            if kind == "positive":
                out.append(_leaks_positive(pos, in_channels, *geo))
            else:
                out.append(_leaks_perturbed(real, dtype, in_channels, *geo, draws, seed))
        return tuple(out)

    pos_at = any(test("positive", rf.halo, zero))
    pos_below = bool(any(rf.halo)) and all(test("positive", smaller, step))
    per_at = any(test("perturbation", rf.halo, zero))
    per_below = bool(any(rf.halo)) and all(test("perturbation", smaller, step))
    return SupportTest(
        halo=tuple(rf.halo),
        leaks_at_halo=pos_at or per_at,
        leaks_below=pos_below or per_below,
        positive=(pos_at, pos_below),
        perturbation=(per_at, per_below),
        dtype="float64" if dtype == torch.float64 else "float32",
    )
