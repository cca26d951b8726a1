#!/usr/bin/env bash
# tem_keras quickstart on the command line: synth → fit → predict → measure → export.
#
#   bash examples/quickstart_cli.sh [OUT_DIR] [--fast]
#
# Everything goes into OUT_DIR (default tem_keras_cli_quickstart), which must be new or empty.
# Training uses fit's defaults (model, patches and epochs planned from the data) for 3 minutes;
# --fast: tiny images and two training steps (well under a minute).
# With your own data, skip step 1 and give your dataset folder (images/ + masks/) to `fit`.
set -euo pipefail

OUT=${1:-tem_keras_cli_quickstart}
FAST=0
for arg in "$@"; do [[ "$arg" == "--fast" ]] && FAST=1; done
[[ "$OUT" == "--fast" ]] && OUT=tem_keras_cli_quickstart
if [[ $FAST == 1 ]]; then N=6; SIZE=96; BUDGET=(--epochs 1 --steps-per-epoch 2)
else N=24; SIZE=256; BUDGET=(--time-limit 3min); fi

if [[ -d "$OUT" && -n "$(ls -A "$OUT")" ]]; then
    echo "$OUT exists and is not empty; give another OUT_DIR" >&2
    exit 2
fi
mkdir -p "$OUT"

# 1. a synthetic bright-field data set with exact masks (images/*.tif carry the pixel size)
tem-keras synth "$OUT/data" --n-images $N --size $SIZE --mode bright-field --seed 0
tem-keras check "$OUT/data"

# 2. train with fit's defaults (it prints its plan); --model unet --depth 3 ... would choose the model
tem-keras fit "$OUT/data" "${BUDGET[@]}" --run-dir "$OUT/run" --quiet

# 3. segment images (here: the whole data folder), with overlays and a particle table
tem-keras predict "$OUT/run" "$OUT/data/images" --out "$OUT/predictions" --overlay --particles --quiet

# 4. measure particles in mask files (PNG masks carry no pixel size: give it)
tem-keras measure "$OUT"/predictions/*_mask.png --pixel-size-nm 0.5 --out "$OUT/particles_from_masks.csv"

# 5. score on the labelled images and export for colleagues
tem-keras evaluate "$OUT/run" "$OUT/data" --split test --quiet
tem-keras export "$OUT/run" "$OUT/export" --formats saved_model,keras

echo "done: $OUT/predictions, $OUT/particles_from_masks.csv, $OUT/export"
