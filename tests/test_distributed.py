"""Prediction into a Zarr store, in this process and on a real Dask LocalCluster.

The store's masks are compared, bit for bit, with the single-process ``predict_stack`` of the
same model on the same frames; the particle table and the tracks with
``measure_particles``/``track_particles`` of those masks. The cluster tests (``slow``: each
worker process imports TensorFlow) share one LocalCluster of 2 worker processes: a whole job,
a job during which a worker is killed (its nanny restarts it), and a job interrupted by Ctrl-C
(SIGINT) then run again, which must compute only the chunks without a marker.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("zarr")
pytest.importorskip("pyarrow")

from tem_keras.inference import predict_stack  # noqa: E402


@pytest.fixture(scope="module")
def video():
    """40 frames of 128² of a synthetic in-situ video (ripening, drift)."""
    from tem_keras.data.synthetic import make_stack

    frames, _, _ = make_stack(40, 128, seed=3)
    return frames


def masks_of(predictions) -> np.ndarray:
    return np.stack([p.mask for p in predictions])


# -------------------------------------------------------------------------- in this process
def test_store_in_one_process_equals_predict_stack_and_resumes(tiny_run, tmp_path):
    from tem_keras.data.synthetic import make_stack

    frames, _, _ = make_stack(10, 64, seed=1)
    reference = list(predict_stack(tiny_run.path, frames, return_probabilities=True))
    out = tmp_path / "video.zarr"
    report = predict_stack(tiny_run.path, frames, out=out, chunk_frames=3, return_probabilities=True,
                           pixel_size_nm=0.25)
    assert report.computed == [0, 1, 2, 3] and report.skipped == []
    assert report.masks.shape == (10, 64, 64) and report.masks.dtype == np.uint8
    assert report.masks.chunks == (1, 64, 64)  # chunked by frame
    np.testing.assert_array_equal(report.masks[:], masks_of(reference))
    # float32 sums in another batching differ in the last bits (1.2e-7 seen on AVX2): a tolerance
    np.testing.assert_allclose(report.store.probabilities[:],
                               np.stack([p.probabilities[..., 1] for p in reference]), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(report.store.thresholds, [p.threshold for p in reference])
    info = report.store.info
    assert info["pixel_size_nm"] == 0.25 and report.masks.attrs["pixel_size_nm"] == 0.25
    provenance = info["provenance"]
    assert provenance["model"] == str(Path(tiny_run.path).absolute())
    assert provenance["tem_keras_version"] and provenance["created"] and info["completed"]
    assert provenance["threshold"] is None  # the model's own, as applied per frame in thresholds/
    assert report.store.frames()["index"].tolist() == list(range(10))

    again = predict_stack(tiny_run.path, frames, out=out, chunk_frames=3, return_probabilities=True,
                          pixel_size_nm=0.25)
    assert again.computed == [] and again.skipped == [0, 1, 2, 3]

    # another job into the same store: refused, saying what differs; replaced when asked
    with pytest.raises(FileExistsError, match="another job.*threshold.*overwrite"):
        predict_stack(tiny_run.path, frames, out=out, chunk_frames=3, threshold=0.3)
    np.testing.assert_array_equal(report.masks[:], masks_of(reference))
    replaced = predict_stack(tiny_run.path, frames, out=out, chunk_frames=5, threshold=0.3,
                             overwrite=True)
    assert replaced.computed == [0, 1] and replaced.store.probabilities is None
    assert np.all(replaced.store.thresholds == np.float32(0.3))


def test_store_particles_and_tracks_come_from_the_merged_table(tiny_run, tmp_path):
    from tem_keras.data.synthetic import make_stack
    from tem_keras.analysis.particles import measure_particles, track_particles

    frames, _, _ = make_stack(5, 64, seed=2)
    np.save(tmp_path / "video.npy", frames)
    reference = list(predict_stack(tiny_run.path, tmp_path / "video.npy", return_image=True))
    report = predict_stack(tiny_run.path, tmp_path / "video.npy", out=tmp_path / "p.zarr",
                           chunk_frames=2, track=True, min_area=4)
    parts = sorted(p.name for p in (tmp_path / "p.zarr" / "particles").glob("*.parquet"))
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    table = pd.read_parquet(tmp_path / "p.zarr" / "particles")  # one table, as pandas reads it
    expected = [measure_particles(p.mask, image=p.image, min_area=4) for p in reference]
    assert table["index"].tolist() == [i for i, t in enumerate(expected) for _ in range(len(t))]
    assert set(table["image"]) == {f"video_f{i:05d}" for i in range(5) if len(expected[i])}
    pd.testing.assert_frame_equal(table.drop(columns=["index", "image", "frame"]),
                                  pd.concat(expected, ignore_index=True), check_dtype=False)
    tracks = report.store.tracks()
    pd.testing.assert_frame_equal(tracks, track_particles(expected), check_dtype=False)


def test_store_refuses_what_it_must_not_touch(tiny_run, tmp_path, monkeypatch):
    from tem_keras.errors import TEMInputError

    frames = np.random.default_rng(0).normal(100, 10, (4, 32, 32)).astype(np.float32)
    mine = tmp_path / "notes.zarr"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    for overwrite in (False, True):  # a folder that is not a store is never replaced
        with pytest.raises(FileExistsError, match="not a tem_keras prediction store"):
            predict_stack(tiny_run.path, frames, out=mine, overwrite=overwrite)
    assert (mine / "notes.txt").read_text() == "my notes"
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        predict_stack(tiny_run.path, frames, out=tmp_path / "file.zarr")
    with pytest.raises(TypeError, match="as a path"):
        predict_stack(tiny_run.model, frames, out=tmp_path / "m.zarr")
    with pytest.raises(ValueError, match="frames="):
        predict_stack(tiny_run.path, frames, out=tmp_path / "f.zarr", frames="0/2")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00 not a tiff")
    with pytest.raises(TEMInputError, match="bad.tif"):
        predict_stack(tiny_run.path, [bad], out=tmp_path / "b.zarr")
    np.save(tmp_path / "a.npy", frames)
    np.save(tmp_path / "small.npy", frames[:, :16, :16])
    with pytest.raises(TEMInputError, match=r"small.npy.*frames of one size"):
        predict_stack(tiny_run.path, [tmp_path / "a.npy", tmp_path / "small.npy"],
                      out=tmp_path / "s.zarr", chunk_frames=4)
    monkeypatch.setitem(sys.modules, "zarr", None)  # as without the extra
    with pytest.raises(ImportError, match=r"tem_keras\[cluster\]"):
        predict_stack(tiny_run.path, frames, out=tmp_path / "z.zarr")


@pytest.mark.slow
def test_command_line_writes_a_store_and_refuses_folder_options(tiny_run, tmp_path, capsys):
    from tem_keras.cli import main
    from tem_keras.distributed import PredictionStore

    frames = np.random.default_rng(1).normal(100, 10, (3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "s.npy", frames)
    args = ["predict", str(tiny_run.path), str(tmp_path / "s.npy"), "-o", str(tmp_path / "o.zarr"),
            "--quiet"]
    assert main(args) == 0 and "wrote 3 frame(s)" in capsys.readouterr().out
    np.testing.assert_array_equal(PredictionStore(tmp_path / "o.zarr").masks[:],
                                  masks_of(predict_stack(tiny_run.path, frames)))
    assert main(args) == 0 and "0 chunk(s) computed, 1 already done" in capsys.readouterr().out
    assert main(args + ["--overlay"]) == 2 and "--overlay" in capsys.readouterr().err
    out_folder = ["-o", str(tmp_path / "folder")]
    assert main(args[:3] + out_folder + ["--scheduler", "local:2"]) == 2
    assert "-o OUT.zarr" in capsys.readouterr().err
    assert main(args[:3] + out_folder + ["--track"]) == 2 and "--track" in capsys.readouterr().err


@pytest.mark.slow
def test_store_reads_dask_arrays_and_lazy_signals(tiny_run, tmp_path):
    """A Dask array, RosettaSciIO's lazy signal dictionary and a lazy HyperSpy signal give the
    masks of the same frames read from the file, and the signals' calibration."""
    import tifffile

    da = pytest.importorskip("dask.array")
    from tem_keras.data.synthetic import make_stack

    frames, _, _ = make_stack(6, 64, seed=4)
    path = tmp_path / "video.tif"
    tifffile.imwrite(path, frames, imagej=True, resolution=(5.0, 5.0), metadata={"unit": "nm"})
    reference = masks_of(predict_stack(tiny_run.path, path))
    lazy = da.from_array(frames, chunks=(4, 64, 64))
    report = predict_stack(tiny_run.path, lazy, out=tmp_path / "d.zarr", chunk_frames=3)
    np.testing.assert_array_equal(report.masks[:], reference)
    assert report.store.info["job"]["input"]["dask_name"] == lazy.name

    from rsciio.tiff import file_reader

    signal = file_reader(str(path), lazy=True)[0]
    assert hasattr(signal["data"], "dask")
    report = predict_stack(tiny_run.path, signal, out=tmp_path / "r.zarr", chunk_frames=4)
    np.testing.assert_array_equal(report.masks[:], reference)
    assert report.store.info["pixel_size_nm"] is None  # RosettaSciIO reads no unit in ImageJ TIFFs

    hs = pytest.importorskip("hyperspy.api")
    s = hs.signals.Signal2D(frames).as_lazy()
    for axis in s.axes_manager.signal_axes:
        axis.scale, axis.units = 2.0, "Å"
    report = predict_stack(tiny_run.path, s, out=tmp_path / "h.zarr", chunk_frames=4)
    np.testing.assert_array_equal(report.masks[:], reference)
    assert report.store.info["pixel_size_nm"] == pytest.approx(0.2)


# -------------------------------------------------------------------------- on a LocalCluster
@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes (one thread each) importing this checkout's tem_keras."""
    distributed = pytest.importorskip("distributed")
    import tem_keras

    here = str(Path(tem_keras.__file__).resolve().parents[1])
    path = os.pathsep.join([here] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, env={"PYTHONPATH": path})
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def tta_reference(tiny_run, video):
    """Single-process masks with test-time augmentation (8 times the work per frame, so that a
    job lasts long enough to be interrupted)."""
    return masks_of(predict_stack(tiny_run.path, video, tta=True))


def wait_for(condition, timeout: float = 60.0, step: float = 0.005) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("condition not met")
        time.sleep(step)


def wait_until_idle(client) -> None:
    """No task left on the scheduler and none still running in a worker thread."""
    def idle():
        busy = client.run(lambda dask_worker: len(dask_worker.state.executing))
        return not client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks)) \
            and not any(busy.values())
    wait_for(idle, step=0.1)


@pytest.mark.slow
def test_cluster_store_equals_single_process(client, tiny_run, video, tmp_path):
    reference = list(predict_stack(tiny_run.path, video, return_probabilities=True))
    report = predict_stack(tiny_run.path, video, client=client, out=tmp_path / "c.zarr",
                           chunk_frames=4, return_probabilities=True)
    assert sorted(report.computed) == list(range(10)) and sum(report.workers.values()) == 10
    np.testing.assert_array_equal(report.masks[:], masks_of(reference))
    # float32 sums in another batching differ in the last bits (1.2e-7 seen on AVX2): a tolerance
    np.testing.assert_allclose(report.store.probabilities[:],
                               np.stack([p.probabilities[..., 1] for p in reference]), rtol=0, atol=1e-5)
    pids = set(client.run(os.getpid).values())
    assert {m["pid"] for m in report.store.markers()} <= pids and os.getpid() not in pids
    # a file among the inputs that no worker can read: one clear error naming it
    from tem_keras.errors import TEMInputError

    np.save(tmp_path / "good.npy", video[:4])
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY broken")
    with pytest.raises(TEMInputError, match="broken.npy"):
        predict_stack(tiny_run.path, [tmp_path / "good.npy", tmp_path / "broken.npy"],
                      client=client, out=tmp_path / "b.zarr", chunk_frames=4)


@pytest.mark.slow
def test_command_line_on_a_running_scheduler(client, tiny_run, video, tmp_path, capsys):
    from tem_keras.cli import main
    from tem_keras.distributed import PredictionStore

    np.save(tmp_path / "v.npy", video[:8])
    args = ["predict", str(tiny_run.path), str(tmp_path / "v.npy"), "-o", str(tmp_path / "v.zarr"),
            "--scheduler", client.scheduler.address, "--chunk-frames", "2", "--quiet"]
    assert main(args) == 0
    assert "on 2 Dask worker(s) (4 chunk(s) computed, 0 already done)" in capsys.readouterr().out
    np.testing.assert_array_equal(PredictionStore(tmp_path / "v.zarr").masks[:],
                                  masks_of(predict_stack(tiny_run.path, video[:8])))
    assert client.status == "running"  # the command closed its own client, not the cluster


@pytest.mark.slow
def test_cluster_job_survives_a_killed_worker(client, tiny_run, video, tta_reference, tmp_path):
    out = tmp_path / "k.zarr"
    from tem_keras.distributed import PredictionStore

    store = PredictionStore(out)
    killed = {}

    def kill_a_busy_worker():
        # halfway: the restarted worker (importing TensorFlow again) is not needed to finish
        wait_for(lambda: (out / "done").is_dir() and len(store.done_chunks()) >= 10)
        pids = client.run(os.getpid)
        busy = {}

        def a_worker_is_busy():
            busy.update({w: [k for k in keys if str(k).startswith("tem-keras-chunk-")]
                         for w, keys in client.processing().items()})
            return any(busy.values())

        wait_for(a_worker_is_busy)
        worker, keys = next((w, k) for w, k in busy.items() if k)
        killed.update(pid=pids[worker], keys=list(keys), done=len(store.done_chunks()))
        os.kill(pids[worker], signal.SIGKILL)

    thread = threading.Thread(target=kill_a_busy_worker, daemon=True)
    thread.start()
    report = predict_stack(tiny_run.path, video, client=client, out=out, chunk_frames=2, tta=True)
    thread.join(timeout=5)
    assert killed and killed["done"] < 20  # killed mid-run
    assert sorted(report.computed) == list(range(20))
    np.testing.assert_array_equal(report.masks[:], tta_reference)
    lost = [int(key.split("-")[3]) for key in killed["keys"]]  # tem-keras-chunk-<i>-<token>
    markers = {m["chunk"]: m for m in report.store.markers()}
    assert all(markers[c]["pid"] != killed["pid"] for c in lost)  # rerun by another worker


@pytest.mark.slow
def test_cluster_job_interrupted_then_rerun_computes_only_missing_chunks(client, tiny_run, video,
                                                                         tta_reference, tmp_path,
                                                                         monkeypatch):
    import tem_keras.distributed.cluster as cluster
    from tem_keras.distributed import PredictionStore

    out = tmp_path / "r.zarr"
    store = PredictionStore(out)
    real_bar = cluster._progress_bar
    pressed = []

    def bar_pressing_ctrl_c(total, progress):
        """The progress bar; its first update (the first chunk done) sends this process a SIGINT,
        as Ctrl-C does, while most of the 40 chunks are still pending."""
        bar = real_bar(total, progress)
        update = bar.update

        def first_update(n=1):
            update(n)
            if not pressed:
                pressed.append(True)
                os.kill(os.getpid(), signal.SIGINT)

        bar.update = first_update
        return bar

    monkeypatch.setattr(cluster, "_progress_bar", bar_pressing_ctrl_c)
    # Ctrl-C as a terminal delivers it: Python's own handler, whatever an earlier test in this
    # process left installed
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            predict_stack(tiny_run.path, video, client=client, out=out, chunk_frames=1, tta=True)
    finally:
        signal.signal(signal.SIGINT, handler)
    assert pressed, "the job finished without updating its progress bar"
    monkeypatch.setattr(cluster, "_progress_bar", real_bar)
    wait_until_idle(client)  # tasks cancelled; the ones already running have finished
    before = {c: store.marker(c).stat().st_mtime_ns for c in store.done_chunks()}
    assert 1 <= len(before) < 40
    assert not (tmp_path / ".r.zarr.lock").exists()  # the interrupted job released the store

    report = predict_stack(tiny_run.path, video, client=client, out=out, chunk_frames=1, tta=True)
    assert report.skipped == sorted(before)
    assert sorted(report.computed) == sorted(set(range(40)) - set(before))
    assert {c: store.marker(c).stat().st_mtime_ns for c in before} == before  # not rewritten
    np.testing.assert_array_equal(report.masks[:], tta_reference)


@pytest.mark.slow
def test_store_of_a_real_lazy_emd_signal(tiny_run, shared_data, tmp_path):
    """A 2048² Velox EMD micrograph of Au particles as RosettaSciIO's lazy signal: the masks of
    the file read by tem_keras, and the file's pixel size."""
    from rsciio.emd import file_reader

    path = shared_data / "formats" / "temul_toolkit_experimental" / "example_Au_nanoparticle.emd"
    if not path.is_file():
        pytest.skip(f"{path.name} is not in ../shared/data")
    expected = list(predict_stack(tiny_run.path, path))
    signal = next(s for s in file_reader(str(path), lazy=True) if len(s["data"].shape) == 2)
    report = predict_stack(tiny_run.path, signal, out=tmp_path / "emd.zarr")
    np.testing.assert_array_equal(report.masks[:], masks_of(expected))
    assert report.store.info["pixel_size_nm"] == pytest.approx(expected[0].pixel_size_nm)
