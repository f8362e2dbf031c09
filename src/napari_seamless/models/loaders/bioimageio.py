"""bioimage.io model packages: a folder with ``rdf.yaml`` / ``bioimageio.yaml``, or a ``.zip``.

Read with ``bioimageio.spec`` fully offline (``perform_io_checks=False``: no download, no
URL check; every file is read from the package itself). Older format versions are
converted to the latest (0.5) description first. What is taken from the description:

- the one input tensor's axes (batch, channel, 2 or 3 space axes) and channel count;
- its declared preprocessing, turned into a :class:`~napari_seamless.preprocessing.Preprocessing`
  whose statistics are fitted once on the whole image (never per tile);
- the chosen output tensor (``output`` = index or tensor id; default the first), its axes,
  its declared halo per space axis (``meta["declared_halo"]``, output pixels) and its
  postprocessing (softmax, sigmoid, binarize threshold) as the output convention;
- weights: TorchScript (preferred: no Python code from the package runs) or a PyTorch
  state dict with its architecture (``import_from`` a library, or a ``source`` file in
  the package, which is executed).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import io
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...preprocessing import (
    Affine,
    Binarize,
    Cast,
    Clip,
    Preprocessing,
    ScaleRange,
    Sigmoid,
    ZeroMeanUnitVariance,
    describe_steps,
)
from .base import LoadedModel, LoadOptions, ModelLoadError, SelectOutput, finish
from .entrypoint import build_callable
from .files import first_sentence

__all__ = ["is_bioimageio", "load_bioimageio"]

YAML_NAMES = ("rdf.yaml", "bioimageio.yaml")
SPACE_ORDER = ("z", "y", "x")


def is_bioimageio(path: Path) -> bool:
    """True for a package folder, its ``*.yaml`` description, or a ``.zip``."""
    if path.is_dir():
        return any((path / n).is_file() for n in YAML_NAMES) or any(path.glob("*.bioimageio.yaml"))
    return path.suffix.lower() in (".yaml", ".yml", ".zip")


def _spec() -> Any:
    try:
        import bioimageio.spec as spec
    except ImportError:
        raise ModelLoadError(
            "reading bioimage.io packages needs bioimageio.spec: "
            "pip install 'napari-seamless[bioimageio]'"
        ) from None
    return spec


def _read(descr: Any, what: str) -> bytes:
    reader = None
    try:
        reader = descr.get_reader()
        return reader.read()
    except Exception as err:
        raise ModelLoadError(
            f"cannot read {what} from the package: {first_sentence(err)}"
        ) from None
    finally:
        # bioimageio.spec's reader wraps an open file and has no close(): close that file
        inner = getattr(reader, "_reader", reader)
        close = getattr(inner, "close", None)
        if callable(close):
            close()


class AxesAdapter(nn.Module):
    """Reorder the engine's ``(N, C, *spatial)`` into the model's declared axes and back.

    Parameters
    ----------
    model : torch.nn.Module
        Takes the declared input layout, returns the declared output layout.
    in_axes, out_axes : tuple of str
        Declared axes as tokens: ``"b"``, ``"c"`` and ``"s0"``, ``"s1"``... for the
        engine's spatial axes (``ZYX`` order). A missing ``"b"`` or ``"c"`` is squeezed
        (input) or inserted (output).

    Notes
    -----
    Only permutes and squeezes: no spatial operation, so F and the halo are unchanged.
    """

    def __init__(self, model: nn.Module, in_axes: tuple[str, ...], out_axes: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.in_axes = in_axes
        self.out_axes = out_axes

    def _one(self, x: torch.Tensor, tokens: list[str]) -> torch.Tensor:
        if "c" not in self.in_axes:
            x = x.select(tokens.index("c"), 0)
            tokens = [t for t in tokens if t != "c"]
        y = self.model(x.permute([tokens.index(t) for t in self.in_axes]))
        out = list(self.out_axes)
        if "c" not in out:
            y = y.unsqueeze(0)
            out = ["c", *out]
        want = [t for t in ("b", "c") if t in out] + [t for t in out if t.startswith("s")]
        return y.permute([out.index(t) for t in want])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``(N, channels, *spatial)`` for ``(N, C, *spatial)``."""
        spatial = [f"s{i}" for i in range(x.ndim - 2)]
        if "b" in self.in_axes:
            return self._one(x, ["b", "c", *spatial])
        return torch.stack([self._one(xi, ["c", *spatial]) for xi in x])


def _space_axes(axes: Any, what: str) -> list[str]:
    """Ids of the space axes; refuse time and index axes."""
    ids = []
    for a in axes:
        if a.type in ("batch", "channel"):
            continue
        if a.type != "space":
            raise ModelLoadError(
                f"the {what} has a {a.type} axis {a.id!r}; only batch, channel and 2 or 3 space "
                "axes are supported"
            )
        ids.append(str(a.id))
    return ids


def _engine_order(ids: list[str]) -> list[str]:
    """Space axis ids in the engine's order: z, y, x when named so, else as declared."""
    if set(ids) <= set(SPACE_ORDER):
        return [i for i in SPACE_ORDER if i in ids]
    return ids


def _per_channel(axes: Any, space: list[str], step: str) -> bool:
    """bioimage.io ``axes`` (the axes reduced jointly) -> statistics per channel or joint."""
    if axes is None:
        return False
    names = {str(a) for a in axes}
    missing = [s for s in space if s not in names]
    if missing:
        raise ModelLoadError(
            f"{step} computes statistics separately along axis {missing[0]!r}; only statistics "
            "over the whole image (per channel or joint) can be fitted once for exact tiling"
        )
    return "channel" not in names


def _along_channel(kwargs: Any, step: str) -> None:
    axis = getattr(kwargs, "axis", None)
    if axis is not None and str(axis) != "channel":
        raise ModelLoadError(f"{step} along axis {axis!r} is not supported (only 'channel')")


def _preprocessing(tensor: Any, space: list[str]) -> Preprocessing:
    """Translate an input tensor's declared preprocessing into fit-once steps."""
    steps: list[Any] = []
    for p in tensor.preprocessing:
        kind, kw = p.id, getattr(p, "kwargs", None)
        if kind == "ensure_dtype":
            steps.append(Cast(str(kw.dtype)))
        elif kind == "scale_range":
            ref = kw.reference_tensor
            if ref is not None and str(ref) != str(tensor.id):
                raise ModelLoadError(f"scale_range with reference tensor {ref!r} is not supported")
            steps.append(
                ScaleRange(
                    kw.min_percentile,
                    kw.max_percentile,
                    kw.eps,
                    _per_channel(kw.axes, space, kind),
                )
            )
        elif kind == "zero_mean_unit_variance":
            steps.append(ZeroMeanUnitVariance(kw.eps, _per_channel(kw.axes, space, kind)))
        elif kind == "fixed_zero_mean_unit_variance":
            _along_channel(kw, kind)
            mean, std = torch.tensor(kw.mean).double(), torch.tensor(kw.std).double()
            steps.append(
                Affine(tuple(mean.reshape(-1).tolist()), tuple((1 / std).reshape(-1).tolist()))
            )
        elif kind == "scale_linear":
            _along_channel(kw, kind)
            steps.append(Affine.gain_offset(kw.gain, kw.offset))
        elif kind == "clip":
            per = _per_channel(kw.axes, space, kind) if kw.axes is not None else False
            steps.append(Clip(kw.min, kw.max, kw.min_percentile, kw.max_percentile, per))
        elif kind == "binarize":
            _along_channel(kw, kind)
            t = kw.threshold
            steps.append(Binarize(tuple(t) if isinstance(t, list) else (float(t),)))
        elif kind == "sigmoid":
            steps.append(Sigmoid())
        else:
            raise ModelLoadError(
                f"the package's preprocessing step {kind!r} is not supported (supported: "
                "scale_range, zero_mean_unit_variance, fixed_zero_mean_unit_variance, "
                "scale_linear, clip, binarize, sigmoid, ensure_dtype)"
            )
    return Preprocessing(
        tuple(steps), describe_steps([s for s in steps if not isinstance(s, Cast)])
    )


def _postprocessing(tensor: Any) -> tuple[str | None, float | None, list[str]]:
    """Declared activation, threshold and notes from an output's postprocessing."""
    activation, threshold, notes = None, None, []
    for p in tensor.postprocessing:
        kind = p.id
        if kind == "ensure_dtype":
            continue
        if kind == "softmax":
            activation = "softmax"
        elif kind == "sigmoid":
            activation = "sigmoid"
        elif kind == "binarize" and not isinstance(p.kwargs.threshold, list):
            threshold = float(p.kwargs.threshold)
        else:
            notes.append(
                f"postprocessing step {kind!r} of output {tensor.id!r} is not applied; labels "
                "follow the activation convention"
            )
    if activation is None:
        rng = getattr(tensor.data, "range", None)
        if rng is not None and tuple(rng) == (0, 1):
            activation = "identity"  # declared probabilities
    return activation, threshold, notes


def _module(descr: Any, options: LoadOptions) -> tuple[nn.Module, str]:
    weights = descr.weights
    if weights.torchscript is not None:
        data = _read(weights.torchscript, "the TorchScript weights")
        return torch.jit.load(io.BytesIO(data), map_location="cpu"), "torchscript"
    w = weights.pytorch_state_dict
    if w is None:
        present = [k for k, v in weights.model_dump().items() if v is not None]
        raise ModelLoadError(
            f"the package has weights only as {', '.join(present)}; napari-seamless runs "
            "torchscript or pytorch_state_dict weights"
        )
    arch = w.architecture
    if hasattr(arch, "import_from"):
        try:
            target = getattr(importlib.import_module(arch.import_from), str(arch.callable))
        except Exception as err:
            raise ModelLoadError(
                f"cannot import the architecture {arch.import_from}.{arch.callable}: "
                f"{first_sentence(err)}"
            ) from None
        where = f"{arch.import_from}.{arch.callable}"
    else:
        code = _read(arch, "the architecture source")
        name = f"_seamless_bioimageio_{hashlib.sha1(code).hexdigest()[:12]}"
        spec = importlib.util.spec_from_loader(name, loader=None)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        try:
            exec(compile(code, str(arch.source), "exec"), module.__dict__)
            target = getattr(module, str(arch.callable))
        except Exception as err:
            raise ModelLoadError(
                f"the architecture source {arch.source} failed: {first_sentence(err)}"
            ) from None
        where = f"{arch.source}:{arch.callable}"
    model = build_callable(target, where, dict(arch.kwargs))
    sd = torch.load(io.BytesIO(_read(w, "the state dict")), map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(sd, strict=w.strict)
    except RuntimeError as err:
        raise ModelLoadError(
            f"the package's state dict does not fit {where}: {first_sentence(err)}"
        ) from None
    return model, "pytorch_state_dict"


def _load_description(path: Path) -> Any:
    spec = _spec()
    try:
        descr = spec.load_model_description(path, perform_io_checks=False, format_version="latest")
    except Exception as err:
        raise ModelLoadError(
            f"{path} is not a valid bioimage.io model package: {first_sentence(err)}"
        ) from None
    if not hasattr(descr, "inputs") or not hasattr(descr, "weights"):
        raise ModelLoadError(f"{path} is not a bioimage.io model description")
    return descr


def load_bioimageio(path: Path, options: LoadOptions) -> LoadedModel:
    """Load a bioimage.io model package offline.

    Parameters
    ----------
    path : Path
        Package folder, its ``rdf.yaml`` / ``bioimageio.yaml``, or a ``.zip``.
    options : LoadOptions
        ``output`` may be an output tensor id or index; ``activation`` and ``threshold``
        override the declared postprocessing.

    Returns
    -------
    LoadedModel
        ``normalization`` is the declared :class:`~napari_seamless.preprocessing.Preprocessing`;
        ``meta["declared_halo"]`` the declared output halo per spatial axis (pixels, ``ZYX``
        order) or None.

    Raises
    ------
    ModelLoadError
        For a missing or invalid package, several inputs, unsupported axes, weights
        formats or processing steps, or an output that is not the input's size.
    """
    if not path.exists():
        raise ModelLoadError(f"bioimage.io package {path} does not exist")
    descr = _load_description(path)
    if len(descr.inputs) != 1:
        raise ModelLoadError(
            f"the package has {len(descr.inputs)} inputs; only single-input models can be tiled"
        )
    inp = descr.inputs[0]
    space = _space_axes(inp.axes, f"input {inp.id!r}")
    if len(space) not in (2, 3):
        raise ModelLoadError(f"the input has {len(space)} space axes; 2 or 3 are supported")
    order = _engine_order(space)
    channels = [a for a in inp.axes if a.type == "channel"]
    in_channels = channels[0].size if channels else 1

    ids = [str(o.id) for o in descr.outputs]
    choice = options.output if options.output is not None else 0
    index = ids.index(choice) if isinstance(choice, str) and choice in ids else choice
    if not isinstance(index, int) or not -len(ids) <= index < len(ids):
        raise ModelLoadError(f"output {choice!r} is not one of the package's outputs {ids}")
    out = descr.outputs[index]
    _space_axes(out.axes, f"output {out.id!r}")  # refuses time and index axes
    halo: dict[str, int] = {}
    mapping: dict[str, str] = {}
    for a in out.axes:
        if a.type != "space":
            continue
        ref = getattr(a, "size", None)
        if not (hasattr(ref, "tensor_id") and str(ref.tensor_id) == str(inp.id)):
            raise ModelLoadError(
                f"output axis {a.id!r} is not sized by the input; only models whose output "
                "has the input's spatial size can be tiled"
            )
        in_axis = next(x for x in inp.axes if str(x.id) == str(ref.axis_id))
        if ref.offset != 0 or a.scale != in_axis.scale:
            raise ModelLoadError(
                f"output axis {a.id!r} differs in size or scale from input axis "
                f"{ref.axis_id!r}; only same-size outputs can be tiled"
            )
        mapping[str(a.id)] = str(ref.axis_id)
        halo[str(ref.axis_id)] = int(getattr(a, "halo", 0) or 0)
    if sorted(mapping.values()) != sorted(space):
        raise ModelLoadError("the output's space axes do not match the input's")

    def tokens(axes: Any, rename: dict[str, str]) -> tuple[str, ...]:
        t = []
        for a in axes:
            if a.type == "batch":
                t.append("b")
            elif a.type == "channel":
                t.append("c")
            else:
                t.append(f"s{order.index(rename.get(str(a.id), str(a.id)))}")
        return tuple(t)

    in_tokens, out_tokens = tokens(inp.axes, {}), tokens(out.axes, mapping)
    module, weights_format = _module(descr, options)
    if len(ids) > 1:  # a multi-output model returns a tuple in the declared order
        module = SelectOutput(module, index)
    standard = ("b", "c", *(f"s{i}" for i in range(len(order))))
    if in_tokens != standard or out_tokens != standard:
        module = AxesAdapter(module, in_tokens, out_tokens)
    declared = tuple(halo.get(s, 0) for s in order)
    activation, threshold, notes = _postprocessing(out)
    pre = _preprocessing(inp, space)
    loaded = LoadedModel(
        module.eval(),
        str(path),
        len(order),
        int(in_channels),
        {
            "kind": "bioimageio",
            "title": descr.name,
            "weights_format": weights_format,
            "axes": {
                "input": [str(a.id) for a in inp.axes],
                "output": [str(a.id) for a in out.axes],
            },
            "outputs": ids,
            "output_id": ids[index],
            "declared_halo": declared if any(declared) else None,
            "preprocessing": pre.description,
            "notes": list(notes),
        },
        normalization=pre,
    )
    if len(ids) > 1 and options.output is None:
        loaded.meta["notes"].append(
            f"the package has outputs {ids}; using {ids[index]!r} (choose with output=ID)"
        )
    sizes = [s.min for a in inp.axes if a.type == "space" and hasattr(s := a.size, "min")]
    first = max([64, *sizes])
    return finish(
        loaded,
        LoadOptions(options.allow_pickle, None, options.activation, options.threshold),
        activation,
        threshold,
        probe_sizes=(first, 2 * first),
    )
