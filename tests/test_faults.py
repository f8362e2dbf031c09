"""Fault injection: disk full, read-only folders, interrupts at every phase of a run.

Each test leaves a previous output in place, breaks the run in one way, and asserts that
the exit is one sentence, the previous output and the input are byte-identical, and no
partial file or lock is left (issue 7, part 5).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
import tifffile
from _files import folder, tree

from napari_seamless import io
from napari_seamless.cli import main


def _previous(tmp_path, suffix):
    """An input and a complete previous output, and how to run again over it."""
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, (np.random.default_rng(7).random((256, 256)) * 255).astype(np.uint8))
    out = tmp_path / f"labels.{suffix}"
    args = ["predict", str(src), "-o", str(out), "-q", "--tile", "224"]
    assert main(args) == 0

    def run(*extra):
        return main([*args, "--overwrite", *extra])

    return out, run


def _without_kept(entries):
    """``entries`` without the scratch of finished tiles a stopped run keeps for --resume."""
    return {name: t for name, t in entries.items() if ".partial-" not in name}


def _one_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in err), err
    return err[-1]


@contextlib.contextmanager
def _tmpfs(path, options):
    """A small tmpfs mounted at ``path`` (root with mount rights only; else the test skips)."""
    path.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# ----------------------------------------------------------------- disk full


def test_not_enough_room_is_refused_before_inference(tmp_path, capsys, monkeypatch):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, (np.random.default_rng(0).random((512, 512)) * 255).astype(np.uint8))
    ran = []
    from napari_seamless.engine import Predictor

    original = Predictor.run
    monkeypatch.setattr(Predictor, "run", lambda *a, **k: ran.append(1) or original(*a, **k))
    with _tmpfs(tmp_path / "small", "size=512k") as small:
        out = (
            small / "scores.zarr"
        )  # 2 x 512 x 512 float32 + its pyramid: 2.7 MiB, more than the 512 KiB there
        assert main(["predict", str(src), "-o", str(out), "-q", "--probabilities"]) == 2
        line = _one_line(capsys)
        assert "needs up to 2.7 MiB" in line and "free some space" in line
        assert not ran and list(small.iterdir()) == []


def test_disk_full_during_inference_loses_nothing(tmp_path, capsys, monkeypatch):
    out, run = _previous(tmp_path, "zarr")
    old = tree(out)
    from napari_seamless.stores import OmeZarrStore

    calls = []
    real = OmeZarrStore.write

    def full(self, zor, block):  # the third ZoR hits a full disk
        calls.append(zor)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))
        real(self, zor, block)

    monkeypatch.setattr(OmeZarrStore, "write", full)
    assert run() == 2
    assert "No space left on device" in _one_line(capsys)
    assert tree(out) == old  # the previous output is whole
    # the finished tiles wait for --resume once there is room again
    monkeypatch.setattr(OmeZarrStore, "write", real)
    assert run("--resume") == 0
    assert "resuming: 2 of" in capsys.readouterr().err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_write_the_kernel_refuses_loses_nothing(tmp_path):
    """A real failing write (RLIMIT_FSIZE: the kernel refuses writes past 16 KiB) in a
    separate process, while the TIFF is written at the end of the run."""
    out, _ = _previous(tmp_path, "tif")
    before = folder(tmp_path)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))

    cmd = [sys.executable, "-m", "napari_seamless.cli", "predict", str(tmp_path / "in.tif")]
    cmd += ["-o", str(out), "-q", "--tile", "224", "--overwrite", "--probabilities"]
    done = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit, timeout=300)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr and lines[-1].startswith(
        "seamless: error: File too large"
    )
    assert _without_kept(folder(tmp_path)) == before  # tiles kept aside for --resume


# ----------------------------------------------------------------- read-only


def test_read_only_output_folder_is_refused_before_any_work(tmp_path, capsys):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, np.zeros((64, 64), np.uint8))
    with _tmpfs(tmp_path / "ro", "size=1m,ro") as ro:
        assert main(["predict", str(src), "-o", str(ro / "labels.tif"), "-q"]) == 2
        assert "is not writable; choose another output path" in _one_line(capsys)


# ----------------------------------------------------------------- interrupts


def _interrupt(*_args, **_kwargs):
    raise KeyboardInterrupt


PHASES = [
    ("reading the input", "napari_seamless.io.read_image", "tif"),
    ("loading the model", "napari_seamless.models.load_model", "zarr"),
    ("halo analysis", "napari_seamless.analysis.receptive_field", "tif"),
    ("inference", "napari_seamless.stores.OmeZarrStore.write", "tif"),
    ("inference", "napari_seamless.stores.OmeZarrStore.write", "zarr"),
    ("the file swap", "napari_seamless.io._replace_file", "tif"),
    ("the folder swap", "napari_seamless.io._exchange", "zarr"),
]


@pytest.mark.parametrize(
    ("phase", "target", "suffix"), PHASES, ids=[f"{p[0]}-{p[2]}" for p in PHASES]
)
def test_ctrl_c_at_each_phase_leaves_the_previous_output(
    tmp_path, capsys, monkeypatch, phase, target, suffix
):
    _previous(tmp_path, suffix)
    before = folder(tmp_path)
    monkeypatch.setattr(target, _interrupt)
    assert main(["predict", str(tmp_path / "in.tif"), "-o", str(tmp_path / f"labels.{suffix}"),
                 "-q", "--tile", "224", "--overwrite"]) == 130  # fmt: skip
    line = _one_line(capsys)
    assert line.startswith("seamless: interrupted")
    after = folder(tmp_path)
    if "--resume" in line:  # every tile was done: they wait for --resume, never at the output
        kept = [name for name in after if ".partial-" in name]
        assert len(kept) == 1 and phase.startswith("the"), kept
        del after[kept[0]]
    assert after == before, f"interrupted during {phase}"


def test_ctrl_c_between_the_two_renames_puts_the_old_folder_back(tmp_path, monkeypatch):
    """Where the atomic exchange is not available the folder swap takes two renames."""
    _, run = _previous(tmp_path, "zarr")
    before = folder(tmp_path)
    monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    renames = []
    real_rename = os.rename

    def rename(a, b):
        renames.append((a, b))
        if len(renames) == 2:  # the old one is aside, the new one not yet in
            raise KeyboardInterrupt
        real_rename(a, b)

    monkeypatch.setattr(io.os, "rename", rename)
    assert run() == 130
    assert _without_kept(folder(tmp_path)) == before


def test_the_swap_replaces_a_folder_completely(tmp_path):
    out, run = _previous(tmp_path, "zarr")
    old = tree(out)
    assert run("--probabilities") == 0
    new = tree(out)
    assert new != old and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
