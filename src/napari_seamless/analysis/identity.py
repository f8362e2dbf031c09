"""When two torch models are the same model, for caching what is measured of them.

The halo analysis (a second or more) and the tile probe (seconds) depend only on what a
model computes. Loading the same model again in one process (the widget re-selecting it,
a CLI command run twice from Python, a Compare after a Run) need not repeat them, provided
"the same" is strict: the same module classes (the class objects themselves, so code
edited and re-loaded from a file is a new model), the same structure and settings, the
same train/eval state and the same parameter and buffer values, bit for bit. Models whose
behaviour can hide outside those (TorchScript, forward hooks, a ``forward`` set on an
instance) get no key and are always measured afresh.

Importing this module does not import torch; :func:`model_key` does.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

__all__ = ["model_key", "KeyedCache"]


class _Unkeyable(Exception):
    """An attribute whose effect on forward cannot be told from its value."""


_TORCH_OWN = {"_parameters", "_buffers", "_modules"}  # keyed through the tensors and paths


def _plain(value: Any) -> Hashable:
    """``value`` as a hashable of plain data, or :class:`_Unkeyable` (functions, objects)."""
    import enum

    import torch

    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return (type(value).__name__, value)
    if isinstance(value, (torch.dtype, torch.device, torch.memory_format, enum.Enum)):
        return (type(value).__name__, str(value))
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_plain(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", tuple(sorted(repr(_plain(v)) for v in value)))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):  # a config
        return (
            type(value).__qualname__,
            tuple((f.name, _plain(getattr(value, f.name))) for f in dataclasses.fields(value)),
        )
    if isinstance(value, dict):  # hook registries are dicts: empty ones only pass
        return ("dict", tuple(sorted((repr(_plain(k)), _plain(v)) for k, v in value.items())))
    raise _Unkeyable(type(value).__name__)


def model_key(model: Any) -> Hashable | None:
    """A key equal for two models exactly when they compute the same function.

    Parameters
    ----------
    model : torch.nn.Module
        Any module.

    Returns
    -------
    hashable or None
        ``(classes, structure, digest)``: the tuple of module classes (held, so a class
        cannot be collected and its id reused); per module its path, class and every
        instance attribute (training flag, sizes, modes, ...) as plain data; and a SHA-256
        of every parameter's and buffer's (also non-persistent ones) name, dtype, shape
        and bytes. ``None`` (do not cache) unless every module is a plain
        :class:`torch.nn.Module` whose attributes are plain data: TorchScript, hooks
        (also global ones), a function or other object held as an attribute (e.g. a
        ``forward`` or a callback set on an instance), or tensors that cannot be read on
        the CPU (meta, sparse, quantised) give ``None``.
    """
    import torch
    from torch.nn.modules import module as nn_module

    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        return None
    if any(
        getattr(nn_module, name, None)
        for name in (
            "_global_forward_hooks",
            "_global_forward_pre_hooks",
            "_global_backward_hooks",
            "_global_backward_pre_hooks",
        )
    ):
        return None
    classes = []
    structure = []
    try:
        for path, module in model.named_modules(remove_duplicate=False):
            if isinstance(module, torch.jit.ScriptModule):
                return None
            attrs = tuple(
                (name, _plain(value))
                for name, value in sorted(vars(module).items())
                if name not in _TORCH_OWN
            )
            classes.append(type(module))
            structure.append((path, type(module).__qualname__, attrs))
    except _Unkeyable:
        return None
    digest = hashlib.sha256()
    try:
        with torch.no_grad():
            tensors = [*model.named_parameters(remove_duplicate=False)]
            tensors += [*model.named_buffers(remove_duplicate=False)]
            for name, tensor in tensors:
                t = tensor.detach()
                if t.is_meta:
                    return None
                digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
                digest.update(t.cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    except (RuntimeError, TypeError):  # sparse, quantised, or a tensor subclass: no key
        return None
    return (tuple(classes), tuple(structure), digest.hexdigest())


class KeyedCache:
    """A small least-recently-used map from :func:`model_key` keys (plus extras) to results.

    Parameters
    ----------
    size : int
        Entries kept; the least recently used goes first.
    """

    def __init__(self, size: int = 16) -> None:
        self.size = int(size)
        self._items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable | None) -> Any:
        """The value stored under ``key``, or ``None`` (also for a ``None`` key)."""
        if key is None or key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Hashable | None, value: Any) -> None:
        """Store ``value`` under ``key`` (nothing for a ``None`` key)."""
        if key is None:
            return
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry."""
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
