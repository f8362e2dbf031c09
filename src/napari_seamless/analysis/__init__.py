"""Halo and F of a torch model, refusals, and the proofs of a halo.

The analysis records the aten operations a model's forward pass really runs
(:mod:`.trace`), follows the dependency interval of every output index through them, one
rule per operation (:mod:`.rules`, :mod:`.intervals`), reads F from the lattice of the
feature maps and the halo from the intervals (:mod:`.halo`), refuses what
couples space as it runs (:mod:`.refusals`), and proves a halo by two independent support
tests (:mod:`.support`). :mod:`.erf` estimates the effective receptive field.

Importing this package does not import torch; the functions do.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .refusals import (
    AnalysisTimeoutError,
    ModelRunError,
    NotTileableError,
    Refusal,
    UnsupportedOperationError,
)

_LAZY = {
    "ReceptiveField": "halo",
    "receptive_field": "halo",
    "extents_from_intervals": "halo",
    "SupportTest": "support",
    "verify_halo": "support",
    "effective_receptive_field": "erf",
}

__all__ = [
    "AnalysisTimeoutError",
    "ModelRunError",
    "NotTileableError",
    "Refusal",
    "UnsupportedOperationError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
