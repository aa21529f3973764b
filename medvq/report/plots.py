"""Codebook plots: sorted code frequencies, the 2-D PCA "shrinkage picture", pairwise code distances.

Each function writes one PNG (matplotlib, Agg backend, imported lazily so ``import medvq`` never pulls matplotlib) and
returns its path. They take plain tensors, so a bundle's evaluator, the comparison report and a notebook share them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["plot_code_frequencies", "plot_codebook_pca", "plot_code_distances"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_code_frequencies(counts: Mapping[str, torch.Tensor] | torch.Tensor, path: str | Path) -> Path:
    """Code frequencies sorted from the most used code, log scale; one curve per run.

    Args:
        counts: ``(K,)`` whole-set code counts, or ``{run name: counts}`` to overlay several runs.
        path: output PNG.
    """
    series = {"codes": counts} if isinstance(counts, torch.Tensor) else dict(counts)
    if not series:
        raise ValueError("plot_code_frequencies needs at least one counts tensor.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, c in series.items():
        c = torch.as_tensor(c).double().flatten()
        if c.sum() <= 0:
            raise ValueError(f"counts of {name!r} are all zero: nothing was tokenized.")
        freq = (c / c.sum()).sort(descending=True).values
        used = int((freq > 0).sum())
        ax.plot(torch.arange(1, used + 1).numpy(), freq[:used].numpy(), label=f"{name} ({used}/{c.numel()} used)")
    ax.set_yscale("log")
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("frequency")
    ax.set_title("Code frequencies over the evaluation set")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_codebook_pca(codebook: torch.Tensor, latents: torch.Tensor, path: str | Path, used: torch.Tensor | None = None,
                      max_latents: int = 20000) -> Path:
    """Codebook vectors drawn over encoder latents in the latents' first two principal components.

    A shrunken codebook sits in a small region of the latent cloud (the paper's picture); a codebook born from
    mature latents covers it.

    Args:
        codebook: ``(K, D)`` code vectors.
        latents: ``(N, D)`` encoder latents of the evaluation set (a random subset of ``max_latents`` is drawn).
        path: output PNG.
        used: optional ``(K,)`` bool, codes used on the evaluation set (drawn in a different colour).
        max_latents: at most this many latents are plotted.
    """
    if codebook.ndim != 2 or latents.ndim != 2 or codebook.shape[1] != latents.shape[1]:
        raise ValueError(f"codebook (K, D) and latents (N, D) must share D, got {tuple(codebook.shape)} and "
                         f"{tuple(latents.shape)}.")
    latents = latents.detach().double().cpu()
    codebook = codebook.detach().double().cpu()
    if latents.shape[0] > max_latents:
        latents = latents[torch.randperm(latents.shape[0], generator=torch.Generator().manual_seed(0))[:max_latents]]
    mean = latents.mean(0)
    # principal axes of the latents (not of the codebook): both clouds in the same frame
    _, _, v = torch.linalg.svd(latents - mean, full_matrices=False)
    axes = v[: min(2, v.shape[0])].T  # (D, 2)
    lat2, code2 = (latents - mean) @ axes, (codebook - mean) @ axes
    if lat2.shape[1] == 1:  # D == 1: a second axis of zeros
        lat2, code2 = torch.cat([lat2, torch.zeros_like(lat2)], 1), torch.cat([code2, torch.zeros_like(code2)], 1)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(lat2[:, 0], lat2[:, 1], s=2, alpha=0.15, color="tab:blue", label="encoder latents")
    if used is None:
        ax.scatter(code2[:, 0], code2[:, 1], s=6, color="tab:red", label="codes")
    else:
        used = used.cpu().bool()
        ax.scatter(code2[~used, 0], code2[~used, 1], s=6, color="0.6", label="unused codes")
        ax.scatter(code2[used, 0], code2[used, 1], s=6, color="tab:red", label="used codes")
    ax.set_xlabel("latent PC 1")
    ax.set_ylabel("latent PC 2")
    ax.set_title("Codebook over encoder latents (PCA of the latents)")
    ax.legend(fontsize=8, markerscale=3)
    return _save(fig, path)


def plot_code_distances(codebooks: Mapping[str, torch.Tensor] | torch.Tensor, path: str | Path,
                        max_codes: int = 4096) -> Path:
    """Histogram of pairwise Euclidean distances between codebook vectors; one histogram per run.

    Args:
        codebooks: ``(K, D)`` codebook, or ``{run name: codebook}``.
        path: output PNG.
        max_codes: a random subset of at most this many codes per codebook (the pairs grow as K^2).
    """
    series = {"codebook": codebooks} if isinstance(codebooks, torch.Tensor) else dict(codebooks)
    if not series:
        raise ValueError("plot_code_distances needs at least one codebook.")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, codebook in series.items():
        e = codebook.detach().double().cpu()
        if e.shape[0] > max_codes:
            e = e[torch.randperm(e.shape[0], generator=torch.Generator().manual_seed(0))[:max_codes]]
        d = torch.cdist(e, e)
        pairs = d[torch.triu_indices(e.shape[0], e.shape[0], offset=1).unbind()]  # i < j
        ax.hist(pairs.numpy(), bins=60, alpha=0.5, density=True, label=f"{name} (mean {float(pairs.mean()):.3g})")
    ax.set_xlabel("pairwise code distance")
    ax.set_ylabel("density")
    ax.set_title("Distances between codebook vectors")
    ax.legend(fontsize=8)
    return _save(fig, path)
