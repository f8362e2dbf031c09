"""Model registry and loaders: built-in names, checkpoints, state dicts and TorchScript.

No network access: the default weights ship inside the package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SeamlessError
from .unet import UNet, UNetConfig

__all__ = [
    "ModelLoadError",
    "LoadedModel",
    "load_model",
    "save_checkpoint",
    "builtin_models",
    "DEFAULT_MODEL",
]

WEIGHTS = Path(__file__).parent / "weights"
DEFAULT_MODEL = "nuclei"
CHECKPOINT_FORMAT = "napari-seamless/1"


class ModelLoadError(SeamlessError, ValueError):
    """A model name or file that cannot be loaded; the message says why and what to do."""


@dataclass
class LoadedModel:
    """A model ready for :class:`~napari_seamless.engine.Predictor`.

    Attributes
    ----------
    module : torch.nn.Module
        The network, in eval mode, returning logits ``(N, classes, *spatial)``.
    name : str
        Registry name or file path it came from.
    ndim : int
        Spatial axes (2 or 3).
    in_channels : int
        Input channels.
    meta : dict
        Free-form metadata (classes, training data, normalisation, metrics).
    """

    module: nn.Module
    name: str
    ndim: int
    in_channels: int
    meta: dict[str, Any] = field(default_factory=dict)


def builtin_models() -> dict[str, str]:
    """Names of the built-in models with a one-line description."""
    return {
        "nuclei": "U-Net (depth 4, width 8) trained on fluorescent nuclei; 2 classes (default)",
        "unet-random": "U-Net (depth 4, width 16) with random weights, 1 channel, 2 classes",
    }


def save_checkpoint(model: UNet, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Save a built-in U-Net with its configuration and metadata (``torch.save`` dict)."""
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
    ndim = first.ndim - 2
    width = int(first.shape[0]) if depth else int(first.shape[0])
    return UNetConfig(
        in_channels=int(first.shape[1]),
        classes=int(head.shape[0]),
        width=width,
        depth=depth,
        ndim=ndim,
        kernel_size=int(first.shape[-1]),
    )


def _first_sentence(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(". ")[0].rstrip(".")


def _from_file(path: Path) -> LoadedModel:
    if not path.exists():
        raise ModelLoadError(f"model file {path} does not exist")
    errors = []
    try:
        module = torch.jit.load(str(path), map_location="cpu")
        ndim, cin = _shape_of(module)
        return LoadedModel(module.eval(), str(path), ndim, cin, {"kind": "torchscript"})
    except ModelLoadError:
        raise
    except Exception as err:  # not TorchScript: try a checkpoint / state dict
        errors.append(f"as TorchScript: {_first_sentence(err)}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        errors.append(f"as a state dict: {_first_sentence(err)}")
        raise ModelLoadError(
            f"cannot load model file {path}: "
            + "; ".join(errors)
            + ". Give a TorchScript file (torch.jit.save) or a state dict of the built-in U-Net."
        ) from None
    return _from_checkpoint(obj, str(path))


def _from_checkpoint(obj: Any, name: str) -> LoadedModel:
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        cfg = UNetConfig(**obj["config"])
        sd, meta = obj["state_dict"], dict(obj.get("meta", {}))
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        try:
            cfg = _unet_config_from_state_dict(obj)
        except KeyError:
            raise ModelLoadError(
                f"{name} holds a state dict, but not of the built-in U-Net (keys start "
                f"{list(obj)[:3]}). Save the whole model with torch.jit.script(model).save(path)."
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


def _shape_of(module: nn.Module) -> tuple[int, int]:
    for p in module.parameters():
        if p.ndim in (4, 5):
            return p.ndim - 2, int(p.shape[1])
    raise ModelLoadError("cannot tell the model's spatial axes: it has no 2D or 3D convolution")


def load_model(spec: str | Path | nn.Module = DEFAULT_MODEL) -> LoadedModel:
    """Load a model by built-in name, file path, or wrap a module.

    Parameters
    ----------
    spec : str, Path or torch.nn.Module
        ``"nuclei"`` (the default, bundled weights), ``"unet-random"``, a paper
        architecture with random weights (a key of
        :data:`~napari_seamless.models.architectures.ARCHITECTURES`, 1 channel, 2 classes,
        the paper's widths), a path to a TorchScript file, a napari-seamless checkpoint or
        a U-Net state dict, or a module.

    Returns
    -------
    LoadedModel

    Raises
    ------
    ModelLoadError
        For an unknown name or a file that is not a loadable model.
    """
    if isinstance(spec, nn.Module):
        ndim, cin = _shape_of(spec)
        return LoadedModel(spec.eval(), type(spec).__name__, ndim, cin)
    name = str(spec)
    if name == "nuclei":
        obj = torch.load(WEIGHTS / "nuclei_unet.pt", map_location="cpu", weights_only=True)
        loaded = _from_checkpoint(obj, "nuclei")
        loaded.name = "nuclei"
        return loaded
    if name == "unet-random":
        torch.manual_seed(0)
        return LoadedModel(UNet(width=16).eval(), name, 2, 1, {"kind": "random"})
    from .architectures import ARCHITECTURES

    if name in ARCHITECTURES:
        torch.manual_seed(0)
        module = ARCHITECTURES[name](in_channels=1, classes=2, ndim=2)
        return LoadedModel(module.eval(), name, 2, 1, {"kind": "random", "paper": True})
    path = Path(name).expanduser()
    if path.suffix or path.exists() or "/" in name:
        return _from_file(path)
    raise ModelLoadError(
        f"unknown model {name!r}; built-in models: {', '.join(builtin_models())}; paper "
        f"architectures (random weights): {', '.join(ARCHITECTURES)}; or give a file path"
    )
