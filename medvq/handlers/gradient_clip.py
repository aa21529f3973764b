"""Gradient-norm clipping for MONAI's ``SupervisedTrainer``, which has no clipping option of its own.

The trainer fires ``IterationEvents.BACKWARD_COMPLETED`` between ``backward()`` and ``optimizer.step()``; this handler
clips there (unscaling first when the trainer's GradScaler is on, as ``torch.amp`` requires) and records the norm
before clipping in ``engine.state.output["grad_norm"]`` so the stats/TensorBoard handlers log it.
"""

from __future__ import annotations

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

__all__ = ["GradientClipHandler"]


class GradientClipHandler:
    """Clip the total gradient norm of the trainer's network to ``max_norm`` before every optimizer step.

    Args:
        max_norm: largest total l2 norm; VAR trains with 2.0.
        output_key: key of the pre-clipping norm in ``engine.state.output``. Default ``"grad_norm"``.
    """

    def __init__(self, max_norm: float, output_key: str = "grad_norm") -> None:
        if not max_norm > 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm!r}.")
        self.max_norm = float(max_norm)
        self.output_key = output_key

    def attach(self, engine: Engine) -> None:
        if getattr(engine, "accumulation_steps", 1) > 1:
            # MONAI fires BACKWARD_COMPLETED after every micro-batch: clipping partial sums (and unscaling twice under
            # AMP) would be wrong
            raise ValueError(
                f"GradientClipHandler does not support gradient accumulation (the trainer has accumulation_steps="
                f"{engine.accumulation_steps}); use accumulation_steps=1 or clip in a custom iteration."
            )
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None and scaler.is_enabled():
            scaler.unscale_(engine.optimizer)  # clip the true gradients, not the scaled ones
        params = [p for p in engine.network.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm)
        if isinstance(engine.state.output, dict):
            engine.state.output[self.output_key] = norm.detach()
