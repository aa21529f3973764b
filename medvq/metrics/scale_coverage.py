"""Per-scale codebook coverage of token sequences (multi-scale tokenizers, their generators), as an Ignite metric.

A multi-scale tokenizer shares one codebook over all scales, but the scales use it very differently: the 1x1 scale has
one token per image, the last scale hundreds. Collapse shows first at the coarse scales (VAR reproductions report it),
so this metric reports usage and perplexity per scale next to the pooled numbers (design contract: multi-scale
quantizers report every coverage number per scale too). For code distance and shrinkage of the pooled tokens use
:class:`~medvq.metrics.CodebookCoverage` on the flattened sequences.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from medvq.metrics.coverage import code_usage, perplexity_from_counts

__all__ = ["ScaleCoverage"]


class ScaleCoverage(Metric):
    """Usage and perplexity of ``(B, L)`` token sequences, pooled and per scale, over a whole evaluation set.

    ``compute`` returns ``{prefix}perplexity``, ``{prefix}usage``, ``{prefix}dead_codes`` (pooled over all scales) and
    ``{prefix}perplexity_s{k}``, ``{prefix}usage_s{k}`` for every scale k. Counts are all-reduced under DDP.

    Args:
        num_embeddings: K, the codebook size.
        scale_lengths: tokens per scale in sequence order (``MultiScaleResidualQuantizer.scale_lengths``).
        output_transform: engine output -> ``(B, L)`` int tokens. Default: the output's ``"tokens"`` entry.
        prefix: prefix of every result name, e.g. ``"gen_"``. Default ``""``.
        device: where the counts live.
    """

    def __init__(
        self,
        num_embeddings: int,
        scale_lengths: Sequence[int],
        output_transform: Callable = lambda out: out["tokens"],
        prefix: str = "",
        device: str | torch.device = "cpu",
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
        super().__init__(output_transform=output_transform, device=device)

    @reinit__is_reduced
    def reset(self) -> None:
        self._counts = torch.zeros(len(self.scale_lengths), self.num_embeddings, dtype=torch.int64,
                                   device=self._device)  # (num_scales, K)

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        tokens = output
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.shape[1] != sum(self.scale_lengths):
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must be (B, {sum(self.scale_lengths)}) sequences (sum of scale_lengths), "
                             f"got {shape}.")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.num_embeddings):
            raise ValueError(f"tokens must lie in [0, {self.num_embeddings}) (num_embeddings).")
        for k, part in enumerate(tokens.detach().split(self.scale_lengths, dim=1)):
            self._counts[k] += torch.bincount(part.reshape(-1).long(), minlength=self.num_embeddings).to(self._device)

    @sync_all_reduce("_counts")
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
        return result
