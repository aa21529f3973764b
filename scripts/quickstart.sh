#!/usr/bin/env bash
# The README's main job: install torch (pinned; a CPU build on the project's machines) and medvq, then train the
# odir_vq tokenizer bundle with the quickstart overlay: generated fundus images (no download), tiny sizes, deferred
# quantization at epoch 8 of 16. Leaves runs/quickstart/{checkpoints,tensorboard,images}. Extra arguments go to
# `monai.bundle run` (e.g. --dataset_dir /data/ODIR-5K to train the same small model on real ODIR-5K).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e .
# a run folder is never trained over: when runs/quickstart already holds a run, resume it (a finished one stays as
# it is; the bundle logs so); a killed one continues from its newest checkpoint
RESUME=()
if [[ " $* " != *" --output_dir "* ]] && compgen -G "runs/quickstart/checkpoints/checkpoint_*.pt" > /dev/null; then
    echo "runs/quickstart holds a run: resuming it (--resume_from latest); pass --output_dir <dir> for a new run"
    RESUME=(--resume_from latest)
fi
python -m monai.bundle run training \
    --config_file "['bundles/odir_vq/configs/train.json','configs/quickstart.json']" "${RESUME[@]}" "$@"
echo "done: checkpoints in runs/quickstart/checkpoints, TensorBoard logs in runs/quickstart/tensorboard," \
     "reconstruction grids in runs/quickstart/images (tensorboard --logdir runs/quickstart/tensorboard)"
