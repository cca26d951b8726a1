"""In-situ video: a stack of frames → masks → particle tracks → size distribution against time.

    python examples/insitu_video.py [--video VIDEO --run RUN_DIR] [--out tem_keras_video] [--fast]

``--video`` is a multi-frame file (.dm4/.dm3 stack, .ser, .emd, multi-page .tif, .mrc, .npy,
.h5), a folder of frames or a pattern such as ``"frames/*.tif"``, and ``--run`` a run folder
trained on images like it. Without them the script makes a synthetic movie of ripening
particles and first trains with ``fit``'s defaults on still images for ``--time-limit``. Results
go to ``--out`` (a folder of other files is refused; ``--overwrite`` replaces an earlier run's): ``particle_tracks.csv``,
``size_vs_time.csv``, ``size_vs_time.png``.
The notebook ``notebooks/04_in_situ_video.ipynb`` does the same with figures. For long movies on
many machines: ``tem-keras predict RUN VIDEO --out masks/ --particles --shard i/n``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import tem_keras
from tem_keras.errors import TEMInputError
from tem_keras.io.outputs import OutputFolder
from tem_keras.data.synthetic import make_dataset, make_stack
from tem_keras.inference import predict_stack
from tem_keras.analysis.particles import plot_size_vs_time, track_particles


#: what the example writes into --out
OUTPUTS = ("video", "train_data", "run", "particle_tracks.csv", "size_vs_time.csv",
           "size_vs_time.png")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", default=None, help="movie file, folder of frames or pattern")
    parser.add_argument("--run", type=Path, default=None, help="run folder of a trained model")
    parser.add_argument("--out", type=Path, default=Path("tem_keras_video"))
    parser.add_argument("--seconds-per-frame", type=float, default=2.0)
    parser.add_argument("--fast", action="store_true", help="tiny movie and two training steps")
    parser.add_argument("--time-limit", default="3min", help="training budget (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace what an earlier run of this example wrote in --out")
    args = parser.parse_args(argv)
    if (args.video is None) != (args.run is None):
        parser.error("give both --video and --run, or neither (synthetic demo)")

    out = args.out
    try:  # --overwrite replaces what this example wrote there before, never other files
        OutputFolder(out, "example", inputs=[args.video, args.run]).prepare(
            overwrite=args.overwrite, entries=OUTPUTS)
    except TEMInputError as error:
        parser.error(str(error))
    size = 96 if args.fast else 256
    if args.video is None:
        frames, _, _ = make_stack(5 if args.fast else 30, size, "bright-field", seed=4,
                                  coarsening_rate=0.05)
        (out / "video").mkdir()
        for t, frame in enumerate(frames):
            tem_keras.write_image(out / "video" / f"frame_{t:03d}.tif", frame, pixel_size_nm=0.5)
        video = out / "video"
        data = make_dataset(out / "train_data", n_images=6 if args.fast else 20, size=size,
                            mode="bright-field", seed=5)
        budget = {"epochs": 1, "steps_per_epoch": 2} if args.fast else {"time_limit": args.time_limit}
        run = tem_keras.fit(data, seed=0, run_dir=out / "run", verbose=0, **budget)
    else:
        video, run = args.video, tem_keras.Run.load(args.run)

    stack = tem_keras.read_stack(video)          # lazy: frames are read when used
    print(stack)
    masks, pixel_size_nm = [], stack.pixel_size_nm
    for prediction in predict_stack(run, stack, progress=True):   # one frame in memory at a time
        masks.append(prediction.mask)
    tracks = track_particles(masks, pixel_size_nm, max_distance=8, memory=1)
    tracks["time_s"] = tracks["frame"] * args.seconds_per_frame
    tracks.to_csv(out / "particle_tracks.csv", index=False)
    column = "equivalent_diameter_nm" if pixel_size_nm else "equivalent_diameter_px"
    per_frame = tracks.groupby("time_s")[column].agg(["count", "mean", "std", "median"])
    per_frame.to_csv(out / "size_vs_time.csv")
    print(per_frame.round(3).to_string())

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    plot_size_vs_time(tracks, column, ax=axes[0], seconds_per_frame=args.seconds_per_frame,
                      min_length=max(2, len(masks) // 2))
    axes[1].errorbar(per_frame.index, per_frame["mean"], yerr=per_frame["std"], fmt="o-", capsize=2)
    axes[1].set(xlabel="time (s)", ylabel=column.replace("_", " "), title="mean size (± std)")
    fig.savefig(out / "size_vs_time.png", dpi=110, bbox_inches="tight")
    print(f"{tracks['particle'].nunique()} tracks over {len(masks)} frames; results in {out}")
    return tracks


if __name__ == "__main__":
    main()
