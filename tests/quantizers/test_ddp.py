"""Under DDP (2 gloo processes launched by torchrun), every rank ends with the same codebook."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medvq.quantizers import VectorQuantizer

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout}\n{proc.stderr}"
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_activate_gathers_all_ranks_and_gives_identical_codebooks(ranks):
    r0, r1 = ranks
    assert r0["num_samples"] == r1["num_samples"] == 320  # 150 + 170 latents, more than either rank alone
    assert torch.equal(r0["after_activate"], r1["after_activate"])
    # the codebook is k-means over the concatenated latents in rank order, as in a single process
    single = VectorQuantizer(200, 4, codebook_update="ema", active=False)
    single.activate(torch.cat([r0["samples"], r1["samples"]]), init="kmeans", seed=0, iterations=5)
    torch.testing.assert_close(single.codebook, r0["after_activate"])


def test_ema_step_on_different_batches_stays_identical(ranks):
    r0, r1 = ranks
    assert not torch.equal(r0["after_activate"], r0["after_ema"])  # the step did move codes
    assert torch.equal(r0["after_ema"], r1["after_ema"])


def test_dead_code_revival_stays_identical(ranks):
    r0, r1 = ranks
    assert r0["num_revived"] == r1["num_revived"] > 0
    assert torch.equal(r0["after_revival"], r1["after_revival"])


def test_ddp_wrapped_training_through_the_switch(ranks):
    """A DDP model trains in the pass-through phase, switches and quantizes; the ranks stay identical."""
    r0, r1 = ranks
    assert set(r0["ddp_weights"]) == set(r1["ddp_weights"])
    assert bool(r0["ddp_weights"]["vq.active_flag"]) and bool(r1["ddp_weights"]["vq.active_flag"])  # switched on
    for key in r0["ddp_weights"]:
        assert torch.equal(r0["ddp_weights"][key], r1["ddp_weights"][key]), key


def test_ddp_broadcasts_the_active_flag_of_rank_0(ranks):
    # the flag is a buffer, so DDP's construction-time sync makes a flag set (or loaded) on rank 0 only every rank's
    assert ranks[0]["broadcast_active"] is True and ranks[1]["broadcast_active"] is True


def test_multiscale_normalized_magnitudes_and_per_scale_revival_agree_across_ranks(ranks):
    r0, r1 = ranks
    expected = (r0["ms_norm_sums"] + r1["ms_norm_sums"]) / (r0["ms_norm_counts"] + r1["ms_norm_counts"])
    for r in ranks:  # each scale's mean residual norm over both ranks' images
        torch.testing.assert_close(r["ms_magnitude"].double(), expected, rtol=1e-6, atol=0)
    assert r0["ms_revived"] == r1["ms_revived"] > 0
    assert torch.equal(r0["ms_codebook"], r1["ms_codebook"])
