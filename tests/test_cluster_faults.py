"""Faults on the cluster (issue 11, part 3): a worker process killed half way through a run.

A real death (SIGKILL of the worker process, not a graceful close): the scheduler reschedules
the tasks the dead worker held on the survivor (or on the worker its nanny restarts), and
the output is still complete and exact. The kill is triggered from ``run_on_cluster``'s
``callback`` once half the tiles are done, never by a sleep, so the test does not race.
"""

import os
import signal
import time

import numpy as np
import pytest
import tifffile

from napari_seamless.data import DATA_DIR
from napari_seamless.stores import OmeZarrStore

distributed = pytest.importorskip("distributed")

from napari_seamless.engine.cluster import run_on_cluster  # noqa: E402


@pytest.mark.slow  # ~25 s: run with -m slow (the suite stays under 15 minutes)
def test_worker_killed_half_way_still_gives_the_complete_exact_output(tmp_path):
    from napari_seamless.engine import segment

    image = tifffile.imread(DATA_DIR / "nuclei2d.tif")
    assert image.shape == (512, 512)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, image)
    expected = segment("nuclei", image, tile=256)  # the reference, in this process

    out = tmp_path / "out.ome.zarr"
    killed: dict = {}
    seen = []
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        pids = client.run(os.getpid)  # worker address -> pid of its worker process
        assert len(pids) == 2 and os.getpid() not in pids.values()

        def callback(done, total):
            seen.append((done, total))
            if killed or done < total // 2:
                return
            # the worker that holds tasks right now (the scheduler has already handed the
            # finished worker its next batch): its in-flight work is lost with it
            processing = client.processing()
            victim = max(pids, key=lambda a: len(processing.get(a, ())))
            killed.update(
                address=victim,
                pid=pids[victim],
                done=done,
                lost=list(processing.get(victim, ())),
                at=time.time(),
            )
            os.kill(pids[victim], signal.SIGKILL)

        summary = run_on_cluster(client, "nuclei", src, out, 256, batch_tiles=2, callback=callback)
        alive = client.run(os.getpid)
        story = client.story(*killed["lost"]) if killed.get("lost") else []

    # the kill happened half way, on a worker with work in flight
    assert killed, "the callback never reached half way"
    assert 32 <= killed["done"] < 64
    assert killed["lost"], "the killed worker held no task when it died"
    assert killed["address"] not in alive  # it really died (a restarted one has a new address)
    assert killed["pid"] not in alive.values()
    # the tasks it held went back to the queue when it died and were finished afterwards by
    # another worker (the scheduler's own story: (source, key, start, finish, ..., time)).
    # At least one: the task it was running could, in a millisecond window, have finished
    # between the look at `processing` and the kill
    sched = [e for e in story if e[0] == "scheduler" and e[-1] >= killed["at"]]
    rerun = [
        key
        for key in killed["lost"]
        if any(e[1] == key and e[3] == "released" for e in sched)
        and any(e[1] == key and e[3] == "memory" for e in sched)
    ]
    assert rerun, story

    # complete: every tile computed once from the client's point of view and recorded done
    assert summary.tiles == summary.computed == 64
    assert summary.tasks == 32
    assert sum(summary.workers.values()) == 64
    assert summary.workers.get(killed["address"], 0) <= killed["done"]
    assert seen[-1] == (64, 64)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)

    store = OmeZarrStore.open(out, mode="r")
    assert store.complete and store.missing == [] and len(store.done) == 64

    # exact: level 0 equals the single-process run, the coarse levels its decimations
    level0 = np.asarray(store.levels[0][...])
    assert level0.dtype == expected.dtype
    np.testing.assert_array_equal(level0, expected)
    for k, level in enumerate(store.levels[1:], start=1):
        np.testing.assert_array_equal(np.asarray(level[...]), expected[:: 2**k, :: 2**k])

    # every level-0 chunk is a whole file: zarr's LocalStore writes a chunk to a temporary
    # '<key>.<uuid>.partial' and renames it over the key, so a worker killed mid-write can
    # leave only such an orphan next to the chunks, never a torn chunk (checked above)
    chunks = [p for p in (out / "0").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len([p for p in chunks if not p.name.endswith(".partial")]) == 64
