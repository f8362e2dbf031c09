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
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .errors import SeamlessError
from .grid import Border, Tile, TileGrid, pad_to_multiple
from .preprocessing import FittedPreprocessing, PercentileNormalization, Preprocessing, check_finite
from .stores import ArrayStore, Store

__all__ = [
    "Predictor",
    "TileEvent",
    "predict",
    "segment",
    "read_window",
    "to_channel_first",
    "ChannelError",
    "InexactHaloWarning",
    "OutputConventionError",
    "ACTIVATIONS",
]

Output = Literal["probabilities", "labels"]
Activation = Literal["softmax", "sigmoid", "identity"]
ACTIVATIONS = ("softmax", "sigmoid", "identity")


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
    block = np.asarray(image[(slice(None), *box)])
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
    """
    shape = tuple(image.shape)
    spatial_names = "ZYX"[-ndim:] if ndim <= 3 else None
    if axes is None:
        if len(shape) == ndim:
            axes = spatial_names
        elif len(shape) == ndim + 1:
            first = shape[0] == in_channels or (shape[-1] != in_channels and shape[0] <= shape[-1])
            axes = ("C" + spatial_names) if first else (spatial_names + "C")
        else:
            raise ChannelError(
                f"image of shape {shape} has {len(shape)} axes; the model works on {ndim} "
                f"spatial axes ({spatial_names}) with {in_channels} channel(s). Pass axes= "
                "or select one plane/time point first."
            )
    axes = axes.upper()
    if len(axes) != len(shape) or axes.replace("C", "") != spatial_names:
        raise ChannelError(
            f"axes {axes!r} do not fit image of shape {shape} and a {ndim}D model "
            f"(expected {spatial_names!r} with an optional 'C')"
        )
    if "C" not in axes:
        arr = image[None]
    elif axes[0] == "C":
        arr = image
    else:
        arr = np.moveaxis(np.asarray(image), axes.index("C"), 0)
    if arr.shape[0] != in_channels:
        raise ChannelError(
            f"the model expects {in_channels} input channel(s) but the image (shape {shape}, "
            f"axes {axes}) has {arr.shape[0]}. Choose a model trained for {arr.shape[0]} "
            f"channel(s), or convert the image (e.g. to grayscale) first."
        )
    return arr, axes


def infer_in_channels(model: Any, ndim: int) -> int:
    """Input channels of ``model``: dim 1 of its first ``ndim``-D convolution weight.

    Raises
    ------
    ValueError
        If the model has no such weight; pass ``in_channels`` explicitly then.
    """
    for p in model.parameters():
        if p.ndim == ndim + 2:
            return int(p.shape[1])
    raise ValueError("cannot infer the model's input channels; pass in_channels=")


def auto_device() -> Any:
    """CUDA when present, else CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


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
    model : torch.nn.Module or torch.jit.ScriptModule
        Fully convolutional model ``(N, in_channels, *spatial) -> (N, classes, *spatial)``
        returning logits. It runs in ``eval()`` mode on ``device`` in ``dtype``; when that
        needs a change (train mode, another device or dtype), a copy is changed and the
        caller's model is left as it is.
    ndim : int
        Spatial axes (2 or 3).
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
    time_budget : float or None
        Seconds the halo analysis may take (:func:`~napari_seamless.analysis.receptive_field`);
        None: no limit.
    activation : {"softmax", "sigmoid", "identity"}
        How the model's output becomes probabilities and labels: ``"softmax"`` over
        channels, labels = argmax; ``"sigmoid"`` per channel, labels = ``p > threshold``
        for one channel, else 0 where no channel exceeds ``threshold`` and ``1 + argmax``
        elsewhere; ``"identity"`` (the model outputs probabilities), labels = argmax, or
        ``p > threshold`` for one channel. Per pixel: tiling stays exact.
    threshold : float
        Probability threshold of the one-channel and sigmoid conventions.

    Raises
    ------
    ValueError
        For an unknown ``dtype`` or ``activation``.
    """

    def __init__(
        self,
        model: Any,
        ndim: int = 2,
        in_channels: int | None = None,
        halo: int | Sequence[int] | None = None,
        factor: int | Sequence[int] | None = None,
        device: Any = None,
        dtype: str = "float32",
        exact: bool = True,
        time_budget: float | None = 30.0,
        activation: Activation = "softmax",
        threshold: float = 0.5,
    ) -> None:
        import torch

        from .analysis import receptive_field

        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.threshold = float(threshold)
        self.ndim = ndim
        self.in_channels = in_channels or infer_in_channels(model, ndim)
        self.device = torch.device(device) if device is not None else auto_device()
        self.dtype = dtype
        self.torch_dtype = torch.float64 if dtype == "float64" else torch.float32
        self.np_dtype = np.float64 if dtype == "float64" else np.float32
        self.exact = exact
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
        self.rf = None
        if halo is None or factor is None:
            self.rf = receptive_field(
                self.model, ndim=ndim, in_channels=self.in_channels, time_budget=time_budget
            )
        self.factor = (
            tuple(factor)
            if isinstance(factor, Sequence)
            else ((int(factor),) * ndim if factor is not None else self.rf.factor)
        )
        self.halo = (
            tuple(halo)
            if isinstance(halo, Sequence)
            else ((int(halo),) * ndim if halo is not None else self.rf.halo)
        )
        if self.rf is not None and any(h < r for h, r in zip(self.halo, self.rf.halo, strict=True)):
            warnings.warn(
                f"halo {self.halo} is below the exact halo {self.rf.halo} of this model: tiled "
                "results will differ from whole-image inference",
                InexactHaloWarning,
                stacklevel=2,
            )

    def grid(
        self, shape: Sequence[int], tile: int | Sequence[int] | None, border: Border = "clip"
    ) -> TileGrid:
        """The tile grid for an image of spatial ``shape`` (pixels).

        ``tile=None`` gives the whole-image reference: one window, the F-padded image.

        Raises
        ------
        TileSizeError
            If ``tile`` is not a valid window size (see :class:`TileGrid`).
        """
        if tile is None:
            padded = pad_to_multiple(shape, self.factor)
            return TileGrid(shape, padded, 0, self.factor, border="clip")
        return TileGrid(shape, tile, self.halo, self.factor, border=border)

    def _forward(self, windows: list[np.ndarray]) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.stack(windows)).to(self.device)
        with torch.inference_mode(), _exact_math(self.exact):
            out = self.model(x)
            if not isinstance(out, torch.Tensor):
                raise TypeError(
                    f"model returned {type(out).__name__}, expected a tensor; wrap it with "
                    "load_model(..., output=INDEX_OR_KEY)"
                )
            self._check_channels(int(out.shape[1]))
            if self.activation == "softmax":
                probs = torch.softmax(out, dim=1)
            elif self.activation == "sigmoid":
                probs = torch.sigmoid(out)
            else:
                probs = out
        return probs.to(self.torch_dtype).cpu().numpy()

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
        | str = "percentile",
        border: Border = "clip",
        batch_size: int = 1,
        order: Sequence[int] | None = None,
    ) -> Iterator[TileEvent]:
        """Compute every ZoR and write it to ``store``, yielding a :class:`TileEvent` each.

        Parameters
        ----------
        image : array-like
            ``(*spatial)`` or with a channel axis (see :func:`to_channel_first`); numpy,
            zarr, dask or memmap. Only windows are read.
        store : Store
            Receives ``(channels, *zor_shape)`` float32 probabilities (the activation's
            output) for ``output="probabilities"`` or ``(*zor_shape)`` integer labels for
            ``output="labels"`` (see ``activation`` of :class:`Predictor`).
        tile : int, tuple of int or None
            Window size in pixels (a multiple of F, larger than ``2 * halo``); ``None`` is
            the whole-image reference.
        output : {"probabilities", "labels"}
            What is written.
        axes : str, optional
            Axes of ``image`` such as ``"YX"`` or ``"CYX"``.
        normalization : "percentile", PercentileNormalization, Preprocessing, callable or None
            ``"percentile"`` fits 1-99.8 percentiles on the whole image once; a
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
            default row-major.

        Yields
        ------
        TileEvent
            After each tile's ZoR is written.

        Raises
        ------
        ChannelError
            If the image does not have the channels the model expects.
        TileSizeError
            If ``tile`` is invalid.
        """
        arr, _ = to_channel_first(image, self.ndim, self.in_channels, axes)
        grid = self.grid(arr.shape[1:], tile, border)
        np_dtype = self.np_dtype
        norm = self._normalization(arr, normalization, np_dtype)
        tiles = [grid[i] for i in order] if order is not None else list(grid)
        done = 0
        batch: list[Tile] = []

        def flush() -> Iterator[TileEvent]:
            nonlocal done
            windows = []
            for t in batch:
                w = read_window(arr, t.window)
                box = ", ".join(f"{z.start}:{z.stop}" for z in t.zor)
                check_finite(w, f"the window of the tile whose ZoR is ({box})")
                windows.append(norm(w).astype(np_dtype, copy=False))
            probs = self._forward(windows)
            for t, p in zip(batch, probs, strict=True):
                block = p[(slice(None), *t.crop)]
                if output == "labels":
                    block = self.labels(block)
                else:
                    block = (
                        block.astype(np.float32, copy=False) if self.dtype == "float32" else block
                    )
                store.write(t.zor, block)
                done += 1
                yield TileEvent(t, done, len(tiles))
            batch.clear()

        for t in tiles:
            if batch and (len(batch) >= batch_size or t.window_shape != batch[0].window_shape):
                yield from flush()
            batch.append(t)
        if batch:
            yield from flush()

    @staticmethod
    def _normalization(
        arr: Any, normalization: Any, dtype: type
    ) -> Callable[[np.ndarray], np.ndarray]:
        if normalization is None:
            return lambda w: w.astype(dtype)
        if isinstance(normalization, str):
            if normalization != "percentile":
                raise ValueError(
                    f"unknown normalization {normalization!r}; use 'percentile' or None"
                )
            normalization = PercentileNormalization.fit(arr)
        if isinstance(normalization, Preprocessing):
            normalization = normalization.fit(arr)  # once, on the whole image
        if isinstance(normalization, (PercentileNormalization, FittedPreprocessing)):
            return lambda w: normalization(w, dtype=dtype)
        return normalization

    def classes(self) -> int:
        """Number of output classes (one forward pass on a small input, a multiple of F)."""
        import torch

        size = tuple(f * -(-16 // f) for f in self.factor)  # at least 16 px: pads fit
        x = torch.zeros((1, self.in_channels) + size, dtype=self.torch_dtype, device=self.device)
        with torch.inference_mode():
            channels = int(self.model(x).shape[1])
        self._check_channels(channels)
        return channels


def _predictor(model: Any, ndim: int, halo: Any, kwargs: dict) -> Predictor:
    if isinstance(model, Predictor):
        return model
    keys = (
        "in_channels",
        "factor",
        "device",
        "dtype",
        "exact",
        "activation",
        "threshold",
        "time_budget",
    )
    return Predictor(model, ndim=ndim, halo=halo, **{k: kwargs.pop(k) for k in keys if k in kwargs})


def predict(
    model: Any,
    image: Any,
    tile: int | Sequence[int] | None = 512,
    *,
    ndim: int = 2,
    halo: int | Sequence[int] | None = None,
    out: Any = None,
    progress: bool = False,
    **kwargs: Any,
) -> Any:
    """Class scores of ``image`` by exact tiled inference.

    Parameters
    ----------
    model : torch.nn.Module, torch.jit.ScriptModule or Predictor
        Fully convolutional model returning logits.
    image : array-like
        ``(*spatial)`` or with a channel axis; see :func:`to_channel_first`.
    tile : int, tuple of int or None
        Window size in pixels; ``None`` runs the whole image in one pass (the reference:
        reflection-padded to a multiple of F, one forward pass, cropped back).
    ndim : int
        Spatial axes of the model (2 or 3).
    halo : int or tuple of int, optional
        Override the halo computed from the model (pixels).
    out : array-like, optional
        Where to write ``(classes, *spatial)`` scores (numpy or zarr); allocated if None.
    progress : bool
        Show a tqdm progress bar.
    **kwargs
        ``in_channels``, ``factor``, ``device``, ``dtype``, ``exact``, ``activation``,
        ``threshold`` for :class:`Predictor`; ``axes``, ``normalization``, ``border``,
        ``batch_size`` for :meth:`Predictor.run`.

    Returns
    -------
    numpy.ndarray or the given ``out``, shape (channels, *spatial)
        Probabilities by the activation (softmax by default), float32 (float64 with
        ``dtype="float64"``).

    Raises
    ------
    ChannelError, TileSizeError, ValueError
        On images or tiles that do not fit the model (messages say what to change).
    """
    return _run_into(model, image, tile, ndim, halo, out, progress, "probabilities", kwargs)


def segment(
    model: Any,
    image: Any,
    tile: int | Sequence[int] | None = 512,
    *,
    ndim: int = 2,
    halo: int | Sequence[int] | None = None,
    out: Any = None,
    progress: bool = False,
    **kwargs: Any,
) -> Any:
    """Semantic labels (argmax of the class scores) of ``image`` by exact tiled inference.

    Same parameters as :func:`predict`; returns an integer array of shape ``(*spatial)``
    (uint8 for up to 255 classes): the class index per pixel for softmax (0 = background
    for the built-in models), ``p > threshold`` for one-channel sigmoid/identity models
    (see ``activation`` of :class:`Predictor`).
    """
    return _run_into(model, image, tile, ndim, halo, out, progress, "labels", kwargs)


def _run_into(
    model: Any,
    image: Any,
    tile: Any,
    ndim: int,
    halo: Any,
    out: Any,
    progress: bool,
    output: Output,
    kwargs: dict,
) -> Any:
    """Shared body of :func:`predict` and :func:`segment`: allocate ``out`` if needed, run."""
    pred = _predictor(model, ndim, halo, kwargs)
    arr, _ = to_channel_first(image, pred.ndim, pred.in_channels, kwargs.get("axes"))
    if out is None:
        classes = pred.classes()
        if output == "labels":
            out = np.zeros(arr.shape[1:], dtype=pred.label_dtype(classes))
        else:
            out = np.zeros((classes, *arr.shape[1:]), dtype=pred.np_dtype)
    _drain(pred.run(image, ArrayStore(out), tile, output=output, **kwargs), progress)
    return out


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
