"""The loader registry: bioimage.io packages, entry points, pickles, output conventions."""

import warnings

import numpy as np
import pytest
import torch
from bioimageio_package import block_network, build_package
from torch import nn

from napari_seamless.engine import OutputConventionError, Predictor, predict, segment
from napari_seamless.models import (
    ConventionWarning,
    ModelLoadError,
    UNet,
    declared_halo_warning,
    load_model,
)
from napari_seamless.preprocessing import (
    Preprocessing,
    ScaleRange,
    ZeroMeanUnitVariance,
)

pytest.importorskip("bioimageio.spec")


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    root = tmp_path_factory.mktemp("bioimageio")
    return {
        "zip": build_package(root / "zip"),
        "folder": build_package(root / "folder", as_zip=False),
        "state_dict": build_package(root / "sd", weights=("pytorch_state_dict",)),
        "small_halo": build_package(root / "small", halo=32),
    }


@pytest.fixture(scope="module")
def builtin_labels(nuclei_model, nuclei_image):
    return segment(nuclei_model.predictor(device="cpu"), nuclei_image, tile=256)


def test_bioimageio_package_offline_equals_builtin(
    packages, nuclei_image, builtin_labels, monkeypatch
):
    block_network(monkeypatch)
    for source in (packages["zip"], packages["folder"], packages["folder"] / "rdf.yaml"):
        loaded = load_model(source)
        assert loaded.meta["kind"] == "bioimageio"
        assert loaded.meta["weights_format"] == "torchscript"
        assert (loaded.ndim, loaded.in_channels, loaded.activation) == (2, 1, "softmax")
        assert loaded.meta["declared_halo"] == (96, 96)
        pre = loaded.normalization
        assert isinstance(pre, Preprocessing)
        [scale] = [s for s in pre.steps if isinstance(s, ScaleRange)]
        assert (scale.pmin, scale.pmax, scale.per_channel) == (1.0, 99.8, True)
        pred = loaded.predictor(device="cpu")
        assert (
            pred.halo == (96, 96)
            and declared_halo_warning(loaded.meta["declared_halo"], pred.rf) is None
        )
        labels = segment(pred, nuclei_image, tile=256, normalization=pre)
        assert 0.1 < labels.mean() < 0.4  # nuclei found, not all one class
        assert np.array_equal(labels, builtin_labels)


def test_bioimageio_state_dict_weights_build_the_architecture(packages, nuclei_model):
    loaded = load_model(packages["state_dict"])
    assert loaded.meta["weights_format"] == "pytorch_state_dict"
    assert isinstance(loaded.module, UNet)
    x = torch.randn(1, 1, 64, 64)
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), nuclei_model.module(x))


def test_bioimageio_channel_last_axes_are_adapted(tmp_path, nuclei_image, builtin_labels):
    path = build_package(tmp_path, as_zip=False, channel_last=True, weights=("torchscript",))
    loaded = load_model(path)
    assert loaded.meta["axes"]["input"] == ["batch", "y", "x", "channel"]
    labels = segment(
        loaded.predictor(device="cpu"), nuclei_image, tile=256, normalization=loaded.normalization
    )
    assert np.array_equal(labels, builtin_labels)


def test_declared_halo_too_small_is_reported(packages):
    loaded = load_model(packages["small_halo"])
    assert loaded.meta["declared_halo"] == (32, 32)
    pred = loaded.predictor(device="cpu")
    text = loaded.declared_halo_warning(pred.rf)
    assert "halo of 32 px" in text and "exact halo of 96 px" in text
    assert pred.halo == (96, 96)  # the exact halo is used regardless
    assert declared_halo_warning((96, 96), (96, 96)) is None
    assert declared_halo_warning((128, 100), (96, 96)) is None
    assert declared_halo_warning(None, (96, 96)) is None
    assert "64 x 96 px" in declared_halo_warning((64, 96), (96, 96))


def test_invalid_package_and_missing_spec_are_clear(tmp_path):
    bad = tmp_path / "rdf.yaml"
    bad.write_text("type: model\nformat_version: 0.5.4\nname: x\n")
    with pytest.raises(ModelLoadError, match="not a valid bioimage.io model package"):
        load_model(bad)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "missing.zip")


def test_declared_statistics_are_fitted_once_on_the_whole_image():
    # a per-pixel identity model: the output is the normalised input itself
    conv = nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
    rng = np.random.default_rng(0)
    img = rng.gamma(2.0, 30.0, size=(200, 300))
    img[:100] += 500  # tiles see very different statistics
    pre = Preprocessing((ZeroMeanUnitVariance(eps=1e-6),))
    pred = Predictor(conv, activation="identity", device="cpu", dtype="float64")
    out = predict(pred, img, tile=64, normalization=pre)
    expected = (img - img.mean()) / (img.std() + 1e-6)
    np.testing.assert_allclose(out[0], expected, rtol=0, atol=1e-12)
    scaled = predict(pred, img, tile=64, normalization=Preprocessing((ScaleRange(1, 99.8),)))
    lo, hi = np.percentile(img, [1, 99.8])
    np.testing.assert_allclose(scaled[0], (img - lo) / (hi - lo + 1e-6), rtol=0, atol=1e-12)


def test_entry_points_module_and_file(tmp_path):
    loaded = load_model("napari_seamless.models.unet:UNet")
    assert isinstance(loaded.module, UNet) and loaded.module.config.width == 64
    assert loaded.meta["loader"] == "entry_point" and loaded.activation == "softmax"
    script = tmp_path / "my_net.py"
    script.write_text(
        "import torch\n"
        "from napari_seamless.models import UNet\n"
        "def build():\n"
        "    torch.manual_seed(3)\n"
        "    return UNet(width=4, classes=3)\n"
    )
    loaded = load_model(f"{script}:build")
    assert loaded.module.config.classes == 3 and loaded.meta["out_channels"] == 3
    with pytest.raises(ModelLoadError, match="cannot import module 'no_such_module'"):
        load_model("no_such_module:build")
    with pytest.raises(ModelLoadError, match="has no 'nope'"):
        load_model(f"{script}:nope")


def test_pickled_module_needs_allow_pickle(tmp_path):
    torch.manual_seed(2)
    model = UNet(width=4).eval()
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(ModelLoadError, match="unpickling runs code .* allow_pickle=True"):
        load_model(path)
    loaded = load_model(path, allow_pickle=True)
    assert loaded.meta["kind"] == "pickle"
    x = torch.randn(1, 1, 32, 32)
    with torch.inference_mode():
        assert torch.equal(loaded.module(x), model(x))


class _TupleNet(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        logits = self.net(x)
        return logits[:, :1] * 0 + 7, logits


class _DictNet(_TupleNet):
    def forward(self, x):
        aux, logits = super().forward(x)
        return {"aux": aux, "seg": logits}


def test_tuple_and_dict_outputs_are_selected(nuclei_model, nuclei_image, builtin_labels):
    for wrapper, key in ((_TupleNet, 1), (_DictNet, "seg"), (_DictNet, 1)):
        model = wrapper(nuclei_model.module)
        with pytest.raises(ModelLoadError, match="choose one with output="):
            load_model(model)
        loaded = load_model(model, output=key)
        assert loaded.activation == "softmax" and loaded.meta["out_channels"] == 2
        x = torch.randn(1, 1, 32, 32)
        with torch.inference_mode():
            assert torch.equal(loaded.module(x), nuclei_model.module(x))
        labels = segment(loaded.predictor(device="cpu"), nuclei_image, tile=256)
        assert np.array_equal(labels, builtin_labels)
    with pytest.raises(ModelLoadError, match="not an index of the model's 2 outputs"):
        load_model(_TupleNet(nuclei_model.module), output=5)
    with pytest.raises(ModelLoadError, match="not among the keys"):
        load_model(_DictNet(nuclei_model.module), output="nope")


class _ForegroundLogit(nn.Module):
    """One channel: nucleus logit minus background logit of the nuclei model."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        z = self.net(x)
        return z[:, 1:2] - z[:, 0:1]


def test_one_channel_model_uses_sigmoid(nuclei_model, nuclei_image, builtin_labels):
    model = _ForegroundLogit(nuclei_model.module)
    with pytest.raises(ModelLoadError, match="softmax over one channel is always 1"):
        load_model(model, activation="softmax")
    with pytest.warns(ConventionWarning, match="one output channel: using sigmoid"):
        loaded = load_model(model)
    assert loaded.activation == "sigmoid" and loaded.threshold == 0.5
    assert "sigmoid" in loaded.meta["notes"][0]
    pred = loaded.predictor(device="cpu")
    assert pred.classes() == 1
    whole = predict(pred, nuclei_image, tile=None)
    assert whole.shape == (1, 512, 512) and 0 <= whole.min() and whole.max() <= 1
    labels = segment(pred, nuclei_image, tile=256)
    assert labels.dtype == np.uint8 and 0.1 < labels.mean() < 0.4
    assert np.array_equal(labels, (whole[0] > 0.5).astype(np.uint8))
    assert (labels != builtin_labels).mean() < 1e-4  # sigmoid(a - b) > 1/2 <=> a > b
    with pytest.raises(OutputConventionError, match="one output channel"):
        Predictor(model, activation="softmax", device="cpu").classes()


def test_labels_by_convention():
    probs = np.array([[[0.2, 0.7]], [[0.3, 0.9]], [[0.1, 0.2]]])  # (3, 1, 2)
    ident = Predictor(nn.Conv2d(1, 3, 1), halo=0, factor=1, activation="identity", device="cpu")
    assert ident.labels(probs).tolist() == [[1, 1]]
    sig = Predictor(nn.Conv2d(1, 3, 1), halo=0, factor=1, activation="sigmoid", device="cpu")
    assert sig.labels(probs).tolist() == [[0, 2]]  # none above 0.5 -> 0, else 1 + argmax
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_model("nuclei").activation == "softmax"  # two channels: no note
