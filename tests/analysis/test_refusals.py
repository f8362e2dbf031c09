"""What cannot be tiled exactly is refused where it runs, by name, path and source line.

And what can be tiled (per-pixel operations, dead modules, eval-mode statistics) is not.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from napari_seamless.analysis import (
    ModelRunError,
    NotTileableError,
    UnsupportedOperationError,
    receptive_field,
)
from napari_seamless.models import UNet


class Net(nn.Module):
    """conv -> <middle module> -> <fn> -> conv."""

    def __init__(self, middle=None, fn=None, unused=None):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.middle = middle if middle is not None else nn.Identity()
        self.fn = fn
        self.unused = unused  # built but never called in forward
        self.conv2 = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        x = self.middle(self.conv1(x))
        if self.fn is not None:
            x = self.fn(x)
        return self.conv2(x)


class PixelAttention(nn.Module):
    """Self-attention over all pixels (ViT-style tokens)."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 1, batch_first=True)

    def forward(self, x):
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        y, _ = self.attn(t, t, t)
        return y.transpose(1, 2).reshape(n, c, h, w)


class WindowAttention(nn.Module):
    """Swin-style attention inside 4 x 4 windows: q @ k^T, softmax, @ v."""

    def __init__(self, c=4, win=4):
        super().__init__()
        self.qkv = nn.Linear(c, 3 * c)
        self.win = win

    def forward(self, x):
        n, c, h, w = x.shape
        s = self.win
        t = x.reshape(n, c, h // s, s, w // s, s).permute(0, 2, 4, 3, 5, 1).reshape(-1, s * s, c)
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        a = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        y = (a @ v).reshape(n, h // s, w // s, s, s, c).permute(0, 5, 1, 3, 2, 4)
        return y.reshape(n, c, h, w)


def _cellpose_style(x):
    return x + F.avg_pool2d(x, kernel_size=x.shape[-2:])  # global pooling by the input's size


CASES = [
    (Net(nn.GroupNorm(2, 4)), "GroupNorm", "middle", "statistics over space"),
    (Net(nn.InstanceNorm2d(4)), "InstanceNorm2d", "middle", "its own statistics over space"),
    (Net(nn.LayerNorm([4, 64, 64])), "LayerNorm", "middle", "LayerNorm over space"),
    (Net(fn=lambda x: x * x.mean(dim=(2, 3), keepdim=True)), "Net", "", "global pooling"),
    (Net(fn=lambda x: x * F.adaptive_avg_pool2d(x, 1)), "Net", "", "global pooling"),
    (Net(nn.AdaptiveAvgPool2d(3)), "AdaptiveAvgPool2d", "middle", "adaptive pooling"),
    (Net(fn=_cellpose_style), "Net", "", "kernel = input size"),
    (
        Net(
            nn.Sequential(
                nn.MaxPool2d(2), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            )
        ),
        "Upsample",
        "middle.1",
        "align_corners=True",
    ),
    (Net(PixelAttention()), "MultiheadAttention", "middle.attn", "image positions"),
    (Net(WindowAttention()), "WindowAttention", "middle", "image positions"),
    (Net(fn=lambda x: torch.roll(x, 1, dims=-1)), "Net", "", "cyclic"),
]


@pytest.mark.parametrize("net,op,path,words", CASES, ids=[c[1] + ":" + c[3] for c in CASES])
def test_untileable_operations_are_refused_where_they_run(net, op, path, words):
    with pytest.raises(NotTileableError) as info:
        receptive_field(net.eval())
    refusals = info.value.refusals
    assert any(r.op == op and r.path == path and words in r.reason for r in refusals), refusals
    # the message names the live operation and, for code in a file, its source line
    assert op in str(info.value)
    if path == "":
        assert any("test_refusals.py" in r.source for r in refusals), refusals


@pytest.mark.parametrize(
    "net",
    [
        Net(unused=nn.AdaptiveAvgPool2d(1)),  # a dead module (ResNet's avgpool in an encoder)
        Net(nn.InstanceNorm2d(4, track_running_stats=True)),  # eval: a per-pixel affine map
        Net(nn.BatchNorm2d(4)),
        Net(fn=lambda x: x.softmax(dim=1) * x.sum(dim=1, keepdim=True)),  # over channels
    ],
    ids=["dead module", "InstanceNorm running stats", "BatchNorm eval", "channel reductions"],
)
def test_per_pixel_and_dead_modules_are_not_refused(net):
    rf = receptive_field(net.eval())
    assert rf.halo == (2, 2) and rf.factor == (1, 1)


def test_train_mode_is_refused_unless_the_caller_runs_eval():
    model = UNet(width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with pytest.raises(NotTileableError, match=r"BatchNorm2d at 'down.0.2'.*train mode.*eval\(\)"):
        receptive_field(model)
    assert receptive_field(model, assume_eval=True).halo == (96, 96)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_torchscript_refusal_names_the_layer():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.Conv2d(4, 2, 1))
    with pytest.raises(NotTileableError, match="GroupNorm at '1'"):
        receptive_field(torch.jit.script(model.eval()))


def test_operation_without_rule_is_an_error_naming_it():
    class Warps(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            theta = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            return F.grid_sample(self.conv(x), grid, align_corners=False)

    with pytest.raises(UnsupportedOperationError, match=r"aten\.grid_sampler_2d.*test_refusals"):
        receptive_field(Warps().eval())


def test_model_that_changes_size_is_refused():
    class Shrinks(nn.Module):
        def forward(self, x):
            return F.conv2d(x, torch.ones(2, 1, 3, 3))  # VALID convolution

    with pytest.raises(ModelRunError, match="changes the image size"):
        receptive_field(Shrinks())


def test_model_with_wrong_channels_is_a_clear_error():
    with pytest.raises(ModelRunError, match="does not run.*channel"):
        receptive_field(UNet(width=4, in_channels=3).eval(), in_channels=1)


def test_data_dependent_branch_is_a_clear_error():
    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3, padding=1)
            self.b = nn.Conv2d(1, 2, 5, padding=2)

        def forward(self, x):
            first = float(x.flatten()[0])  # a value read in Python: the graph bakes one branch
            return self.a(x) if first > 0.5 else self.b(x)

    with pytest.raises(UnsupportedOperationError, match="reads image values in Python"):
        receptive_field(Branches().eval())


def test_time_budget_is_enforced():
    from napari_seamless.analysis import AnalysisTimeoutError

    with pytest.raises(AnalysisTimeoutError, match="budget"):
        receptive_field(UNet(width=4).eval(), time_budget=1e-3)


def test_graph_that_does_not_reproduce_the_model_is_not_trusted():
    class Counts(nn.Module):
        """Python state that changes between calls: the recorded graph bakes one value."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            return self.conv(x) * self.calls

    with pytest.raises(UnsupportedOperationError, match="does not reproduce the model's output"):
        receptive_field(Counts().eval())
