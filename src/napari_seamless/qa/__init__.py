"""Seam QA: how a tiled result compares with the whole-image reference (numpy only).

``metrics`` holds the paper's numbers (RMSE, ME, NME; Majurski & Bajcsy 2021, Eqs. 3-5)
and the instance metrics (matched-object F1, same partition up to numbering);
``maps`` holds where the differences sit (error maps, distance to the nearest ZoR seam,
the error profile against that distance); ``plots`` draws the sweep, the error profile
and the offset experiment as matplotlib figures (matplotlib imported only when drawing).
No torch, no Qt: the CLI, the widget and the tests share these.
"""

from __future__ import annotations

from .maps import error_map, error_profile, seam_distance
from .metrics import (
    Comparison,
    compare,
    dice,
    match_f1,
    max_abs_difference,
    misclassification_error,
    nme,
    rmse,
    same_partition,
)
from .offsets import OffsetRow, offset_experiment
from .plots import offsets_figure, profile_figure, save_png, sweep_figure
from .reference import (
    Reference,
    ReferenceTooLargeError,
    SeamReport,
    memory_budget,
    reference,
    reference_bytes,
    seam_report,
)
from .sweep import SweepRow, halo_sweep

__all__ = [
    "Comparison",
    "compare",
    "dice",
    "error_map",
    "error_profile",
    "halo_sweep",
    "match_f1",
    "max_abs_difference",
    "misclassification_error",
    "nme",
    "offset_experiment",
    "offsets_figure",
    "OffsetRow",
    "profile_figure",
    "Reference",
    "ReferenceTooLargeError",
    "SeamReport",
    "memory_budget",
    "reference",
    "reference_bytes",
    "rmse",
    "same_partition",
    "save_png",
    "seam_report",
    "seam_distance",
    "sweep_figure",
    "SweepRow",
]
