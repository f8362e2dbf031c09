import pytest
import torch

from napari_seamless import receptive_field
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
    rf = receptive_field(UNet(**kwargs), ndim=ndim)
    assert rf.factor == (factor,) * ndim
    assert rf.halo == (halo,) * ndim
    assert rf.eq1 == (eq1,) * ndim
    # exact extents lie between Eq. 1 and the rounded halo
    assert all(eq1 <= e <= halo for e in rf.left + rf.right)


def test_default_model_halo(nuclei_model):
    rf = receptive_field(nuclei_model.module)
    assert rf.factor == (16, 16) and rf.halo == (96, 96) and rf.eq1 == (92, 92)


def test_analysis_leaves_model_untouched():
    model = UNet(width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    receptive_field(model)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_model_that_changes_size_is_refused():
    class Shrinks(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.conv2d(x, torch.ones(2, 1, 3, 3))  # VALID conv

    with pytest.raises(ValueError, match="could not find F"):
        receptive_field(Shrinks())
