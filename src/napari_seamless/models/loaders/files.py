"""Model files: TorchScript, napari-seamless checkpoints, U-Net state dicts, pickled modules."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..unet import UNet, UNetConfig
from .base import LoadedModel, LoadOptions, ModelLoadError, shape_of

__all__ = ["CHECKPOINT_FORMAT", "from_checkpoint", "load_file", "save_checkpoint"]

CHECKPOINT_FORMAT = "napari-seamless/1"


def save_checkpoint(model: UNet, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Save a built-in U-Net with its configuration and metadata (``torch.save`` dict).

    Parameters
    ----------
    model : UNet
        The network; its ``config`` and ``state_dict`` are stored, not its code.
    path : str or Path
        File to write.
    meta : dict, optional
        Free-form metadata (classes, training data, normalisation, metrics).
    """
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "architecture": "UNet",
            "config": model.config.to_dict(),
            "state_dict": model.state_dict(),
            "meta": meta or {},
        },
        Path(path),
    )


def _unet_config_from_state_dict(sd: dict[str, torch.Tensor]) -> UNetConfig:
    """Recover a :class:`UNetConfig` from the keys and shapes of a U-Net state dict."""
    first = sd.get("down.0.0.weight", sd.get("bottleneck.0.weight"))
    head = sd.get("head.weight")
    if first is None or head is None:
        raise KeyError("not a napari-seamless U-Net state dict")
    depth = len({int(m.group(1)) for k in sd if (m := re.match(r"down\.(\d+)\.", k))})
    return UNetConfig(
        in_channels=int(first.shape[1]),
        classes=int(head.shape[0]),
        width=int(first.shape[0]),
        depth=depth,
        ndim=first.ndim - 2,
        kernel_size=int(first.shape[-1]),
    )


def first_sentence(err: BaseException) -> str:
    """The first sentence of an exception's message (for one-line error reports)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(". ")[0].rstrip(".")


def from_checkpoint(obj: Any, name: str) -> LoadedModel:
    """Build the built-in U-Net from a napari-seamless checkpoint or a U-Net state dict.

    Raises
    ------
    ModelLoadError
        If ``obj`` is neither, or the weights do not fit.
    """
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        cfg = UNetConfig(**obj["config"])
        sd, meta = obj["state_dict"], dict(obj.get("meta", {}))
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        try:
            cfg = _unet_config_from_state_dict(obj)
        except KeyError:
            raise ModelLoadError(
                f"{name} holds a state dict, but not of the built-in U-Net (keys start "
                f"{list(obj)[:3]}). Save the whole model with torch.jit.script(model).save(path), "
                "or give its architecture as an entry point (module:function)."
            ) from None
        sd, meta = obj, {"kind": "state_dict"}
    else:
        raise ModelLoadError(
            f"{name} is neither a TorchScript model nor a state dict (found {type(obj).__name__})"
        )
    model = UNet(cfg)
    try:
        model.load_state_dict(sd)
    except RuntimeError as err:
        raise ModelLoadError(f"{name}: the weights do not fit a U-Net {cfg}: {err}") from None
    return LoadedModel(model.eval(), name, cfg.ndim, cfg.in_channels, meta)


def _refuse_pickle(path: Path) -> ModelLoadError:
    return ModelLoadError(
        f"{path} is a pickled Python object (torch.save(model)), and unpickling runs code "
        "from the file, so it is refused unless you trust the file and allow it with "
        "allow_pickle=True (CLI: --allow-pickle)"
    )


def _from_pickle(path: Path) -> LoadedModel:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as err:
        raise ModelLoadError(f"cannot unpickle {path}: {first_sentence(err)}") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), nn.Module):
        obj = obj["model"]
    if not isinstance(obj, nn.Module):
        return from_checkpoint(obj, str(path))
    ndim, cin = shape_of(obj)
    return LoadedModel(obj.eval(), str(path), ndim, cin, {"kind": "pickle"})


def load_file(path: Path, options: LoadOptions) -> LoadedModel:
    """Load a TorchScript file, a checkpoint, a U-Net state dict or (if allowed) a pickle.

    Parameters
    ----------
    path : Path
        The model file.
    options : LoadOptions
        ``allow_pickle`` decides whether a pickled module may be unpickled.

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelLoadError
        If the file is missing, is not a model, or is a pickle and pickles are not allowed.
    """
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist")
    errors = []
    try:
        module = torch.jit.load(str(path), map_location="cpu")
        ndim, cin = shape_of(module)
        return LoadedModel(module.eval(), str(path), ndim, cin, {"kind": "torchscript"})
    except ModelLoadError:
        raise
    except Exception as err:  # not TorchScript: try a checkpoint / state dict
        errors.append(f"as TorchScript: {first_sentence(err)}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            errors.append(f"as a state dict: {first_sentence(err)}")
        elif options.allow_pickle:
            return _from_pickle(path)
        else:
            raise _refuse_pickle(path) from None
    except Exception as err:
        errors.append(f"as a state dict: {first_sentence(err)}")
    else:
        return from_checkpoint(obj, str(path))
    raise ModelLoadError(
        f"cannot load model file {path}: "
        + "; ".join(errors)
        + ". Give a TorchScript file (torch.jit.save), a state dict of the built-in U-Net, "
        "a bioimage.io package or an entry point (module:function)."
    )
