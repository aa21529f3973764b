#!/usr/bin/env bash
# The odir_var pipeline on a CPU in a few minutes: install torch (pinned) and medvq, then with the quickstart overlay
# (generated fundus images, tiny networks, 64 px) train stage 1 (multi-scale tokenizer, deferred quantization), stage 2
# (VAR generator conditioned on the 8 ODIR labels), sample 4 images per diagnosis with provenance sidecars, and
# evaluate the generator. Everything goes to runs/quickstart_var/. Extra arguments go to every `monai.bundle run`.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -e .
C=bundles/odir_var/configs
OUT=runs/quickstart_var
# a stage's folder is never trained over: a stage that already ran is resumed (a finished one stays as it is)
resume() { compgen -G "$OUT/$1/checkpoints/checkpoint_*.pt" > /dev/null && echo "--resume_from latest" || true; }
python -m monai.bundle run training --config_file "['$C/train_tokenizer.json','configs/quickstart.json']" \
    --output_dir "$OUT" $(resume tokenizer) "$@"
python -m monai.bundle run training --config_file "['$C/train_tokenizer.json','$C/train.json','configs/quickstart.json']" \
    --output_dir "$OUT" $(resume generator) "$@"
python -m monai.bundle run sample \
    --config_file "['$C/train_tokenizer.json','$C/train.json','configs/quickstart.json','$C/sample.json']" \
    --output_dir "$OUT" --samples_per_condition 4 "$@"
python -m monai.bundle run evaluate \
    --config_file "['$C/train_tokenizer.json','$C/train.json','configs/quickstart.json','$C/evaluate.json']" \
    --output_dir "$OUT" "$@"
echo "done: tokenizer in $OUT/tokenizer, generator in $OUT/generator, synthetic images in $OUT/generator/samples," \
     "evaluation in $OUT/generator/eval (tensorboard --logdir $OUT)"
