"""Worker launched by test_ddp.py through torchrun (2 gloo processes on CPU); not collected by pytest.

Each rank holds different latents. It checks what the single-process contract promises under DDP and saves what
the test compares: the codebook after ``activate``, after an EMA step on different per-rank batches, and after a
dead-code revival.
"""

import faulthandler
import os
import sys

import torch
import torch.distributed as dist

from medvq.quantizers import MultiScaleResidualQuantizer, VectorQuantizer


def main(out_dir: str) -> None:
    faulthandler.dump_traceback_later(60, exit=True)  # a hang shows where it is stuck instead of timing the test out
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    g = torch.Generator().manual_seed(100 + rank)
    # ranks hold different numbers of latents: 150 on rank 0, 170 on rank 1
    samples = torch.randn(150 + 20 * rank, 4, generator=g) * (1 + rank)
    result = {"samples": samples}

    vq = VectorQuantizer(200, 4, codebook_update="ema", decay=0.5, active=False, dead_code_threshold=2)
    report = vq.activate(samples, init="kmeans", seed=0, iterations=5)  # 200 codes > 170 local samples: needs both
    result["num_samples"] = report.num_samples
    result["after_activate"] = vq.codebook.detach().clone()

    vq.train()
    z = torch.randn(2, 4, 10, generator=g)  # a different batch on each rank
    vq(z)
    result["after_ema"] = vq.codebook.detach().clone()
    vq(z)  # second step: unused codes reach the threshold and are revived from rank 0's latents
    result["num_revived"] = vq.num_revived
    result["after_revival"] = vq.codebook.detach().clone()

    # multi-scale, l2-normalised codes: the per-scale magnitudes come from the residual norms of every rank, and a
    # per-scale revival on different batches keeps the ranks' codebooks identical
    msq = MultiScaleResidualQuantizer(64, 4, scales=(1, 2, 4), phi_shared=2, active=False, normalize=True,
                                      codebook_update="ema", dead_code_threshold=1, revival="per_scale")
    z_ms = torch.randn(2 + rank, 4, 4, 4, generator=g) * (1 + rank)  # 2 images on rank 0, 3 on rank 1
    msq.reset_residual_norms()
    exact = msq._cascade(z_ms, use_codebook=False).residuals
    result["ms_norm_sums"] = torch.stack([r.norm(dim=1).double().sum() for r in exact])
    result["ms_norm_counts"] = torch.tensor([float(r.shape[0]) for r in exact], dtype=torch.float64)
    msq.activate(msq.collect_residuals(z_ms), iterations=3)
    result["ms_magnitude"] = msq.code_magnitude.detach().clone()
    msq.train()
    msq(z_ms)
    msq(z_ms)
    result["ms_revived"] = int(msq.codes.total_revived)
    result["ms_codebook"] = msq.codebook.detach().clone()

    # a DDP-wrapped encoder + quantizer trains through the continuous phase, the switch and the quantized phase
    # (no find_unused_parameters: the pass-through must still give the codebook a gradient)
    torch.manual_seed(0)  # identical initial weights on both ranks, as DDP expects
    model = torch.nn.ModuleDict({"enc": torch.nn.Conv1d(4, 4, 1), "vq": VectorQuantizer(16, 4, active=False)})

    class Wrapper(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            out = self.inner["vq"](self.inner["enc"](x))
            return out.quantized.square().mean() + out.loss

    ddp = torch.nn.parallel.DistributedDataParallel(Wrapper(model))
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    for step in range(4):
        if step == 2:
            with torch.no_grad():
                latents = model["enc"](torch.randn(8, 4, 10, generator=g)).movedim(1, -1).reshape(-1, 4)
            model["vq"].activate(latents, seed=0)
        optimizer.zero_grad()
        ddp(torch.randn(2, 4, 10, generator=g)).backward()
        optimizer.step()
    result["ddp_weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}  # incl. vq.active_flag
    # free the DDP reducer while the process group still exists: destroying it afterwards (when main returns) can
    # hang the process at exit with gloo
    del ddp, optimizer
    # the flag is a buffer: DDP broadcasts rank 0's at construction (broadcast_buffers=True), e.g. after a rank-0 load
    probe = VectorQuantizer(4, 2, active=rank == 0)
    probe_ddp = torch.nn.parallel.DistributedDataParallel(probe)
    result["broadcast_active"] = probe.active
    del probe_ddp
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
