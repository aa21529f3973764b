"""Next-scale sampling from a :class:`~medvq.networks.VARTransformer` with classifier-free guidance.

Follows VAR's ``autoregressive_infer_cfg`` (Tian et al. 2024, arXiv 2404.02905, ``models/var.py``) and
``sample_with_top_k_top_p_`` (``models/helpers.py``). For every scale ``k``, coarse to fine::

    logits_k = l_uncond + w_k * (l_cond - l_uncond)       # classifier-free guidance
    idx_k    ~ softmax(filter(logits_k / temperature))     # top-k, then top-p
    f_hat, x_{k+1} = quantizer.next_scale_input(k, f_hat, idx_k)

``w_k = w`` (``guidance_ramp="constant"``) or ``w_k = 1 + (w - 1) k / (num_scales - 1)`` (``"linear"``, VAR's
schedule with its ``cfg = w - 1``), so ``w = 1`` is plain conditional sampling; ``w = 0`` is unconditional with the
constant ramp (the linear ramp starts at ``w_0 = 1``, so its first scale stays conditional). Only the
branches the weights need are run: the conditional rows when some ``w_k != 0``, the null rows when some ``w_k != 1``
(both as one doubled batch ``[cond; null]``). Hence ``guidance=0, guidance_ramp="constant"`` with a condition runs
exactly the computation (and the random draws) of ``condition=None``.

Decode the result with ``tokenizer.decode(quantizer.indices_to_latent(maps))``.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch

from medvq.networks.var import VARTransformer
from medvq.quantizers.multiscale import MultiScaleResidualQuantizer

__all__ = ["filter_logits", "sample_var"]

_RAMPS = ("constant", "linear")


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Top-k then top-p (nucleus) filtering over the last axis; removed entries become ``-inf``.

    Args:
        logits: ``(..., V)`` floating logits.
        top_k: keep the ``top_k`` largest logits (exactly ``top_k``, ties broken by ``torch.topk``); 0 (default) or
            ``>= V`` keeps all.
        top_p: keep the smallest set of most probable tokens whose probability (after top-k) reaches ``top_p``;
            always at least one token. 0 (default) or 1 keeps all.

    Returns:
        a new tensor of the shape of ``logits``.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {top_k!r}.")
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1] (0 disables it), got {top_p!r}.")
    logits = logits.clone()
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep.scatter_(-1, logits.topk(top_k, dim=-1).indices, True)
        logits.masked_fill_(~keep, -math.inf)
    if 0.0 < top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # a token stays if the tokens ranked above it hold less than top_p: the smallest prefix reaching top_p, and
        # the most probable token always (nothing ranks above it)
        before = probs.cumsum(dim=-1) - probs  # (..., V) exclusive cumulative probability
        remove_sorted = before >= top_p
        remove = torch.zeros_like(remove_sorted).scatter_(-1, order, remove_sorted)
        logits.masked_fill_(remove, -math.inf)
    return logits


def _guidance_weights(guidance: float, ramp: str, num_scales: int) -> list[float]:
    if ramp == "constant":
        return [float(guidance)] * num_scales
    last = max(num_scales - 1, 1)  # a single scale is the first one: weight 1
    return [1.0 + (guidance - 1.0) * k / last for k in range(num_scales)]


def _check_arguments(
    var: VARTransformer,
    quantizer: MultiScaleResidualQuantizer,
    condition: torch.Tensor | None,
    num_samples: int | None,
    guidance: float,
    guidance_ramp: str,
    top_k: int,
    top_p: float,
    temperature: float,
    generator: torch.Generator | None = None,
) -> int:
    """Validate :func:`sample_var`'s arguments; returns the batch size."""
    if not isinstance(var, VARTransformer):
        raise TypeError(f"var must be a VARTransformer, got {type(var).__name__}.")
    if not isinstance(quantizer, MultiScaleResidualQuantizer):
        raise TypeError(f"quantizer must be a MultiScaleResidualQuantizer, got {type(quantizer).__name__}.")
    if tuple(quantizer.scale_lengths) != tuple(var.scale_lengths):
        raise ValueError(f"quantizer.scale_lengths {tuple(quantizer.scale_lengths)} must equal var.scale_lengths "
                         f"{tuple(var.scale_lengths)}.")
    if quantizer.embedding_dim != var.embedding_dim:
        raise ValueError(f"quantizer.embedding_dim ({quantizer.embedding_dim}) must equal var.embedding_dim "
                         f"({var.embedding_dim}).")
    if quantizer.num_embeddings != var.num_embeddings:
        raise ValueError(f"quantizer.num_embeddings ({quantizer.num_embeddings}) must equal var.num_embeddings "
                         f"({var.num_embeddings}), the codebook size V.")
    if not (isinstance(guidance, (int, float)) and math.isfinite(guidance) and guidance >= 0):
        raise ValueError(f"guidance must be a finite number >= 0 (1: conditional, 0: unconditional), got {guidance!r}.")
    if guidance_ramp not in _RAMPS:
        raise ValueError(f"guidance_ramp must be one of {_RAMPS}, got {guidance_ramp!r}.")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 disables it), got {top_k!r}.")
    if not (isinstance(top_p, (int, float)) and 0.0 <= top_p <= 1.0):
        raise ValueError(f"top_p must be in [0, 1] (0 disables it), got {top_p!r}.")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
    if generator is not None:
        device = next(var.parameters()).device
        if not isinstance(generator, torch.Generator) or generator.device.type != device.type:
            got = generator.device if isinstance(generator, torch.Generator) else type(generator).__name__
            raise ValueError(f"generator must be a torch.Generator on var's device ({device.type}), got {got}: "
                             f"create it with torch.Generator(device={str(device)!r}).")
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)
                                    or num_samples < 1):
        raise ValueError(f"num_samples must be an integer >= 1 or None, got {num_samples!r}.")
    if condition is None:
        if num_samples is None:
            raise ValueError("num_samples is required when condition is None (unconditional sampling).")
        return num_samples
    if not isinstance(condition, torch.Tensor) or condition.ndim != 2 or condition.shape[1] != var.num_conditions:
        shape = tuple(condition.shape) if isinstance(condition, torch.Tensor) else type(condition).__name__
        raise ValueError(f"condition must have shape (B, num_conditions={var.num_conditions}) or be None, got {shape}.")
    if num_samples is not None and num_samples != condition.shape[0]:
        raise ValueError(f"num_samples ({num_samples}) must equal condition's batch size ({condition.shape[0]}) "
                         f"or be None.")
    return condition.shape[0]


def sample_var(
    var: VARTransformer,
    quantizer: MultiScaleResidualQuantizer,
    condition: torch.Tensor | None,
    num_samples: int | None = None,
    guidance: float = 1.0,
    guidance_ramp: str = "linear",
    top_k: int = 0,
    top_p: float = 0.0,
    generator: torch.Generator | None = None,
    use_kv_cache: bool = True,
    temperature: float = 1.0,
) -> list[torch.Tensor]:
    """Sample multi-scale token maps, coarse to fine, with classifier-free guidance.

    Runs under ``torch.no_grad()`` with ``var`` in eval mode (its mode is restored afterwards). The cached and the
    uncached paths draw the same random numbers and compute the same logits up to rounding, so for a fixed
    ``generator`` they give the same tokens (barring near-ties of rounding size).

    Args:
        var: the transformer; its ``scale_lengths``, ``embedding_dim`` and ``num_embeddings`` must match
            ``quantizer``'s.
        quantizer: the tokenizer's multi-scale quantizer (codebook lookups and the next scale's input).
        condition: ``(B, num_conditions)`` multi-hot, or None for unconditional sampling (the null branch only).
        num_samples: B; required when ``condition`` is None, else None or ``condition.shape[0]``.
        guidance: CFG weight ``w >= 0``: 1 (default) is conditional sampling, > 1 sharper; 0 is unconditional with
            ``guidance_ramp="constant"`` (the linear ramp keeps ``w_0 = 1`` at the first scale).
        guidance_ramp: ``"linear"`` (default, VAR's): ``w_k = 1 + (w - 1) k / (num_scales - 1)``; ``"constant"``:
            ``w_k = w``.
        top_k: keep the ``top_k`` most likely tokens; 0 (default) keeps all. VAR samples with 900.
        top_p: nucleus filtering threshold in [0, 1]; 0 (default) disables it. VAR uses 0.95 with top-k.
        generator: random generator of ``torch.multinomial``, on ``var``'s device; None uses the global one.
        use_kv_cache: decode each scale from cached keys and values (default) instead of re-running the prefix.
        temperature: logits are divided by it before filtering; > 0. Default 1.0.

    Returns:
        one ``(B, *quantizer.scales[k])`` int64 token map per scale.
    """
    batch = _check_arguments(var, quantizer, condition, num_samples, guidance, guidance_ramp, top_k, top_p,
                             temperature, generator)
    weights = _guidance_weights(guidance, guidance_ramp, var.num_scales)
    # 1. branches: the conditional rows unless every weight is 0, the null rows unless every weight is 1
    use_cond = condition is not None and any(w != 0.0 for w in weights)
    use_null = condition is None or any(w != 1.0 for w in weights)
    was_training = var.training
    var.eval()
    try:
        with torch.no_grad():
            device = var.null_embedding.device
            embeddings = []
            if use_cond:
                embeddings.append(var.embed_condition(condition.to(device)))  # (B, W)
            if use_null:
                embeddings.append(var.embed_condition(None, batch_size=batch))  # (B, W)
            embedding = torch.cat(embeddings, dim=0)  # (R, W), R = B or 2B rows: [cond; null]
            return _sample(var, quantizer, embedding, batch, use_cond and use_null, weights, top_k, top_p,
                           temperature, generator, use_kv_cache)
    finally:
        var.train(was_training)


def _sample(
    var: VARTransformer,
    quantizer: MultiScaleResidualQuantizer,
    embedding: torch.Tensor,
    batch: int,
    guided: bool,
    weights: list[float],
    top_k: int,
    top_p: float,
    temperature: float,
    generator: torch.Generator | None,
    use_kv_cache: bool,
) -> list[torch.Tensor]:
    rows = embedding.shape[0]
    f_hat, x, inputs, maps = None, None, [], []
    with var.kv_cache() if use_kv_cache else nullcontext():
        for k, scale in enumerate(quantizer.scales):
            n_k = var.scale_lengths[k]
            # 2. logits of scale k: from the cache, or by re-running the whole prefix (scales 0..k)
            if use_kv_cache:
                logits = var.forward_step(x, embedding, k)  # (R, n_k, V)
            else:
                prefix = torch.cat(inputs, dim=1) if inputs else embedding.new_zeros(rows, 0, var.embedding_dim)
                logits = var.forward_from_embedding(prefix, embedding)[:, -n_k:]  # (R, L_k, V) -> (R, n_k, V)
            # 3. guidance: l_uncond + w_k (l_cond - l_uncond)
            if guided:
                cond, uncond = logits[:batch], logits[batch:]
                logits = uncond + weights[k] * (cond - uncond)  # (B, n_k, V)
            # 4. temperature, filtering, one draw per token
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
            idx = torch.multinomial(probs.reshape(-1, var.num_embeddings), 1, generator=generator)  # (B * n_k, 1)
            idx = idx.view(batch, *scale)  # (B, *scale_k)
            maps.append(idx)
            # 5. the next scale's input, shared by both branches
            if k < var.num_scales - 1:
                f_hat, nxt = quantizer.next_scale_input(k, f_hat, idx)  # (B, n_{k+1}, D)
                x = nxt.to(embedding.dtype).repeat(rows // batch, 1, 1)  # (R, n_{k+1}, D)
                inputs.append(x)
    return maps
