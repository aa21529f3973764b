#!/usr/bin/env bash
# The README's main job: install torch (pinned; a CPU build on the project's machines) and medvq, then train the
# odir_vq tokenizer bundle with the quickstart overlay: generated fundus images (no download), tiny sizes, deferred
# quantization at epoch 8 of 16. Leaves runs/quickstart/{checkpoints,tensorboard,images}. Extra arguments go to
# `monai.bundle run` (e.g. --dataset_dir /data/ODIR-5K to train the same small model on real ODIR-5K).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e .
python -m monai.bundle run training \
    --config_file "['bundles/odir_vq/configs/train.json','configs/quickstart.json']" "$@"
echo "done: checkpoints in runs/quickstart/checkpoints, TensorBoard logs in runs/quickstart/tensorboard," \
     "reconstruction grids in runs/quickstart/images (tensorboard --logdir runs/quickstart/tensorboard)"
