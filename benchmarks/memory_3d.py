"""Memory of 3D tokenizers on the CPU: the 3D quickstart against the 2D one, and what a paper-size 3D tokenizer needs.

1. **Quickstart.** The image_vq bundle's training (``configs/quickstart_3d.json``: 32^3 volumes, batch 2, the tiny
   network; its default 16 epochs) on the 3D example volumes (``medvq.data.examples``, MR class), against the 2D
   quickstart (``configs/quickstart.json``: 64 px, batch 8) on the 2D example MR images, each in its own child
   process: the peak resident set of the whole process (``VmHWM``: interpreter, MONAI, data, model, optimizer,
   activations). The target: the 3D quickstart within 4 GB.
2. **Paper size.** ``vqgan_f16(spatial_dims=3, in_channels=1)`` (taming's f16 widths in 3D, about 200 M parameters):
   one training step (forward, L1 + VQ loss, backward, Adam step) on one random volume of ``roi^3`` voxels, in a child
   process per size: the peak growth of the resident set above the set-up (model, Adam state after a first step at
   the smallest size), and with activation checkpointing (``use_checkpointing=True``). Sizes the machine cannot hold
   are not run; the larger ones are extrapolated linearly in voxels from the two largest measured (activations grow
   with voxels; printed as "computed").

    OMP_NUM_THREADS=2 python benchmarks/memory_3d.py [--sizes 32 48 64] [--skip-quickstart]

Prints the numbers and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field} (Linux only)")


def _reset_peak() -> int:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_bytes("VmRSS")


def _quickstart(spatial_dims: int, data: str, out: str, queue) -> None:
    from monai.bundle import ConfigWorkflow

    configs = ROOT / "bundles" / "image_vq" / "configs"
    overlay = ROOT / "configs" / ("quickstart_3d.json" if spatial_dims == 3 else "quickstart.json")
    started = time.perf_counter()
    workflow = ConfigWorkflow(
        config_file=[str(configs / "train.json"), str(overlay)], meta_file=str(configs / "metadata.json"),
        logging_file=False, workflow_type="train", run_id="training", dataset_dir=data, modality="mr",
        group_by="file", output_dir=out, num_workers=0,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    queue.put((_status_bytes("VmHWM"), time.perf_counter() - started))


def _paper_step(roi: int, checkpointing: bool, queue) -> None:
    import torch

    from medvq.networks import vqgan_f16

    torch.manual_seed(0)
    net = vqgan_f16(spatial_dims=3, in_channels=1, use_checkpointing=checkpointing)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)

    def step(size: int) -> None:
        x = torch.rand(1, 1, size, size, size) * 2 - 1
        out = net(x, return_output=True)
        loss = (out.reconstruction - x).abs().mean() + out.quantizer.loss
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        optimizer.step()

    step(16)  # Adam's state and the gradients exist: what follows is the step's own memory
    base = _reset_peak()
    started = time.perf_counter()
    step(roi)
    queue.put((_status_bytes("VmHWM") - base, time.perf_counter() - started,
               sum(p.numel() for p in net.parameters()), base))


def _child(target, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=target, args=(*args, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        return None
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64], help="paper-size roi sides to run")
    parser.add_argument("--extrapolate", type=int, nargs="+", default=[96, 128, 160])
    parser.add_argument("--skip-quickstart", action="store_true")
    args = parser.parse_args()

    if not args.skip_quickstart:
        from medvq.data import make_example_dataset

        with tempfile.TemporaryDirectory() as tmp:
            peaks = {}
            for dims in (2, 3):
                data = make_example_dataset(Path(tmp) / f"data{dims}", spatial_dims=dims)["output_dir"]
                peaks[dims] = _child(_quickstart, dims, str(Path(data) / "mr"), str(Path(tmp) / f"run{dims}"))
        (p2, t2), (p3, t3) = peaks[2], peaks[3]
        print("quickstart training, peak RSS of the whole process (VmHWM):")
        print(f"  2D (quickstart.json, 64 px, batch 8):      {p2 / GIB:.2f} GiB, {t2:.0f} s")
        print(f"  3D (quickstart_3d.json, 32^3, batch 2):    {p3 / GIB:.2f} GiB, {t3:.0f} s")
        print(f"  ratio 3D / 2D: {p3 / p2:.2f}; 3D within 4 GB: {p3 <= 4e9} ({p3 / 4e9:.0%} of it)")

    print("paper-size 3D tokenizer (vqgan_f16 in 3D, 1 channel, batch 1), one training step above the set-up:")
    measured = {}
    for checkpointing in (False, True):
        for roi in args.sizes:
            result = _child(_paper_step, roi, checkpointing)
            if result is None:
                print(f"  roi {roi}^3 checkpointing={checkpointing}: did not finish (memory?)")
                break
            growth, seconds, params, base = result
            measured[(checkpointing, roi)] = growth
            print(f"  roi {roi}^3 checkpointing={checkpointing}: +{growth / GIB:.2f} GiB in {seconds:.0f} s "
                  f"(set-up {base / GIB:.2f} GiB: {params / 1e6:.0f} M parameters, fp32 weights, grads, Adam)")
        runs = sorted((roi, g) for (c, roi), g in measured.items() if c == checkpointing)
        if len(runs) >= 2:
            (r1, g1), (r2, g2) = runs[-2:]
            per_voxel = (g2 - g1) / (r2**3 - r1**3)
            for roi in args.extrapolate:
                print(f"  computed: roi {roi}^3 checkpointing={checkpointing}: about "
                      f"+{(g2 + per_voxel * (roi**3 - r2**3)) / GIB:.1f} GiB per volume of the batch "
                      f"({per_voxel:.0f} bytes per voxel)")
    if (False, args.sizes[-1]) in measured and (True, args.sizes[-1]) in measured:
        print(f"  checkpointing / plain at {args.sizes[-1]}^3: "
              f"{measured[(True, args.sizes[-1])] / measured[(False, args.sizes[-1])]:.2f}")


if __name__ == "__main__":
    main()
