"""Why a model cannot be analysed or tiled: the errors of the analysis, in words.

* :class:`NotTileableError`: operations that *ran* in the model's forward pass make tiled
  inference inexact at any halo (statistics or pooling over space, attention, cyclic
  shifts, ``align_corners=True``, train-mode batch norm, randomness). Each one is a
  :class:`Refusal` with the module path it ran in and the source line that called it.
* :class:`UnsupportedOperationError`: an operation the analysis has no rule for, or a
  model whose recorded graph does not reproduce its output; the analysis never guesses.
* :class:`AnalysisTimeoutError`: the analysis ran past its time budget.
* :class:`ModelRunError`: the model did not run on the probe input at all.

No torch import here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SeamlessError

__all__ = [
    "Refusal",
    "NotTileableError",
    "UnsupportedOperationError",
    "AnalysisTimeoutError",
    "ModelRunError",
]


@dataclass(frozen=True)
class Refusal:
    """One operation that makes exact tiling impossible at any halo.

    Attributes
    ----------
    path : str
        Path of the module the operation ran in (``""``: the model's own ``forward``, or
        a TorchScript model whose submodules cannot be followed).
    op : str
        The module's class name, or the aten operation when no module is known.
    reason : str
        What it does and what to do about it.
    aten : str
        The aten operation that was recorded (e.g. ``"native_group_norm"``).
    source : str
        ``file:line`` of the Python call that ran it, when known.
    """

    path: str
    op: str
    reason: str
    aten: str = ""
    source: str = ""

    def __str__(self) -> str:
        where = f" ({self.aten}" + (f", called at {self.source}" if self.source else "") + ")"
        return f"{self.op} at '{self.path or '<model>'}'{where if self.aten else ''}: {self.reason}"


class NotTileableError(SeamlessError, ValueError):
    """The model runs operations that make tiled inference inexact at any halo.

    Attributes
    ----------
    refusals : list of Refusal
        Every offending operation that ran, with its module path and the reason.
    """

    def __init__(self, refusals: list[Refusal]) -> None:
        self.refusals = list(refusals)
        groups: dict[tuple[str, str], list[Refusal]] = {}
        for r in self.refusals:
            groups.setdefault((r.op, r.reason), []).append(r)
        parts = []
        for (op, reason), rs in groups.items():
            where = ", ".join(f"'{r.path or '<model>'}'" for r in rs[:3])
            more = f" and {len(rs) - 3} more" if len(rs) > 3 else ""
            src = f" ({rs[0].aten}, called at {rs[0].source})" if rs[0].source else ""
            parts.append(f"{op} at {where}{more}{src}: {reason}")
        super().__init__("this model cannot be tiled exactly: " + "; ".join(parts))


class UnsupportedOperationError(SeamlessError, ValueError):
    """An operation the analysis has no rule for, or a graph it cannot trust; named in the message."""


class AnalysisTimeoutError(SeamlessError, TimeoutError):
    """The halo analysis ran past its time budget (``time_budget=`` in seconds)."""


class ModelRunError(SeamlessError, ValueError):
    """The model does not run on the probe input (wrong channels, axes or sizes)."""
