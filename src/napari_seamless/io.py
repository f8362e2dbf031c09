"""Files in and out; the rule here is that a user's files are never lost.

:func:`output_transaction` is how every output is written:

1. an exclusive lock (``.NAME.lock`` beside the output, holding the writer's pid) so a
   second run on the same output refuses to start instead of deleting the first one's work;
2. the result is written to a temporary sibling (``.NAME.partial-PID``), never to the
   output itself, so an interrupted run never leaves something that looks complete (a
   partial left by a killed run is removed by the next run on that output);
3. at the end the temporary is swapped in: a file by one atomic ``os.replace``; a folder
   (zarr) by renaming the old one aside (``.NAME.old-PID``), renaming the new one in, then
   deleting the old one. A run killed between the two renames leaves the old output whole
   under its aside name, and the next run on that output puts it back first;
4. ``--overwrite`` replaces only what napari-seamless wrote: a TIFF file, or a zarr folder
   marked as its own (attribute ``napari_seamless``); any other folder is refused.

No Qt, no napari, no torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .errors import SeamlessError

__all__ = ["OutputError", "OutputBusyError", "output_transaction", "OWNER_KEY", "same_or_nested"]

OWNER_KEY = "napari_seamless"


class OutputError(SeamlessError, ValueError):
    """The output path cannot be written safely; the message says why and what to do."""


class OutputBusyError(OutputError):
    """Another run holds the lock of this output."""


def same_or_nested(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are the same path, or one holds the other (a zarr folder)."""
    ra, rb = Path(a).expanduser().resolve(), Path(b).expanduser().resolve()
    return ra == rb or ra in rb.parents or rb in ra.parents


def _sibling(out: Path, tag: str) -> Path:
    return out.with_name(f".{out.name}.{tag}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock(out: Path) -> int:
    lock = _sibling(out, "lock")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise OutputBusyError(
                    f"another seamless run (pid {pid}) is writing {out}; wait for it to finish, "
                    f"or remove {lock} if that process is gone"
                ) from None
            lock.unlink(missing_ok=True)  # stale: its writer is gone
            continue
        os.write(fd, str(os.getpid()).encode())
        return fd
    raise OutputBusyError(f"cannot lock {out} (remove {lock} if no seamless run is writing it)")


def _recover(out: Path) -> None:
    """Undo what a killed run left: its partial output, or an old output left aside.

    Called with the lock held, so no other run is writing any of these.
    """
    for stale in out.parent.glob(f".{out.name}.partial-*"):
        _remove(stale)
    if out.exists():
        for old in out.parent.glob(f".{out.name}.old-*"):
            _remove(old)  # the swap finished; only the clean-up was cut short
        return
    olds = sorted(out.parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds:
        os.rename(olds[-1], out)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def is_ours(path: Path) -> bool:
    """Whether ``path`` is something napari-seamless wrote (a TIFF, or a marked zarr)."""
    if path.is_file():
        return path.suffix.lower() in (".tif", ".tiff")
    if not path.is_dir():
        return False
    for meta in (".zattrs", "zarr.json"):
        f = path / meta
        if f.is_file():
            try:
                attrs = json.loads(f.read_text())
            except (OSError, ValueError):
                return False
            attrs = attrs.get("attributes", attrs)
            return OWNER_KEY in attrs
    return False


@contextlib.contextmanager
def output_transaction(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """Lock ``out``, yield a temporary sibling to write, and swap it in when the block ends.

    Parameters
    ----------
    out : Path
        The output file (TIFF) or folder (zarr).
    overwrite : bool
        Replace an existing output, if napari-seamless wrote it.

    Yields
    ------
    Path
        Where to write (does not exist yet). On an exception (Ctrl-C included) it is
        deleted and ``out`` is left as it was.

    Raises
    ------
    OutputBusyError
        If another run is writing ``out``.
    OutputError
        If ``out`` exists and ``overwrite`` is False, or it is not napari-seamless's own
        output, or its folder does not exist or is not writable.
    """
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"the folder of the output, {parent}, does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"the folder of the output, {parent}, is not writable")
    fd = _lock(out)
    tmp = _sibling(out, f"partial-{os.getpid()}")
    try:
        _recover(out)
        if out.exists() or out.is_symlink():
            if not overwrite:
                raise OutputError(f"output {out} exists; pass --overwrite to replace it")
            if not is_ours(out):
                raise OutputError(
                    f"{out} exists and was not written by napari-seamless (not a TIFF, nor a "
                    "zarr it marked as its own); it is never replaced: choose another output"
                )
        _remove(tmp)
        try:
            yield tmp
        except BaseException:
            _remove(tmp)
            raise
        if not tmp.exists():
            raise OutputError(f"nothing was written for {out}")
        if out.exists() and out.is_dir():
            aside = _sibling(out, f"old-{os.getpid()}")
            os.rename(out, aside)  # from here until the next rename, the old one is aside
            os.rename(tmp, out)
            _remove(aside)
        else:
            os.replace(tmp, out)  # atomic for files
    finally:
        os.close(fd)
        _sibling(out, "lock").unlink(missing_ok=True)
