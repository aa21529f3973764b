"""How far can the codebook born at a deferred switch go? Re-run the switch's k-means on a trained run's encoder.

A deferred switch sets the codebook by k-means on the current encoder's latents (for the multi-scale tokenizer: their
exact residual pyramid, :meth:`MultiScaleQuantizer.collect_residuals`) and then quantizes. With the encoder frozen
after the switch (odir_var's ``switch_freeze_encoder_iterations: -1``) the final encoder *is* the switch's encoder, so
this tool can ask, after the fact, what codebook the switch could have been given: it encodes the run's training
images with the final weights, re-runs :meth:`VectorQuantizer.activate` (the handler's own k-means call) under
several variants, and measures each born codebook on the run's validation images exactly as the evaluator counts
tokens (whole set, every scale pooled):

- ``--num_samples``: how many training latents k-means sees (``0`` = all of them); the bundles' quickstart uses 8192.
- ``--iterations``: Lloyd iterations (the handler's default is 20).
- ``--refine``: rounds of *cascade refinement* (multi-scale only, the residual k-means of RQ-VAE-style tokenizers):
  quantize the training latents with the born codebook, collect the residuals the cascade then leaves at each scale,
  and run Lloyd iterations on those from the current codebook. The exact pyramid k-means sees is what an exact
  quantizer would leave; the cascade with real codes leaves different residuals at the finer scales.

The first row of each run is the run's own trained codebook, for comparison. Latent MSE is ``mean((f_hat - z)^2)`` of
the quantized validation latents: k-means lowers it, and what it does to perplexity is what the table shows.

Differences from the switch itself: the training images go through the evaluation preprocessing (the switch sees
the training transforms' random crops and flips), and the subset is drawn uniformly from all latents (the switch
draws an equal share from each image). For a run whose encoder trained on after the switch, the rows describe the
codebook its *final* encoder would be born with, not the one it was.

Example::

    python -m medvq.experiments.born_codebook runs/study_var_recipe/deferred_frozen_encoder_s0 \\
        --num_samples 8192 0 --refine 0 2 --json runs/born.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = ["BornRow", "born_codebooks", "format_rows", "main"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BornRow:
    """One codebook measured on the validation images."""

    run: str
    variant: str  # "trained" or "kmeans"
    num_samples: int  # latents k-means saw (0 for the trained codebook)
    iterations: int
    refine: int
    perplexity: float
    usage: float
    dead_codes: int
    code_distance: float
    code_distance_used: float
    latent_mse: float
    inertia: float  # k-means objective on the samples it saw (nan for the trained codebook)


def _images(datalist: Path) -> tuple[list[str], list[str]]:
    """Training and validation image paths of a run's datalist, read as the bundles read it (MONAI's Decathlon loader
    through :func:`medvq.data.images._read_datalist`: relative paths are relative to the JSON's folder)."""
    from medvq.data.images import _read_datalist

    train, val, _ = _read_datalist(datalist)
    if not train or not val:
        raise ValueError(f"the datalist '{datalist}' needs both 'training' images (for k-means) and 'validation' "
                         "images (to measure the codebooks).")
    return [str(i["image"]) for i in train], [str(i["image"]) for i in val]


def _encode(tokenizer, paths: Sequence[str], batch_size: int) -> torch.Tensor:
    chunks = []
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            x = tokenizer.preprocess(list(paths[start : start + batch_size])).to(tokenizer.device)
            chunks.append(tokenizer.network.encode(x).float())
    return torch.cat(chunks)


def _training_samples(quantizer, z: torch.Tensor) -> torch.Tensor:
    """The ``(N, D)`` vectors the switch clusters: the residual pyramid (multi-scale) or the flattened latents."""
    if hasattr(quantizer, "collect_residuals"):
        return quantizer.collect_residuals(z)
    return z.movedim(1, -1).reshape(-1, z.shape[1])


def _measure(network, z_val: torch.Tensor, codebook: torch.Tensor, chunk: int = 64) -> dict[str, float]:
    from medvq.metrics.coverage import code_usage, dead_codes, mean_code_distance, perplexity_from_counts

    num_codes = codebook.shape[0]
    counts = torch.zeros(num_codes, dtype=torch.long, device=z_val.device)
    squared, elements = 0.0, 0
    with torch.no_grad():
        for start in range(0, z_val.shape[0], chunk):
            z = z_val[start : start + chunk]
            out = network.quantize(z)
            indices = out.indices if isinstance(out.indices, torch.Tensor) else torch.cat(
                [i.flatten() for i in out.indices])
            counts += torch.bincount(indices.flatten(), minlength=num_codes)
            squared += float((out.quantized.float() - z).square().sum())
            elements += z.numel()
    return {
        "perplexity": float(perplexity_from_counts(counts)), "usage": code_usage(counts),
        "dead_codes": dead_codes(counts), "code_distance": mean_code_distance(codebook),
        "code_distance_used": mean_code_distance(codebook, counts > 0), "latent_mse": squared / elements,
    }


def born_codebooks(run: str | Path, num_samples: Sequence[int] = (8192,), iterations: int = 20,
                   refine: Sequence[int] = (0,), seed: int = 0, datalist: str | Path | None = None,
                   batch_size: int = 16) -> list[BornRow]:
    """Measure the run's trained codebook and the k-means codebooks its final encoder would be born with.

    Args:
        run: a training run folder (``tokenizer/`` inside, or ``checkpoints/model_final.pt``), as
            :func:`medvq.load_tokenizer` takes it.
        num_samples: subset sizes for k-means, one variant each; 0 = every training latent.
        iterations: Lloyd iterations of each k-means (and of each refinement round).
        refine: cascade-refinement rounds, one variant each (multi-scale tokenizers only; 0 = none).
        seed: seed of the subset draw and of k-means++.
        datalist: the run's datalist; default ``<run>/datalist.json`` (what the bundles write).
        batch_size: images encoded at once.

    Returns:
        One :class:`BornRow` per codebook, the trained one first.

    Raises:
        FileNotFoundError / ValueError: no weights, no datalist or an empty split, a bad variant.
    """
    from medvq.api import load_tokenizer
    from medvq.quantizers.kmeans import _lloyd_step

    run = Path(run)
    if any(int(n) < 0 for n in num_samples):
        raise ValueError(f"--num_samples must be >= 0 (0 = all latents), got {list(num_samples)}.")
    if iterations < 1 or any(int(r) < 0 for r in refine):
        raise ValueError(f"--iterations must be >= 1 and --refine >= 0, got {iterations} and {list(refine)}.")
    tokenizer = load_tokenizer(run)
    network, quantizer = tokenizer.network, tokenizer.network.quantizer
    codes = getattr(quantizer, "codes", quantizer)  # the multi-scale quantizer keeps its table in a VectorQuantizer
    multiscale = hasattr(quantizer, "collect_residuals")
    if any(refine) and not multiscale:
        raise ValueError("--refine needs a multi-scale tokenizer (its residual cascade); this run's tokenizer is "
                         f"{type(network).__name__}: give --refine 0.")
    datalist = Path(datalist) if datalist else run / "datalist.json"
    train_paths, val_paths = _images(datalist)
    logger.info("%s: encoding %d training and %d validation images", run, len(train_paths), len(val_paths))
    z_train, z_val = _encode(tokenizer, train_paths, batch_size), _encode(tokenizer, val_paths, batch_size)

    trained = codes.weight.detach().clone()
    rows = [BornRow(str(run), "trained", 0, 0, 0, inertia=math.nan, **_measure(network, z_val, quantizer.codebook))]
    was_active = quantizer.active
    quantizer.active = False
    all_samples = _training_samples(quantizer, z_train)
    num_codes = codes.num_embeddings
    try:
        for n in num_samples:
            n = int(n) or all_samples.shape[0]
            if n < num_codes:
                raise ValueError(f"--num_samples {n} is below the codebook's {num_codes} codes.")
            generator = torch.Generator().manual_seed(seed)
            pick = torch.randperm(all_samples.shape[0], generator=generator)[:n]
            samples = all_samples[pick.to(all_samples.device)]
            for rounds in refine:
                quantizer.active = False
                report = codes.activate(samples, init="kmeans", seed=seed, iterations=iterations)
                quantizer.active = True
                inertia = float(report.inertia)
                for _ in range(int(rounds)):
                    cascade = quantizer.collect_residuals(z_train)  # active: what the real codes leave
                    cascade = cascade[pick.to(cascade.device)] if n < cascade.shape[0] else cascade
                    centroids = codes.weight.detach().clone()
                    for _ in range(iterations):
                        centroids, _, _, distances = _lloyd_step(cascade, centroids, 2**26)
                    inertia = float(distances.double().sum())
                    codes.weight.data.copy_(centroids)
                rows.append(BornRow(str(run), "kmeans", n, iterations, int(rounds), inertia=inertia,
                                    **_measure(network, z_val, quantizer.codebook)))
                logger.info("%s", rows[-1])
    finally:
        codes.weight.data.copy_(trained)
        quantizer.active = was_active
    return rows


def format_rows(rows: Sequence[BornRow]) -> str:
    """A markdown table of :func:`born_codebooks` rows."""
    head = ("run", "codebook", "samples", "refine", "perplexity", "usage", "dead codes", "code distance",
            "code distance (used)", "latent MSE")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = "trained (the run's)" if r.variant == "trained" else f"k-means, {r.iterations} it."
        lines.append(f"| {r.run} | {name} | {r.num_samples or '-'} | {r.refine if r.variant != 'trained' else '-'} | "
                     f"{r.perplexity:.4g} | {r.usage:.4g} | {r.dead_codes} | {r.code_distance:.4g} | "
                     f"{r.code_distance_used:.4g} | {r.latent_mse:.4g} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medvq.experiments.born_codebook", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="training run folders")
    parser.add_argument("--num_samples", type=int, nargs="+", default=[8192], help="k-means subset sizes (0 = all)")
    parser.add_argument("--iterations", type=int, default=20, help="Lloyd iterations (default 20, the handler's)")
    parser.add_argument("--refine", type=int, nargs="+", default=[0], help="cascade-refinement rounds (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datalist", default=None, help="default <run>/datalist.json")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    rows = []
    try:
        for run in args.runs:
            rows += born_codebooks(run, args.num_samples, args.iterations, args.refine, args.seed,
                                   datalist=args.datalist)
    except (FileNotFoundError, ValueError) as error:
        print(f"born_codebook: {error}", file=sys.stderr)
        return 2
    finally:  # main() is also called in-process (tests, notebooks): leave the caller's thread count as it was
        torch.set_num_threads(threads)
    print(format_rows(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
