"""Next-token accuracy of a next-scale generator, overall and per scale, as an accumulating Ignite metric."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from ignite.metrics.metric import EpochWise, MetricUsage, reinit__is_reduced, sync_all_reduce

__all__ = ["TokenAccuracy"]


class TokenAccuracy(Metric):
    """Fraction of token positions whose arg-max logit is the target token, over all batches since ``reset``.

    ``compute`` returns a dict: ``{prefix}token_acc`` over every position and ``{prefix}token_acc_s{k}`` for each
    scale ``k`` (coarse scales are the hardest to predict: one token stands for the whole image). Ignite copies each
    entry into ``engine.state.metrics``, so TensorBoard/Stats handlers log them as scalars. DDP-safe (counts are
    all-reduced).

    Args:
        scale_lengths: tokens per scale, in sequence order (``MultiScaleResidualQuantizer.scale_lengths``).
        output_transform: engine output -> ``(logits (B, L, V), tokens (B, L))``; default reads MONAI's
            ``pred`` / ``label`` keys.
        prefix: prefix of the result names. Default ``""``.
        device: where the counts live.
    """

    def __init__(
        self,
        scale_lengths: Sequence[int],
        output_transform: Callable = lambda out: (out["pred"], out["label"]),
        prefix: str = "",
        device: str | torch.device = "cpu",
    ) -> None:
        lengths = [int(n) for n in scale_lengths]
        if not lengths or any(n < 1 for n in lengths):
            raise ValueError(f"scale_lengths must be positive token counts, got {scale_lengths!r}.")
        self.scale_lengths = lengths
        self.prefix = prefix
        # the scale of every sequence position: (L,)
        self._scale_of = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
        super().__init__(output_transform=output_transform, device=device)

    def attach(self, engine: Engine, name: str = "token_accuracy", usage: str | MetricUsage = EpochWise.usage_name
               ) -> None:
        """Ignite's ``Metric.attach`` with a default name, so a bundle can list the metric among ``train#handlers``
        (MONAI calls ``handler.attach(engine)``); listed first, it is computed before the loggers read it."""
        super().attach(engine, name, usage)

    @reinit__is_reduced
    def reset(self) -> None:
        self._correct = torch.zeros(len(self.scale_lengths), dtype=torch.int64, device=self._device)
        self._total = torch.zeros(len(self.scale_lengths), dtype=torch.int64, device=self._device)

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        logits, tokens = output
        if logits.ndim != 3 or tokens.shape != logits.shape[:2] or tokens.shape[1] != self._scale_of.numel():
            raise ValueError(
                f"expected logits (B, L, V) and tokens (B, L) with L = {self._scale_of.numel()} (sum of "
                f"scale_lengths), got {tuple(logits.shape)} and {tuple(tokens.shape)}."
            )
        hits = logits.detach().argmax(dim=-1).eq(tokens).sum(dim=0)  # (L,) correct positions over the batch
        scale_of = self._scale_of.to(hits.device)
        correct = torch.zeros(len(self.scale_lengths), dtype=torch.int64, device=hits.device)
        correct.index_add_(0, scale_of, hits.long())
        self._correct += correct.to(self._device)
        self._total += torch.tensor(self.scale_lengths, device=self._device) * tokens.shape[0]

    @sync_all_reduce("_correct", "_total")
    def compute(self) -> dict[str, float]:
        if int(self._total.sum()) == 0:
            raise RuntimeError("TokenAccuracy must have at least one batch before it can be computed.")
        result = {f"{self.prefix}token_acc": float(self._correct.sum()) / float(self._total.sum())}
        for k, (c, n) in enumerate(zip(self._correct.tolist(), self._total.tolist())):
            result[f"{self.prefix}token_acc_s{k}"] = c / n
        return result
