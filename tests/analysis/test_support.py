"""The two support tests of a halo, and the blind spot each one covers for the other."""

from __future__ import annotations

from dataclasses import replace

import torch
from test_refusals import Net, WindowAttention
from torch import nn

from napari_seamless.analysis import ReceptiveField, receptive_field, verify_halo


def test_support_tests_confirm_the_default_halo_and_catch_one_step_less(nuclei_model):
    rf = receptive_field(nuclei_model.module)
    result = verify_halo(nuclei_model.module, rf)
    assert result.confirmed and not result.leaks_at_halo and result.leaks_below
    assert result.positive == (False, True) and result.perturbation == (False, True)
    assert result.dtype == "float64"
    too_small = verify_halo(nuclei_model.module, replace(rf, halo=(80, 80)))
    assert too_small.leaks_at_halo and not too_small.confirmed
    assert too_small.positive[0] and too_small.perturbation[0]


class ChannelLayerNorm(nn.Module):
    """conv 3x3 -> layer norm over channels (functional, as timm writes it) -> conv 3x3."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, x):
        y = self.a(x).permute(0, 2, 3, 1)
        return self.b(nn.functional.layer_norm(y, (4,)).permute(0, 3, 1, 2))


def test_perturbation_sees_through_layernorm_where_the_positive_copy_is_blind():
    torch.manual_seed(0)
    model = ChannelLayerNorm().eval()
    rf = receptive_field(model)
    assert rf.halo == (2, 2)
    assert verify_halo(model, rf).confirmed
    # a too-small halo: with every channel equal, LayerNorm outputs 0 in the positive copy,
    # which therefore sees nothing behind it; the real weights do
    small = verify_halo(model, replace(rf, halo=(1, 1)))
    assert small.perturbation[0] and small.leaks_at_halo and not small.confirmed
    assert not small.positive[0]


def test_window_attention_with_a_too_small_halo_is_rejected():
    # attention is refused by the analysis; the support test alone still rejects a halo
    torch.manual_seed(0)
    model = Net(WindowAttention()).eval()
    rf = ReceptiveField(factor=(4, 4), left=(4, 4), right=(4, 4), halo=(4, 4), eq1=None)
    result = verify_halo(model, rf)
    assert result.leaks_at_halo and result.perturbation[0] and not result.confirmed
