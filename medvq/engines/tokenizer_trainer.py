"""Ignite/MONAI trainer of a VQGAN tokenizer: one iteration = generator step, then discriminator step.

The iteration follows VQGAN (Esser et al. 2021; taming-transformers ``VQLPIPSWithDiscriminator``) and reads as the
numbered stages of Ignite's DCGAN example. Schedules live in ``engine.state`` and are read in one place
(:meth:`TokenizerTrainer._iteration`): ``engine.state.discriminator_active`` is set each iteration from
``discriminator_start``, and the quantizer's own ``active`` flag (switched by
:class:`medvq.handlers.DeferredQuantizationHandler`) decides whether the VQ loss is live.

One AMP path: ``amp=True`` turns on ``torch.autocast`` with ``amp_dtype`` (bfloat16 by default, no loss scaling
needed) and, for float16 only, a ``GradScaler``; ``amp=False`` turns both off. The quantizer always computes its
distances in float32 (see :class:`medvq.quantizers.VectorQuantizer`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import Trainer
from monai.engines.utils import default_prepare_batch
from monai.inferers import Inferer, SimpleInferer
from monai.utils.enums import StrEnum
from torch import nn
from torch.optim import Optimizer

from medvq.losses.adversarial import adaptive_adversarial_weight, discriminator_loss, generator_loss
from medvq.utils.distributed import unwrap_model

__all__ = ["TokenizerKeys", "TokenizerTrainer", "unwrap_model"]


class TokenizerKeys(StrEnum):
    """Keys of the flat dict of scalars a :class:`TokenizerTrainer` iteration returns (``engine.state.output``)."""

    LOSS = "loss"  # total generator loss
    RECONSTRUCTION = "rec_loss"  # weighted l1 + l2 + perceptual
    L1 = "l1_loss"
    L2 = "l2_loss"
    PERCEPTUAL = "perceptual_loss"
    VQ = "vq_loss"  # codebook + commitment (0 while the quantizer is a pass-through)
    GENERATOR_ADV = "g_adv_loss"
    ADAPTIVE_WEIGHT = "adaptive_weight"  # VQGAN lambda times adversarial_weight (0 before discriminator_start)
    DISCRIMINATOR = "d_loss"
    PERPLEXITY = "batch_perplexity"  # this batch only; whole-set numbers come from CodebookCoverage
    QUANTIZE_ACTIVE = "quantize_active"
    GRAD_NORM = "grad_norm"  # generator gradient norm before clipping
    D_GRAD_NORM = "d_grad_norm"
    LR = "lr"  # learning rate of the tokenizer's first parameter group



_AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class TokenizerTrainer(Trainer):
    """Train a tokenizer (``forward(x, return_output=True)`` -> output with ``reconstruction`` and ``quantizer``).

    Args:
        device: training device.
        max_epochs: number of epochs.
        train_data_loader: iterable of batches (dicts with ``image_key``).
        network: the tokenizer, e.g. :class:`medvq.networks.VQGANTokenizer`, possibly DDP-wrapped. It must accept
            ``return_output=True`` and expose ``last_layer`` (the decoder's final weight) when a discriminator is used.
        optimizer: optimizer of the tokenizer's parameters.
        reconstruction_loss: callable ``(reconstruction, target) -> ReconstructionTerms``
            (:class:`medvq.losses.ReconstructionLoss`).
        discriminator: optional PatchGAN discriminator (:func:`medvq.losses.build_discriminator`); None trains
            without the adversarial term.
        d_optimizer: optimizer of the discriminator; required with ``discriminator``.
        adversarial_weight: factor on VQGAN's adaptive weight. Default 0.1.
        adversarial_criterion: ``"hinge"`` or ``"least_squares"``. Default ``"hinge"``.
        discriminator_start: iteration from which the discriminator trains and the adversarial term is used (VQGAN
            starts it late, once reconstructions are reasonable). Default 0.
        grad_clip_norm: max gradient norm of each step; None disables clipping. Default 1.0.
        amp: autocast (+ GradScaler for float16). Default False.
        amp_dtype: ``"bfloat16"`` (default; no scaler needed) or ``"float16"``.
        image_key: key of the images in a batch. Default ``"image"``.
        epoch_length: iterations per epoch; default ``len(train_data_loader)``.
        non_blocking: non-blocking host-to-device copies.
        prepare_batch: MONAI prepare-batch callable; its first output is the image tensor.
        train_handlers: MONAI/Ignite handlers to attach.
        key_train_metric, additional_metrics: MONAI metric dicts (computed on ``engine.state.output``).
        inferer: how the network is called on a batch; default MONAI's ``SimpleInferer`` (``network(x, **kw)``).
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable,
        network: nn.Module,
        optimizer: Optimizer,
        reconstruction_loss: Callable,
        discriminator: nn.Module | None = None,
        d_optimizer: Optimizer | None = None,
        adversarial_weight: float = 0.1,
        adversarial_criterion: str = "hinge",
        discriminator_start: int = 0,
        grad_clip_norm: float | None = 1.0,
        amp: bool = False,
        amp_dtype: str = "bfloat16",
        image_key: str = "image",
        epoch_length: int | None = None,
        non_blocking: bool = False,
        prepare_batch: Callable = default_prepare_batch,
        train_handlers: Sequence | None = None,
        key_train_metric: dict | None = None,
        additional_metrics: dict | None = None,
        inferer: Inferer | None = None,
    ) -> None:
        if (discriminator is None) != (d_optimizer is None):
            raise ValueError("discriminator and d_optimizer must be given together (or neither).")
        if amp_dtype not in _AMP_DTYPES:
            raise ValueError(f"amp_dtype must be one of {tuple(_AMP_DTYPES)}, got {amp_dtype!r}.")
        if adversarial_weight < 0:
            raise ValueError(f"adversarial_weight must be >= 0, got {adversarial_weight!r}.")
        if discriminator_start < 0:
            raise ValueError(f"discriminator_start must be >= 0, got {discriminator_start!r}.")
        if grad_clip_norm is not None and grad_clip_norm <= 0:
            raise ValueError(f"grad_clip_norm must be > 0 or None, got {grad_clip_norm!r}.")
        # MONAI's Workflow amp flag would make Trainer.run build a CUDA-only GradScaler: this trainer owns its AMP path
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            handlers=train_handlers,
            amp=False,
            decollate=False,  # the output is a flat dict of scalars, nothing to decollate
        )
        self.network = network
        self.inferer = SimpleInferer() if inferer is None else inferer
        self.optimizer = optimizer
        self.reconstruction_loss = reconstruction_loss
        self.discriminator = discriminator
        self.d_optimizer = d_optimizer
        self.adversarial_weight = float(adversarial_weight)
        self.adversarial_criterion = adversarial_criterion
        self.discriminator_start = int(discriminator_start)
        self.grad_clip_norm = grad_clip_norm
        self.use_amp = bool(amp)
        self.amp_dtype = _AMP_DTYPES[amp_dtype]
        self.image_key = image_key
        device_type = torch.device(device).type
        self.autocast_device = device_type
        scaling = self.use_amp and self.amp_dtype == torch.float16
        self.g_scaler = torch.amp.GradScaler(device_type, enabled=scaling)
        self.d_scaler = torch.amp.GradScaler(device_type, enabled=scaling)
        self.state.discriminator_active = False

        @self.on(Events.ITERATION_STARTED)
        def _discriminator_schedule(engine: TokenizerTrainer) -> None:
            # iteration is 1-based once started: the discriminator trains from iteration discriminator_start + 1
            engine.state.discriminator_active = (
                engine.discriminator is not None and engine.state.iteration > engine.discriminator_start
            )

    def run(self) -> None:  # type: ignore[override]
        # skip Trainer.run (it would create torch.cuda.amp.GradScaler); Workflow.run handles the rest
        super(Trainer, self).run()

    def autocast(self) -> torch.autocast:
        """The trainer's one autocast context (disabled without ``amp``); the deferred switch collects under it."""
        return torch.autocast(self.autocast_device, dtype=self.amp_dtype, enabled=self.use_amp)

    def _step(self, loss: torch.Tensor, optimizer: Optimizer, scaler: torch.amp.GradScaler, parameters) -> torch.Tensor:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        params = [p for p in parameters if p.grad is not None]
        if self.grad_clip_norm is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])) if params else loss.new_zeros(())
        scaler.step(optimizer)
        scaler.update()
        return norm.detach()

    def _iteration(self, engine: TokenizerTrainer, batchdata: dict[str, Any]) -> dict[str, torch.Tensor]:
        # 0. batch
        if batchdata is None:
            raise ValueError("must provide batch data for current iteration.")
        images = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)[0]
        images = images.as_tensor() if hasattr(images, "as_tensor") else images  # MetaTensor -> Tensor
        network, tokenizer = engine.network, unwrap_model(engine.network)
        use_adversarial = bool(engine.state.discriminator_active)
        network.train()
        zero = images.new_zeros((), dtype=torch.float32)

        # 1. generator forward: reconstruction, VQ terms, reconstruction terms
        engine.optimizer.zero_grad(set_to_none=True)
        with engine.autocast():
            output = engine.inferer(images, network, return_output=True)
        reconstruction = output.reconstruction
        rec = engine.reconstruction_loss(reconstruction, images)
        vq_loss = output.quantizer.loss.float()
        g_adv, weight = zero, zero
        # 2. adversarial term with VQGAN's adaptive weight (after discriminator_start only), as taming's
        # VQLPIPSWithDiscriminator: the discriminator in train mode (normalization layers use this batch of
        # reconstructions alone) on the reconstructions. It is called unwrapped with its parameters frozen, which gives
        # the generator the same gradient as taming's call while no gradient lands in the discriminator and, under
        # DDP, its reducer stays idle
        if use_adversarial:
            critic = unwrap_model(engine.discriminator)
            critic.train()
            critic.requires_grad_(False)
            try:
                with engine.autocast():
                    g_adv = generator_loss(critic(reconstruction), engine.adversarial_criterion)
                weight = engine.adversarial_weight * adaptive_adversarial_weight(rec.total, g_adv, tokenizer.last_layer)
            finally:
                critic.requires_grad_(True)
        loss = rec.total + vq_loss + weight * g_adv
        # 3. generator update (scaled, unscaled, clipped)
        grad_norm = engine._step(loss, engine.optimizer, engine.g_scaler, network.parameters())

        # 4. discriminator update, as taming: real images and detached reconstructions in two separate calls, so
        # normalization layers never mix real and fake statistics. Two forward passes of a DDP module before one
        # backward are fine without find_unused_parameters: autograd sums each parameter's two gradient
        # contributions before its hook fires once (tests/bundles: torchrun gloo)
        d_loss, d_grad_norm = zero, zero
        if use_adversarial:
            engine.discriminator.train()
            engine.d_optimizer.zero_grad(set_to_none=True)
            with engine.autocast():
                real_logits = engine.discriminator(images.detach())[-1]  # (B, 1, *patches)
                fake_logits = engine.discriminator(reconstruction.detach())[-1]
                d_loss = discriminator_loss(real_logits, fake_logits, engine.adversarial_criterion)
            d_grad_norm = engine._step(d_loss, engine.d_optimizer, engine.d_scaler, engine.discriminator.parameters())

        # 5. a flat dict of detached scalars (no host sync here; handlers convert)
        quantizer = tokenizer.quantizer
        return {
            TokenizerKeys.LOSS: loss.detach(),
            TokenizerKeys.RECONSTRUCTION: rec.total.detach(),
            TokenizerKeys.L1: rec.l1.detach(),
            TokenizerKeys.L2: rec.l2.detach(),
            TokenizerKeys.PERCEPTUAL: rec.perceptual.detach(),
            TokenizerKeys.VQ: vq_loss.detach(),
            TokenizerKeys.GENERATOR_ADV: g_adv.detach(),
            TokenizerKeys.ADAPTIVE_WEIGHT: weight.detach(),
            TokenizerKeys.DISCRIMINATOR: d_loss.detach(),
            TokenizerKeys.PERPLEXITY: output.quantizer.perplexity.detach(),
            TokenizerKeys.QUANTIZE_ACTIVE: torch.tensor(float(quantizer.active)),
            TokenizerKeys.GRAD_NORM: grad_norm,
            TokenizerKeys.D_GRAD_NORM: d_grad_norm,
            TokenizerKeys.LR: torch.tensor(float(engine.optimizer.param_groups[0]["lr"])),
        }
