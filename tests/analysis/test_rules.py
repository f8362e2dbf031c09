"""One small model per dependency rule: the computed halo is exact and tight.

Each model exercises one operation (or one spelling of it) between convolutions; the
halo the analysis computes is checked by an independent route, tiled against whole-image
inference in float64 (``exactness.assert_halo_exact``): equal at the halo, different one
F-step below.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from exactness import assert_halo_exact
from torch import nn

from napari_seamless.analysis import receptive_field


class Stack(nn.Module):
    """conv -> <body> -> conv (1 -> 4 -> ... -> 2 channels)."""

    def __init__(self, body, c=4, cout=None):
        super().__init__()
        self.inp = nn.Conv2d(1, c, 3, padding=1)
        self.body = body
        self.out = nn.Conv2d(cout or c, 2, 3, padding=1)

    def forward(self, x):
        return self.out(self.body(torch.relu(self.inp(x))))


class Lambda(nn.Module):
    def __init__(self, fn, **mods):
        super().__init__()
        self.fn = fn
        for k, v in mods.items():
            setattr(self, k, v)

    def forward(self, x):
        return self.fn(self, x)


def _down_up(mode, **kw):
    def fn(m, x):
        y = m.down(x)
        return F.interpolate(y, scale_factor=2, mode=mode, **kw) + x

    return Lambda(fn, down=nn.Conv2d(4, 4, 3, stride=2, padding=1))


def _resize_to_skip(m, x):
    """smp's decoder: reads the skip's shape and resizes to it."""
    y = m.b(m.a(x))
    y = F.interpolate(y, size=x.shape[2:], mode="nearest")
    return torch.cat([y, x], 1)


def _channels_last_layernorm(m, x):
    """ConvNeXt / timm LayerNorm2d: permute -> layer_norm over channels -> permute back."""
    y = m.dw(x).permute(0, 2, 3, 1)
    y = m.ln(y)
    y = m.fc(y)  # nn.Linear on channels (an mm per pixel)
    return y.permute(0, 3, 1, 2) + x


def _type_checks_and_pad(m, x):
    """MONAI-style UpCat: run-time isinstance checks, pad to the skip's size."""
    y = m.up(m.down(x))
    if isinstance(y, torch.Tensor) and y.shape[-1] != x.shape[-1]:
        y = F.pad(y, (0, x.shape[-1] - y.shape[-1], 0, x.shape[-2] - y.shape[-2]))
    if not isinstance(x, (list, tuple)):  # torch.fx would trace the other branch
        y = torch.cat([x, y], dim=1)
    return y


def _segnet(m, x):
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    y = m.c(y)
    return F.max_unpool2d(y, idx, 2, output_size=x.shape[2:])


MODELS = {
    "strided conv + transposed conv": lambda: Stack(
        nn.Sequential(
            nn.Conv2d(4, 4, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1),
        )
    ),
    "resnet stem max pool 3/2/1 + nearest": lambda: Stack(
        nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.Upsample(scale_factor=2, mode="nearest"))
    ),
    "bilinear": lambda: Stack(_down_up("bilinear", align_corners=False)),
    "bicubic": lambda: Stack(_down_up("bicubic", align_corners=False)),
    "nearest-exact": lambda: Stack(_down_up("nearest-exact")),
    "resize to the skip's size": lambda: Stack(
        Lambda(
            _resize_to_skip,
            a=nn.Conv2d(4, 4, 3, stride=2, padding=1),
            b=nn.Conv2d(4, 4, 3, stride=2, padding=1),
        ),
        cout=8,
    ),
    "dilated and depthwise": lambda: Stack(
        nn.Sequential(
            nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.Conv2d(4, 4, 5, padding=2, groups=4)
        )
    ),
    "channels-last LayerNorm + Linear": lambda: Stack(
        Lambda(
            _channels_last_layernorm,
            dw=nn.Conv2d(4, 4, 7, padding=3, groups=4),
            ln=nn.LayerNorm(4),
            fc=nn.Linear(4, 4),
        )
    ),
    "InstanceNorm with running stats (eval)": lambda: Stack(
        nn.Sequential(nn.InstanceNorm2d(4, track_running_stats=True), nn.Conv2d(4, 4, 3, padding=1))
    ),
    "reflect padding": lambda: Stack(nn.Conv2d(4, 4, 5, padding=2, padding_mode="reflect")),
    "pixel unshuffle / shuffle": lambda: Stack(
        nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(16, 16, 3, padding=1), nn.PixelShuffle(2))
    ),
    "type checks, pad": lambda: Stack(
        Lambda(
            _type_checks_and_pad,
            down=nn.Conv2d(4, 4, 3, stride=2, padding=1),
            up=nn.ConvTranspose2d(4, 4, 2, stride=2),
        ),
        cout=8,
    ),
    "max pool indices + unpool": lambda: Stack(Lambda(_segnet, c=nn.Conv2d(4, 4, 3, padding=1))),
    "asymmetric (causal) padding": lambda: nn.Sequential(
        nn.ZeroPad2d((4, 0, 0, 0)), nn.Conv2d(1, 2, (1, 5))
    ),
}

FACTORS = {
    "strided conv + transposed conv": 2,
    "resnet stem max pool 3/2/1 + nearest": 2,
    "bilinear": 2,
    "bicubic": 2,
    "nearest-exact": 2,
    "resize to the skip's size": 4,
    "pixel unshuffle / shuffle": 2,
    "type checks, pad": 2,
    "max pool indices + unpool": 2,
}


@pytest.mark.parametrize("name", list(MODELS))
def test_rule_gives_exact_tight_halo(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    rf = receptive_field(model)
    assert rf.factor == (FACTORS.get(name, 1),) * 2
    assert_halo_exact(model, rf)


def test_asymmetric_extents_are_reported_as_such():
    model = MODELS["asymmetric (causal) padding"]().eval()
    rf = receptive_field(model)
    assert rf.left == (0, 4) and rf.right == (0, 0) and rf.halo == (0, 4)


def test_bilinear_reaches_further_than_eq1():
    # the bilinear kernel reads a neighbour beyond the nearest source pixel: Eq. 1 misses it
    torch.manual_seed(0)
    rf = receptive_field(MODELS["bilinear"]().eval())
    assert max(rf.left + rf.right) > max(rf.eq1)


class EndsInFloat(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x).float()


def test_model_ending_in_float_is_analysed_like_without():
    torch.manual_seed(0)
    inner = MODELS["type checks, pad"]().eval()
    plain = receptive_field(inner)
    cast = receptive_field(EndsInFloat(inner).double())
    assert (cast.factor, cast.left, cast.right, cast.halo) == (
        plain.factor,
        plain.left,
        plain.right,
        plain.halo,
    )
