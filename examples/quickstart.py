"""tem_keras quickstart through the Python API: data set → fit → predict → particles in nm → export.

    python examples/quickstart.py [--fast] [--data MY_DATASET] [--out tem_keras_quickstart]

Without ``--data`` it trains on generated bright-field micrographs (with exact masks); with
``--data`` on your dataset folder (``images/`` + ``masks/``, see the README), which is only read.
Everything is written under ``--out``: a folder of other files is refused, and an earlier run's
output is replaced only with ``--overwrite`` (nothing else there is removed).
Training uses ``fit``'s defaults (model, patches and epochs planned from the data) for
``--time-limit`` (3 minutes); ``--fast`` uses tiny images and two training steps (seconds).
The notebook ``notebooks/01_quickstart.ipynb`` does the same with figures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

import tem_keras
from tem_keras.errors import TEMInputError
from tem_keras.io.outputs import OutputFolder
from tem_keras.data.datasets import discover, read_mask
from tem_keras.data.synthetic import make_dataset
from tem_keras.export import export
from tem_keras.inference import predict
from tem_keras.analysis.metrics import segmentation_scores
from tem_keras.analysis.particles import size_distribution


#: what the example writes into --out
OUTPUTS = ("data", "run", "particles.csv", "export")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="your dataset folder (read only)")
    parser.add_argument("--out", type=Path, default=Path("tem_keras_quickstart"))
    parser.add_argument("--fast", action="store_true", help="tiny data and two training steps")
    parser.add_argument("--time-limit", default="3min", help="training budget (default %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace what an earlier run of this example wrote in --out")
    args = parser.parse_args(argv)

    fast = args.fast
    out = args.out
    try:  # --overwrite replaces what this example wrote there before, never other files
        OutputFolder(out, "example", inputs=[args.data]).prepare(
            overwrite=args.overwrite, entries=OUTPUTS)
    except TEMInputError as error:
        parser.error(str(error))

    # 1. a dataset folder
    data = args.data or make_dataset(out / "data", n_images=6 if fast else 24, size=96 if fast else 256,
                                     mode="bright-field", seed=0)
    dataset = discover(data)
    print(dataset)

    # 2. train with fit's defaults: model, patches and epochs are planned from the data
    budget = {"epochs": 1, "steps_per_epoch": 2} if fast else {"time_limit": args.time_limit}
    run = tem_keras.fit(data, seed=0, run_dir=out / "run", verbose=2, **budget)
    print("test images, per-image mean:", {k: round(v["mean"], 3) for k, v in run.metrics["per_image"].items()})

    # 3. predict the test images, 4. measure the particles in nm
    samples = {s.stem: s for s in dataset.labelled}
    tables, dice = [], []
    for stem in run.split["test"]:
        image = tem_keras.read_image(samples[stem].image)          # Micrograph with pixel size
        result = predict(run, image)                                # Prediction: .mask, .threshold
        dice.append(segmentation_scores(result.mask, read_mask(samples[stem].mask))["dice"])
        table = tem_keras.measure_particles(result.mask, image.pixel_size_nm, image=image)
        tables.append(table.assign(image=stem))
    particles = pd.concat(tables, ignore_index=True)
    particles.to_csv(out / "particles.csv", index=False)
    stats = size_distribution(particles)
    print(f"test images: mean dice {sum(dice) / len(dice):.3f}; {stats['count']} particles, "
          f"equivalent diameter {stats['mean']:.2f} ± {stats['std']:.2f} nm "
          f"(log-normal median {stats['geometric_mean']:.2f} nm)")

    # 5. export for colleagues (SavedModel with preprocessing inside, .keras, model card)
    exported = export(run, out / "export", formats=("saved_model", "keras"))
    print(f"export folder: {exported}  (see examples/predict_with_savedmodel.py)")
    return {"dice": sum(dice) / len(dice), "particles": stats["count"], "export": str(exported)}


if __name__ == "__main__":
    main()
