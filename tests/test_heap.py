"""engine.heap and the CLI's restart: freed blocks go back to the OS (glibc), checked by RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_seamless.engine import heap

# Free one 8 MB block (glibc's dynamic threshold rises to 8 MB), allocate 100 blocks of
# 4 MB, pin the heap's top with a small live block, free the 100: RSS before - after, MB.
SCRIPT = textwrap.dedent(
    """
    import numpy as np
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20
    big = np.ones(1 << 20); del big
    blocks = [np.ones(1 << 19) for _ in range(100)]
    pin = np.ones(1 << 14)
    before = rss(); del blocks; after = rss()
    print(before - after)
    """
)

ENV = heap.small_heap_environment({k: v for k, v in os.environ.items() if k != heap.MARKER})
needs_setting = pytest.mark.skipif(
    ENV is None, reason="no glibc >= 2.35 with transparent huge pages here"
)


def _freed(env: dict) -> float:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, env=env
    )
    return float(out.stdout)


@needs_setting
def test_freed_blocks_leave_the_process_only_with_the_setting():
    plain = {k: v for k, v in os.environ.items() if k not in ENV or k == "PATH"}
    # no malloc tuning at all: importing dask.distributed (the cluster tests, same process)
    # puts MALLOC_TRIM_THRESHOLD_ into os.environ, and that alone makes glibc give it back
    for key in [k for k in plain if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"]:
        plain.pop(key)
    # without it glibc keeps the 400 MB in its heap (so the test can fail: this is the case)
    assert _freed(plain) < 50
    assert _freed(ENV) > 350


def test_the_environment_adds_to_what_is_set_and_respects_the_user(monkeypatch):
    monkeypatch.setattr(heap, "_glibc_with_hugetlb", lambda: True)
    monkeypatch.setattr(heap, "_huge_pages_for_malloc", lambda: True)
    monkeypatch.setattr(heap.platform, "system", lambda: "Linux")
    env = heap.small_heap_environment({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"})
    assert env["GLIBC_TUNABLES"] == "glibc.pthread.rseq=0:glibc.malloc.hugetlb=1"
    assert env["MALLOC_MMAP_THRESHOLD_"] == "1048576" and env[heap.MARKER] == "1"
    mine = heap.small_heap_environment(
        {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0", "MALLOC_MMAP_THRESHOLD_": "65536"}
    )
    assert mine["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"
    assert mine["MALLOC_MMAP_THRESHOLD_"] == "65536"
    assert heap.small_heap_environment({heap.MARKER: "1"}) is None  # in place already
    monkeypatch.setattr(heap, "_huge_pages_for_malloc", lambda: False)
    assert heap.small_heap_environment({}) is None  # a 1 MiB threshold alone is slow


@needs_setting
def test_low_memory_restarts_the_command_once_with_the_setting(tmp_path, capsys):
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, (np.random.default_rng(0).random((512, 512)) * 255).astype(np.uint8))
    env = {k: v for k, v in os.environ.items() if k != heap.MARKER}
    cmd = [sys.executable, "-m", "napari_seamless.cli", "predict", str(src)]
    proc = subprocess.Popen(
        [*cmd, "-o", str(tmp_path / "o.zarr"), "--tile", "256", "-q", "--low-memory"], env=env
    )
    seen = ""
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline:
        try:
            seen = Path(f"/proc/{proc.pid}/environ").read_bytes().decode(errors="replace")
        except OSError:
            break
        if f"{heap.MARKER}=1" in seen:
            break
        time.sleep(0.05)
    assert proc.wait(timeout=300) == 0  # same PID, ran to the end
    assert f"{heap.MARKER}=1" in seen and "glibc.malloc.hugetlb=1" in seen
    # from Python the process cannot be restarted: said in one line, then run as is
    from napari_seamless.cli import main

    out = tmp_path / "p.zarr"
    assert main(["predict", str(src), "-o", str(out), "--tile", "512", "-q", "--low-memory"]) == 0
    assert "--low-memory applies to the seamless program" in capsys.readouterr().err
    assert out.exists()
