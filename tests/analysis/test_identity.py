"""analysis.identity.model_key: equal exactly for the same model; the analysis cache uses it."""

from __future__ import annotations

import torch

from napari_seamless.analysis import receptive_field
from napari_seamless.analysis.identity import KeyedCache, model_key
from napari_seamless.models import UNet


def _unet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return UNet(width=4).eval()


SOURCE = """
import torch
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
    def forward(self, x):
        return self.conv(x)
"""


def _net_from_source() -> torch.nn.Module:
    scope: dict = {}
    exec(SOURCE, scope)  # noqa: S102 - a class defined anew, as a re-loaded file would be
    torch.manual_seed(0)
    return scope["Net"]().eval()


def test_the_same_model_loaded_twice_has_one_key_and_any_change_another():
    a, b = _unet(), _unet()
    assert a is not b and model_key(a) == model_key(b)
    assert model_key(_unet(seed=1)) != model_key(a)  # other weights
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-7  # one weight, one ulp-ish
    assert model_key(b) != model_key(a)
    assert model_key(_unet().train()) != model_key(a)  # train mode
    # the same source executed twice defines two classes: two models, never one
    assert model_key(_net_from_source()) != model_key(_net_from_source())


def test_models_whose_behaviour_can_hide_get_no_key():
    hooked = _unet()
    hooked.register_forward_hook(lambda m, i, o: o * 2)
    assert model_key(hooked) is None
    patched = _unet()
    patched.forward = lambda x: x
    assert model_key(patched) is None
    assert model_key(torch.jit.trace(_net_from_source(), torch.zeros(1, 1, 8, 8))) is None
    assert model_key(object()) is None


def test_receptive_field_is_analysed_once_per_model():
    first = receptive_field(_unet(seed=5))
    again = receptive_field(_unet(seed=5))  # loaded again: the kept result
    assert again is first
    other = receptive_field(_unet(seed=6))  # other weights: analysed again, same answer
    assert other is not first and other == first
    assert receptive_field(_unet(seed=5), assume_eval=True) is not first  # other settings


def test_keyed_cache_keeps_the_most_recent():
    cache = KeyedCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3)
    assert cache.get("b") is None and cache.get("a") == 1 and len(cache) == 2
    cache.put(None, 4)
    assert cache.get(None) is None and len(cache) == 2


def test_a_setting_held_as_an_attribute_or_a_function_changes_or_drops_the_key():
    a, b = torch.nn.Upsample(scale_factor=2, mode="bilinear"), torch.nn.Upsample(scale_factor=2)
    assert model_key(a) != model_key(b)  # mode differs, not in the weights

    class Holder(torch.nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)

    assert model_key(Holder(torch.relu)) is None  # what fn does cannot be keyed
