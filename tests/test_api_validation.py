"""The public API refuses bad arguments with one SeamlessError sentence, before any work.

The models here are tiny (a 3x3 then a 1x1 convolution: halo 1, F 1); ``halo`` and ``factor``
are given wherever the halo analysis is not what the test is about. A model that counts its
forward calls shows that a refusal comes before the halo analysis and before any tile.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import napari_seamless as ns
from napari_seamless.engine import (
    ArgumentError,
    ArgumentTypeError,
    ChannelError,
    Predictor,
    predict,
    segment,
)
from napari_seamless.errors import SeamlessError
from napari_seamless.models import LoadedModel, ModelLoadError
from napari_seamless.stores import ArrayStore

FAST = dict(halo=1, factor=1, device="cpu")
SHAPE = (32, 40)


def _net(ndim=2, cin=1, classes=2, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d if ndim == 2 else nn.Conv3d
    return nn.Sequential(conv(cin, 4, 3, padding=1), nn.ReLU(), conv(4, classes, 1)).eval()


class Counting(nn.Module):
    """A tiny model that counts its forward passes (in eval mode: the Predictor uses it as is)."""

    def __init__(self, ndim=2, classes=2):
        super().__init__()
        self.net = _net(ndim, classes=classes)
        self.calls = 0
        self.eval()

    def forward(self, x):
        self.calls += 1
        return self.net(x)


@pytest.fixture
def image():
    return np.random.default_rng(0).uniform(0, 1000, SHAPE).astype(np.float32)


def test_new_errors_are_seamless_and_builtin():
    assert issubclass(ArgumentError, SeamlessError) and issubclass(ArgumentError, ValueError)
    assert issubclass(ArgumentTypeError, SeamlessError) and issubclass(ArgumentTypeError, TypeError)
    assert ns.ArgumentError is ArgumentError and ns.ArgumentTypeError is ArgumentTypeError
    assert {"ArgumentError", "ArgumentTypeError"} <= set(dir(ns))
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):  # old code
        Predictor(_net(), dtype="half", **FAST)


# --- the model argument ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "model,kind,hint",
    [
        ([nn.Conv2d(1, 2, 3)], "list", ""),
        ({"weight": torch.zeros(2, 1, 3, 3)}, "dict", "load_state_dict"),
        (None, "None", ""),
        (np.zeros((8, 8)), "numpy.ndarray", "the model comes first"),
        (3.0, "float", ""),
    ],
)
def test_model_of_the_wrong_kind_says_what_was_given_and_what_is_accepted(image, model, kind, hint):
    for call in (
        lambda: segment(model, image, tile=None, **FAST),
        lambda: predict(model, image, tile=None, **FAST),
        lambda: Predictor(model, **FAST),
    ):
        with pytest.raises(ArgumentTypeError, match=f"got {kind}") as err:
            call()
        text = str(err.value)
        assert "torch.nn.Module" in text and "LoadedModel" in text and "'nuclei'" in text
        assert hint in text
    with pytest.raises(ArgumentTypeError, match="or a Predictor, got list"):
        segment([1], image)


def test_a_predictor_is_not_a_model_for_a_new_predictor():
    pred = Predictor(_net(), **FAST)
    with pytest.raises(ArgumentTypeError, match="already a Predictor"):
        Predictor(pred)


def test_name_and_loaded_model_give_the_modules_result(nuclei_model, nuclei_image):
    img = nuclei_image[:128, :160]
    kw = dict(tile=None, halo=96, factor=16, device="cpu")  # one pass each, no analysis
    probs = predict(nuclei_model.module, img, **kw)
    labels = probs.argmax(0)
    assert 0.05 < labels.mean() < 0.6  # nuclei found: the comparison means something
    assert np.array_equal(predict(nuclei_model, img, **kw), probs)
    assert np.array_equal(predict("nuclei", img, **kw), probs)
    assert np.array_equal(segment(nuclei_model, img, **kw), labels)
    assert np.array_equal(segment("nuclei", img, **kw), labels)
    assert Predictor("nuclei", halo=96, factor=16, device="cpu").in_channels == 1
    with pytest.raises(ModelLoadError, match="unknown model 'no-such-model'"):
        segment("no-such-model", img)


def _one_channel_loaded():
    module = _net(classes=1, seed=3)
    loaded = LoadedModel(
        module,
        "tiny",
        ndim=2,
        in_channels=1,
        activation="sigmoid",
        threshold=0.3,
        normalization=None,  # raw values, no percentiles
    )
    return module, loaded


def test_loaded_model_brings_activation_threshold_and_normalization(image):
    module, loaded = _one_channel_loaded()
    with torch.inference_mode():
        expected = torch.sigmoid(module(torch.from_numpy(image)[None, None]))[0, 0].numpy() > 0.3
    assert 0.05 < expected.mean() < 0.95
    labels = segment(loaded, image, tile=None, **FAST)  # one pass: bitwise the same
    assert np.array_equal(labels, expected)
    # the same as the module with the same settings given by hand
    by_hand = segment(
        module,
        image,
        tile=None,
        activation="sigmoid",
        threshold=0.3,
        normalization=None,
        **FAST,
    )
    assert np.array_equal(labels, by_hand)
    # a Predictor built from it keeps the normalisation as run's default
    pred = Predictor(loaded, **FAST)
    assert (pred.activation, pred.threshold, pred.normalization) == ("sigmoid", 0.3, None)
    out = np.zeros(SHAPE, np.uint8)
    for _ in pred.run(image, ArrayStore(out), None, output="labels"):
        pass
    assert np.array_equal(out, expected)
    # what the caller gives wins, through Predictor and through LoadedModel.predictor
    for pred in (
        Predictor(loaded, activation="identity", threshold=0.7, **FAST),
        loaded.predictor(activation="identity", threshold=0.7, **FAST),
    ):
        assert (pred.activation, pred.threshold) == ("identity", 0.7)
    percentile = segment(loaded, image, tile=None, normalization="percentile", **FAST)
    assert not np.array_equal(percentile, labels)


# --- out= -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "output,out,error,message",
    [
        (
            "probabilities",
            np.zeros((2, 10, 10), np.float32),
            ArgumentError,
            r"out has shape \(2, 10, 10\) but predict writes \(classes, 32, 40\)",
        ),
        (
            "probabilities",
            np.zeros(SHAPE, np.float32),
            ArgumentError,
            r"out has shape \(32, 40\) but predict writes \(classes, 32, 40\)",
        ),
        (
            "probabilities",
            np.zeros((2, *SHAPE), np.int32),
            ArgumentError,
            "out has dtype int32 but probabilities are fractions",
        ),
        (
            "labels",
            np.zeros((2, *SHAPE), np.uint8),
            ArgumentError,
            r"out has shape \(2, 32, 40\) but segment writes \(32, 40\)",
        ),
        (
            "labels",
            np.zeros((40, 32), np.uint8),
            ArgumentError,
            r"out has shape \(40, 32\) but segment writes \(32, 40\)",
        ),
        ("labels", np.zeros(SHAPE, complex), ArgumentError, "out has dtype complex128"),
        ("labels", [[0] * 40] * 32, ArgumentTypeError, "out is list, not an array"),
    ],
)
def test_bad_out_is_refused_before_any_analysis_or_inference(image, output, out, error, message):
    model = Counting()
    run = segment if output == "labels" else predict
    with pytest.raises(error, match=message):
        run(model, image, tile=16, out=out, device="cpu")  # no halo: the analysis would run
    assert model.calls == 0


@pytest.mark.parametrize("output", ["probabilities", "labels"])
def test_read_only_out_is_refused(image, output):
    model = Counting()
    shape = SHAPE if output == "labels" else (2, *SHAPE)
    out = np.zeros(shape, np.float32)
    out.flags.writeable = False
    run = segment if output == "labels" else predict
    with pytest.raises(ArgumentError, match="out is read-only"):
        run(model, image, tile=16, out=out, device="cpu")
    assert model.calls == 0


def test_read_only_zarr_out_is_refused(image, tmp_path):
    import zarr

    zarr.save(str(tmp_path / "out.zarr"), np.zeros(SHAPE, np.uint8))
    model = Counting()
    with pytest.raises(ArgumentError, match="out is read-only"):
        segment(model, image, out=zarr.open(str(tmp_path / "out.zarr"), mode="r"), device="cpu")
    assert model.calls == 0
    out = zarr.open(str(tmp_path / "out.zarr"), mode="a")
    assert segment(model, image, tile=16, out=out, **FAST) is out and out[:].any()


def test_out_checked_against_the_models_classes_before_any_tile(image):
    out = np.zeros((3, *SHAPE), np.float32)
    with pytest.raises(ArgumentError, match=r"out has shape \(3, 32, 40\) .* \(2, 32, 40\)"):
        predict(_net(), image, tile=16, out=out, **FAST)
    labels = np.zeros(SHAPE, np.uint8)
    many = nn.Conv2d(1, 300, 1)
    with pytest.raises(ArgumentError, match="uint8, which cannot hold label 299.*uint16"):
        segment(many, image, tile=16, out=labels, halo=0, factor=1, device="cpu")
    assert not labels.any()


def test_a_good_out_is_filled_and_returned(image):
    model = Counting()
    out = np.zeros((2, *SHAPE), np.float32)
    assert predict(model, image, tile=16, out=out, **FAST) is out
    assert model.calls > 0 and np.allclose(out.sum(0), 1)
    labels = segment(model, image, tile=16, out=np.zeros(SHAPE, np.int32), **FAST)
    assert np.array_equal(labels, out.argmax(0))


# --- ndim -------------------------------------------------------------------------------------


def test_ndim_unlike_the_models_convolutions_names_them(image):
    with pytest.raises(
        ArgumentError,
        match=r"ndim=3 was given but the model's convolutions are "
        r"2D \(Conv2d\); pass ndim=2",
    ):
        Predictor(_net(2), ndim=3, **FAST)
    with pytest.raises(ArgumentError, match=r"convolutions are 3D \(Conv3d\); pass ndim=3"):
        Predictor(_net(3), ndim=2, **FAST)
    model = Counting()
    with pytest.raises(ArgumentError, match="ndim=3 was given") as err:
        segment(model, image[None], tile=16, ndim=3, device="cpu")
    assert not isinstance(err.value, ChannelError) and "channel" not in str(err.value)
    assert model.calls == 0


@pytest.mark.parametrize(
    "ndim,error",
    [(4, ArgumentError), (1, ArgumentError), ("2", ArgumentTypeError), (True, ArgumentTypeError)],
)
def test_ndim_must_be_2_or_3(ndim, error):
    with pytest.raises(error, match="ndim must be 2 .* or 3"):
        Predictor(_net(), ndim=ndim, **FAST)


def test_ndim_omitted_is_read_from_the_convolutions():
    vol = np.random.default_rng(1).normal(size=(6, 10, 12)).astype(np.float32)
    assert Predictor(_net(3), **FAST).ndim == 3
    labels = segment(_net(3), vol, tile=None, **FAST)
    assert labels.shape == vol.shape
    assert np.array_equal(labels, segment(_net(3), vol, tile=None, ndim=3, **FAST))


# --- other Predictor settings -----------------------------------------------------------------


def test_input_channels_that_cannot_be_inferred():
    with pytest.raises(
        ArgumentError, match="cannot infer the model's input channels.*in_channels="
    ):
        Predictor(nn.Identity(), **FAST)
    assert Predictor(nn.Identity(), in_channels=1, activation="identity", **FAST).in_channels == 1
    with pytest.raises(ArgumentError, match="in_channels must be a positive int"):
        Predictor(_net(), in_channels=0, **FAST)


@pytest.mark.parametrize(
    "settings,error,message",
    [
        (
            dict(dtype="float16"),
            ArgumentError,
            "dtype must be 'float32' or 'float64', got 'float16'",
        ),
        (dict(activation="relu"), ArgumentError, "activation must be one of .*'relu'"),
        (dict(threshold=1.5), ArgumentError, r"threshold must lie strictly between 0 and 1.*1\.5"),
        (dict(threshold=0), ArgumentError, "strictly between 0 and 1"),
        (dict(threshold="0.5"), ArgumentTypeError, "threshold must be a number"),
        (dict(halo=1.5), ArgumentTypeError, "halo must be an int or a tuple of 2 ints"),
        (dict(halo=-16), ArgumentError, "halo must be at least 0"),
        (dict(halo=(1, 1, 1)), ArgumentError, "halo .* has 3 values but the model has 2"),
        (dict(factor=0), ArgumentError, "factor must be at least 1"),
        (dict(device="gpu"), ArgumentError, "device 'gpu' is not a torch device"),
    ],
)
def test_bad_settings_are_one_sentence(image, settings, error, message):
    kw = {**FAST, **settings}
    with pytest.raises(error, match=message) as err:
        Predictor(_net(), **kw)
    assert "\n" not in str(err.value)
    model = Counting()
    with pytest.raises(error, match=message):
        segment(model, image, tile=16, **kw)
    assert model.calls == 0


def test_settings_cannot_change_a_built_predictor(image):
    pred = Predictor(_net(), **FAST)
    with pytest.raises(ArgumentError, match="dtype cannot change a Predictor"):
        predict(pred, image, tile=16, dtype="float64", halo=2)
    # a halo is a setting of the run, not of the Predictor: it is taken, the Predictor kept
    whole = predict(pred, image, tile=None)
    assert np.abs(predict(pred, image, tile=16, halo=0) - whole).max() > 1e-4  # seams
    assert np.abs(predict(pred, image, tile=16) - whole).max() <= 1e-6
    assert pred.halo == (1, 1)
    with pytest.raises(ArgumentError, match="ndim cannot change"):
        predict(pred, image, tile=16, ndim=3)
    assert predict(pred, image, tile=16, ndim=2).shape == (2, *SHAPE)  # the same ndim: fine


def test_model_returning_a_tuple_is_a_clear_error(image):
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 1)

        def forward(self, x):
            return self.conv(x), x

    with pytest.raises(ArgumentTypeError, match="model returned tuple, expected a tensor"):
        predict(Pair().eval(), image, tile=16, halo=0, factor=1, device="cpu")


# --- run arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(tile=256.0), ArgumentTypeError, "tile must be an int or a tuple of 2 ints.*float"),
        (dict(tile="256"), ArgumentTypeError, "tile must be an int"),
        (dict(tile=(16, 16, 16)), ArgumentError, "tile .* has 3 values"),
        (dict(tile=0), ArgumentError, "tile must be at least 1"),
        (dict(batch_size=0), ArgumentError, "batch_size must be at least 1"),
        (dict(batch_size=2.0), ArgumentTypeError, "batch_size must be an int"),
        (dict(normalization="zscore"), ArgumentError, "unknown normalization 'zscore'"),
        (dict(normalization=3), ArgumentTypeError, "normalization must be"),
        (dict(border="wrap"), ArgumentError, "border must be 'clip' or 'shift'"),
        (dict(axes=1), ArgumentTypeError, "axes must be a string"),
        (dict(tile_size=16), ArgumentTypeError, "unexpected keyword argument.*'tile_size'"),
    ],
)
def test_bad_run_arguments_before_any_analysis(image, kwargs, error, message):
    model = Counting()
    kw = {"tile": 16, **kwargs}
    with pytest.raises(error, match=message) as err:
        segment(model, image, device="cpu", **kw)
    assert isinstance(err.value, SeamlessError) and "\n" not in str(err.value)
    assert model.calls == 0


def test_run_checks_when_called_not_when_iterated(image):
    pred = Predictor(_net(), **FAST)
    out = np.zeros(SHAPE, np.uint8)
    with pytest.raises(ArgumentTypeError, match="image is None"):
        pred.run(None, ArrayStore(out))  # no next(): refused at the call
    with pytest.raises(ArgumentTypeError, match=r"store must have a write.*ArrayStore\(array\)"):
        pred.run(image, out)
    with pytest.raises(ArgumentError, match="output must be 'probabilities' or 'labels'"):
        pred.run(image, ArrayStore(out), output="label")
    with pytest.raises(ArgumentTypeError, match="tile must be an int"):
        pred.grid(SHAPE, 16.0)


def test_grid_errors_are_seamless_too(image):
    pred = Predictor(_net(), halo=10, factor=16, device="cpu")
    with pytest.raises(ArgumentError, match="halo 10 on axis 0 is not a non-negative multiple"):
        segment(pred, image, tile=64)


# --- the image --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad,error,message",
    [
        (None, ArgumentTypeError, "image is None; pass an array"),
        ([[1.0, 2.0], [3.0, 4.0]], ArgumentTypeError, r"image is a list.*numpy\.asarray"),
        ("cells.tif", ArgumentTypeError, r"path \('cells.tif'\).*napari_seamless\.io\.read_image"),
        (Path("cells.tif"), ArgumentTypeError, "napari_seamless.io.read_image"),
        (object(), ArgumentTypeError, "image is object, not an array"),
        (np.array(3.0), ArgumentError, "0-d array"),
        (np.zeros((0, 40)), ArgumentError, r"shape \(0, 40\) is empty"),
        (np.zeros(SHAPE, bool), ArgumentTypeError, "dtype bool.*astype"),
        (np.zeros(SHAPE, complex), ArgumentTypeError, r"dtype complex128.*numpy\.abs"),
        (np.zeros(SHAPE, object), ArgumentTypeError, "dtype object"),
    ],
)
def test_bad_image_before_any_analysis(bad, error, message):
    model = Counting()
    for run in (predict, segment):
        with pytest.raises(error, match=message):
            run(model, bad, tile=16, device="cpu")
    with pytest.raises(error, match=message):
        Predictor(_net(), **FAST).run(bad, ArrayStore(np.zeros(SHAPE)))
    assert model.calls == 0


def test_channel_mismatch_is_still_a_channel_error(image):
    model = Counting()
    with pytest.raises(ChannelError, match="expects 1 input channel"):
        segment(model, np.zeros((3, *SHAPE), np.float32), tile=16, device="cpu")
    assert model.calls == 0
