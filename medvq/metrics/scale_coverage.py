"""Per-scale codebook coverage of token sequences (multi-scale tokenizers, their generators), as an Ignite metric.

A multi-scale tokenizer shares one codebook over all scales, but the scales use it very differently: the 1x1 scale has
one token per image, the last scale hundreds. Collapse shows first at the coarse scales (VAR reproductions report it),
so this metric reports usage and perplexity per scale next to the pooled numbers (design contract: multi-scale
quantizers report every coverage number per scale too). Given the residuals each token was matched against, it also
reports their effective dimension per scale and, given the codebook, that of the codes each scale uses. For code
distance and shrinkage of the pooled tokens use :class:`~medvq.metrics.CodebookCoverage` on the flattened sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from medvq.metrics.coverage_metric import _codebook_source, _read_table
from medvq.metrics.coverage import code_usage, covariance_from_moments, effective_dimension, perplexity_from_counts

__all__ = ["ScaleCoverage"]


class ScaleCoverage(Metric):
    """Usage and perplexity of ``(B, L)`` token sequences, pooled and per scale, over a whole evaluation set.

    ``compute`` returns ``{prefix}perplexity``, ``{prefix}usage``, ``{prefix}dead_codes`` (pooled over all scales) and
    ``{prefix}perplexity_s{k}``, ``{prefix}usage_s{k}`` for every scale k. When ``output_transform`` gives
    ``(tokens, residuals)`` (``residuals`` ``(B * L, D)``, image by image in sequence order, as
    :class:`~medvq.engines.TokenizerEvaluator` returns them), it adds ``{prefix}residual_effective_dim_s{k}``, and
    with ``codebook`` also ``{prefix}codebook_effective_dim_s{k}`` (the codes used at scale k); both are
    :func:`~medvq.metrics.effective_dimension`. Counts and moments are all-reduced under DDP.

    Args:
        num_embeddings: K, the codebook size.
        scale_lengths: tokens per scale in sequence order (``MultiScaleResidualQuantizer.scale_lengths``).
        output_transform: engine output -> ``(B, L)`` int tokens, or ``(tokens, residuals)``. Default: the output's
            ``"tokens"`` entry.
        prefix: prefix of every result name, e.g. ``"gen_"``. Default ``""``.
        device: where the counts live.
        codebook: optional tokenizer, quantizer or ``(K, D)`` tensor, read at compute time (as
            :class:`~medvq.metrics.CodebookCoverage`).
    """

    def __init__(
        self,
        num_embeddings: int,
        scale_lengths: Sequence[int],
        output_transform: Callable = lambda out: out["tokens"],
        prefix: str = "",
        device: str | torch.device = "cpu",
        codebook: Any = None,
    ) -> None:
        if isinstance(num_embeddings, bool) or not isinstance(num_embeddings, int) or num_embeddings < 1:
            raise ValueError(f"num_embeddings must be an integer >= 1, got {num_embeddings!r}.")
        lengths = [int(n) for n in scale_lengths]
        if not lengths or any(n < 1 for n in lengths):
            raise ValueError(f"scale_lengths must be positive token counts, got {scale_lengths!r}.")
        self.num_embeddings = num_embeddings
        self.scale_lengths = lengths
        self.prefix = prefix
        self.last_counts: torch.Tensor | None = None
        self._codebook = None if codebook is None else _codebook_source(codebook)
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._counts = torch.zeros(len(self.scale_lengths), self.num_embeddings, dtype=torch.int64,
                                   device=self._device)  # (num_scales, K)
        # residual moments per scale, sized by the first residuals: rows (S,), sums (S, D), Gram matrices (S, D, D)
        self._res_count = torch.zeros(len(self.scale_lengths), dtype=torch.int64, device=self._device)
        self._res_sum = torch.zeros(len(self.scale_lengths), 0, dtype=torch.float64, device=self._device)
        self._res_gram = torch.zeros(len(self.scale_lengths), 0, 0, dtype=torch.float64, device=self._device)

    def _add_residuals(self, residuals: Any, batch: int) -> None:
        total = sum(self.scale_lengths)
        if not isinstance(residuals, torch.Tensor) or residuals.ndim != 2 or residuals.shape[0] != batch * total:
            shape = tuple(residuals.shape) if isinstance(residuals, torch.Tensor) else type(residuals).__name__
            raise ValueError(f"residuals must be (B * L, D) = ({batch} * {total}, D), image by image, got {shape}.")
        dim = residuals.shape[1]
        if not self._res_sum.shape[1]:
            self._res_sum = self._res_sum.new_zeros(len(self.scale_lengths), dim)
            self._res_gram = self._res_gram.new_zeros(len(self.scale_lengths), dim, dim)
        per_image = residuals.detach().to(self._device, torch.float64).view(batch, total, dim)  # (B, L, D)
        for k, part in enumerate(per_image.split(self.scale_lengths, dim=1)):
            rows = part.reshape(-1, dim)  # (B * n_k, D)
            self._res_count[k] += rows.shape[0]
            self._res_sum[k] += rows.sum(0)
            self._res_gram[k] += rows.T @ rows

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        tokens, residuals = (output if isinstance(output, (tuple, list)) and len(output) == 2 else (output, None))
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.shape[1] != sum(self.scale_lengths):
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be (B, {sum(self.scale_lengths)}) sequences (sum of scale_lengths), "
                             f"got {shape}.")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.num_embeddings):
            raise ValueError(f"tokens must lie in [0, {self.num_embeddings}) (num_embeddings).")
        if residuals is not None:
            self._add_residuals(residuals, tokens.shape[0])
        for k, part in enumerate(tokens.detach().split(self.scale_lengths, dim=1)):
            self._counts[k] += torch.bincount(part.reshape(-1).long(), minlength=self.num_embeddings).to(self._device)

    @sync_all_reduce("_counts", "_res_count", "_res_sum", "_res_gram")
    def compute(self) -> dict[str, float]:
        if int(self._counts.sum()) == 0:
            raise RuntimeError("ScaleCoverage must have at least one batch before it can be computed.")
        self.last_counts = self._counts.detach().cpu().clone()  # (num_scales, K), for plots and reports
        pooled = self._counts.sum(0)
        p = self.prefix
        result = {f"{p}perplexity": float(perplexity_from_counts(pooled)), f"{p}usage": code_usage(pooled),
                  f"{p}dead_codes": int((pooled == 0).sum())}
        for k, counts in enumerate(self._counts):
            result[f"{p}perplexity_s{k}"] = float(perplexity_from_counts(counts))
            result[f"{p}usage_s{k}"] = code_usage(counts)
        if int(self._res_count.sum()) > 0:
            table = None if self._codebook is None else _read_table(self._codebook).double().cpu()
            for k, counts in enumerate(self._counts):
                n = int(self._res_count[k])
                result[f"{p}residual_effective_dim_s{k}"] = (effective_dimension(
                    covariance_from_moments(n, self._res_sum[k], self._res_gram[k]), is_covariance=True)
                    if n > 1 else float("nan"))
                if table is not None:
                    used = counts.cpu() > 0
                    result[f"{p}codebook_effective_dim_s{k}"] = (effective_dimension(table[used])
                                                                 if int(used.sum()) >= 2 else float("nan"))
        return result
