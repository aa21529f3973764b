"""VAR next-scale transformer: a class- (here multi-label-) conditional AdaLN transformer over multi-scale token maps.

Follows VAR (Tian et al. 2024, arXiv 2404.02905, ``models/var.py`` and ``models/basic_var.py``: ``VAR``,
``AdaLNSelfAttn``, ``AdaLNBeforeHead``, ``SelfAttention``). An image is the concatenation of the token maps of
:class:`~medvq.quantizers.MultiScaleResidualQuantizer`, coarse first, ``L = sum(scale_lengths)`` tokens. Position ``t``
of scale ``k`` predicts token ``t`` of scale ``k``; its input is::

    scale 0:  condition embedding + start position      (n_0 tokens, VAR's ``sos + pos_start``)
    scale k:  word_embedding(teacher_forcing_input)      (f_hat of scales < k pooled to scale k, projected)
    all:      + absolute position embedding + level embedding of the token's scale

A block-causal mask lets each token see every token of its own and earlier scales. Each block is AdaLN self-attention
(``shared_aln=False``): six ``(B, width)`` vectors from the condition embedding modulate the two pre-norms and gate the
two residual branches; the head is preceded by its own AdaLN.

Conditions are multi-label: a ``(B, num_conditions)`` multi-hot (one-hot for single-label data) row embeds to the sum of
its label embeddings; a learned null embedding stands for "no condition" (classifier-free guidance, dropped with
probability ``condition_dropout`` in training as VAR's ``cond_drop_rate``).

Sampling (see :func:`~medvq.networks.sample_var`) runs one scale per step. Inside :meth:`VARTransformer.kv_cache`,
:meth:`VARTransformer.forward_step` feeds only the new scale's tokens and attends to the keys and values cached for
the earlier scales; outside it, :meth:`VARTransformer.forward` (or :meth:`VARTransformer.forward_from_embedding`)
accepts any scale-aligned prefix of the sequence, so the cache is an optimisation with the same result.

Limitations: no drop path, no shared AdaLN (``shared_aln=False`` only), no progressive training (VAR's ``prog_si``);
``dropout`` acts on the outputs of the attention and MLP branches, not on attention probabilities. Without
``attn_l2_norm`` the attention scale is the standard ``1/sqrt(head_dim)`` (VAR uses ``0.25/sqrt(head_dim)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import accumulate
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["VARTransformer"]


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return value


def _check_lengths(scale_lengths: Any) -> tuple[int, ...]:
    if not isinstance(scale_lengths, Sequence) or isinstance(scale_lengths, str) or len(scale_lengths) == 0:
        raise ValueError(f"scale_lengths must be a non-empty sequence of ints >= 1, got {scale_lengths!r}.")
    for n in scale_lengths:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"scale_lengths must be a non-empty sequence of ints >= 1, got {scale_lengths!r}.")
    return tuple(scale_lengths)


class _SelfAttention(nn.Module):
    """Multi-head self-attention with optional l2-normalised queries and keys (VAR's ``SelfAttention``).

    With ``attn_l2_norm`` the logits are cosine similarities times a learned per-head temperature
    ``exp(min(s_h, log 100))`` (init 4), which VAR found to stabilise training at scale. While :attr:`caching`, the keys
    and values of every call are appended to a cache and each call attends to all of them (no mask).
    """

    def __init__(self, width: int, num_heads: int, attn_l2_norm: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_l2_norm = attn_l2_norm
        # VAR's mat_qkv without bias plus learned query and value biases; the key bias is fixed at 0 (a key bias
        # shifts every key alike, which softmax ignores for dot-product logits but not for cosine ones)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("zero_k_bias", torch.zeros(width), persistent=False)
        self.proj = nn.Linear(width, width)
        if attn_l2_norm:
            self.scale_mul_log = nn.Parameter(torch.full((1, num_heads, 1, 1), math.log(4.0)))
        self.caching = False
        self._keys: torch.Tensor | None = None
        self._values: torch.Tensor | None = None

    def clear_cache(self) -> None:
        self._keys = self._values = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # checkpoints written before the VAR-faithful q/v biases hold one fused qkv bias: keep its query and value
        # parts and drop the key part (VAR fixes it at 0, see __init__)
        fused = state_dict.pop(prefix + "qkv.bias", None)
        if fused is not None and prefix + "q_bias" not in state_dict:
            q, _, v = fused.chunk(3)
            state_dict[prefix + "q_bias"], state_dict[prefix + "v_bias"] = q, v
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        bias = torch.cat([self.q_bias, self.zero_k_bias, self.v_bias])  # (3 * width,)
        q, k, v = rearrange(F.linear(x, self.qkv.weight, bias), "b l (three h c) -> three b h l c", three=3,
                            h=self.num_heads)
        scale = None  # SDPA's default 1 / sqrt(head_dim)
        if self.attn_l2_norm:
            # scaling q alone scales the logits once: cos(q, k) * exp(s_h)
            q = F.normalize(q, dim=-1) * self.scale_mul_log.clamp(max=math.log(100.0)).exp()
            k = F.normalize(k, dim=-1)
            scale = 1.0
        if self.caching:
            if self._keys is not None:
                k = torch.cat([self._keys, k], dim=2)  # (B, H, L_cached + l, c)
                v = torch.cat([self._values, v], dim=2)
            self._keys, self._values = k, v
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)  # (B, H, l, c)
        return self.proj(rearrange(out, "b h l c -> b l (h c)"))


class _AdaLNBlock(nn.Module):
    """VAR's ``AdaLNSelfAttn`` (``shared_aln=False``): pre-norm attention and MLP, modulated and gated by AdaLN."""

    def __init__(
        self, width: int, num_heads: int, mlp_ratio: float, dropout: float, attn_l2_norm: bool, norm_eps: float
    ) -> None:
        super().__init__()
        hidden = round(width * mlp_ratio)
        self.norm = nn.LayerNorm(width, eps=norm_eps, elementwise_affine=False)  # AdaLN supplies scale and shift
        self.attn = _SelfAttention(width, num_heads, attn_l2_norm)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))
        self.drop = nn.Dropout(dropout)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # (B, 6 * width) -> six (B, 1, width), in VAR's order
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self.ada_lin(cond).unsqueeze(1).chunk(6, dim=-1)
        x = x + self.drop(self.attn(self.norm(x) * (1 + scale1) + shift1, mask)) * gamma1
        return x + self.drop(self.mlp(self.norm(x) * (1 + scale2) + shift2)) * gamma2


class VARTransformer(nn.Module):
    """VAR's next-scale prediction transformer with multi-label conditions and a KV cache for sampling.

    Args:
        num_embeddings: V, the tokenizer's codebook size (the number of logits per token).
        embedding_dim: D, the tokenizer's code dimension (the channels of the teacher-forcing input).
        scale_lengths: tokens per scale, coarse first (``MultiScaleResidualQuantizer.scale_lengths``, e.g. VAR's
            ``(1, 4, 9, ..., 256)``); ``L = sum(scale_lengths)``, ``n_0 = scale_lengths[0]`` start tokens.
        num_conditions: C, the width of a condition row (number of labels).
        width: model width. Default 1024 (VAR-d16: ``64 * depth``).
        depth: number of AdaLN blocks. Default 16.
        num_heads: attention heads; must divide ``width``. Default 16.
        mlp_ratio: MLP hidden width over ``width``. Default 4.0.
        dropout: dropout on the attention and MLP branch outputs, in [0, 1). Default 0.0 (VAR).
        condition_dropout: probability that a training row's condition is replaced by the null embedding
            (classifier-free guidance training), in [0, 1]. Default 0.1 (VAR's ``cond_drop_rate``).
        attn_l2_norm: cosine attention with a learned per-head temperature (VAR's default). Default True.
        norm_eps: LayerNorm epsilon. Default 1e-6.
        init_std: std of the truncated-normal init of linear layers and embeddings; None (default) is VAR's
            ``sqrt(1 / (3 * width))``.

    Example:
        >>> var = VARTransformer(num_embeddings=16, embedding_dim=4, scale_lengths=(1, 4, 9), num_conditions=3,
        ...                      width=32, depth=1, num_heads=2)
        >>> x = torch.randn(2, 13, 4)  # teacher-forcing input of scales 1 and 2: (B, L - n_0, D)
        >>> var(x, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])).shape
        torch.Size([2, 14, 16])
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        scale_lengths: Sequence[int],
        num_conditions: int,
        width: int = 1024,
        depth: int = 16,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        condition_dropout: float = 0.1,
        attn_l2_norm: bool = True,
        norm_eps: float = 1e-6,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        # 0. hyperparameters
        self.num_embeddings = _check_int("num_embeddings", num_embeddings, 1)
        self.embedding_dim = _check_int("embedding_dim", embedding_dim, 1)
        self.scale_lengths = _check_lengths(scale_lengths)
        self.num_conditions = _check_int("num_conditions", num_conditions, 1)
        self.width = _check_int("width", width, 1)
        self.depth = _check_int("depth", depth, 1)
        _check_int("num_heads", num_heads, 1)
        if width % num_heads:
            raise ValueError(f"width ({width}) must be divisible by num_heads ({num_heads}).")
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
        if not 0.0 <= condition_dropout <= 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1], got {condition_dropout!r}.")
        if not norm_eps > 0:
            raise ValueError(f"norm_eps must be > 0, got {norm_eps!r}.")
        if init_std is not None and not init_std > 0:
            raise ValueError(f"init_std must be > 0 or None (VAR's sqrt(1 / (3 * width))), got {init_std!r}.")
        self.num_heads = num_heads
        self.condition_dropout = float(condition_dropout)
        self.init_std = math.sqrt(1 / width / 3) if init_std is None else float(init_std)
        self.scale_begins = (0, *accumulate(self.scale_lengths))  # scale k occupies [begins[k], begins[k + 1])
        length = self.scale_begins[-1]

        # 1. condition: sum of label embeddings, or the learned null embedding (CFG)
        self.label_embedding = nn.Parameter(torch.empty(num_conditions, width))
        self.null_embedding = nn.Parameter(torch.empty(width))
        # 2. input: start tokens, projected teacher-forcing input, absolute position + level embeddings
        self.start_position = nn.Parameter(torch.empty(1, self.scale_lengths[0], width))  # VAR's pos_start
        self.word_embedding = nn.Linear(embedding_dim, width)
        self.position_embedding = nn.Parameter(torch.empty(1, length, width))  # VAR's pos_1LC
        self.level_embedding = nn.Embedding(len(self.scale_lengths), width)  # VAR's lvl_embed
        level = torch.tensor([k for k, n in enumerate(self.scale_lengths) for _ in range(n)], dtype=torch.long)
        self.register_buffer("level_index", level, persistent=False)  # (L,) scale of each position
        # block-causal: a token sees every token of its own and earlier scales; True = attend (SDPA's convention)
        self.register_buffer("attn_mask", level[None, :] <= level[:, None], persistent=False)  # (L, L)
        # 3. AdaLN blocks
        self.blocks = nn.ModuleList(
            _AdaLNBlock(width, num_heads, mlp_ratio, dropout, attn_l2_norm, norm_eps) for _ in range(depth)
        )
        # 4. head: AdaLN before the head (VAR's AdaLNBeforeHead), then logits over the codebook
        self.head_norm = nn.LayerNorm(width, eps=norm_eps, elementwise_affine=False)
        self.head_ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.head = nn.Linear(width, num_embeddings)

        self._caching = False
        self._next_scale = 0
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """VAR's ``init_weights`` (``init_adaln=0.5, init_adaln_gamma=1e-5, init_head=0.02``): truncated normal
        everywhere, residual projections shrunk by ``sqrt(2 * depth)``, AdaLN gates near zero so every block starts
        near the identity, and a small head so the first logits are near uniform."""
        std = self.init_std

        def trunc_normal(t: torch.Tensor) -> None:
            # VAR calls trunc_normal_(std=init_std) with torch's default bounds, a=-2 and b=2 in absolute units:
            # at std ~0.018 nothing is truncated and the std is init_std (bounds of +-2 std would give 0.88 std)
            nn.init.trunc_normal_(t, std=std)

        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for p in (self.label_embedding, self.null_embedding, self.start_position, self.position_embedding):
            trunc_normal(p)
        trunc_normal(self.level_embedding.weight)
        for block in self.blocks:
            block.attn.q_bias.zero_()
            block.attn.v_bias.zero_()
        self.head.weight.mul_(0.02)
        self.head_ada_lin[-1].weight.mul_(0.5)
        width = self.width
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * self.depth))
            block.mlp[-1].weight.div_(math.sqrt(2 * self.depth))
            ada = block.ada_lin[-1].weight  # rows: gamma1, gamma2 | scale1, scale2, shift1, shift2
            ada[: 2 * width].mul_(1e-5)
            ada[2 * width :].mul_(0.5)
            if block.attn.attn_l2_norm:
                block.attn.scale_mul_log.fill_(math.log(4.0))

    #: substrings of parameter names VAR trains without weight decay (its ``nowd_keys`` in ``train.py``, by this
    #: module's names: pos_start, pos_1LC, lvl_embed, scale_mul, cfg_uncond); 1-D parameters and biases too
    NO_WEIGHT_DECAY_KEYS: tuple[str, ...] = (
        "start_position", "position_embedding", "level_embedding", "scale_mul_log", "null_embedding",
    )

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups as VAR's ``filter_params``: ``weight_decay`` on the matrices, none on biases,
        1-D parameters and :attr:`NO_WEIGHT_DECAY_KEYS` (``AdamW(var.parameter_groups(0.05), ...)``).

        Each group also carries ``"param_names"``, the names of its parameters (torch >= 2.6 checks them).
        """
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}.")
        decay: dict[str, list] = {"params": [], "param_names": [], "weight_decay": float(weight_decay)}
        no_decay: dict[str, list] = {"params": [], "param_names": [], "weight_decay": 0.0}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            exempt = param.ndim <= 1 or name.endswith("bias") or any(k in name for k in self.NO_WEIGHT_DECAY_KEYS)
            group = no_decay if exempt else decay
            group["params"].append(param)
            group["param_names"].append(name)
        return [g for g in (decay, no_decay) if g["params"]]

    @property
    def num_scales(self) -> int:
        return len(self.scale_lengths)

    @property
    def sequence_length(self) -> int:
        """L, the number of tokens of a whole image (all scales)."""
        return self.scale_begins[-1]

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return f"scale_lengths={self.scale_lengths}, num_conditions={self.num_conditions}"

    # ------------------------------------------------------------------ condition
    def embed_condition(
        self, condition: torch.Tensor | None, *, batch_size: int | None = None, drop: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Condition embedding ``(B, width)``: ``condition @ label_embedding`` (the sum of the labels' embeddings), or
        the null embedding.

        Args:
            condition: ``(B, num_conditions)`` multi-hot (any real dtype; fractional weights mix labels), or None for
                the null embedding on every row (then ``batch_size`` is required).
            batch_size: B when ``condition`` is None; if both are given they must agree.
            drop: optional bool ``(B,)``; True rows get the null embedding (classifier-free guidance dropout).
        """
        if condition is None:
            if batch_size is None:
                raise ValueError("batch_size is required when condition is None (the null condition for every row).")
            batch = _check_int("batch_size", batch_size, 1)
            return self.null_embedding.expand(batch, -1)
        if not isinstance(condition, torch.Tensor) or condition.ndim != 2 or condition.shape[1] != self.num_conditions:
            shape = tuple(condition.shape) if isinstance(condition, torch.Tensor) else type(condition).__name__
            raise ValueError(
                f"condition must have shape (B, num_conditions={self.num_conditions}) or be None, got {shape}."
            )
        if batch_size is not None and batch_size != condition.shape[0]:
            raise ValueError(f"batch_size ({batch_size}) must equal condition's batch size ({condition.shape[0]}).")
        table = self.label_embedding
        embedding = condition.to(device=table.device, dtype=table.dtype) @ table  # (B, C) @ (C, W) -> (B, W)
        if drop is None:
            return embedding
        if not isinstance(drop, torch.Tensor) or drop.shape != (condition.shape[0],) or drop.dtype != torch.bool:
            got = f"{drop.dtype} {tuple(drop.shape)}" if isinstance(drop, torch.Tensor) else type(drop).__name__
            raise ValueError(f"drop must be a bool tensor of shape ({condition.shape[0]},), got {got}.")
        return torch.where(drop[:, None], self.null_embedding, embedding)

    # ------------------------------------------------------------------ forward
    def _check_tokens(self, x: Any, name: str, expected: str) -> None:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = str(x.dtype) if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"{name} must be a floating torch.Tensor {expected}, got {got}.")

    def _check_embedding(self, condition_embedding: Any, batch: int) -> None:
        if not isinstance(condition_embedding, torch.Tensor) or tuple(condition_embedding.shape) != (batch, self.width):
            shape = (tuple(condition_embedding.shape) if isinstance(condition_embedding, torch.Tensor)
                     else type(condition_embedding).__name__)
            raise ValueError(f"condition_embedding must have shape (B, width) = ({batch}, {self.width}), got {shape}.")

    def _embed_inputs(
        self, x: torch.Tensor | None, condition_embedding: torch.Tensor, begin: int, end: int
    ) -> torch.Tensor:
        """Hidden tokens of positions ``[begin, end)`` (scale-aligned): start tokens if ``begin == 0``, then ``x``."""
        parts = []
        if begin == 0:
            n0 = self.scale_lengths[0]
            parts.append(condition_embedding[:, None, :].expand(-1, n0, -1) + self.start_position)  # (B, n_0, W)
        if x is not None and x.shape[1] > 0:
            parts.append(self.word_embedding(x))  # (B, l, D) -> (B, l, W)
        h = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]  # (B, end - begin, W)
        return h + self.position_embedding[:, begin:end] + self.level_embedding(self.level_index[begin:end])

    def _transform(self, h: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, cond, mask)
        scale, shift = self.head_ada_lin(cond).unsqueeze(1).chunk(2, dim=-1)  # two (B, 1, W)
        return self.head(self.head_norm(h) * (1 + scale) + shift)  # (B, l, V)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits of every position.

        Args:
            x: ``(B, L - n_0, D)`` teacher-forcing input of the scales after the first
                (``MultiScaleResidualQuantizer.teacher_forcing_input``), or a scale-aligned prefix of it: the inputs of
                scales ``1..k`` (``(B, 0, D)`` for the first scale alone).
            condition: ``(B, num_conditions)`` multi-hot, or None for the null condition (unconditional) on every
                row. In training mode each row is replaced by the null condition with probability
                ``condition_dropout``.

        Returns:
            ``(B, L', V)`` logits, ``L' = n_0 + x.shape[1]``; the logits at scale ``k`` depend on the inputs of scales
            ``<= k`` only.
        """
        self._check_tokens(x, "x", "(B, L - n_0, D)")
        batch = x.shape[0]
        if condition is None:
            embedding = self.embed_condition(None, batch_size=batch)
        else:
            if isinstance(condition, torch.Tensor) and condition.ndim == 2 and condition.shape[0] != batch:
                raise ValueError(f"condition's batch size ({condition.shape[0]}) must equal x's ({batch}).")
            drop = None
            if self.training:
                # VAR's cond_drop_rate: the null embedding stands in, so the model also learns p(x) for CFG. The mask
                # is drawn even at rate 0 (all False) so the null embedding stays in the graph: DDP needs a gradient
                # (a zero one) for every parameter
                drop = torch.rand(batch, device=self.null_embedding.device) < self.condition_dropout
            embedding = self.embed_condition(condition, drop=drop)
        return self.forward_from_embedding(x, embedding)

    def forward_from_embedding(self, x: torch.Tensor, condition_embedding: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` from a condition embedding (:meth:`embed_condition`); never drops the condition.

        Args:
            x: as :meth:`forward`, ``(B, L' - n_0, D)`` with ``L'`` a scale boundary.
            condition_embedding: ``(B, width)``.

        Returns:
            ``(B, L', V)`` logits.
        """
        if self._caching:
            raise RuntimeError("forward would overwrite the KV cache; inside kv_cache() use forward_step.")
        self._check_tokens(x, "x", "(B, L - n_0, D)")
        n0 = self.scale_lengths[0]
        if x.ndim != 3 or x.shape[2] != self.embedding_dim or x.shape[1] + n0 not in self.scale_begins[1:]:
            raise ValueError(
                f"x must have shape (B, L - n_0, embedding_dim) = (B, {self.sequence_length - n0}, "
                f"{self.embedding_dim}), or a prefix ending at a scale boundary (second axis in "
                f"{[b - n0 for b in self.scale_begins[1:]]}), got {tuple(x.shape)}."
            )
        self._check_embedding(condition_embedding, x.shape[0])
        end = n0 + x.shape[1]
        h = self._embed_inputs(x, condition_embedding, 0, end)  # (B, L', W)
        return self._transform(h, condition_embedding, self.attn_mask[:end, :end])

    # ------------------------------------------------------------------ KV cache
    def _set_caching(self, on: bool) -> None:
        self._caching = on
        self._next_scale = 0
        for block in self.blocks:
            block.attn.caching = on
            block.attn.clear_cache()

    @contextmanager
    def kv_cache(self) -> Iterator[VARTransformer]:
        """Context for scale-by-scale decoding with cached keys and values (VAR's ``kv_caching``).

        Inside it, call :meth:`forward_step` once per scale, ``scale_index = 0, 1, ...`` in order; each call attends
        to the keys and values of the earlier calls plus its own tokens, which is what the block-causal mask of
        :meth:`forward` allows, so the logits equal those of :meth:`forward` on the same prefix. The cache is
        emptied on entry and on exit; the context does not nest and :meth:`forward` is refused inside it.

        Example:
            >>> with var.kv_cache():  # doctest: +SKIP
            ...     logits_0 = var.forward_step(None, embedding, 0)   # (B, n_0, V)
            ...     logits_1 = var.forward_step(x_1, embedding, 1)    # x_1: (B, n_1, D)
        """
        if self._caching:
            raise RuntimeError("kv_cache() is already active; it does not nest.")
        self._set_caching(True)
        try:
            yield self
        finally:
            self._set_caching(False)

    def forward_step(
        self, x: torch.Tensor | None, condition_embedding: torch.Tensor, scale_index: int
    ) -> torch.Tensor:
        """Logits of one scale inside :meth:`kv_cache`, from that scale's input alone.

        Args:
            x: ``(B, n_k, D)`` input of scale ``k = scale_index`` (the second output of
                ``MultiScaleResidualQuantizer.next_scale_input(k - 1, ...)``); None for ``k = 0`` (start tokens).
            condition_embedding: ``(B, width)``, the same at every step (:meth:`embed_condition`).
            scale_index: k; must be the number of earlier steps in this context.

        Returns:
            ``(B, n_k, V)`` logits of scale ``k``.
        """
        if not self._caching:
            raise RuntimeError("forward_step must be called inside `with var.kv_cache():`.")
        if scale_index != self._next_scale:
            raise ValueError(f"scale_index must be {self._next_scale} (the next scale of this cache), got "
                             f"{scale_index!r}.")
        n_k = self.scale_lengths[scale_index] if scale_index < self.num_scales else None
        if n_k is None:
            raise ValueError(f"scale_index must be < num_scales ({self.num_scales}), got {scale_index}.")
        if scale_index == 0:
            if x is not None:
                raise ValueError("x must be None at scale_index 0 (the start tokens come from the condition).")
            batch = condition_embedding.shape[0] if isinstance(condition_embedding, torch.Tensor) else -1
        else:
            self._check_tokens(x, "x", f"(B, n_k, D) = (B, {n_k}, {self.embedding_dim})")
            if x.ndim != 3 or tuple(x.shape[1:]) != (n_k, self.embedding_dim):
                raise ValueError(f"x must have shape (B, n_k, D) = (B, {n_k}, {self.embedding_dim}) at scale "
                                 f"{scale_index}, got {tuple(x.shape)}.")
            batch = x.shape[0]
        self._check_embedding(condition_embedding, batch)
        begin, end = self.scale_begins[scale_index], self.scale_begins[scale_index + 1]
        h = self._embed_inputs(x, condition_embedding, begin, end)  # (B, n_k, W)
        logits = self._transform(h, condition_embedding, None)
        self._next_scale += 1
        return logits
