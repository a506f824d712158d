#!/usr/bin/env bash
# Two processes on one machine with torchrun (gloo on CPU; on GPUs drop --accelerator cpu and set --devices to
# the GPU count). Run from the repository root; it makes a small dataset first so it runs anywhere.
set -euo pipefail
out=${1:-/tmp/imgcls-torchrun}
mkdir -p "$out"
python -c "
import sys; sys.path.insert(0, 'tests')
from pathlib import Path
from imgfactory import write_class_images
write_class_images(Path('$out/data/train'), per_class=16, seed=1)
write_class_images(Path('$out/data/test'), per_class=4, seed=2)
"
torchrun --standalone --nproc-per-node 2 -m imgcls train "$out/data" \
  --devices 2 --strategy ddp --accelerator cpu --precision 32-true \
  --model lenet5 --img-size 32 --epochs 2 --batch-size 8 --lr 3e-3 --warmup-epochs 0 \
  --num-workers 0 --val-fraction 0.25 --hflip 0 --crop-scale 0.6 \
  --runs-dir "$out/runs" --name torchrun --no-progress
