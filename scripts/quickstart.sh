#!/usr/bin/env bash
# The README's main job: install torch (CPU, pinned) and medvq, then run the 10-mode deferred-quantization study
# for the three schedules and draw the encoder-output figure. Extra arguments go to the study (e.g. --seed 3).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e .
mkdir -p outputs
python -m medvq.experiments.toy_shrinkage --schedule all --seed 0 --plot outputs/toy_shrinkage.png "$@"
