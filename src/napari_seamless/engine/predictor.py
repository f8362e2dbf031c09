"""The tiled predictor: read windows, run the model, crop ZoRs, write them, yield events.

Data flows one way: image -> :class:`~napari_seamless.grid.TileGrid` -> windows -> model ->
ZoR crops -> store. :meth:`Predictor.run` is a generator that yields one small
:class:`TileEvent` per finished tile, so a progress bar, a napari worker or a CLI can follow
it, and stopping the generator between tiles cancels the run. torch is imported here
because this is where models run; nothing here imports Qt or napari.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import ArgumentError, ArgumentTypeError, SeamlessError
from ..grid import Border, Tile, TileGrid, pad_to_multiple, region_tile
from ..io import InputImage, lazy
from ..overlap import WEIGHTS, OverlapGrid, importance_map
from ..preprocessing import (
    FittedPreprocessing,
    PercentileNormalization,
    Preprocessing,
    check_finite,
    read_local,
)
from ..stores import ArrayStore, Store
from .backoff import Backoff, WindowBackoff
from .executors import Executor, PipelineStats, RunSteps, Schedule, SerialExecutor

__all__ = [
    "Predictor",
    "TileEvent",
    "predict",
    "segment",
    "read_window",
    "to_channel_first",
    "ArgumentError",
    "ArgumentTypeError",
    "ChannelError",
    "InexactHaloWarning",
    "OutputConventionError",
    "ACTIVATIONS",
    "MODES",
]

Output = Literal["probabilities", "labels"]
Activation = Literal["softmax", "sigmoid", "identity"]
ACTIVATIONS = ("softmax", "sigmoid", "identity")
Mode = Literal["exact", "naive", "overlap-average"]
MODES = ("exact", "naive", "overlap-average")
MODE_HELP = (
    "'exact' (ZoR + halo: equals whole-image inference at the computed halo), 'naive' (halo "
    "0: hard tiles with seams) or 'overlap-average' (overlapping windows blended, the common "
    "practice; not exact)"
)


class ChannelError(SeamlessError, ValueError):
    """The image's channels or axes do not match what the model expects."""


class InexactHaloWarning(UserWarning):
    """A halo below the exact one: tiled results will differ from whole-image inference."""


class OutputConventionError(SeamlessError, ValueError):
    """The activation does not fit the model's output (softmax over one channel)."""


@dataclass(frozen=True)
class TileEvent:
    """Progress of a tiled run: one event per finished tile.

    Attributes
    ----------
    tile : Tile
        The tile just written (its ZoR is final in the store).
    done : int
        Tiles finished so far, including this one.
    total : int
        Tiles in the grid.
    """

    tile: Tile
    done: int
    total: int


def labels_dtype(n_classes: int) -> type:
    """Integer dtype of argmax labels: uint8 for up to 255 classes, else uint16."""
    return np.uint8 if n_classes <= 255 else np.uint16


def _reflect(index: np.ndarray, n: int) -> np.ndarray:
    """Map indices of a reflection-padded axis (numpy 'reflect' mode) into ``[0, n)``."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    m = np.mod(index, period)
    return np.where(m >= n, period - m, m)


def read_window(image: Any, window: Sequence[slice]) -> np.ndarray:
    """Read one window of the reflection-padded image without padding the whole image.

    Parameters
    ----------
    image : array-like, shape (C, *spatial)
        Channel-first image (numpy, zarr, dask, memmap; only the window's bounding box is
        read).
    window : sequence of slice
        Window in padded-image pixels, one slice per spatial axis; may reach past the
        image (into the padding), as windows of a :class:`TileGrid` do.

    Returns
    -------
    numpy.ndarray, shape (C, *window_shape)
        The window, equal to ``numpy.pad(image, ..., mode="reflect")[(..., *window)]``.
    """
    spatial = image.shape[1:]
    idx = [_reflect(np.arange(w.start, w.stop), n) for w, n in zip(window, spatial, strict=True)]
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    block = read_local(image[(slice(None), *box)])
    for ax, (i, b) in enumerate(zip(idx, box, strict=True)):
        local = i - b.start
        if not (local.size == block.shape[ax + 1] and np.array_equal(local, np.arange(local.size))):
            block = np.take(block, local, axis=ax + 1)
    return block


def to_channel_first(
    image: Any, ndim: int, in_channels: int, axes: str | None = None
) -> tuple[Any, str]:
    """Return ``image`` as ``(C, *spatial)`` and the axes string it was read with.

    Parameters
    ----------
    image : array-like
        ``(*spatial)``, ``(C, *spatial)`` or ``(*spatial, C)``.
    ndim : int
        Spatial axes the model works on (2: ``YX``, 3: ``ZYX``).
    in_channels : int
        Channels the model expects.
    axes : str, optional
        Axes of ``image``, e.g. ``"YX"``, ``"CYX"``, ``"YXC"``, ``"ZYX"``. Guessed when
        omitted: no channel axis if ``image.ndim == ndim``; else the first or last axis,
        whichever has ``in_channels`` entries, or else the shorter of the two.

    Raises
    ------
    ChannelError
        If the number of channels or spatial axes does not match the model.
    ArgumentTypeError
        If ``axes`` is not a string.
    """
    if axes is not None and not isinstance(axes, str):
        raise ArgumentTypeError(
            f"axes must be a string such as 'YX', 'CYX' or 'ZYX' (or None to guess), got "
            f"{_kind(axes)} {axes!r}"
        )
    shape = tuple(image.shape)
    spatial_names = "ZYX"[-ndim:] if ndim <= 3 else None
    guessed = axes is None
    if axes is None:
        if len(shape) == ndim:
            axes = spatial_names
        elif len(shape) == ndim + 1:
            first = shape[0] == in_channels or (shape[-1] != in_channels and shape[0] <= shape[-1])
            axes = ("C" + spatial_names) if first else (spatial_names + "C")
        else:
            example = "TZYX" if len(shape) == 4 else "TZCYX"[-len(shape) :]
            raise ChannelError(
                f"image of shape {shape} has {len(shape)} axes but the model works on "
                f"{spatial_names} ({ndim}D) with {in_channels} channel(s): name the axes and "
                f"pick a plane, e.g. seamless predict --axes {example} --index T=0"
                f"{',Z=0' if ndim == 2 and 'Z' in example else ''} (in Python: "
                "napari_seamless.io.select_planes)"
            )
    axes = axes.upper()
    extra = [a for a in axes if a in "TZ" and a not in spatial_names]
    if extra and len(axes) == len(shape):
        uses = "a 3D model takes the whole stack" if extra == ["Z"] else ""
        raise ChannelError(
            f"the image (shape {shape}, axes {axes}) has {' and '.join(extra)}, which a {ndim}D "
            f"model ({spatial_names}) does not use: pick one position with --index "
            f"{','.join(f'{a}=N' for a in extra)} (in Python: napari_seamless.io.select_planes)"
            f"{'; ' + uses if uses else ''}"
        )
    if len(axes) != len(shape) or axes.replace("C", "") != spatial_names:
        raise ChannelError(
            f"axes {axes!r} do not fit image of shape {shape} and a {ndim}D model "
            f"(expected {spatial_names!r} with an optional 'C')"
        )
    view = lazy(image)  # numpy as it is; zarr and others: a dask view, nothing read
    if "C" not in axes:
        arr = view[None]
    elif axes[0] == "C":
        arr = image
    else:
        arr = np.moveaxis(view, axes.index("C"), 0)
    if arr.shape[0] != in_channels:
        c = int(arr.shape[0])
        stack = ""
        if guessed and c > 4 and ndim == 2:
            stack = (
                f" If these {c} are Z planes or time points, not channels, pick one with "
                "--axes ZYX --index Z=N (or use a 3D model for a Z-stack)."
            )
        raise ChannelError(
            f"the model expects {in_channels} input channel(s) but the image (shape {shape}, "
            f"axes {axes}) has {c}.{stack} Otherwise choose a model trained for {c} "
            "channel(s), or convert the image (e.g. to grayscale) first."
        )
    return arr, axes


def infer_in_channels(model: Any, ndim: int) -> int:
    """Input channels of ``model``: dim 1 of its first ``ndim``-D convolution weight.

    Raises
    ------
    ArgumentError
        If the model has no such weight (pass ``in_channels`` explicitly then); a
        :class:`ValueError` too.
    """
    for p in model.parameters():
        if p.ndim == ndim + 2:
            return int(p.shape[1])
    raise ArgumentError(
        f"cannot infer the model's input channels: it has no {ndim}D convolution weight (no "
        f"parameter with {ndim + 2} dimensions); pass in_channels="
    )


def auto_device() -> Any:
    """CUDA when present, else CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --- argument checks: one sentence per problem, raised before any analysis or inference ---

MODEL_KINDS = (
    "a torch.nn.Module (TorchScript too), a LoadedModel from napari_seamless.load_model, or a "
    "model name or file for load_model (e.g. 'nuclei')"
)
NORMALIZATIONS = "'default' (the model's own), 'percentile', None (raw values), a Preprocessing"


def _kind(value: Any) -> str:
    """What ``value`` is, for messages: ``None``, ``list``, ``numpy.ndarray``, ``torch.Tensor``."""
    if value is None:
        return "None"
    t = type(value)
    if t.__module__ == "builtins":
        return t.__name__
    return f"{t.__module__.split('.')[0]}.{t.__qualname__}"


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return _is_int(value) or isinstance(value, (float, np.floating))


def _np_dtype(dtype: Any) -> np.dtype | None:
    """The numpy dtype of a numpy or torch dtype; None without a numpy equivalent."""
    for candidate in (dtype, str(dtype).removeprefix("torch.")):
        try:
            return np.dtype(candidate)
        except (TypeError, ValueError):
            continue
    return None


def _per_axis_arg(
    value: Any, name: str, ndim: int, minimum: int, alternative: str = ""
) -> tuple[int, ...]:
    """``value`` (one int, or one per spatial axis) as ``ndim`` ints of at least ``minimum``."""
    many = isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str)
    values = list(value) if many else [value]
    if not values or not all(_is_int(v) for v in values):
        raise ArgumentTypeError(
            f"{name} must be an int or a tuple of {ndim} ints (pixels){alternative}, got "
            f"{_kind(value)} {value!r}"
        )
    if many and len(values) != ndim:
        raise ArgumentError(
            f"{name} {tuple(int(v) for v in values)} has {len(values)} values but the model "
            f"has {ndim} spatial axes; give one value or {ndim}"
        )
    out = tuple(int(v) for v in values) * (1 if many else ndim)
    if any(v < minimum for v in out):
        raise ArgumentError(
            f"{name} must be at least {minimum} pixel(s) on every axis, got {value!r}"
        )
    return out


def _model_ndim(module: Any, ndim: Any) -> int:
    """``ndim`` checked against the model's convolutions, or read from them (else 2).

    Raises
    ------
    ArgumentError, ArgumentTypeError
        If ``ndim`` is not 2 or 3, or the model has convolutions of another dimensionality.
    """
    if ndim is not None and not _is_int(ndim):
        raise ArgumentTypeError(
            f"ndim must be 2 (YX images) or 3 (ZYX volumes), got {_kind(ndim)} {ndim!r}"
        )
    if ndim is not None and ndim not in (2, 3):
        raise ArgumentError(f"ndim must be 2 (YX images) or 3 (ZYX volumes), got {ndim}")
    dims = [p.ndim - 2 for p in module.parameters() if p.ndim in (4, 5)]
    if ndim is None:  # mixed 2D and 3D weights: 2, the old default
        return dims[0] if dims and 2 not in dims else 2
    if dims and ndim not in dims:
        raise ArgumentError(
            f"ndim={ndim} was given but the model's convolutions are {dims[0]}D "
            f"(Conv{dims[0]}d); pass ndim={dims[0]}"
        )
    return int(ndim)


def _resolve(
    model: Any, ndim: Any, in_channels: Any, accepted: str = MODEL_KINDS
) -> tuple[Any, Any, int, int]:
    """The torch module of ``model``, its LoadedModel (or None), ``ndim`` and ``in_channels``.

    A name or path goes through :func:`~napari_seamless.models.load_model`; a LoadedModel's
    ``ndim`` and ``in_channels`` are used where the caller gave None.

    Raises
    ------
    ArgumentTypeError
        If ``model`` is none of ``accepted``.
    ModelLoadError
        If a name or path cannot be loaded.
    ArgumentError
        For a bad ``ndim`` or ``in_channels`` (see :func:`_model_ndim`).
    """
    import torch

    from ..models import LoadedModel, load_model

    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    loaded = model if isinstance(model, LoadedModel) else None
    module = loaded.module if loaded is not None else model
    if not isinstance(module, torch.nn.Module):
        hint = ""
        if isinstance(model, np.ndarray):
            hint = "; the model comes first: predict(model, image)"
        elif isinstance(model, dict):
            hint = (
                "; a state dict needs its architecture: call module.load_state_dict(d) on the "
                "built module, or load_model(path) for a saved file"
            )
        raise ArgumentTypeError(f"model must be {accepted}, got {_kind(model)}{hint}")
    if ndim is None and loaded is not None:
        ndim = loaded.ndim
    ndim = _model_ndim(module, ndim)
    if in_channels is None:
        in_channels = loaded.in_channels if loaded is not None else infer_in_channels(module, ndim)
    elif not _is_int(in_channels) or in_channels < 1:
        raise ArgumentError(
            f"in_channels must be a positive int (the model's input channels), got "
            f"{_kind(in_channels)} {in_channels!r}"
        )
    return module, loaded, ndim, int(in_channels)


def _device(device: Any) -> Any:
    """``device`` as a torch.device (CUDA when present if None); refuses what cannot run."""
    import torch

    if device is None:
        return auto_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ArgumentError(
            f"device {device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:0', or leave "
            "it unset (CUDA when present, else CPU)"
        ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(
            f"device {device!r} asks for CUDA but torch.cuda.is_available() is False here; use "
            "device='cpu' or leave it unset"
        )
    return dev


def _check_image(image: Any) -> None:
    """Refuse what is not an image array (type, size, dtype), before any analysis.

    Raises
    ------
    ArgumentTypeError
        For None, a path, a list, a non-array, or a bool, complex or object dtype.
    ArgumentError
        For a 0-d array or one with an axis of size 0.
    """
    if image is None:
        raise ArgumentTypeError(
            "image is None; pass an array (numpy, zarr, dask) of shape (*spatial) or with a "
            "channel axis"
        )
    if isinstance(image, (str, bytes, os.PathLike)):
        raise ArgumentTypeError(
            f"image is a path ({os.fsdecode(image)!r}), not an array; pass an array: to read a "
            "file use napari_seamless.io.read_image"
        )
    if isinstance(image, (list, tuple)):
        raise ArgumentTypeError(
            f"image is a {type(image).__name__}, not an array; pass an array, e.g. "
            "numpy.asarray(image)"
        )
    if not all(hasattr(image, a) for a in ("shape", "dtype", "__getitem__")):
        raise ArgumentTypeError(
            f"image is {_kind(image)}, not an array; pass a numpy, zarr or dask array (or a memmap)"
        )
    shape = tuple(image.shape)
    if not shape:
        raise ArgumentError(
            "image is a 0-d array (one value), not an image; pass an array of shape "
            "(*spatial) or with a channel axis"
        )
    if 0 in shape:
        raise ArgumentError(
            f"image of shape {shape} is empty (an axis of size 0); pass an image with pixels"
        )
    dtype = _np_dtype(image.dtype)
    kind = dtype.kind if dtype is not None else "f"  # unknown to numpy: let it through
    if kind not in "uif":
        hint = {
            "b": "; convert a mask first, e.g. image.astype(numpy.uint8)",
            "c": "; pass real intensities, e.g. numpy.abs(image)",
        }.get(kind, "; convert it, e.g. image.astype(numpy.float32)")
        raise ArgumentTypeError(
            f"image has dtype {image.dtype}, not integer or float intensities{hint}"
        )


def _check_run_args(
    ndim: int, tile: Any, output: Any, normalization: Any, border: Any, batch_size: Any
) -> None:
    """Refuse bad :meth:`Predictor.run` arguments before anything runs (one sentence each)."""
    if output not in ("probabilities", "labels"):
        raise ArgumentError(f"output must be 'probabilities' or 'labels', got {output!r}")
    if tile is not None:
        _per_axis_arg(tile, "tile", ndim, 1, ", or None for the whole image")
    if isinstance(normalization, str):
        if normalization not in ("default", "percentile"):
            raise ArgumentError(
                f"unknown normalization {normalization!r}; use {NORMALIZATIONS} or a callable"
            )
    elif not (normalization is None or callable(normalization) or hasattr(normalization, "fit")):
        raise ArgumentTypeError(
            f"normalization must be {NORMALIZATIONS} or a callable mapping a window to the "
            f"model input, got {_kind(normalization)}"
        )
    if border not in ("clip", "shift"):
        raise ArgumentError(f"border must be 'clip' or 'shift', got {border!r}")
    if not _is_int(batch_size):
        raise ArgumentTypeError(
            f"batch_size must be an int (windows run together), got {_kind(batch_size)} "
            f"{batch_size!r}"
        )
    if batch_size < 1:
        raise ArgumentError(
            f"batch_size must be at least 1 (windows run together), got {batch_size}"
        )


def _check_out(
    out: Any,
    output: Output,
    spatial: Sequence[int],
    classes: int | None = None,
    top: int | None = None,
) -> None:
    """Refuse an ``out`` that cannot take the result, before any inference.

    ``classes`` (probabilities) and ``top`` (the largest label) are checked once known.

    Raises
    ------
    ArgumentTypeError
        If ``out`` is not an array.
    ArgumentError
        If it is read-only, of the wrong shape, or of a dtype that cannot hold the result.
    """
    if out is None:
        return
    if not all(hasattr(out, a) for a in ("shape", "dtype", "__setitem__")):
        raise ArgumentTypeError(
            f"out is {_kind(out)}, not an array; pass a numpy or zarr array to write into, or "
            "None to allocate one"
        )
    if getattr(getattr(out, "flags", None), "writeable", True) is False or (
        getattr(out, "read_only", False) is True
    ):
        raise ArgumentError(
            "out is read-only; pass a writeable array (e.g. out.copy(), or a zarr array opened "
            "with mode 'a'), or None to allocate one"
        )
    dtype = _np_dtype(out.dtype)
    kind = dtype.kind if dtype is not None else "f"  # unknown to numpy: let it through
    if output == "probabilities" and kind != "f":
        raise ArgumentError(
            f"out has dtype {out.dtype} but probabilities are fractions between 0 and 1; pass "
            "a float array (float32), or None to allocate one"
        )
    if output == "labels" and kind not in ("u", "i", "f"):
        raise ArgumentError(
            f"out has dtype {out.dtype} but labels are class numbers; pass an integer array "
            "(uint8 for up to 255 classes), or None to allocate one"
        )
    given, spatial = tuple(out.shape), tuple(int(s) for s in spatial)
    if output == "labels":
        ok, expected = given == spatial, f"{spatial}, the image's spatial shape"
    else:
        lead = "classes" if classes is None else str(classes)
        ok = len(given) == len(spatial) + 1 and given[1:] == spatial
        ok = ok and (classes is None or given[0] == classes)
        expected = f"({', '.join([lead, *map(str, spatial)])}), (classes, *spatial)"
    if not ok:
        caller = "segment" if output == "labels" else "predict"
        raise ArgumentError(
            f"out has shape {given} but {caller} writes {expected}; pass an array of that "
            "shape, or None to allocate one"
        )
    if top is not None and kind in ("u", "i") and np.iinfo(dtype).max < top:
        raise ArgumentError(
            f"out has dtype {out.dtype}, which cannot hold label {top} of this model; pass a "
            f"wider integer array (e.g. {np.dtype(labels_dtype(top + 1)).name})"
        )


@contextlib.contextmanager
def _exact_math(exact: bool) -> Iterator[None]:
    """Turn TF32 off for the duration (exact mode); restore the previous setting."""
    import torch

    if not exact:
        yield
        return
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _copy_model(model: Any) -> Any:
    """A copy of ``model`` (TorchScript modules that refuse deepcopy are saved and reloaded)."""
    try:
        return copy.deepcopy(model)
    except Exception:  # noqa: BLE001 - some ScriptModules cannot be deep-copied
        import io

        import torch

        buf = io.BytesIO()
        torch.jit.save(model, buf)
        buf.seek(0)
        return torch.jit.load(buf)


class Predictor:
    """Exact tiled inference with one model.

    Parameters
    ----------
    model : torch.nn.Module, torch.jit.ScriptModule, LoadedModel or str
        Fully convolutional model ``(N, in_channels, *spatial) -> (N, classes, *spatial)``
        returning logits. It runs in ``eval()`` mode on ``device`` in ``dtype``; when that
        needs a change (train mode, another device or dtype), a copy is changed and the
        caller's model is left as it is. A
        :class:`~napari_seamless.models.LoadedModel` gives its ``module``, and its
        ``ndim``, ``in_channels``, ``activation``, ``threshold`` and ``normalization`` are
        used where these are not given here; a name or path (``"nuclei"``, a file) is
        loaded with :func:`~napari_seamless.models.load_model` first.
    ndim : int, optional
        Spatial axes (2 or 3); default: those of the model's convolutions (a LoadedModel's
        own), else 2.
    in_channels : int, optional
        Input channels; read from the first convolution weight when omitted.
    halo : int or tuple of int, optional
        Halo in pixels. Computed exactly from the model when omitted
        (:func:`~napari_seamless.receptive_field.receptive_field`). A smaller halo is
        allowed (for halo studies) but is no longer exact.
    factor : int or tuple of int, optional
        F in pixels; computed from the model when omitted.
    device : str or torch.device, optional
        Where the model runs; CUDA when present, else CPU.
    dtype : {"float32", "float64"}
        Precision of the forward pass. float64 gives bit-identical tiled and whole results.
    exact : bool
        Turn TF32 off during inference (cuDNN uses TF32 by default on Ampere and newer).
    fast : bool
        Trade exactness for speed (**not bit-exact**): the forward pass runs under
        ``torch.autocast`` in bfloat16, 2D models in channels-last memory format, and TF32
        is allowed (``exact`` is ignored). Scores then differ from whole-image inference
        by bfloat16 rounding (~1e-2) and labels may differ at a few pixels near class
        boundaries; ZoR, halo and grid are unchanged. Meant for GPUs with bfloat16 units;
        on a CPU without them (no AVX512-BF16 / AMX) it is usually slower. float32 only.
    time_budget : float or None
        Seconds the halo analysis may take (:func:`~napari_seamless.analysis.receptive_field`);
        None: no limit.
    activation : {"softmax", "sigmoid", "identity"}, optional
        How the model's output becomes probabilities and labels: ``"softmax"`` over
        channels, labels = argmax; ``"sigmoid"`` per channel, labels = ``p > threshold``
        for one channel, else 0 where no channel exceeds ``threshold`` and ``1 + argmax``
        elsewhere; ``"identity"`` (the model outputs probabilities), labels = argmax, or
        ``p > threshold`` for one channel. Per pixel: tiling stays exact. Default: a
        LoadedModel's own, else ``"softmax"``.
    threshold : float, optional
        Probability threshold of the one-channel and sigmoid conventions, strictly between
        0 and 1; default: a LoadedModel's own, else 0.5.

    Attributes
    ----------
    normalization : "percentile" or Preprocessing
        What :meth:`run` applies by default (``normalization="default"``): a LoadedModel's
        declared preprocessing, else ``"percentile"``.

    Raises
    ------
    ArgumentTypeError
        If ``model`` is none of the above (a list, a dict, an array, None), or an argument
        is of the wrong type (e.g. ``halo=1.5``).
    ArgumentError
        For ``ndim`` other than 2 or 3 or unlike the model's convolutions, input channels
        that cannot be inferred, an unknown ``dtype`` or ``activation``, a ``threshold``
        outside (0, 1), a negative ``halo``, or an unknown or unavailable ``device``.
    ModelLoadError
        If a name or path cannot be loaded.

    Notes
    -----
    Every error here is a :class:`~napari_seamless.errors.SeamlessError`; the argument
    errors are also a :class:`ValueError` or :class:`TypeError`.
    """

    def __init__(
        self,
        model: Any,
        ndim: int | None = None,
        in_channels: int | None = None,
        halo: int | Sequence[int] | None = None,
        factor: int | Sequence[int] | None = None,
        device: Any = None,
        dtype: str = "float32",
        exact: bool = True,
        time_budget: float | None = 30.0,
        activation: Activation | None = None,
        threshold: float | None = None,
        fast: bool = False,
    ) -> None:
        import torch

        from ..analysis import receptive_field

        if isinstance(model, Predictor):
            raise ArgumentTypeError(
                "model is already a Predictor; use it as it is (predict and segment take it), "
                "or build a new one from its model (predictor.model)"
            )
        model, loaded, ndim, self.in_channels = _resolve(model, ndim, in_channels)
        #: how another process loads the same model (None for a live module)
        self.source = loaded.source if loaded is not None else None
        self._device_arg = None if device is None else str(device)
        if loaded is not None:
            activation = loaded.activation if activation is None else activation
            threshold = loaded.threshold if threshold is None else threshold
        activation = "softmax" if activation is None else activation
        threshold = 0.5 if threshold is None else threshold
        if dtype not in ("float32", "float64"):
            raise ArgumentError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if fast and dtype != "float32":
            raise ArgumentError(
                "fast=True runs in bfloat16 and cannot be combined with dtype='float64' "
                "(pick one: float64 for bit-identical results, fast for speed)"
            )
        if activation not in ACTIVATIONS:
            raise ArgumentError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if not _is_real(threshold):
            raise ArgumentTypeError(
                f"threshold must be a number between 0 and 1, got {_kind(threshold)} {threshold!r}"
            )
        if not 0 < threshold < 1:
            raise ArgumentError(
                f"threshold must lie strictly between 0 and 1 (a probability), got {threshold}"
            )
        if halo is not None:
            halo = _per_axis_arg(halo, "halo", ndim, 0)
        if factor is not None:
            factor = _per_axis_arg(factor, "factor", ndim, 1)
        self.activation = activation
        self.threshold = float(threshold)
        self.normalization = loaded.normalization if loaded is not None else "percentile"
        self.ndim = ndim
        self.device = _device(device)
        self.dtype = dtype
        self.torch_dtype = torch.float64 if dtype == "float64" else torch.float32
        self.np_dtype = np.float64 if dtype == "float64" else np.float32
        self.fast = bool(fast)
        self.exact = exact and not self.fast
        # the caller's model is left as it was found: a copy when eval mode, the device or
        # the dtype would have to change it
        tensors = list(model.parameters()) + list(model.buffers())
        if getattr(model, "training", False) or any(
            t.device != self.device or (t.is_floating_point() and t.dtype != self.torch_dtype)
            for t in tensors
        ):
            model = _copy_model(model)
        model.eval()
        self.model = model.to(device=self.device, dtype=self.torch_dtype)
        if self.fast and ndim == 2:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.rf = None
        if halo is None or factor is None:
            self.rf = receptive_field(
                self.model, ndim=ndim, in_channels=self.in_channels, time_budget=time_budget
            )
        self.factor = factor if factor is not None else self.rf.factor
        self.halo = halo if halo is not None else self.rf.halo
        if self.rf is not None and any(h < r for h, r in zip(self.halo, self.rf.halo, strict=True)):
            warnings.warn(
                f"halo {self.halo} is below the exact halo {self.rf.halo} of this model: tiled "
                "results will differ from whole-image inference",
                InexactHaloWarning,
                stacklevel=2,
            )

    def grid(
        self,
        shape: Sequence[int],
        tile: int | Sequence[int] | None,
        border: Border = "clip",
        halo: int | Sequence[int] | None = None,
    ) -> TileGrid:
        """The tile grid for an image of spatial ``shape`` (pixels).

        ``tile=None`` gives the whole-image reference: one window, the F-padded image.
        ``halo`` (pixels, a multiple of F) replaces :attr:`halo` for this grid.

        Raises
        ------
        TileSizeError
            If ``tile`` is not a valid window size (see :class:`TileGrid`).
        ArgumentTypeError, ArgumentError
            If ``tile`` is not an int, a tuple of ``ndim`` positive ints or None, or
            ``border`` is unknown.
        """
        if tile is not None:
            tile = _per_axis_arg(tile, "tile", self.ndim, 1, ", or None for the whole image")
        if tile is None:
            padded = pad_to_multiple(shape, self.factor)
            return TileGrid(shape, padded, 0, self.factor, border="clip")
        halo = self.halo if halo is None else _per_axis_arg(halo, "halo", self.ndim, 0)
        return TileGrid(shape, tile, halo, self.factor, border=border)

    def _check_mode(
        self, tile: Any, halo: Any, mode: Any, overlap: Any, weights: Any, region: Any
    ) -> tuple[int, ...] | None:
        """Refuse a bad mode, halo, overlap, weights or region; return the halo to use."""
        if mode not in MODES:
            raise ArgumentError(f"mode must be {MODE_HELP}; got {mode!r}")
        if weights not in WEIGHTS:
            raise ArgumentError(
                f"weights must be 'gaussian' or 'constant' (overlap-average blending), got "
                f"{weights!r}"
            )
        if halo is not None:
            if mode != "exact":
                raise ArgumentError(
                    f"halo is set by the exact mode only; mode {mode!r} "
                    + ("uses halo 0" if mode == "naive" else "blends overlapping windows")
                )
            halo = _per_axis_arg(halo, "halo", self.ndim, 0)
            for h, f in zip(halo, self.factor, strict=True):
                if h % f:
                    lo, hi = (h // f) * f, -(-h // f) * f
                    raise ArgumentError(
                        f"halo {h} px is not a multiple of F={f} px (window starts must stay on "
                        f"the F grid, paper Eq. 2); use {lo} or {hi}"
                    )
        if mode == "naive":
            halo = (0,) * self.ndim
        if overlap is not None and mode != "overlap-average":
            raise ArgumentError(f"overlap is a setting of mode 'overlap-average', not {mode!r}")
        if region is not None and mode != "exact":
            raise ArgumentError(
                f"a region is computed as one exact window (the region reference); mode "
                f"{mode!r} has no region"
            )
        if region is not None and tile is not None:
            raise ArgumentError(
                "region runs one window (the region plus its halo): leave tile=None"
            )
        if mode == "overlap-average" and tile is None:
            raise ArgumentError(
                "overlap-average needs a window size: pass tile (pixels, a multiple of F)"
            )
        return halo

    def _release_memory(self) -> None:
        """Give cached device memory back after an out-of-memory error (CUDA)."""
        if getattr(self.device, "type", "cpu") == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _forward(self, windows: list[np.ndarray]) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.stack(windows))
        cuda = getattr(self.device, "type", "cpu") == "cuda"
        if cuda:  # page-locked staging: the copy to the device does not block the host
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=cuda)
        if self.fast and self.ndim == 2:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), _exact_math(self.exact), self._autocast():
            out = self._tensor(self.model(x)).to(self.torch_dtype)
            self._check_channels(int(out.shape[1]))
            if self.activation == "softmax":
                probs = torch.softmax(out, dim=1)
            elif self.activation == "sigmoid":
                probs = torch.sigmoid(out)
            else:
                probs = out
        return probs.cpu().contiguous().numpy()  # out is in torch_dtype already

    def _autocast(self) -> Any:
        """bfloat16 autocast in fast mode, else nothing."""
        if not self.fast:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    @staticmethod
    def _tensor(out: Any) -> Any:
        import torch

        if not isinstance(out, torch.Tensor):
            raise ArgumentTypeError(
                f"model returned {_kind(out)}, expected a tensor; wrap it with "
                "load_model(..., output=INDEX_OR_KEY)"
            )
        return out

    def _check_channels(self, channels: int) -> None:
        if channels == 1 and self.activation == "softmax":
            raise OutputConventionError(
                "the model has one output channel and softmax over one channel is always 1 "
                "(every label 0); use activation='sigmoid' for logits or 'identity' for "
                "probabilities"
            )

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """Labels of a probability block ``(channels, *spatial)`` by the activation's rule.

        Returns
        -------
        numpy.ndarray, shape (*spatial)
            Integer labels of dtype :meth:`label_dtype`; see ``activation`` in the class
            docstring.
        """
        channels = probs.shape[0]
        dtype = self.label_dtype(channels)
        if channels == 1:
            return (probs[0] > self.threshold).astype(dtype)
        if self.activation != "sigmoid":
            return probs.argmax(0).astype(dtype)
        labels = probs.argmax(0).astype(dtype) + 1
        labels[probs.max(0) <= self.threshold] = 0
        return labels

    @property
    def convention(self) -> str:
        """The output convention in words, e.g. ``"softmax"`` or ``"sigmoid > 0.5"``."""
        if self.activation == "softmax":
            return "softmax"
        return f"{self.activation} > {self.threshold:g}"

    def label_dtype(self, channels: int) -> type:
        """Integer dtype of the labels for a model with ``channels`` output channels."""
        if self.activation == "sigmoid" and channels > 1:
            return labels_dtype(channels + 1)
        return labels_dtype(channels)

    def run(
        self,
        image: Any,
        store: Store,
        tile: int | Sequence[int] | None = 512,
        *,
        output: Output = "probabilities",
        axes: str | None = None,
        normalization: PercentileNormalization
        | Preprocessing
        | Callable[[np.ndarray], np.ndarray]
        | None
        | str = "default",
        border: Border = "clip",
        batch_size: int = 1,
        order: Sequence[int] | None = None,
        halo: int | Sequence[int] | None = None,
        mode: Mode = "exact",
        overlap: int | float | Sequence[int] | None = None,
        weights: str = "gaussian",
        region: Any = None,
        executor: Executor | None = None,
    ) -> TileRun:
        """Compute every ZoR and write it to ``store``, yielding a :class:`TileEvent` each.

        The arguments are checked when ``run`` is called; the image is analysed (channels,
        normalisation statistics) and the tiles computed as the events are consumed.

        Parameters
        ----------
        image : array-like or InputImage
            ``(*spatial)`` or with a channel axis (see :func:`to_channel_first`); numpy,
            zarr, dask or memmap, or what :func:`~napari_seamless.io.read_image` returned
            (needed by a cluster's executor: its workers open the file again). Only
            windows are read.
        store : Store
            Anything with ``write(zor, block)``, e.g. ``ArrayStore(array)``. Receives
            ``(channels, *zor_shape)`` float32 probabilities (the activation's output) for
            ``output="probabilities"`` or ``(*zor_shape)`` integer labels for
            ``output="labels"`` (see ``activation`` of :class:`Predictor`).
        tile : int, tuple of int or None
            Window size in pixels (a multiple of F, larger than ``2 * halo``); ``None`` is
            the whole-image reference.
        output : {"probabilities", "labels"}
            What is written.
        axes : str, optional
            Axes of ``image`` such as ``"YX"`` or ``"CYX"``.
        normalization : str, PercentileNormalization, Preprocessing, callable or None
            ``"default"``: the predictor's :attr:`normalization` (a LoadedModel's declared
            preprocessing, else ``"percentile"``). ``"percentile"`` fits 1-99.8
            percentiles on the whole image once; a
            :class:`~napari_seamless.preprocessing.Preprocessing` (a model's declared
            preprocessing, e.g. ``LoadedModel.normalization``) is fitted once on the whole
            image, then the same fixed map is applied to every window; a callable maps a
            channel-first float window to the model input; None passes raw values as
            float.
        border : {"clip", "shift"}
            Border windows clipped or shifted inward (see :class:`TileGrid`).
        batch_size : int
            Windows of equal shape run together.
        order : sequence of int, optional
            Tile indices in the order to compute them (e.g. the visible ones first);
            default row-major. Not with ``mode="overlap-average"`` (row-major only).
        halo : int or tuple of int, optional
            Halo in pixels for this run (a multiple of F), in place of :attr:`halo`; below
            the computed halo the result is no longer exact (for halo studies).
        mode : {"exact", "naive", "overlap-average"}
            ``"exact"``: ZoR + halo (Majurski & Bajcsy 2021), equal to whole-image
            inference at the computed halo. ``"naive"``: halo 0, hard tiles of size
            ``tile`` (the seams of the paper's Fig. 1). ``"overlap-average"``: windows of
            size ``tile`` with ``overlap``, outputs blended by ``weights`` (MONAI's
            ``sliding_window_inference``; see :mod:`napari_seamless.overlap`). The two
            last are for comparison and never exact. With ``"overlap-average"`` the blend
            accumulates ``(classes, *spatial)`` sums in memory, and each window's final
            box (the part no later window covers) is written once.
        overlap : int, float or tuple, optional
            ``"overlap-average"`` only: pixels (int) or a fraction of the window (float
            in [0, 1), MONAI's convention). Default ``2 * halo``: the same windows and
            stride, hence the same cost, as the exact mode.
        weights : {"gaussian", "constant"}
            ``"overlap-average"`` blending weights (see
            :func:`~napari_seamless.overlap.importance_map`).
        region : str or sequence of slice, optional
            Exact mode with ``tile=None``: compute only this region (``"Y0:Y1,X0:X1"`` or
            slices, image pixels) as one window with the halo on every side (the
            *region reference*, equal to whole-image inference there at the computed
            halo; :func:`~napari_seamless.grid.region_tile`). The store receives it in
            image coordinates.
        executor : Executor, optional
            How the tiles are carried out: :class:`~napari_seamless.engine.SerialExecutor`
            (default: read, run, write in turn) or
            :class:`~napari_seamless.engine.ThreadedExecutor` (windows read and
            normalised by background threads ahead of the model, ZoRs written behind it;
            the same result, the model busier) or
            :class:`~napari_seamless.engine.cluster.DaskExecutor` (batches of tiles as
            dask.distributed tasks; needs a model from ``load_model``, an ``InputImage``
            and an ``OmeZarrStore``, and the exact mode). ``"overlap-average"`` always runs
            serially.

        Returns
        -------
        TileRun
            An iterator of :class:`TileEvent`, one after each tile's ZoR is written; its
            ``prioritize(indices)`` moves pending tiles to the front while the run goes,
            and ``stats`` tells where the time went.

        Raises
        ------
        ArgumentTypeError
            When called: if ``image`` is not an array (None, a path, a list) or has a bool,
            complex or object dtype, ``store`` has no ``write``, or ``tile``,
            ``normalization`` or ``batch_size`` is of the wrong type.
        ArgumentError
            When called: for an empty or 0-d image, an unknown ``output``,
            ``normalization``, ``border``, ``mode`` or ``weights``, a ``tile`` with the
            wrong number of values, ``batch_size < 1``, a halo that is not a multiple of
            F, settings that do not belong to the mode, or (a cluster's executor) a model,
            image, store or mode its workers cannot reproduce.
        RegionError
            On the first event: if ``region`` is not inside the image.
        ChannelError
            On the first event: if the image does not have the channels the model expects.
        TileSizeError
            On the first event: if ``tile`` is not a valid window size.
        """
        opened = image if isinstance(image, InputImage) else None
        if opened is not None:
            image = opened.data
        _check_image(image)
        if not callable(getattr(store, "write", None)):
            hint = "; wrap an array in ArrayStore(array)" if hasattr(store, "__setitem__") else ""
            raise ArgumentTypeError(
                f"store must have a write(zor, block) method, got {_kind(store)}{hint}"
            )
        _check_run_args(self.ndim, tile, output, normalization, border, batch_size)
        self._check_mode(tile, halo, mode, overlap, weights, region)  # before any work
        if mode == "overlap-average" and order is not None:
            raise ArgumentError("overlap-average runs its windows in row-major order: drop order")
        if isinstance(normalization, str) and normalization == "default":
            normalization = self.normalization
        if executor is not None and not callable(getattr(executor, "execute", None)):
            raise ArgumentTypeError(
                f"executor must be an Executor (SerialExecutor(), ThreadedExecutor()), got "
                f"{_kind(executor)}"
            )
        if getattr(executor, "remote", False):
            self._check_remote(opened, store, tile, mode, region)
        plan = (mode, halo, overlap, weights, region)
        args = (image, store, tile, output, axes, normalization, border, batch_size, order)
        return TileRun(lambda run: self._tiles(run, *args, plan, executor, opened))

    def _check_remote(self, opened: Any, store: Any, tile: Any, mode: str, region: Any) -> None:
        """Refuse a run that other processes cannot carry out, in one sentence each."""
        if self.source is None:
            raise ArgumentError(
                "a cluster's workers load the model again from its name or file: build the "
                "Predictor from load_model(...) or a model name or path, not a live torch module"
            )
        if opened is None:
            raise ArgumentError(
                "a cluster's workers read their windows from the file themselves: pass the "
                "image as napari_seamless.io.read_image(path) (a path they can see), not an array"
            )
        if not callable(getattr(store, "level0_writer", None)):
            raise ArgumentError(
                "a cluster's workers write the ZoRs straight into the output: pass an "
                "OmeZarrStore (OmeZarrStore.create or open) on storage they can see"
            )
        if mode != "exact" or tile is None or region is not None:
            raise ArgumentError(
                "a cluster runs the exact tile grid: use mode='exact' with a tile size (no "
                "region, no whole-image reference)"
            )

    def plan(
        self,
        shape: Sequence[int],
        tile: Any,
        *,
        border: Border = "clip",
        halo: Any = None,
        mode: Mode = "exact",
        overlap: Any = None,
        weights: str = "gaussian",
        region: Any = None,
    ) -> TileGrid | OverlapGrid | list[Tile]:
        """The windows a run with these settings computes, for an image of spatial ``shape``.

        Returns
        -------
        TileGrid, OverlapGrid or list of Tile
            A :class:`~napari_seamless.grid.TileGrid` (exact, naive), an
            :class:`~napari_seamless.overlap.OverlapGrid` (overlap-average), or the one
            tile of a region (:func:`~napari_seamless.grid.region_tile`).

        Raises
        ------
        ArgumentError, TileSizeError, RegionError
            As :meth:`run`.
        """
        halo = self._check_mode(tile, halo, mode, overlap, weights, region)
        if region is not None:
            return [region_tile(shape, region, self.halo if halo is None else halo, self.factor)]
        if mode == "overlap-average":
            if tile is not None:
                tile = _per_axis_arg(tile, "tile", self.ndim, 1)
            if overlap is None:
                overlap = tuple(2 * h for h in (self.halo if halo is None else halo))
                overlap = tuple(min(o, t - 1) for o, t in zip(overlap, tile, strict=True))
            return OverlapGrid(shape, tile, overlap, self.factor)
        return self.grid(shape, tile, border, halo)

    def _tiles(
        self,
        run: TileRun,
        image: Any,
        store: Store,
        tile: Any,
        output: Output,
        axes: str | None,
        normalization: Any,
        border: Border,
        batch_size: int,
        order: Sequence[int] | None,
        plan: tuple,
        executor: Any,
        opened: Any = None,
    ) -> Iterator[TileEvent]:
        """The body of :meth:`run`: plan, fit the normalisation, execute, yield events."""
        mode, halo, overlap, weights, region = plan
        arr, _ = to_channel_first(image, self.ndim, self.in_channels, axes)
        windows_plan = self.plan(
            arr.shape[1:],
            tile,
            border=border,
            halo=halo,
            mode=mode,
            overlap=overlap,
            weights=weights,
            region=region,
        )
        run.grid = windows_plan
        np_dtype = self.np_dtype
        fitted = self.fit_normalization(arr, normalization)
        norm = self._normalization(fitted, np_dtype)
        if order is not None and isinstance(windows_plan, TileGrid):
            tiles = [windows_plan[i] for i in order]
        else:
            tiles = list(windows_plan)
        blend = None
        if isinstance(windows_plan, OverlapGrid):
            blend = _Blend(weights, np_dtype, windows_plan.extent)
            executor = SerialExecutor()  # the blend sums depend on the row-major order

        def prepare(t: Tile) -> np.ndarray:
            w = read_window(arr, t.window)
            box = ", ".join(f"{z.start}:{z.stop}" for z in t.zor)
            check_finite(w, f"the window of the tile whose ZoR is ({box})")
            return norm(w).astype(np_dtype, copy=False)

        def finish(t: Tile, p: np.ndarray) -> None:
            block = p[(slice(None), *t.crop)] if blend is None else blend.add(t, p)
            if output == "labels":
                block = self.labels(block)
            elif self.dtype == "float32":
                block = block.astype(np.float32, copy=False)
            store.write(t.zor, block)

        schedule = Schedule(tiles)
        run._attach(schedule)
        steps = RunSteps(prepare, self._forward, finish, batch_size, run.stats)
        if getattr(executor, "remote", False):  # other processes compute the tiles
            from .cluster import RemoteTiles

            steps.remote = RemoteTiles(
                model=self.source,
                settings=self.settings(),
                image=opened,
                writer=store.level0_writer([t.zor for t in tiles]),
                tile=tile,
                run={
                    "output": output,
                    "axes": axes,
                    "normalization": fitted,
                    "border": border,
                    "batch_size": batch_size,
                    "halo": halo,
                },
            )
            steps.settle = lambda done: store.fill_coarse([t.zor for t in done])
        elif mode == "exact" and tile is not None:  # out of memory: smaller windows, exact
            # (not the references, tile=None: they are one window by definition)
            backoff = WindowBackoff(
                self._forward,
                arr.shape[1:],
                windows_plan.halo,
                self.factor,
                release=self._release_memory,
            )
            run._backoff = backoff
            steps.forward, steps.recover = backoff.forward, backoff.recover
        executor = executor if executor is not None else SerialExecutor()
        for done, t in enumerate(executor.execute(schedule, steps), start=1):
            yield TileEvent(t, done, len(tiles))

    def settings(self) -> dict[str, Any]:
        """The arguments with which another process builds this same predictor.

        With :attr:`source` (the model): halo and F as computed here (so no analysis is
        repeated and every process tiles alike), dtype, precision and output convention.

        Returns
        -------
        dict
            Keyword arguments of :class:`Predictor`; ``device`` only when one was given
            (else each process picks its own: its GPU when it has one).
        """
        out: dict[str, Any] = {
            "ndim": self.ndim,
            "in_channels": self.in_channels,
            "halo": tuple(self.halo),
            "factor": tuple(self.factor),
            "dtype": self.dtype,
            "exact": self.exact,
            "fast": self.fast,
            "activation": self.activation,
            "threshold": self.threshold,
        }
        if self._device_arg is not None:
            out["device"] = self._device_arg
        return out

    def create_output(
        self,
        path: str | os.PathLike,
        grid: TileGrid,
        output: Output = "labels",
        *,
        attrs: Mapping[str, Any] | None = None,
        name: str | None = None,
        source_image: str | None = None,
    ) -> Any:
        """A new OME-Zarr output for a run of this predictor over ``grid``.

        Level-0 chunks are the ZoR, so each tile writes whole chunks (and a cluster's
        workers never share one); the done-tile record has one entry per tile.

        Parameters
        ----------
        path : str or PathLike
            The OME-Zarr folder (anything there is replaced: pass a fresh path).
        grid : TileGrid
            The run's grid (:meth:`grid`).
        output : {"labels", "probabilities"}
            ``"labels"``: ``(*spatial)`` integers (:meth:`label_dtype`), axes ``yx`` /
            ``zyx``; ``"probabilities"``: ``(classes, *spatial)`` in the float dtype of
            this predictor, axes ``cyx`` / ``czyx``.
        attrs : mapping, optional
            Run settings to record (compared by a resume).
        name, source_image : str, optional
            See :meth:`~napari_seamless.stores.OmeZarrStore.create`.

        Returns
        -------
        OmeZarrStore

        Raises
        ------
        ArgumentError
            For an unknown ``output``.
        """
        from ..stores import OmeZarrStore

        if output not in ("labels", "probabilities"):
            raise ArgumentError(f"output must be 'labels' or 'probabilities', got {output!r}")
        classes = self.classes()
        spatial = tuple(grid.shape)
        letters = "zyx"[-len(spatial) :]
        if output == "labels":
            shape, dtype, kind, axes = spatial, self.label_dtype(classes), "labels", letters
        else:
            shape, dtype, kind, axes = (classes, *spatial), self.np_dtype, "image", "c" + letters
        return OmeZarrStore.create(
            path,
            shape,
            dtype,
            chunks=grid.zor_size,
            n_tiles=len(grid),
            kind=kind,
            axes=axes,
            attrs=attrs,
            name=name or Path(path).name.split(".")[0],
            source_image=source_image,
        )

    @staticmethod
    def fit_normalization(arr: Any, normalization: Any) -> Any:
        """The normalisation of a run, fitted once on the whole (channel-first) image.

        Parameters
        ----------
        arr : array-like
            ``(C, *spatial)``; only a sample is read for percentile statistics.
        normalization : "percentile", Preprocessing, PercentileNormalization, callable or None
            As :meth:`run` takes it (not ``"default"``).

        Returns
        -------
        PercentileNormalization, FittedPreprocessing, callable or None
            A fixed map, the same for every window (and picklable, for a cluster's
            workers, unless it is the caller's own callable).
        """
        if isinstance(normalization, str):  # "percentile": checked in run
            return PercentileNormalization.fit(arr)
        if isinstance(normalization, Preprocessing):
            return normalization.fit(arr)  # once, on the whole image
        return normalization

    @staticmethod
    def _normalization(fitted: Any, dtype: type) -> Callable[[np.ndarray], np.ndarray]:
        """The window map of a fitted normalisation (:meth:`fit_normalization`)."""
        if fitted is None:
            return lambda w: w.astype(dtype)
        if isinstance(fitted, (PercentileNormalization, FittedPreprocessing)):
            return lambda w: fitted(w, dtype=dtype)
        return fitted

    def classes(self) -> int:
        """Number of output classes (one forward pass on a small input, a multiple of F)."""
        import torch

        size = tuple(f * -(-16 // f) for f in self.factor)  # at least 16 px: pads fit
        x = torch.zeros((1, self.in_channels) + size, dtype=self.torch_dtype, device=self.device)
        with torch.inference_mode():
            channels = int(self._tensor(self.model(x)).shape[1])
        self._check_channels(channels)
        return channels


class EventStream:
    """An iterator of :class:`TileEvent` over the generator ``_events`` of a subclass.

    :meth:`close` (or dropping the iterator) stops the run between tiles; reader and
    writer threads, and a cluster's tasks not finished, are shut down.
    """

    _events: Iterator[TileEvent]

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> TileEvent:
        return next(self._events)

    def close(self) -> None:
        """Stop the run between tiles."""
        self._events.close()


class TileRun(EventStream):
    """A run of :meth:`Predictor.run`: an iterator of :class:`TileEvent`, one per tile.

    The image is analysed (channels, normalisation statistics) and the tiles computed as
    the events are consumed; :meth:`close` (or dropping the iterator) stops the run between
    tiles, and every event comes after its ZoR is in the store.

    Attributes
    ----------
    stats : PipelineStats
        Time inside the forward pass, reading, writing and waiting, and the wall time
        (filled as the run goes; ``stats.efficiency`` = forward / wall).
    grid : TileGrid, OverlapGrid or list of Tile, or None
        The windows of the run, known once the first event is asked for.
    """

    def __init__(self, tiles: Callable[[TileRun], Iterator[TileEvent]]) -> None:
        self.stats = PipelineStats()
        self.grid: Any = None
        self._backoff: WindowBackoff | None = None
        self._schedule: Schedule | None = None
        self._first: list[int] | None = None
        self._events = tiles(self)

    def prioritize(self, indices: Sequence[int]) -> int:
        """Start the pending tiles with these indices next (e.g. those in view after a pan).

        Thread-safe; before the run has started the order is kept for its start. Returns
        the number of pending tiles moved (0 before the start).
        """
        if self._schedule is None:
            self._first = [int(i) for i in indices]
            return 0
        return self._schedule.prioritize(indices)

    def pending(self) -> list[int]:
        """Indices of the tiles not started yet, in the order they will start."""
        return [] if self._schedule is None else self._schedule.pending()

    @property
    def backoffs(self) -> list[Backoff]:
        """Every back-off after an out-of-memory error so far (empty: none), in order.

        After one, the failed tile and every later one are computed in windows of at most
        :attr:`window` (each ZoR in parts with the full halo: still exact); events and the
        done-tile record stay in the grid's tiles (see :mod:`napari_seamless.engine.backoff`).
        """
        return [] if self._backoff is None else list(self._backoff.backoffs)

    @property
    def window(self) -> tuple[int, ...] | None:
        """The largest window per axis the run computes now (pixels).

        The grid's tile, or the smaller size it backed off to after running out of memory
        (the padded image for the whole-image reference); None before the first event,
        and for an overlap-average or region run.
        """
        if self._backoff is not None and self._backoff.window is not None:
            return self._backoff.window
        grid = self.grid
        return grid.tile if isinstance(grid, TileGrid) else None

    def _attach(self, schedule: Schedule) -> None:
        """Take the schedule the run starts with, first moving what was prioritized."""
        if self._first:
            schedule.prioritize(self._first)
        self._schedule = schedule


class _Blend:
    """Running weighted sums of the overlap-average mode (see :mod:`napari_seamless.overlap`).

    Holds ``(classes, *extent)`` weighted sums and ``(*extent)`` summed weights (allocated
    at the first window, when the classes are known); :meth:`add` blends one window in and
    returns its final box, whose value no later window (in row-major order) changes.
    """

    def __init__(self, weights: str, dtype: type, extent: Sequence[int]) -> None:
        self.weights, self.dtype, self.extent = weights, dtype, tuple(extent)
        self.maps: dict[tuple[int, ...], np.ndarray] = {}
        self.total: np.ndarray | None = None
        self.count: np.ndarray | None = None

    def add(self, tile: Tile, probs: np.ndarray) -> np.ndarray:
        shape = probs.shape[1:]
        if shape not in self.maps:
            self.maps[shape] = importance_map(shape, self.weights).astype(self.dtype)
        w = self.maps[shape]
        if self.total is None:
            self.total = np.zeros((probs.shape[0], *self.extent), dtype=self.dtype)
            self.count = np.zeros(self.extent, dtype=self.dtype)
        win = (slice(None), *tile.window)
        self.total[win] += probs * w
        self.count[tile.window] += w
        box = (slice(None), *tile.zor)
        return self.total[box] / self.count[tile.zor]


PREDICTOR_KEYS = (
    "in_channels",
    "factor",
    "device",
    "dtype",
    "exact",
    "activation",
    "threshold",
    "time_budget",
)
RUN_KEYS = (
    "axes",
    "normalization",
    "border",
    "batch_size",
    "order",
    "executor",
    "mode",
    "overlap",
    "weights",
)


def predict(
    model: Any,
    image: Any,
    tile: int | Sequence[int] | None = 512,
    *,
    ndim: int | None = None,
    halo: int | Sequence[int] | None = None,
    out: Any = None,
    progress: bool = False,
    client: Any = None,
    **kwargs: Any,
) -> Any:
    """Class scores of ``image`` by exact tiled inference.

    Parameters
    ----------
    model : torch.nn.Module, torch.jit.ScriptModule, Predictor, LoadedModel or str
        Fully convolutional model returning logits; a
        :class:`~napari_seamless.models.LoadedModel` or a name for
        :func:`~napari_seamless.models.load_model` (e.g. ``"nuclei"``) brings its own
        ``ndim``, ``in_channels``, ``activation``, ``threshold`` and normalisation, used
        where they are not given here (see :class:`Predictor`).
    image : array-like
        ``(*spatial)`` or with a channel axis; see :func:`to_channel_first`. A numpy,
        zarr or dask array (or a memmap) of integers or floats; to read a file use
        ``napari_seamless.io.read_image``.
    tile : int, tuple of int or None
        Window size in pixels; ``None`` runs the whole image in one pass (the reference:
        reflection-padded to a multiple of F, one forward pass, cropped back).
    ndim : int, optional
        Spatial axes of the model (2 or 3); default: those of its convolutions.
    halo : int or tuple of int, optional
        Override the halo computed from the model (pixels, a multiple of F); with a
        Predictor, the halo of this run only.
    out : array-like, optional
        Where to write ``(classes, *spatial)`` scores (a writeable float numpy or zarr
        array); allocated if None.
    progress : bool
        Show a tqdm progress bar.
    client : distributed.Client, optional
        Run the tiles on this dask.distributed cluster
        (:func:`~napari_seamless.engine.cluster.run_on_cluster`): ``image`` is then a path
        the workers can read (or :func:`~napari_seamless.io.read_image`'s result), ``out``
        the path of a new OME-Zarr output they can write, ``model`` a name, file or
        LoadedModel they can load again; ``batch_tiles`` (tiles per task, default 8) may
        be given. The result is identical to the local run.
    **kwargs
        ``in_channels``, ``factor``, ``device``, ``dtype``, ``exact``, ``activation``,
        ``threshold``, ``time_budget`` for :class:`Predictor` (not with a Predictor:
        it is built already); ``axes``, ``normalization``, ``border``, ``batch_size``,
        ``order``, ``mode`` (``"exact"``, ``"naive"``, ``"overlap-average"``),
        ``overlap``, ``weights`` for :meth:`Predictor.run`.

    Returns
    -------
    numpy.ndarray or the given ``out``, shape (channels, *spatial)
        Probabilities by the activation (softmax by default), float32 (float64 with
        ``dtype="float64"``). With ``client``: level 0 of the OME-Zarr output, a zarr
        array (read it with ``numpy.asarray`` or open the output in napari).

    Raises
    ------
    ArgumentTypeError
        For a ``model``, ``image``, ``out`` or setting of the wrong kind (e.g. a list as
        the model or the image, a path as the image, a float tile) or an unknown keyword.
    ArgumentError
        For a value that cannot work: ``out`` of the wrong shape or dtype or read-only,
        ``ndim`` unlike the model's convolutions, an empty image, ``batch_size < 1``, a
        ``threshold`` outside (0, 1), an unknown ``dtype``, ``activation`` or
        ``normalization``, or settings given together with a Predictor.
    ChannelError, TileSizeError, ModelLoadError, OutputConventionError
        On images or tiles that do not fit the model, a name that cannot be loaded, or
        softmax over one channel.

    Notes
    -----
    Every error above is a :class:`~napari_seamless.errors.SeamlessError` and is raised
    before any tile runs; all but the output convention (found by one forward pass on a
    small input) are raised before the halo analysis.
    """
    if client is not None:
        return _run_on_client(
            client, model, image, tile, ndim, halo, out, progress, "probabilities", kwargs
        )
    return _run_into(model, image, tile, ndim, halo, out, progress, "probabilities", kwargs)


def segment(
    model: Any,
    image: Any,
    tile: int | Sequence[int] | None = 512,
    *,
    ndim: int | None = None,
    halo: int | Sequence[int] | None = None,
    out: Any = None,
    progress: bool = False,
    client: Any = None,
    **kwargs: Any,
) -> Any:
    """Semantic labels (argmax of the class scores) of ``image`` by exact tiled inference.

    Same parameters as :func:`predict`, except ``out``: a writeable integer array of shape
    ``(*spatial)``. Returns an integer array of shape ``(*spatial)`` (uint8 for up to 255
    classes): the class index per pixel for softmax (0 = background for the built-in
    models), ``p > threshold`` for one-channel sigmoid/identity models (see ``activation``
    of :class:`Predictor`).

    Raises
    ------
    ArgumentTypeError, ArgumentError, ChannelError, TileSizeError, ModelLoadError
        As :func:`predict`; ``out`` must have the image's spatial shape and a dtype that
        holds every label.
    """
    if client is not None:
        return _run_on_client(
            client, model, image, tile, ndim, halo, out, progress, "labels", kwargs
        )
    return _run_into(model, image, tile, ndim, halo, out, progress, "labels", kwargs)


def _run_into(
    model: Any,
    image: Any,
    tile: Any,
    ndim: Any,
    halo: Any,
    out: Any,
    progress: bool,
    output: Output,
    kwargs: dict,
) -> Any:
    """Shared body of :func:`predict` and :func:`segment`: check, allocate ``out``, run.

    Every argument is checked before the halo analysis (which may take seconds) and
    before any tile runs.
    """
    caller = "segment" if output == "labels" else "predict"
    _check_image(image)
    unknown = sorted(set(kwargs) - set(PREDICTOR_KEYS) - set(RUN_KEYS))
    if unknown:
        raise ArgumentTypeError(
            f"{caller}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
            f"it takes {', '.join((*PREDICTOR_KEYS, *RUN_KEYS))}"
        )
    settings = {k: kwargs.pop(k) for k in PREDICTOR_KEYS if k in kwargs}
    if isinstance(model, Predictor):
        given = list(settings)
        if ndim is not None and ndim != model.ndim:
            given.insert(0, "ndim")
        if given:
            raise ArgumentError(
                f"{', '.join(given)} cannot change a Predictor that is built already; pass "
                "them to Predictor(...), or pass the model instead of the Predictor"
            )
        spec, ndim, in_channels = model, model.ndim, model.in_channels
    else:
        accepted = f"{MODEL_KINDS}, or a Predictor"
        module, loaded, ndim, in_channels = _resolve(
            model, ndim, settings.pop("in_channels", None), accepted
        )
        spec = loaded if loaded is not None else module
    _check_run_args(
        ndim,
        tile,
        output,
        kwargs.get("normalization", "default"),
        kwargs.get("border", "clip"),
        kwargs.get("batch_size", 1),
    )
    # channels, axes and out before the halo analysis: a mismatch is told at once
    arr, _ = to_channel_first(image, ndim, in_channels, kwargs.get("axes"))
    spatial = arr.shape[1:]
    _check_out(out, output, spatial)
    pred = (
        spec
        if isinstance(spec, Predictor)
        else Predictor(spec, ndim=ndim, in_channels=in_channels, halo=halo, **settings)
    )
    classes = pred.classes()
    if out is None:
        if output == "labels":
            out = np.zeros(spatial, dtype=pred.label_dtype(classes))
        else:
            out = np.zeros((classes, *spatial), dtype=pred.np_dtype)
    elif output == "labels":
        top = classes if pred.activation == "sigmoid" and classes > 1 else max(classes - 1, 1)
        _check_out(out, output, spatial, top=top)
    else:
        _check_out(out, output, spatial, classes=classes)
    if isinstance(spec, Predictor) and halo is not None:
        kwargs["halo"] = halo  # a halo for this run; the Predictor keeps its own
    _drain(pred.run(image, ArrayStore(out), tile, output=output, **kwargs), progress)
    return out


def _run_on_client(
    client: Any,
    model: Any,
    image: Any,
    tile: Any,
    ndim: Any,
    halo: Any,
    out: Any,
    progress: bool,
    output: Output,
    kwargs: dict,
) -> Any:
    """:func:`predict` / :func:`segment` with ``client``: the run on a cluster, into OME-Zarr."""
    from .cluster import run_on_cluster

    caller = "segment" if output == "labels" else "predict"
    if not isinstance(out, (str, os.PathLike)):
        raise ArgumentTypeError(
            f"{caller}(client=...) writes into an OME-Zarr the workers can see: give out= a "
            f"path ending in .zarr, got {_kind(out)}"
        )
    out = Path(out)
    if out.suffix.lower() != ".zarr":
        raise ArgumentError(f"out={str(out)!r} must end in .zarr (an OME-Zarr output)")
    if out.exists():
        raise ArgumentError(
            f"out={str(out)!r} exists and is never overwritten: choose a new path or remove it"
        )
    if not isinstance(image, (str, os.PathLike, InputImage)):
        raise ArgumentTypeError(
            f"{caller}(client=...) needs the image as a path the workers can read (or "
            f"napari_seamless.io.read_image(path)), got {_kind(image)}"
        )
    allowed = {*PREDICTOR_KEYS, "axes", "normalization", "border", "batch_size", "batch_tiles"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ArgumentTypeError(
            f"{caller}(client=...) got argument(s) {', '.join(map(repr, unknown))} it cannot "
            f"send to a cluster; it takes {', '.join(sorted(allowed))}"
        )
    settings = {k: kwargs.pop(k) for k in PREDICTOR_KEYS if k in kwargs}
    if ndim is not None:
        settings["ndim"] = ndim
    if halo is not None:
        settings["halo"] = halo
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(unit="tile", desc="seamless")

    def callback(done: int, total: int) -> None:
        if bar is not None:
            bar.total = total
            bar.update(done - bar.n)

    run_kwargs = {k: kwargs.pop(k) for k in ("border", "batch_size") if k in kwargs}
    try:
        done = run_on_cluster(
            client,
            model,
            image,
            out,
            tile,
            batch_tiles=kwargs.pop("batch_tiles", 8),
            output=output,
            axes=kwargs.pop("axes", None),
            normalization=kwargs.pop("normalization", "default"),
            predictor_kwargs=settings,
            callback=callback,
            **run_kwargs,
        )
    finally:
        if bar is not None:
            bar.close()
    from ..stores import OmeZarrStore

    return OmeZarrStore.open(done.output, mode="r").levels[0]


def _drain(events: Iterator[TileEvent], progress: bool) -> None:
    if not progress:
        for _ in events:
            pass
        return
    from tqdm.auto import tqdm

    bar = None
    try:
        for ev in events:
            if bar is None:
                bar = tqdm(total=ev.total, unit="tile", desc="seamless")
            bar.update(1)
    finally:
        if bar is not None:
            bar.close()
