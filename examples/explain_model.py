"""Explain a segmentation model: Grad-CAM, kernels and their classical matches, activations, ERF.

    python examples/explain_model.py [RUN_DIR] [--image IMAGE] [--out tem_keras_explain] [--fast]

With a run folder (from ``tem_keras.fit`` / ``tem-keras fit``) it explains that model on
``--image`` (default: the run's first test image). Without one it trains, on generated
bright-field micrographs, a small UNet and Horwath et al.'s shallow-wide CNN (32 kernels of 7×7
and a 1×1 read-out), whose kernels are compared with Gaussian / LoG / Sobel / Gabor filters.
Figures (PNG) and tables (CSV) go to ``--out`` (a folder of other files is refused; an earlier
run's output is replaced only with ``--overwrite``). The notebook ``notebooks/03_explainability.ipynb`` does the same with explanations.
The command line offers the same: ``tem-keras explain RUN IMAGE --method gradcam --out DIR``.
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
from tem_keras import explain
from tem_keras.data.datasets import discover
from tem_keras.data.synthetic import make_dataset


def save_figure(fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


#: what the example writes into --out
OUTPUTS = ("data", "unet", "shallow") + tuple(
    f"{name}_{suffix}" for name in ("model", "unet", "shallow_cnn_wide")
    for suffix in ("grad_cam.png", "activations.png", "effective_receptive_field.png",
                   "kernel_matches.png", "kernels.png", "kernel_matches.csv"))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, default=None, help="a finished run folder")
    parser.add_argument("--image", type=Path, default=None, help="image to explain")
    parser.add_argument("--out", type=Path, default=Path("tem_keras_explain"))
    parser.add_argument("--fast", action="store_true", help="tiny data and two training steps")
    parser.add_argument("--time-limit", default="2min", help="training budget (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace what an earlier run of this example wrote in --out")
    args = parser.parse_args(argv)

    out = args.out
    try:  # --overwrite replaces what this example wrote there before, never other files
        OutputFolder(out, "example", inputs=[args.run_dir, args.image]).prepare(
            overwrite=args.overwrite, entries=OUTPUTS)
    except TEMInputError as error:
        parser.error(str(error))
    runs = {}
    if args.run_dir is not None:
        runs["model"] = tem_keras.Run.load(args.run_dir)
    else:
        data = make_dataset(out / "data", n_images=6 if args.fast else 16,
                            size=96 if args.fast else 256, mode="bright-field", seed=3)
        budget = {"epochs": 1, "steps_per_epoch": 2} if args.fast else {"time_limit": args.time_limit}
        fit = {"seed": 0, "verbose": 0, "mixed_precision": "float32",   # explanations differentiate
               **budget}                                                # the float32 network
        runs["unet"] = tem_keras.fit(data, {"name": "unet", "depth": 2 if args.fast else 3,
                                            "base_filters": 8, "batch_norm": True},
                                     run_dir=out / "unet", **fit)
        runs["shallow_cnn_wide"] = tem_keras.fit(data, "shallow_cnn_wide", run_dir=out / "shallow", **fit)
    first = next(iter(runs.values()))
    if args.image is not None:
        image = tem_keras.read_image(args.image)
    else:
        samples = {s.stem: s for s in discover(first.config["data"]["dataset_dir"]).labelled}
        image = tem_keras.read_image(samples[first.split["test"][0]].image)

    summary = {}
    for name, run in runs.items():
        model = run.model
        _, fig = explain.grad_cam(model, image, return_figure=True)
        save_figure(fig, out / f"{name}_grad_cam.png")
        _, fig = explain.activation_maps(model, image, max_channels=6, return_figure=True)
        save_figure(fig, out / f"{name}_activations.png")
        erf, fig = explain.effective_receptive_field(model, return_figure=True)
        save_figure(fig, out / f"{name}_effective_receptive_field.png")
        summary[name] = {"analytic_rf_px": erf.analytic_px, "erf_95_percent_px": erf.size_px}
        print(f"{name}: analytic receptive field {erf.analytic_px:g} px, 95 % of the gradient "
              f"within {erf.size_px} px")
        try:
            matches, fig = explain.match_kernels(model, return_figure=True)
        except ValueError as error:   # e.g. non-square kernels
            print(f"{name}: no kernel matching ({error})")
            continue
        save_figure(fig, out / f"{name}_kernel_matches.png")
        save_figure(explain.plot_kernels(model), out / f"{name}_kernels.png")
        matches.to_csv(out / f"{name}_kernel_matches.csv", index=False)
        print(f"{name}: best classical matches of the first-layer kernels:",
              matches["family"].value_counts().to_dict())
    print(f"figures and tables in {out}")
    return summary


if __name__ == "__main__":
    main()
