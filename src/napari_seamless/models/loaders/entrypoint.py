"""Models built by Python code: ``package.module:function`` or ``path/to/file.py:function``.

The attribute may be a function or class called with no arguments, or an
:class:`torch.nn.Module` instance; it must give a module (or a ready
:class:`~napari_seamless.models.LoadedModel`). This imports and runs the named code, which
the user typed themselves.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from .base import LoadedModel, ModelLoadError, shape_of
from .files import first_sentence

__all__ = ["is_entry_point", "load_entry_point"]

_MODULE_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_FILE_SPEC = re.compile(r"^(?P<file>.+\.py):(?P<attr>[A-Za-z_][\w.]*)$")


def is_entry_point(spec: str) -> bool:
    """True for ``module.path:attribute`` or ``file.py:attribute`` (not an existing path)."""
    if Path(spec).expanduser().exists():
        return False
    return bool(_MODULE_SPEC.match(spec) or _FILE_SPEC.match(spec))


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ModelLoadError(f"entry point file {path} does not exist")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"_seamless_entry_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise ModelLoadError(f"importing {path} failed: {first_sentence(err)}") from None
    return module


def build_callable(target: Any, where: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Call a model factory (or take a module instance) and check it gives a module.

    Raises
    ------
    ModelLoadError
        If calling fails or the result is not a :class:`torch.nn.Module`.
    """
    obj = target
    if not isinstance(target, nn.Module) and callable(target):
        try:
            obj = target(**(kwargs or {}))
        except Exception as err:
            raise ModelLoadError(f"calling {where} failed: {first_sentence(err)}") from None
    if isinstance(obj, LoadedModel):
        return obj  # type: ignore[return-value]
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{where} gave {type(obj).__name__}, not a torch.nn.Module")
    return obj


def load_entry_point(spec: str) -> LoadedModel:
    """Build a model from ``module:function`` or ``file.py:function``.

    Parameters
    ----------
    spec : str
        ``package.module:attr`` (imported) or ``path/to/file.py:attr`` (executed); ``attr``
        may be dotted (``module:Class.factory``).

    Returns
    -------
    LoadedModel
        ``ndim`` and ``in_channels`` read from the first convolution weight.

    Raises
    ------
    ModelLoadError
        If the module cannot be imported, lacks the attribute, or does not give a module.
    """
    m = _FILE_SPEC.match(spec)
    if m:
        module = _import_file(Path(m["file"]).expanduser())
        attr = m["attr"]
    else:
        mod_name, attr = spec.split(":", 1)
        try:
            module = importlib.import_module(mod_name)
        except Exception as err:
            raise ModelLoadError(
                f"cannot import module {mod_name!r} for {spec}: {first_sentence(err)}"
            ) from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ModelLoadError(f"{spec}: {getattr(target, '__name__', target)!r} has no {part!r}")
        target = getattr(target, part)
    obj = build_callable(target, spec)
    if isinstance(obj, LoadedModel):
        return obj
    ndim, cin = shape_of(obj)
    return LoadedModel(obj.eval(), spec, ndim, cin, {"kind": "entry_point"})
