"""Resume (issue 9): a run killed with SIGKILL about half way and resumed computes only the
missing tiles and gives the result of an uninterrupted run, byte for byte."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import zarr

from napari_seamless.cli import main
from napari_seamless.grid import count
from napari_seamless.stores import OmeZarrStore


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    """A tiled, compressed 512 x 512 uint16 TIFF (read lazily, tile by tile)."""
    path = tmp_path_factory.mktemp("slide") / "slide.tif"
    rng = np.random.default_rng(3)
    img = (rng.random((512, 512)) * 4000).astype(np.uint16)
    tifffile.imwrite(path, img, tile=(256, 256), compression="zlib")
    return path


def _kill_half_way(cmd, scratch_glob, folder):
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    done = 0
    while time.time() < deadline and proc.poll() is None:
        found = list(folder.glob(scratch_glob))
        if found:
            try:
                store = OmeZarrStore.open(found[0], mode="r")
                done = len(store.done)
                if done >= store.tiles_total // 2:
                    break
            except Exception:  # noqa: BLE001 - being created
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return done


# the TIFF output goes through the same scratch OME-Zarr as a zarr output, then its swap
@pytest.mark.parametrize("suffix", [pytest.param("zarr", marks=pytest.mark.slow), "tif"])
def test_sigkill_half_way_then_resume_equals_an_uninterrupted_run(slide, tmp_path, capsys, suffix):
    whole = tmp_path / f"whole.{suffix}"
    args = ["-q", "--tile", "256"]
    assert main(["predict", str(slide), "-o", str(whole), *args]) == 0
    out = tmp_path / f"labels.{suffix}"
    cmd = [sys.executable, "-m", "napari_seamless.cli", "predict", str(slide), "-o", str(out)]
    killed_at = _kill_half_way([*cmd, *args], f".labels.{suffix}.partial-*", tmp_path)
    assert killed_at >= 32  # of 64 tiles (ZoR 64: 8 x 8)
    assert not out.exists()  # nothing at the output path until it is complete
    capsys.readouterr()
    # without --resume the run refuses to guess
    assert main(["predict", str(slide), "-o", str(out), *args]) == 2
    assert "--resume" in capsys.readouterr().err
    # other settings cannot resume it, and the refusal keeps the tiles
    assert main(["predict", str(slide), "-o", str(out), "-q", "--tile", "512", "--resume"]) == 2
    assert "tile" in capsys.readouterr().err
    assert main(["predict", str(slide), "-o", str(out), *args, "--resume"]) == 0
    err = capsys.readouterr().err
    m = re.search(r"resuming: (\d+) of (\d+) tiles were done; computing the (\d+) missing", err)
    assert m, err
    done, total, missing = map(int, m.groups())
    assert done >= killed_at and done + missing == total
    assert f"({count(missing, 'tile')} computed, {done} resumed" in err
    if suffix == "zarr":
        a, b = zarr.open_group(str(out), mode="r"), zarr.open_group(str(whole), mode="r")
        assert sorted(a.array_keys()) == sorted(b.array_keys())
        for k in a.array_keys():
            np.testing.assert_array_equal(a[k][:], b[k][:])  # every pyramid level
        assert a.attrs["napari_seamless"]["complete"] is True
    else:
        np.testing.assert_array_equal(tifffile.imread(out), tifffile.imread(whole))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_resume_without_a_stopped_run_just_runs(slide, tmp_path, capsys):
    out = tmp_path / "labels.zarr"
    assert main(["predict", str(slide), "-o", str(out), "-q", "--tile", "512", "--resume"]) == 0
    assert "no stopped run to resume" in capsys.readouterr().err


def test_ctrl_c_keeps_the_finished_tiles_and_says_how_to_go_on(
    slide, tmp_path, capsys, monkeypatch
):
    out = tmp_path / "labels.zarr"
    real = OmeZarrStore.mark_done
    calls = []

    def interrupt_at_five(self, index):
        calls.append(index)
        if len(calls) == 5:
            raise KeyboardInterrupt
        real(self, index)

    monkeypatch.setattr(OmeZarrStore, "mark_done", interrupt_at_five)
    args = ["predict", str(slide), "-o", str(out), "-q", "--tile", "256"]
    assert main(args) == 130
    assert "--resume" in capsys.readouterr().err
    monkeypatch.setattr(OmeZarrStore, "mark_done", real)
    assert main([*args, "--resume"]) == 0
    assert "resuming: 4 of 64" in capsys.readouterr().err
