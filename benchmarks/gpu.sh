#!/usr/bin/env bash
# GPU numbers in one go (issue #15): tokenizer training img/s and MFU (vqgan_f16, msvqgan_f16; eager and
# torch.compile), VAR-d16 training tokens/s and sampling img/s, the switch's k-means time, peak GPU memory of each.
# Prints the machine (nvidia-smi when present, python and torch versions), then runs benchmarks/gpu_suite.py with
# these arguments under an 8 minute timeout (the suite budgets itself to 450 s; see its docstring for the options).
#
#   bash benchmarks/gpu.sh                            # on a lent GPU (H100 / H200): the paper sizes
#   bash benchmarks/gpu.sh --json gpu.json            # also the summary as JSON
#   bash benchmarks/gpu.sh --smoke --json smoke.json  # CPU check of the script (tiny models; CI)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-python}"

echo "== gpu.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -srm), $(getconf _NPROCESSORS_ONLN) CPU cores"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=index,name,memory.total,driver_version,clocks.max.sm,power.limit,mig.mode.current \
        --format=csv || true
else
    echo "nvidia-smi: not found (no NVIDIA driver on this machine)"
fi
# versions without importing torch (the suite imports it once and prints the device it sees)
"$PYTHON" - <<'EOF' || true
import importlib.metadata as metadata
import platform

versions = []
for package in ("torch", "monai", "pytorch-ignite", "medvq"):
    try:
        versions.append(f"{package} {metadata.version(package)}")
    except metadata.PackageNotFoundError:
        versions.append(f"{package} (not installed)")
print(f"python {platform.python_version()}; " + "; ".join(versions))
EOF
echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-<unset>} OMP_NUM_THREADS=${OMP_NUM_THREADS:-<unset>}"

exec timeout --kill-after=15s 8m "$PYTHON" benchmarks/gpu_suite.py "$@"
