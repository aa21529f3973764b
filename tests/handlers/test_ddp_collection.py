"""Under DDP (4 gloo processes, real torchrun) the deferred switch collects num_samples latents in total."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

WORKER = Path(__file__).with_name("ddp_collect_worker.py")


def test_four_ranks_collect_exactly_num_samples(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", str(WORKER),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout}\n{proc.stderr}"
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(4)]
    # quotas 251, 251, 251, 250: each rank's share of num_samples, from the 6 images its sampler gives it
    assert [r["local"] for r in ranks] == [251, 251, 251, 250]
    assert all(r["total"] == 1003 for r in ranks)
    assert all(torch.equal(r["codebook"], ranks[0]["codebook"]) for r in ranks)
