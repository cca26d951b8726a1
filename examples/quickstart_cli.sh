#!/usr/bin/env bash
# tem_keras quickstart on the command line: synth → fit → predict → measure → export.
#
#   bash examples/quickstart_cli.sh [OUT_DIR] [--fast]
#
# Everything goes into OUT_DIR (default tem_keras_cli_quickstart), which is replaced if it
# exists. --fast: tiny images and 2 epochs (well under a minute); default: a few minutes on a CPU.
# With your own data, skip step 1 and give your dataset folder (images/ + masks/) to `fit`.
set -euo pipefail

OUT=${1:-tem_keras_cli_quickstart}
FAST=0
for arg in "$@"; do [[ "$arg" == "--fast" ]] && FAST=1; done
[[ "$OUT" == "--fast" ]] && OUT=tem_keras_cli_quickstart
if [[ $FAST == 1 ]]; then N=6; SIZE=96; PATCH=64; EPOCHS=2; DEPTH=2
else N=24; SIZE=256; PATCH=128; EPOCHS=40; DEPTH=3; fi

rm -rf "$OUT"
mkdir -p "$OUT"

# 1. a synthetic bright-field data set with exact masks (images/*.tif carry the pixel size)
tem-keras synth "$OUT/data" --n-images $N --size $SIZE --mode bright-field --seed 0
tem-keras check "$OUT/data"

# 2. train a UNet; options the builder knows (--depth, --base-filters, --batch-norm) go to the model
tem-keras fit "$OUT/data" --model unet --depth $DEPTH --base-filters 8 --batch-norm \
    --epochs $EPOCHS --patience $EPOCHS --patch-size $PATCH --batch-size 8 --learning-rate 1e-3 \
    --run-dir "$OUT/run" --quiet

# 3. segment images (here: the whole data folder), with overlays and a particle table
tem-keras predict "$OUT/run" "$OUT/data/images" --out "$OUT/predictions" --overlay --particles --quiet

# 4. measure particles in mask files (PNG masks carry no pixel size: give it)
tem-keras measure "$OUT"/predictions/*_mask.png --pixel-size-nm 0.5 --out "$OUT/particles_from_masks.csv"

# 5. score on the labelled images and export for colleagues
tem-keras evaluate "$OUT/run" "$OUT/data" --split test --quiet
tem-keras export "$OUT/run" "$OUT/export" --formats saved_model,keras

echo "done: $OUT/predictions, $OUT/particles_from_masks.csv, $OUT/export"
