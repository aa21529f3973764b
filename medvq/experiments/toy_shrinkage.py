"""The 10-mode toy of "Early Quantization Shrinks Codebook" (arXiv 2603.17052): when the codebook is born matters.

A small MLP autoencoder with a :class:`~medvq.quantizers.VectorQuantizer` between encoder and decoder learns ten
well-separated Gaussian modes under three schedules that share the model, the initial weights, the optimizer, the
training batches and the number of optimizer steps; only *when and from what* the codebook is born differs:

- ``standard``: random codebook (the quantizer's default uniform(-1/K, 1/K) init), quantize from step 0.
- ``kmeans_at_start``: at step 0, k-means on the *untrained* encoder's latents of ``activation_samples`` fresh
  training samples (the first batches), then quantize.
- ``deferred``: train continuously (the quantizer is a pass-through) for ``switch_fraction`` of the steps, then
  k-means on the *mature* encoder's latents of ``activation_samples`` fresh training samples, then quantize.

Early quantization anchors the codebook to the narrow output of the untrained encoder: few codes are ever nearest to
a latent, unused codes get no gradient and stay dead, the commitment loss pulls the encoder output onto the few live
codes, and modes that share a code are decoded to one point. Deferred quantization gives birth to the codebook from
latents that already separate the ten modes. ``--plot`` draws the encoder output distribution of each schedule
(projected onto its first principal component): ten peaks for ``deferred``, fewer for the others.

Data: mode centres ``(i - (M - 1) / 2) * mode_spacing * u`` for ``i < M`` along a random unit direction ``u`` of
the ``data_dim``-dimensional data space (a line: a random encoder folds it, so modes collide in the untrained latent
space), plus isotropic Gaussian noise of std ``noise_std``. Everything is drawn from ``seed``: centres, training
batches, activation samples and the held-out evaluation set come from independent generators derived from it, and the
weights from ``torch.manual_seed(seed)`` (the caller's global RNG state is restored afterwards).

Metrics (one JSON line per schedule), all over the held-out evaluation set (``eval_samples_per_mode`` per mode):

- ``modes_recovered``: number of modes for which the majority (> 1/2) of their held-out samples reconstruct within
  ``r`` of the mode's own centre, ``r`` = half the smallest distance between two centres (so such a reconstruction is
  nearer to its own centre than to any other). Two modes that share a code decode to one point, so at most one of
  them is recovered; a decoder that blurs modes recovers none of them.
- ``usage``, ``used_codes``, ``perplexity``: fraction / number of codes hit, exp(entropy) of the code counts.
- ``code_distance`` (all K codes) and ``code_distance_used`` (used codes only): mean pairwise code distance
  (``None`` when fewer than two codes are used).
- ``shrinkage``: trace(cov(codebook)) / trace(cov(encoder latents)).
- ``recon_mse``: mean squared reconstruction error.
- ``steps``, ``switch_step`` (step at which the codebook is born, ``None`` for ``standard``),
  ``switch_latent_spread`` (trace(cov) of the latents k-means saw at that step: small for an untrained encoder) and
  ``seconds`` (wall time of the run).

Limitations: a toy on CPU. The gap in ``modes_recovered`` is measured at an equal, short budget (2000 steps by
default): with ~3x more steps ``standard`` and ``kmeans_at_start`` slowly split shared codes and recover most modes,
while their perplexity stays near the number of modes (about a third of the codebook) against ~K for ``deferred``.
A configuration of modes in general position (not on a line) also leaves ``standard`` recovering most modes at the
default budget; the perplexity gap remains.

Example:
    >>> metrics = run("deferred", seed=0)  # doctest: +SKIP
    >>> metrics["modes_recovered"], round(metrics["perplexity"])  # doctest: +SKIP
    (10, 27)

Command line::

    python -m medvq.experiments.toy_shrinkage --schedule all --seed 0 --plot toy.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from medvq.metrics.coverage import code_usage, mean_code_distance, perplexity_from_counts, shrinkage, trace_covariance
from medvq.quantizers import VectorQuantizer

__all__ = ["SCHEDULES", "ToyConfig", "ToyRun", "train_toy", "run", "plot_latent_histograms", "main"]

logger = logging.getLogger(__name__)

#: The schedules, in the order they are run and plotted by ``--schedule all``.
SCHEDULES = ("standard", "kmeans_at_start", "deferred")


@dataclass(frozen=True)
class ToyConfig:
    """Hyper-parameters of the toy, shared by all schedules (see the module docstring for why they are what they are).

    Args:
        num_modes: M, number of Gaussian modes. Default 10 (the paper's figure).
        data_dim: dimension of the data space. Default 4.
        mode_spacing: distance between neighbouring centres on the line. Default 2.0 (20x the noise std).
        noise_std: isotropic noise std of each mode. Default 0.1.
        latent_dim: D, encoder output and code dimension. Default 2.
        num_codes: K, codebook size. Default 32 (about 3 codes per mode, so k-means on mature latents covers every
            mode while a shrunken codebook shows up as low usage).
        hidden: width of the hidden layers of encoder and decoder. Default 64.
        depth: number of hidden layers of encoder and of decoder. Default 2.
        commitment_cost: beta of the quantizer. Default 0.25 (VQ-VAE).
        lr: Adam learning rate. Default 1e-3.
        batch_size: training batch size. Default 256.
        steps: optimizer steps, the same total for every schedule. Default 2000.
        switch_fraction: ``deferred`` switches to quantization after this fraction of ``steps``. Default 0.5.
        activation_samples: latents handed to k-means at the switch. Default 4096 (16 batches).
        kmeans_iterations: Lloyd iterations at the switch. Default 20.
        eval_samples_per_mode: held-out samples per mode for the metrics and the plot. Default 200.
    """

    num_modes: int = 10
    data_dim: int = 4
    mode_spacing: float = 2.0
    noise_std: float = 0.1
    latent_dim: int = 2
    num_codes: int = 32
    hidden: int = 64
    depth: int = 2
    commitment_cost: float = 0.25
    lr: float = 1e-3
    batch_size: int = 256
    steps: int = 2000
    switch_fraction: float = 0.5
    activation_samples: int = 4096
    kmeans_iterations: int = 20
    eval_samples_per_mode: int = 200

    def __post_init__(self) -> None:
        for name in ("num_modes", "data_dim", "latent_dim", "num_codes", "hidden", "batch_size", "steps",
                     "eval_samples_per_mode"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        for name in ("depth", "kmeans_iterations"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
        if self.num_modes < 2:
            raise ValueError(f"num_modes must be >= 2 (modes_recovered needs a distance between centres), "
                             f"got {self.num_modes}.")
        for name in ("mode_spacing", "lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}.")
        if not self.noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std!r}.")
        if not self.commitment_cost >= 0:
            raise ValueError(f"commitment_cost must be >= 0, got {self.commitment_cost!r}.")
        if not 0.0 < self.switch_fraction < 1.0:
            raise ValueError(f"switch_fraction must be in (0, 1), got {self.switch_fraction!r}.")
        if self.activation_samples < self.num_codes:
            raise ValueError(f"activation_samples must be >= num_codes={self.num_codes} (k-means needs a sample per "
                             f"code), got {self.activation_samples}.")


class ToyRun(NamedTuple):
    """Result of :func:`train_toy`.

    Attributes:
        metrics: the JSON-ready dict printed by the command line (see the module docstring).
        latents: ``(N, D)`` encoder outputs of the held-out set (before quantization), N = M * eval_samples_per_mode.
        codebook: ``(K, D)`` final codebook.
        counts: ``(K,)`` int64 code counts over the held-out set.
    """

    metrics: dict[str, Any]
    latents: torch.Tensor
    codebook: torch.Tensor
    counts: torch.Tensor


def _mlp(in_dim: int, hidden: int, out_dim: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(depth):
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _sample(centres: torch.Tensor, modes: torch.Tensor, noise_std: float, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(modes.shape[0], centres.shape[1], generator=generator)  # (N, data_dim)
    return centres[modes] + noise_std * noise


def _random_modes(num: int, num_modes: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(num_modes, (num,), generator=generator)


def _autoencode(
    encoder: nn.Module, quantizer: VectorQuantizer, decoder: nn.Module, x: torch.Tensor
) -> tuple[torch.Tensor, Any, torch.Tensor]:
    z = encoder(x)  # (B, D)
    out = quantizer(z.unsqueeze(-1))  # the quantizer wants (B, D, *spatial): one spatial position per sample
    reconstruction = decoder(out.quantized.squeeze(-1))  # (B, data_dim)
    return z, out, reconstruction


def train_toy(schedule: str, seed: int = 0, config: ToyConfig | None = None) -> ToyRun:
    """Train the toy autoencoder under one schedule and evaluate it on a held-out set.

    Args:
        schedule: ``"standard"``, ``"kmeans_at_start"`` or ``"deferred"``.
        seed: seeds the data, the training batches, the weights and k-means; the same seed gives the same result.
        config: hyper-parameters; default :class:`ToyConfig` ().

    Returns:
        :class:`ToyRun` (metrics, held-out latents, codebook, code counts).

    Raises:
        ValueError: unknown schedule or a negative / non-integer seed.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}.")
    cfg = ToyConfig() if config is None else config
    if not isinstance(cfg, ToyConfig):
        raise TypeError(f"config must be a ToyConfig, got {type(cfg).__name__}.")
    start = time.perf_counter()
    # fork_rng: seeding the weights must not change the caller's global RNG stream
    with torch.random.fork_rng(devices=[]):
        # 0. independent streams derived from the seed, so every schedule sees the same centres, batches and
        #    held-out set whatever it draws at its switch
        stream_seeds = torch.randint(2**62, (4,), generator=_generator(seed)).tolist()
        g_centres, g_train, g_switch, g_eval = (_generator(s) for s in stream_seeds)
        torch.manual_seed(seed)

        # 1. data: centres on a line along a random unit direction
        direction = torch.randn(cfg.data_dim, generator=g_centres)
        direction = direction / direction.norm()
        positions = (torch.arange(cfg.num_modes, dtype=torch.float32) - (cfg.num_modes - 1) / 2) * cfg.mode_spacing
        centres = positions[:, None] * direction[None, :]  # (M, data_dim)

        # 2. model and optimizer, identical for all schedules (the quantizer's random init is drawn in all three)
        encoder = _mlp(cfg.data_dim, cfg.hidden, cfg.latent_dim, cfg.depth)
        decoder = _mlp(cfg.latent_dim, cfg.hidden, cfg.data_dim, cfg.depth)
        quantizer = VectorQuantizer(
            cfg.num_codes,
            cfg.latent_dim,
            commitment_cost=cfg.commitment_cost,
            active=schedule == "standard",
            kmeans_iterations=cfg.kmeans_iterations,
        )
        parameters = [*encoder.parameters(), *decoder.parameters(), *quantizer.parameters()]
        # the codebook gets no gradient while the quantizer is a pass-through; Adam skips parameters without one
        optimizer = torch.optim.Adam(parameters, lr=cfg.lr)
        switch_step = {"standard": None, "kmeans_at_start": 0, "deferred": round(cfg.switch_fraction * cfg.steps)}[
            schedule
        ]
        switch_spread = None

        # 3. training: the same batches and the same number of optimizer steps for every schedule
        for step in range(cfg.steps):
            if step == switch_step:
                with torch.no_grad():
                    modes = _random_modes(cfg.activation_samples, cfg.num_modes, g_switch)
                    samples = encoder(_sample(centres, modes, cfg.noise_std, g_switch))  # (N, D)
                report = quantizer.activate(samples, init="kmeans", seed=seed)
                switch_spread = trace_covariance(samples)
                logger.info("%s seed %d: codebook born at step %d from %d latents (k-means inertia %.4g, usage %.3f)",
                            schedule, seed, step, report.num_samples, report.inertia, report.usage)
            modes = _random_modes(cfg.batch_size, cfg.num_modes, g_train)
            x = _sample(centres, modes, cfg.noise_std, g_train)
            _, out, reconstruction = _autoencode(encoder, quantizer, decoder, x)
            loss = F.mse_loss(reconstruction, x) + out.loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        # 4. evaluation on a balanced held-out set
        for module in (encoder, quantizer, decoder):
            module.eval()
        modes = torch.arange(cfg.num_modes).repeat_interleave(cfg.eval_samples_per_mode)  # (N,)
        x = _sample(centres, modes, cfg.noise_std, g_eval)
        with torch.no_grad():
            latents, out, reconstruction = _autoencode(encoder, quantizer, decoder, x)
    counts = torch.bincount(out.indices.flatten(), minlength=cfg.num_codes)  # (K,)
    codebook = quantizer.codebook.detach().clone()
    metrics = {
        "schedule": schedule,
        "seed": seed,
        "modes_recovered": _modes_recovered(reconstruction, modes, centres),
        "num_modes": cfg.num_modes,
        "usage": round(code_usage(counts), 4),
        "used_codes": int((counts > 0).sum()),
        "num_codes": cfg.num_codes,
        "perplexity": round(float(perplexity_from_counts(counts)), 4),
        "code_distance": _rounded(mean_code_distance(codebook)),
        "code_distance_used": _rounded(mean_code_distance(codebook, mask=counts > 0)),
        "shrinkage": round(shrinkage(codebook, latents), 4),
        "recon_mse": round(float(F.mse_loss(reconstruction, x)), 6),
        "steps": cfg.steps,
        "switch_step": switch_step,
        "switch_latent_spread": None if switch_spread is None else round(switch_spread, 4),
        "seconds": round(time.perf_counter() - start, 3),
    }
    return ToyRun(metrics, latents, codebook, counts)


def _rounded(value: float, digits: int = 4) -> float | None:
    # JSON has no NaN: the mean distance over fewer than 2 used codes is reported as null
    return None if math.isnan(value) else round(value, digits)


def _modes_recovered(reconstruction: torch.Tensor, modes: torch.Tensor, centres: torch.Tensor) -> int:
    """Modes whose held-out samples mostly reconstruct within half the smallest centre distance of their centre."""
    gaps = torch.cdist(centres, centres)  # (M, M)
    gaps.fill_diagonal_(float("inf"))
    radius = 0.5 * gaps.min()
    hit = (reconstruction - centres[modes]).norm(dim=1) < radius  # (N,)
    num_modes = centres.shape[0]
    hits = torch.zeros(num_modes).index_add_(0, modes, hit.float())
    totals = torch.bincount(modes, minlength=num_modes).float()
    return int((hits > 0.5 * totals).sum())


def run(schedule: str, seed: int = 0, steps: int | None = None, config: ToyConfig | None = None) -> dict[str, Any]:
    """Train one schedule and return its metrics (the dict the command line prints as one JSON line).

    Args:
        schedule: ``"standard"``, ``"kmeans_at_start"`` or ``"deferred"``.
        seed: seed of data, batches, weights and k-means.
        steps: optimizer steps; default ``config.steps`` (2000).
        config: hyper-parameters; default :class:`ToyConfig` ().
    """
    cfg = ToyConfig() if config is None else config
    if steps is not None:
        cfg = dataclasses.replace(cfg, steps=steps)  # validated again by ToyConfig
    return train_toy(schedule, seed, cfg).metrics


def _first_principal_component(latents: torch.Tensor) -> torch.Tensor:
    centred = latents - latents.mean(dim=0, keepdim=True)  # (N, D)
    _, _, vh = torch.linalg.svd(centred.double(), full_matrices=False)
    return vh[0].to(latents.dtype)  # (D,)


def plot_latent_histograms(runs: dict[str, ToyRun], path: str | Path, bins: int = 120) -> Path:
    """Histograms of each schedule's held-out encoder outputs projected on their first principal component.

    One panel per schedule, side by side; the codes (used ones dark, unused ones light) are marked under each
    histogram on the same projection. This is the paper's "ten peaks vs fewer" figure.

    Args:
        runs: schedule name -> :class:`ToyRun`, plotted in this order.
        path: output image file (PNG by default, the format follows the suffix).
        bins: histogram bins per panel. Default 120.

    Returns:
        The path written.
    """
    if not runs:
        raise ValueError("runs must hold at least one schedule to plot.")
    # lazy import with a non-interactive backend: plotting is optional and must work without a display
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.4), squeeze=False)
    for ax, (name, toy) in zip(axes[0], runs.items()):
        axis = _first_principal_component(toy.latents)
        centre = toy.latents.mean(dim=0)
        projected = ((toy.latents - centre) @ axis).numpy()
        codes = ((toy.codebook - centre) @ axis).numpy()
        used = (toy.counts > 0).numpy()
        ax.hist(projected, bins=bins, color="tab:blue")
        ax.set_ylim(top=1.3 * ax.get_ylim()[1])  # headroom for the legend
        ax.plot(codes[~used], [0] * int((~used).sum()), "|", color="0.75", markersize=14, label="unused code")
        ax.plot(codes[used], [0] * int(used.sum()), "|", color="tab:red", markersize=14, label="used code")
        m = toy.metrics
        ax.set_title(f"{name}: {m['modes_recovered']}/{m['num_modes']} modes, perplexity {m['perplexity']:.1f}",
                     fontsize=9)
        ax.set_xlabel("encoder output on its 1st principal component")
    axes[0][0].set_ylabel("held-out samples")
    axes[0][-1].legend(fontsize=7, loc="upper right", ncol=2)
    seed = next(iter(runs.values())).metrics["seed"]
    fig.suptitle(f"Encoder output distribution (seed {seed})", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medvq.experiments.toy_shrinkage",
        description="10-mode toy: standard vs kmeans_at_start vs deferred quantization. Prints one JSON line per "
        "schedule.",
    )
    parser.add_argument("--schedule", required=True, choices=(*SCHEDULES, "all"), help="schedule to train, or all")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, weights and k-means (default 0)")
    parser.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {ToyConfig.steps})")
    parser.add_argument("--plot", type=Path, default=None,
                        help="write the latent histograms of all three schedules to this PNG (trains all three)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the model is tiny, more threads only add overhead)")
    parser.add_argument("--verbose", action="store_true", help="log the codebook births to stderr")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; prints one JSON line per requested schedule to stdout.

    Args:
        argv: arguments without the program name; default ``sys.argv[1:]``.

    Returns:
        0 on success. Bad arguments exit with status 2 and a message on stderr (argparse).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.verbose:
        # this module's logger only (named __main__ under -m): matplotlib's INFO chatter stays off
        logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")
        logger.setLevel(logging.INFO)
    config = ToyConfig() if args.steps is None else ToyConfig(steps=args.steps)
    requested = SCHEDULES if args.schedule == "all" else (args.schedule,)
    # the plot compares the three schedules, so it trains the ones not requested too (and does not print them)
    to_train = SCHEDULES if args.plot is not None else requested
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        runs: dict[str, ToyRun] = {}
        for schedule in to_train:
            runs[schedule] = train_toy(schedule, args.seed, config)
            if schedule in requested:
                print(json.dumps(runs[schedule].metrics, allow_nan=False), flush=True)
        if args.plot is not None:
            path = plot_latent_histograms(runs, args.plot)
            # the command line tells where the figure went (stdout stays pure JSON lines)
            print(f"wrote {path}", file=sys.stderr)
    finally:
        torch.set_num_threads(previous_threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
