"""F, the exact extents, the halo and Eq. 1 of the paper's U-Net; the ERF estimate."""

from __future__ import annotations

import pytest
from exactness import assert_halo_exact

from napari_seamless.analysis import effective_receptive_field, receptive_field
from napari_seamless.models import UNet


@pytest.mark.parametrize(
    "kwargs,factor,halo,eq1",
    [
        (dict(width=4), 16, 96, 92),  # the paper's U-Net: F 16, Eq. 1 = 92, halo 96
        (dict(width=4, depth=3), 8, 48, 44),
        (dict(width=4, kernel_size=5), 16, 192, 184),
        (dict(width=2, depth=2, ndim=3), 4, 24, 20),
    ],
)
def test_unet_factor_and_halo(kwargs, factor, halo, eq1):
    ndim = kwargs.get("ndim", 2)
    rf = receptive_field(UNet(**kwargs).eval(), ndim=ndim)
    assert rf.factor == (factor,) * ndim
    assert rf.halo == (halo,) * ndim
    assert rf.eq1 == (eq1,) * ndim
    # exact extents lie between Eq. 1 and the rounded halo
    assert all(eq1 <= e <= halo for e in rf.left + rf.right)
    assert rf.method == "aten graph" and rf.seconds > 0


def test_default_model_halo_is_exact_and_tight(nuclei_model):
    rf = receptive_field(nuclei_model.module)
    assert rf.factor == (16, 16) and rf.halo == (96, 96) and rf.eq1 == (92, 92)
    assert rf.left == (94, 94) and rf.right == (94, 94)
    assert_halo_exact(nuclei_model.module, rf, activation="softmax")


def test_torchscript_is_analysed_like_the_module():
    import torch

    model = UNet(width=4, depth=3).eval()
    plain = receptive_field(model)
    scripted = receptive_field(torch.jit.script(model))
    assert (plain.factor, plain.left, plain.right, plain.halo) == (
        scripted.factor,
        scripted.left,
        scripted.right,
        scripted.halo,
    )


def test_effective_receptive_field_falls_short_of_exact_halo(nuclei_model):
    erf = effective_receptive_field(nuclei_model.module, factor=16)
    assert all(e % 16 == 0 and 0 < e <= 96 for e in erf)
    assert effective_receptive_field(nuclei_model.module, factor=16, threshold=0.0) == (96, 96)
