import pytest
import torch
from torch import nn

from napari_seamless import receptive_field
from napari_seamless.models import UNet
from napari_seamless.receptive_field import (
    NotTileableError,
    effective_receptive_field,
    find_refusals,
    verify_halo,
)


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


def test_default_model_halo(nuclei_model):
    rf = receptive_field(nuclei_model.module)
    assert rf.factor == (16, 16) and rf.halo == (96, 96) and rf.eq1 == (92, 92)


def test_analysis_leaves_model_untouched():
    model = UNet(width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with pytest.raises(
        NotTileableError, match=r"BatchNorm2d at 'down.0.2'.*train mode.*model.eval\(\)"
    ):
        receptive_field(model)
    receptive_field(model, assume_eval=True)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_model_that_changes_size_is_refused():
    class Shrinks(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.conv2d(x, torch.ones(2, 1, 3, 3))  # VALID conv

    with pytest.raises(ValueError, match="could not find F"):
        receptive_field(Shrinks())


class _Net(nn.Module):
    """conv -> <middle> -> conv, with the middle given by a module or a function."""

    def __init__(self, middle=None, fn=None):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.middle = middle if middle is not None else nn.Identity()
        self.fn = fn
        self.conv2 = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        x = self.middle(self.conv1(x))
        if self.fn is not None:
            x = self.fn(x)
        return self.conv2(x)


def _upsample_ac(x):
    return nn.functional.interpolate(
        nn.functional.max_pool2d(x, 2), scale_factor=2, mode="bilinear", align_corners=True
    )


@pytest.mark.parametrize(
    "net,op,path,words",
    [
        (_Net(nn.GroupNorm(2, 4)), "GroupNorm", "middle", "normalises over space"),
        (_Net(nn.InstanceNorm2d(4)), "InstanceNorm2d", "middle", "normalises each image"),
        (_Net(nn.LayerNorm([4, 32, 32])), "LayerNorm", "middle", "spatial axes"),
        (
            _Net(fn=lambda x: x * x.mean(dim=(2, 3), keepdim=True)),
            "mean",
            "<functional>",
            "global pooling",
        ),
        (
            _Net(fn=lambda x: x * nn.functional.adaptive_avg_pool2d(x, 1)),
            "adaptive_avg_pool2d",
            "<functional>",
            "adaptive",
        ),
        (
            _Net(
                nn.Sequential(
                    nn.MaxPool2d(2),
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
                )
            ),
            "Upsample",
            "middle.1",
            "align_corners=True",
        ),
        (_Net(fn=_upsample_ac), "interpolate", "<functional>", "align_corners=True"),
    ],
)
def test_untileable_operations_are_refused_by_name_and_path(net, op, path, words):
    refusals = find_refusals(net.eval(), size=32)
    assert any(r.op == op and r.path == path and words in r.reason for r in refusals), refusals
    with pytest.raises(NotTileableError, match=op):
        receptive_field(net.eval())


def test_plain_unet_has_no_refusals():
    assert find_refusals(UNet(width=4).eval()) == []


def test_support_test_confirms_halo_and_catches_one_step_less(nuclei_model):
    rf = receptive_field(nuclei_model.module)
    result = verify_halo(nuclei_model.module, rf)
    assert result.confirmed and not result.leaks_at_halo and result.leaks_below
    from dataclasses import replace

    too_small = verify_halo(nuclei_model.module, replace(rf, halo=(80, 80)))
    assert too_small.leaks_at_halo and not too_small.confirmed


def test_effective_receptive_field_falls_short_of_exact_halo(nuclei_model):
    erf = effective_receptive_field(nuclei_model.module, factor=16)
    assert all(e % 16 == 0 and 0 < e <= 96 for e in erf)
    assert effective_receptive_field(nuclei_model.module, factor=16, threshold=0.0) == (96, 96)


def test_graph_analysis_agrees_with_impulse_cone_on_torchscript():
    model = UNet(width=4, depth=3).eval()
    graph = receptive_field(model)
    cone = receptive_field(torch.jit.script(model))
    assert graph.method == "graph" and cone.method == "impulse cone"
    assert (graph.factor, graph.left, graph.right, graph.halo) == (
        cone.factor,
        cone.left,
        cone.right,
        cone.halo,
    )


class _Asymmetric(nn.Module):
    """Causal along X: output x depends on inputs x-2 .. x only."""

    def __init__(self):
        super().__init__()
        self.pad = nn.ZeroPad2d((2, 0, 0, 0))
        self.conv = nn.Conv2d(1, 2, (1, 3))

    def forward(self, x):
        return self.conv(self.pad(x))


def test_asymmetric_extents_are_reported_as_such():
    rf = receptive_field(_Asymmetric().eval())
    assert rf.factor == (1, 1)
    assert rf.left == (0, 2) and rf.right == (0, 0) and rf.halo == (0, 2)


def test_unknown_operation_is_an_error_naming_it():
    from napari_seamless.dependency import UnsupportedOperationError

    class Rolls(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            return torch.roll(self.conv(x), 1, dims=-1)

    with pytest.raises(UnsupportedOperationError, match="function roll"):
        receptive_field(Rolls().eval())
