#!/usr/bin/env bash
# The quick start: set up, write the built-in digits as image files, fine-tune a ResNet-18 on them,
# evaluate on the held-out test split, predict a few images, and say where everything is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# Nothing here needs the network; without this a hub lookup would retry for ~46 s before failing.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"

DATA=data/digits
RUN=runs/quickstart
imgcls data digits "$DATA" >/dev/null  # written once; later runs reuse it
rm -rf "$RUN"
# Digits are 8x8 scans upscaled to 32 px: no flips (a flipped 2 is not a 2) and no centre crop.
imgcls train "$DATA" --model resnet18 --img-size 32 --crop-pct 1.0 --hflip 0 --crop-scale 0.5 \
    --epochs 15 --batch-size 32 --lr 2e-3 --name quickstart
imgcls evaluate "$RUN/model" "$DATA" --split test --out "$RUN/eval"
threes=("$DATA"/test/3/*.png); sevens=("$DATA"/test/7/*.png)
imgcls predict "$RUN/model" "${threes[@]:0:4}" "${sevens[@]:0:4}" --top-k 3
cat <<MSG

Quick start finished.
  run folder:     $RUN  (config.yaml, metrics.csv, checkpoints/, data_check.json)
  model package:  $RUN/model  (config.json, model.safetensors, README.md)
  evaluation:     $RUN/eval/report.html  (open it in a browser; also metrics.json, predictions.csv, plots)
  data:           $DATA  (train/ and test/, one folder per class)
Python:  from imgcls import Classifier; Classifier.load("$RUN/model")("$DATA/test/3/<file>.png")
MSG
