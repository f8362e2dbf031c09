"""The output transaction: lock, temporary sibling, atomic swap, ownership (issue 7, part)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import zarr
from _files import tree

from napari_seamless.cli import main
from napari_seamless.io import OutputBusyError, OutputError, output_transaction


def test_exception_inside_leaves_the_old_output_identical(tmp_path):
    out = tmp_path / "labels.tif"
    tifffile.imwrite(out, np.arange(16, dtype=np.uint8).reshape(4, 4))
    before = tree(out)
    with pytest.raises(KeyboardInterrupt), output_transaction(out, overwrite=True) as tmp:
        tifffile.imwrite(tmp, np.zeros((4, 4), np.uint8))
        raise KeyboardInterrupt
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]


def test_overwrite_replaces_only_our_own_outputs(tmp_path, capsys):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, (np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    foreign = tmp_path / "out.zarr"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a week of work")
    assert main(["predict", str(src), "-o", str(foreign), "--overwrite", "-q"]) == 2
    assert "was not written by napari-seamless" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "a week of work"
    ours = tmp_path / "labels.zarr"
    assert main(["predict", str(src), "-o", str(ours), "-q"]) == 0
    assert main(["predict", str(src), "-o", str(ours), "--overwrite", "-q"]) == 0
    assert zarr.open_group(str(ours), mode="r").attrs["napari_seamless"]["complete"] is True
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers


def test_a_second_writer_is_refused_and_a_stale_lock_is_cleared(tmp_path):
    out = tmp_path / "labels.tif"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".labels.tif.lock").write_text(str(other.pid))
        with pytest.raises(OutputBusyError, match=f"pid {other.pid}"):
            with output_transaction(out):
                pass
    finally:
        other.kill()
        other.wait()
    with output_transaction(out) as tmp:  # its writer is gone: the lock is stale
        tmp.write_bytes(b"new")
    assert out.read_bytes() == b"new" and not (tmp_path / ".labels.tif.lock").exists()


def test_an_interrupted_folder_swap_is_undone_by_the_next_run(tmp_path):
    out = tmp_path / "labels.zarr"
    zarr.open_array(str(out), mode="w", shape=(4, 4), dtype="u1").attrs["napari_seamless"] = {}
    before = tree(out)
    os.rename(out, tmp_path / ".labels.zarr.old-12345")  # killed between the two renames
    with pytest.raises(OutputError, match="exists"), output_transaction(out):
        pass
    assert tree(out) == before


def test_missing_or_read_only_folder_is_one_clear_error(tmp_path):
    with (
        pytest.raises(OutputError, match="does not exist"),
        output_transaction(tmp_path / "no" / "o.tif"),
    ):
        pass
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        with pytest.raises(OutputError, match="not writable"), output_transaction(ro / "o.tif"):
            pass
    finally:
        ro.chmod(0o700)


# Ctrl-C at every phase is tests/test_faults.py's; here SIGINT runs with -m slow
@pytest.mark.parametrize(
    "sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM, signal.SIGKILL]
)
def test_a_killed_run_leaves_the_previous_output_whole(tmp_path, sig):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, (np.random.default_rng(1).random((512, 512)) * 255).astype(np.uint8))
    out = tmp_path / "labels.zarr"
    # the runs in this process use big tiles (fast); the one to kill small ones (slow)
    assert main(["predict", str(src), "-o", str(out), "-q", "--tile", "512"]) == 0
    before = tree(out)
    cmd = [sys.executable, "-m", "napari_seamless.cli", "predict", str(src), "-o", str(out)]
    proc = subprocess.Popen([*cmd, "--overwrite", "--tile", "256"], stderr=subprocess.PIPE)
    partial = tmp_path / f".labels.zarr.partial-{proc.pid}"
    deadline = time.time() + 120
    while not partial.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(sig)
    proc.communicate(timeout=60)  # waits and closes the pipe
    assert proc.returncode != 0, "the run finished before it could be interrupted"
    assert tree(out) == before
    # finished tiles are kept for --resume: the next run refuses to guess, and --fresh
    # discards them (a lock left by SIGKILL is stale) and replaces the output
    kept = [p for p in tmp_path.iterdir() if p.name.startswith(".labels.zarr.partial-")]
    again = ["predict", str(src), "-o", str(out), "-q", "--tile", "512", "--overwrite"]
    if kept:
        assert main(again) == 2
        assert tree(out) == before
    assert main([*again, "--fresh"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".labels.zarr.")]
