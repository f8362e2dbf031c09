"""Keep a long tiled run's resident memory flat: freed tensors go back to the OS, on huge pages.

A forward pass of a U-Net on a 1024 x 1024 window allocates and frees a few hundred MB of
intermediates, from a few MB to a hundred MB each. glibc's ``malloc`` serves blocks above
its *mmap threshold* with ``mmap`` (returned to the OS on ``free``) and smaller ones from its
heaps (kept for reuse). The threshold is dynamic: each time an mmapped block is freed it
rises to that block's size (up to 32 MB), so after the first pass most intermediates come
from the heaps, which fragment across the pipeline's threads: on this project's CPU
benchmark a ``seamless predict`` at tile 1024 sits at 0.9-1.3 GB, against 0.57 GB for one
forward pass on its own (``docs/benchmarks.md``, scale section).

A fixed threshold of 1 MiB sends every large block to ``mmap`` and back, and RSS stays
near what the run holds (0.67 GB from 2048^2 to 8192^2); but each pass then faults its
memory in afresh, 4 KiB at a time, which made the tile loop 2x slower here. With
transparent huge pages for malloc's memory (``glibc.malloc.hugetlb=1``) the faults come in
2 MiB pages and the cost drops to about 1.4x (measured side by side at 8192^2: 82-85 s
against 58 s). That is a trade a person makes, so it is asked for: ``seamless predict
--low-memory``. Both are glibc settings read once when a process starts
(``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``): :func:`small_heap_environment` gives the
environment, and the command re-executes itself in it once (same PID, same arguments); a
Python user can start Python with it. Results do not change, only where memory comes
from. No torch, no Qt.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path

__all__ = ["small_heap_environment", "MARKER"]

MARKER = "NAPARI_SEAMLESS_HEAP"
"""Environment variable set to ``"1"`` in a process started with the small-heap settings."""

MMAP_THRESHOLD = 1 << 20  # bytes: blocks from 1 MiB up are mmapped and returned when freed
_THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _huge_pages_for_malloc() -> bool:
    """Whether the kernel gives a process transparent huge pages when it asks (madvise)."""
    try:
        mode = _THP.read_text()
    except OSError:
        return False
    return "[always]" in mode or "[madvise]" in mode


def _glibc_with_hugetlb() -> bool:
    """Glibc 2.35 or newer: the first with the ``glibc.malloc.hugetlb`` tunable."""
    lib, version = platform.libc_ver()
    if lib != "glibc" or not version:
        return False
    try:
        major, minor = (int(p) for p in version.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (2, 35)


def small_heap_environment(environ: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The environment for a process whose heap stays small, or None if there is nothing to do.

    Adds ``glibc.malloc.hugetlb=1`` to ``GLIBC_TUNABLES`` (kept otherwise) and sets
    ``MALLOC_MMAP_THRESHOLD_`` to 1 MiB (a value already set is respected), and
    :data:`MARKER` to ``"1"``.

    Parameters
    ----------
    environ : mapping of str to str, optional
        The environment to start from (default ``os.environ``).

    Returns
    -------
    dict or None
        The new environment; ``None`` when it cannot help: not Linux with glibc 2.35 or
        newer, transparent huge pages off (``never``: a 1 MiB threshold alone costs 2x in
        time), or :data:`MARKER` already ``"1"`` (this process was started with it).
    """
    env = dict(os.environ if environ is None else environ)
    if env.get(MARKER) == "1":
        return None
    if not (platform.system() == "Linux" and _glibc_with_hugetlb() and _huge_pages_for_malloc()):
        return None
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    if not any(t.startswith("glibc.malloc.hugetlb=") for t in tunables):
        tunables.append("glibc.malloc.hugetlb=1")
    env["GLIBC_TUNABLES"] = ":".join(tunables)
    env.setdefault("MALLOC_MMAP_THRESHOLD_", str(MMAP_THRESHOLD))
    env[MARKER] = "1"
    return env
