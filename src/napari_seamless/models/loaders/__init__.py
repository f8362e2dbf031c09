"""The loader registry: one loader per kind of model spec, tried in order.

Each :class:`Loader` says whether it ``claims`` a spec and ``load``s it into a
:class:`LoadedModel`; :func:`load_model` takes the first that claims the spec, then
applies the caller's output choice and output convention (:func:`~.base.finish`).

=============  ==========================================================================
loader         spec
=============  ==========================================================================
module         a :class:`torch.nn.Module` instance
builtin        ``"nuclei"``, ``"unet-random"``, a paper architecture name
bioimageio     a package folder, its ``rdf.yaml`` / ``bioimageio.yaml``, or a ``.zip``
entry_point    ``package.module:function`` or ``path/to/file.py:function``
file           TorchScript, a napari-seamless checkpoint, a U-Net state dict, or a
               pickled module (only with ``allow_pickle=True``)
=============  ==========================================================================

More loaders can be added with :func:`register_loader`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .base import (
    ACTIVATIONS,
    ConventionWarning,
    LoadedModel,
    LoadOptions,
    ModelLoadError,
    ModelSource,
    SelectOutput,
    declared_halo_warning,
    finish,
    shape_of,
)
from .builtin import DEFAULT_MODEL, WEIGHTS, builtin_models, is_builtin, load_builtin

__all__ = [
    "ACTIVATIONS",
    "ConventionWarning",
    "DEFAULT_MODEL",
    "LOADERS",
    "LoadOptions",
    "ModelSource",
    "LoadedModel",
    "Loader",
    "ModelLoadError",
    "SelectOutput",
    "WEIGHTS",
    "builtin_models",
    "declared_halo_warning",
    "load_model",
    "register_loader",
]


@dataclass(frozen=True)
class Loader:
    """One way of turning a spec into a model.

    Attributes
    ----------
    name : str
        Short name, stored as ``meta["loader"]``.
    claims : callable
        ``claims(spec) -> bool`` for a spec (str, Path or module); cheap, no loading.
    load : callable
        ``load(spec, options) -> LoadedModel`` (``options`` is a :class:`LoadOptions`).
        Raises :class:`ModelLoadError` with a message for people.
    finishes : bool
        True if ``load`` already applied :func:`~.base.finish` (it knows declared
        conventions, like the bioimage.io loader).
    """

    name: str
    claims: Callable[[Any], bool]
    load: Callable[[Any, LoadOptions], LoadedModel]
    finishes: bool = False


def _as_path(spec: Any) -> Path | None:
    return Path(str(spec)).expanduser() if isinstance(spec, (str, Path)) else None


def _load_module(spec: nn.Module, options: LoadOptions) -> LoadedModel:
    ndim, cin = shape_of(spec)
    return LoadedModel(spec.eval(), type(spec).__name__, ndim, cin, {"kind": "module"})


def _claims_bioimageio(spec: Any) -> bool:
    from .bioimageio import is_bioimageio

    path = _as_path(spec)
    return path is not None and is_bioimageio(path)


def _load_bioimageio(spec: Any, options: LoadOptions) -> LoadedModel:
    from .bioimageio import load_bioimageio

    return load_bioimageio(Path(str(spec)).expanduser(), options)


def _claims_entry_point(spec: Any) -> bool:
    from .entrypoint import is_entry_point

    return isinstance(spec, str) and is_entry_point(spec)


def _load_entry_point(spec: Any, options: LoadOptions) -> LoadedModel:
    from .entrypoint import load_entry_point

    return load_entry_point(spec)


def _claims_file(spec: Any) -> bool:
    path = _as_path(spec)
    return path is not None and (bool(path.suffix) or path.exists() or "/" in str(spec))


def _load_file(spec: Any, options: LoadOptions) -> LoadedModel:
    from .files import load_file

    return load_file(Path(str(spec)).expanduser(), options)


LOADERS: list[Loader] = [
    Loader("module", lambda s: isinstance(s, nn.Module), _load_module),
    Loader("builtin", lambda s: isinstance(s, str) and is_builtin(s), lambda s, o: load_builtin(s)),
    Loader("bioimageio", _claims_bioimageio, _load_bioimageio, finishes=True),
    Loader("entry_point", _claims_entry_point, _load_entry_point),
    Loader("file", _claims_file, _load_file),
]


def register_loader(loader: Loader, before: str | None = None) -> None:
    """Add a loader, tried before the one named ``before`` (default: before ``file``).

    Parameters
    ----------
    loader : Loader
        The new loader.
    before : str, optional
        Name of an existing loader; default ``"file"``, the catch-all for paths.
    """
    names = [x.name for x in LOADERS]
    LOADERS.insert(names.index(before or "file"), loader)


def _absolute(spec: str | os.PathLike) -> str:
    """``spec`` with a file in it made absolute, so another process finds the same file."""
    text = str(spec)
    path = Path(text)
    if isinstance(spec, str) and is_builtin(text):
        return text
    if path.exists():
        return str(path.resolve())
    head, colon, tail = text.rpartition(":")
    if colon and Path(head).is_file():  # file.py:function
        return f"{Path(head).resolve()}:{tail}"
    return text


def load_model(
    spec: str | Path | nn.Module = DEFAULT_MODEL,
    *,
    allow_pickle: bool = False,
    output: int | str | None = None,
    activation: str | None = None,
    threshold: float | None = None,
) -> LoadedModel:
    """Load a model by built-in name, file, bioimage.io package or entry point, or wrap a module.

    Parameters
    ----------
    spec : str, Path or torch.nn.Module
        ``"nuclei"`` (the default, bundled weights), ``"unet-random"``, a paper
        architecture with random weights (a key of
        :data:`~napari_seamless.models.architectures.ARCHITECTURES`); a bioimage.io
        package (folder, ``rdf.yaml`` or ``.zip``); ``module:function`` or
        ``file.py:function`` (called with no arguments); a TorchScript file, a
        napari-seamless checkpoint or a U-Net state dict; a pickled module (with
        ``allow_pickle``); or a module.
    allow_pickle : bool
        Allow unpickling a whole module saved with ``torch.save(model)``. Unpickling runs
        code from the file: only for files you trust.
    output : int or str, optional
        For a model returning a tuple/list (index) or dict (key); for a bioimage.io
        package, the output tensor id or index. The module is wrapped so that it returns
        that one tensor.
    activation : {"softmax", "sigmoid", "identity"}, optional
        Output convention; default: what the model declares, else softmax, or sigmoid for
        a one-channel output (with a :class:`ConventionWarning` and a note in
        ``meta["notes"]``).
    threshold : float, optional
        Probability threshold for one-channel and sigmoid outputs; default 0.5 (or a
        bioimage.io package's binarize threshold).

    Returns
    -------
    LoadedModel
        ``module`` returns one tensor ``(N, channels, *spatial)``.

    Raises
    ------
    ModelLoadError
        For an unknown name, a file that is not a loadable model, a refused pickle, an
        output choice that does not exist, or softmax asked for a one-channel output.
    """
    options = LoadOptions(allow_pickle, output, activation, threshold)
    for loader in LOADERS:
        if loader.claims(spec):
            loaded = loader.load(spec, options)
            loaded.meta.setdefault("loader", loader.name)
            loaded = loaded if loader.finishes else finish(loaded, options)
            if isinstance(spec, (str, os.PathLike)):  # a live module cannot be loaded again
                loaded.source = ModelSource(_absolute(spec), options)
            return loaded
    from ..architectures import ARCHITECTURES

    raise ModelLoadError(
        f"unknown model {str(spec)!r}; built-in models: {', '.join(builtin_models())}; paper "
        f"architectures (random weights): {', '.join(ARCHITECTURES)}; or give a file path, "
        "a bioimage.io package or module:function"
    )
