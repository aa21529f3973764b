"""Cross-entropy of a next-scale generator over all token positions (VAR's training loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["NextScaleLoss"]


class NextScaleLoss(nn.Module):
    """Mean cross-entropy of ``(B, L, V)`` logits against ``(B, L)`` tokens, every position weighted equally (VAR
    weights each of the L positions by 1/L, which is this mean).

    Args:
        label_smoothing: as ``torch.nn.functional.cross_entropy``. Default 0.0.
    """

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        self.label_smoothing = float(label_smoothing)

    def forward(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 3 or tokens.shape != logits.shape[:2]:
            raise ValueError(f"logits must be (B, L, V) and tokens (B, L), got {tuple(logits.shape)} and "
                             f"{tuple(tokens.shape)}.")
        # (B, L, V) -> (B * L, V); float32 so bf16 autocast logits do not lose the loss's precision
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens.reshape(-1).long(),
                               label_smoothing=self.label_smoothing)
