"""What every loader returns, and the output conventions applied after loading.

A loader turns a spec (a name, a path, a ``module:function``) into a :class:`LoadedModel`
whose ``module`` maps ``(N, in_channels, *spatial)`` to ONE tensor ``(N, channels,
*spatial)``. Models that return a tuple, a list or a dict are wrapped in
:class:`SelectOutput`, so the halo analysis and the engine never see anything but a
tensor. :func:`finish` probes the model once on a small input to learn its output
structure and channels, and fixes the output convention (``activation``):

- ``"softmax"``: logits of mutually exclusive classes; labels = argmax over channels.
- ``"sigmoid"``: independent logits; one channel: labels = sigmoid(score) > threshold.
- ``"identity"``: the model already outputs probabilities; labels = argmax, or
  score > threshold for one channel.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ...errors import SeamlessError

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "ConventionWarning",
    "LoadOptions",
    "LoadedModel",
    "ModelLoadError",
    "SelectOutput",
    "declared_halo_warning",
    "finish",
    "shape_of",
]

Activation = Literal["softmax", "sigmoid", "identity"]
ACTIVATIONS: tuple[str, ...] = ("softmax", "sigmoid", "identity")
DEFAULT_THRESHOLD = 0.5


class ModelLoadError(SeamlessError, ValueError):
    """A model name or file that cannot be loaded; the message says why and what to do."""


class ConventionWarning(UserWarning):
    """The output convention was changed from what was asked (e.g. softmax on one channel)."""


@dataclass
class LoadedModel:
    """A model ready for :class:`~napari_seamless.engine.Predictor`.

    Attributes
    ----------
    module : torch.nn.Module
        The network, in eval mode, mapping a float tensor ``(N, in_channels, *spatial)`` to
        one tensor ``(N, channels, *spatial)`` of the same spatial size (spatial axes in
        ``ZYX`` / ``YX`` order).
    name : str
        Registry name, file path or entry point it came from.
    ndim : int
        Spatial axes (2 or 3).
    in_channels : int
        Input channels.
    meta : dict
        Free-form metadata: ``kind`` (the loader), ``notes`` (sentences for people, e.g.
        why the activation was switched), and for bioimage.io packages ``declared_halo``
        (tuple of int per spatial axis in pixels, or None), ``axes``, ``weights_format``,
        ``preprocessing``.
    activation : {"softmax", "sigmoid", "identity"}
        How scores become probabilities and labels (see the module docstring).
    threshold : float
        Probability above which a one-channel (or multi-label sigmoid) output is
        foreground.
    normalization : "percentile", callable, object with ``fit`` or None
        Input normalisation passed to :meth:`~napari_seamless.engine.Predictor.run`:
        ``"percentile"`` (1-99.8 percentiles fitted on the whole image, what the built-in
        models were trained with) or a declared
        :class:`~napari_seamless.preprocessing.Preprocessing` fitted once on the whole
        image.
    source : ModelSource or None
        How to load this model again in another process (what
        :func:`~napari_seamless.models.load_model` was given and the options): the
        workers of a cluster run rebuild it from this. None for a live module wrapped by
        hand, which cannot be loaded again by name.
    """

    module: nn.Module
    name: str
    ndim: int
    in_channels: int
    meta: dict[str, Any] = field(default_factory=dict)
    activation: Activation = "softmax"
    threshold: float = DEFAULT_THRESHOLD
    normalization: Any = "percentile"
    source: ModelSource | None = None

    def predictor(self, **kwargs: Any) -> Any:
        """A :class:`~napari_seamless.engine.Predictor` for this model and its conventions.

        Parameters
        ----------
        **kwargs
            Further :class:`~napari_seamless.engine.Predictor` arguments (``halo``,
            ``device``, ``dtype``, ``exact``...); ``ndim``, ``in_channels``,
            ``activation`` or ``threshold`` given here replace this model's.

        Returns
        -------
        Predictor
            With ``ndim``, ``in_channels``, ``activation``, ``threshold`` and
            ``normalization`` (what its ``run`` applies by default) from this model.
        """
        from ...engine import Predictor

        return Predictor(self, **kwargs)

    def declared_halo_warning(self, halo: Any) -> str | None:
        """Warning text if the declared halo is below ``halo``; see :func:`declared_halo_warning`."""
        return declared_halo_warning(self.meta.get("declared_halo"), halo)


@dataclass(frozen=True)
class ModelSource:
    """What :func:`~napari_seamless.models.load_model` was given: enough to load it again.

    Picklable and small, unlike the module: a cluster's workers each call :meth:`load`.

    Attributes
    ----------
    spec : str
        The built-in name, file or package path, or ``module:function``.
    options : LoadOptions
        The caller's choices (pickles allowed, output, activation, threshold).
    """

    spec: str
    options: LoadOptions

    def load(self) -> LoadedModel:
        """Load the model again (on a worker, say); see :func:`load_model`.

        Raises
        ------
        ModelLoadError
            If it cannot be loaded here (a file this process cannot see, say).
        """
        from . import load_model

        o = self.options
        return load_model(
            self.spec,
            allow_pickle=o.allow_pickle,
            output=o.output,
            activation=o.activation,
            threshold=o.threshold,
        )


@dataclass(frozen=True)
class LoadOptions:
    """What the caller of :func:`~napari_seamless.models.load_model` chose.

    Attributes
    ----------
    allow_pickle : bool
        Allow unpickling whole modules (runs code from the file).
    output : int, str or None
        Which output of a tuple/list (index) or dict (key, or index in its order).
    activation : {"softmax", "sigmoid", "identity"} or None
        None: what the model declares, else softmax (sigmoid for one channel).
    threshold : float or None
        None: what the model declares, else 0.5.
    """

    allow_pickle: bool = False
    output: int | str | None = None
    activation: str | None = None
    threshold: float | None = None


def shape_of(module: nn.Module) -> tuple[int, int]:
    """Spatial axes and input channels from the first 2D/3D convolution-like weight.

    Returns
    -------
    tuple of int
        ``(ndim, in_channels)``.

    Raises
    ------
    ModelLoadError
        If the module has no 4D or 5D parameter.
    """
    for p in module.parameters():
        if p.ndim in (4, 5):
            return p.ndim - 2, int(p.shape[1])
    raise ModelLoadError("cannot tell the model's spatial axes: it has no 2D or 3D convolution")


class SelectOutput(nn.Module):
    """Wrap a model so that it returns one tensor of its tuple, list or dict output.

    Parameters
    ----------
    model : torch.nn.Module
        The wrapped network (a ScriptModule too).
    key : int, str or None
        Index into a tuple/list, key of a dict (or an index into the dict's values in
        insertion order). None passes a tensor through and raises on anything else.

    Notes
    -----
    Per-pixel and free of any spatial operation: it changes neither F nor the halo.
    """

    def __init__(self, model: nn.Module, key: int | str | None) -> None:
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the model and return the selected tensor ``(N, channels, *spatial)``."""
        return select(self.model(x), self.key)


def _describe(out: Any) -> str:
    if isinstance(out, dict):
        return f"a dict with keys {list(out)}"
    return f"a {type(out).__name__} of {len(out)}"


def select(out: Any, key: int | str | None) -> torch.Tensor:
    """Pick one tensor of a model output (see :class:`SelectOutput`).

    Raises
    ------
    ModelLoadError
        If ``key`` is None for a non-tensor output, or does not name one of its entries.
    """
    if isinstance(out, torch.Tensor):
        if key not in (None, 0):
            raise ModelLoadError(f"the model returns one tensor; there is no output {key!r}")
        return out
    if isinstance(out, dict):
        if key is None:
            raise ModelLoadError(
                f"the model returns {_describe(out)}; choose one with output=KEY "
                "(CLI: --output-index KEY)"
            )
        if key in out:
            return out[key]
        if isinstance(key, int) and -len(out) <= key < len(out):
            return list(out.values())[key]
        raise ModelLoadError(f"output {key!r} is not among the keys {list(out)} of the model")
    if isinstance(out, (tuple, list)):
        if key is None:
            raise ModelLoadError(
                f"the model returns {_describe(out)} tensors; choose one with output=INDEX "
                "(CLI: --output-index INDEX)"
            )
        if not isinstance(key, int) or not -len(out) <= key < len(out):
            raise ModelLoadError(
                f"output {key!r} is not an index of the model's {len(out)} outputs "
                f"(0..{len(out) - 1})"
            )
        return out[key]
    raise ModelLoadError(f"the model returns {type(out).__name__}, not a tensor")


def probe(
    module: nn.Module, ndim: int, in_channels: int, sizes: tuple[int, ...] = (64, 128, 256)
) -> Any:
    """Run the model once on zeros and return its raw output (None if no size runs).

    Parameters
    ----------
    module : torch.nn.Module
        In eval mode.
    ndim, in_channels : int
        Input layout ``(1, in_channels, *[size] * ndim)``, float32, on the module's device.
    sizes : tuple of int
        Side lengths in pixels tried in turn; the first that runs is used.
    """
    try:
        param = next(module.parameters())
        device, dtype = param.device, param.dtype
    except StopIteration:
        device, dtype = torch.device("cpu"), torch.float32
    for s in sizes:
        x = torch.zeros((1, in_channels) + (s,) * ndim, device=device, dtype=dtype)
        try:
            with torch.inference_mode():
                return module(x)
        except Exception:  # a size the model refuses: try the next one
            continue
    return None


def _note(loaded: LoadedModel, text: str) -> None:
    loaded.meta.setdefault("notes", []).append(text)
    warnings.warn(text, ConventionWarning, stacklevel=4)


def finish(
    loaded: LoadedModel,
    options: LoadOptions,
    declared_activation: str | None = None,
    declared_threshold: float | None = None,
    probe_sizes: tuple[int, ...] = (64, 128, 256),
) -> LoadedModel:
    """Apply the output selection and fix the activation of a freshly loaded model.

    Parameters
    ----------
    loaded : LoadedModel
        As the loader built it (``module`` may return a tuple or dict).
    options : LoadOptions
        The caller's choices; they win over what the model declares.
    declared_activation : str, optional
        What the model's own description says (bioimage.io postprocessing).
    declared_threshold : float, optional
        Likewise for the threshold.
    probe_sizes : tuple of int
        Input sides (pixels) tried for the one probing forward pass.

    Returns
    -------
    LoadedModel
        The same object, updated: ``module`` wrapped in :class:`SelectOutput` where
        needed, ``activation``, ``threshold``, ``meta["out_channels"]`` and notes.

    Raises
    ------
    ModelLoadError
        For an unknown activation, an output choice that does not exist, or softmax
        explicitly asked for a one-channel output (softmax over one channel is always 1).
    """
    if options.activation is not None and options.activation not in ACTIVATIONS:
        raise ModelLoadError(
            f"unknown activation {options.activation!r}; use one of {', '.join(ACTIVATIONS)}"
        )
    loaded.module.eval()
    out = probe(loaded.module, loaded.ndim, loaded.in_channels, probe_sizes)
    key = options.output
    if out is None or not isinstance(out, torch.Tensor) or key is not None:
        if out is not None:
            out = select(out, key)  # raises a clear error for a bad or missing choice
        loaded.module = SelectOutput(loaded.module, key).eval()
        loaded.meta["output"] = key
    channels = int(out.shape[1]) if isinstance(out, torch.Tensor) and out.ndim >= 2 else None
    loaded.meta["out_channels"] = channels
    activation = options.activation or declared_activation or "softmax"
    if channels == 1 and activation == "softmax":
        if options.activation == "softmax":
            raise ModelLoadError(
                f"{loaded.name} has one output channel and softmax over one channel is always "
                "1, so every label would be 0; use activation 'sigmoid' (logits) or "
                "'identity' (probabilities)"
            )
        activation = "sigmoid"
        _note(
            loaded,
            f"{loaded.name} has one output channel: using sigmoid(score) > threshold instead "
            "of softmax (softmax over one channel is always 1); pass activation='identity' "
            "if it already outputs probabilities",
        )
    loaded.activation = activation  # type: ignore[assignment]
    threshold = options.threshold if options.threshold is not None else declared_threshold
    loaded.threshold = float(threshold) if threshold is not None else DEFAULT_THRESHOLD
    return loaded


def _halo_tuple(halo: Any) -> tuple[int, ...] | None:
    if halo is None:
        return None
    halo = getattr(halo, "halo", halo)  # a ReceptiveField or a Predictor
    if isinstance(halo, (int, float)):
        return (int(halo),)
    return tuple(int(h) for h in halo)


def declared_halo_warning(declared: Any, exact: Any) -> str | None:
    """One-line warning if a model's declared halo is below the exact one, else None.

    Parameters
    ----------
    declared : int, tuple of int or None
        Halo the model declares (bioimage.io: per spatial axis, output pixels), e.g.
        ``LoadedModel.meta["declared_halo"]``. None or all zero: nothing declared.
    exact : int, tuple of int, ReceptiveField or Predictor
        The exact halo in pixels per spatial axis (``ReceptiveField.halo``).

    Returns
    -------
    str or None
        The warning text naming both numbers, or None if the declared halo is at least
        the exact one on every axis (the exact one is used either way).
    """
    dec, ex = _halo_tuple(declared), _halo_tuple(exact)
    if dec is None or ex is None or not any(dec):
        return None
    if len(dec) == 1 and len(ex) > 1:
        dec = dec * len(ex)
    if len(ex) == 1 and len(dec) > 1:
        ex = ex * len(dec)
    if all(d >= e for d, e in zip(dec, ex, strict=True)):
        return None

    def show(v: tuple[int, ...]) -> str:
        return str(v[0]) if len(set(v)) == 1 else " x ".join(map(str, v))

    return (
        f"the model declares a halo of {show(dec)} px, below the exact halo of {show(ex)} px "
        f"computed from the network; tiles cut with the declared halo would differ from "
        f"whole-image inference, so the exact halo {show(ex)} px is used"
    )
