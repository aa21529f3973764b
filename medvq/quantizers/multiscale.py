"""Multi-scale residual quantizer (VAR's tokenizer quantizer) with deferred quantization.

Follows VAR (Tian et al. 2024, arXiv 2404.02905, ``models/quant.py``: ``VectorQuantizer2``, ``Phi``,
``PhiPartiallyShared``): a latent ``z`` of shape ``(B, D, *S)`` is quantized as a sum of token maps at increasing
scales, all drawn from one shared codebook. With ``f_rest = z`` and ``f_hat = 0``, for every scale ``k``::

    r_k   = down_k(f_rest)                # area (adaptive average) pooling; identity at the last scale
    idx_k = nearest code of each r_k vector
    h_k   = phi_k(up(codebook[idx_k]))    # bicubic (2D) / trilinear (3D); identity at the last scale
    f_hat += h_k;  f_rest -= h_k

``phi_k(h) = (1 - r) h + r conv(h)`` is one of ``phi_shared`` 3x3(x3) convolutions shared by neighbouring scales,
chosen as in VAR's ``PhiPartiallyShared`` (``phi_shared=0``: one per scale, VAR's ``PhiNonShared``). The loss is VAR's: the mean over scales of
``||f_hat_k - sg(z)||^2 + beta ||sg(f_hat_k) - z||^2`` with ``f_hat_k`` the running sum after scale ``k`` (codebook
and phi learn from the first term, the encoder from the second). With ``commitment="final"`` the encoder term is
``beta ||sg(f_hat) - z||^2`` of the final ``f_hat`` only: VAR's term on the coarse running sums rewards latents the
coarse scales already explain, which shrinks the fine residuals after a deferred switch (``docs/results.md``). The
output is ``f_hat`` with a straight-through gradient of the identity to ``z``.

Deferral is the same contract as :class:`~medvq.quantizers.VectorQuantizer` ("Early Quantization Shrinks Codebook",
arXiv 2603.17052): the codebook, ``active`` and :meth:`MultiScaleResidualQuantizer.activate` (gather / rank-0 k-means /
broadcast) are those of an inner ``VectorQuantizer`` (:attr:`MultiScaleResidualQuantizer.codes`), so the DDP-safe
activation code exists once.

Limitations: as in VAR, phi also refines the last scale, so with phi on even a codebook containing every residual
gives ``f_hat != z`` (the residual ``r_last - phi(r_last)`` remains; phi and the decoder learn to absorb it); with
``phi_residual_ratio=0`` (no phi) such a codebook reconstructs ``z`` exactly. The l2-normalised lookup
(``normalize``) needs one learned magnitude per scale (residuals are not directions: their norm shrinks scale by
scale); EMA codebook updates are optional; dead codes can
be revived (``dead_code_threshold``, replacements drawn over all residuals or scale by scale, ``revival``); VQGAN-LC's
frozen table with a learned projection of the codes is optional (``codebook_projection``); the nearest-code search is
exact, O(N K D) per scale; ``spatial_dims`` is 2 or 3.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medvq.metrics.coverage import perplexity_from_counts
from medvq.quantizers.search import DEFAULT_CHUNK_SIZE, nearest_codes
from medvq.quantizers.vector_quantizer import ActivationReport, VectorQuantizer
from medvq.utils.distributed import all_reduce_sum_

__all__ = ["MultiScaleQuantizerOutput", "MultiScaleResidualQuantizer", "fold_codebook_projections"]

_UP_MODES = {2: "bicubic", 3: "trilinear"}  # smooth modes valid for 4D / 5D tensors in F.interpolate
_VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
_REVIVALS = ("pooled", "per_scale")


def fold_codebook_projections(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    """A copy of ``state_dict`` where every ``codebook_projection`` quantizer's map is folded into its table
    (``state_dict`` itself when it holds no projection).

    For each ``<prefix>projection.weight`` with ``<prefix>projection.bias`` and ``<prefix>codes.weight`` beside it, the
    table becomes the projected codes ``C W^T + b`` and the map the identity: the same codes, in a form that tools
    matching keys on their own (MONAI's ``copy_model_state``: ``ckpt_export``, ``CheckpointLoader(strict_shape=False)``)
    copy correctly into a quantizer without the projection, which would otherwise take the unprojected table and skip
    the map. ``model_final.pt`` is written this way (:meth:`medvq.handlers.CheckpointHandler.write_final`); the full
    ``checkpoint_<N>.pt`` files keep the trained map, so a resumed run continues exactly. Other entries are kept.

    Example:
        >>> folded = fold_codebook_projections({"codes.weight": torch.ones(3, 2), "projection.weight": 2 * torch.eye(2),
        ...                                     "projection.bias": torch.ones(2)})
        >>> folded["codes.weight"][0].tolist(), folded["projection.weight"].equal(torch.eye(2))
        ([3.0, 3.0], True)
    """
    suffix = "projection.weight"
    if not any(key == suffix or key.endswith("." + suffix) for key in state_dict):
        return state_dict  # nothing to fold: the very object (a module's state_dict keeps its _metadata)
    out = OrderedDict(state_dict)
    if hasattr(state_dict, "_metadata"):  # torch's per-module versions, read by load_state_dict
        out._metadata = state_dict._metadata  # type: ignore[attr-defined]
    for key, weight in state_dict.items():
        if key != suffix and not key.endswith("." + suffix):
            continue
        prefix = key[: -len(suffix)]
        bias, table = state_dict.get(prefix + "projection.bias"), state_dict.get(prefix + "codes.weight")
        if not all(isinstance(t, torch.Tensor) for t in (weight, bias, table)):
            continue
        with torch.no_grad():
            folded = table.float() @ weight.float().T + bias.float()
        out[prefix + "codes.weight"] = folded.to(table.dtype)
        out[key] = torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device)
        out[prefix + "projection.bias"] = torch.zeros_like(bias)
    return out


class MultiScaleQuantizerOutput(NamedTuple):
    """Output of :meth:`MultiScaleResidualQuantizer.forward`.

    Attributes:
        quantized: shape of ``z``; ``f_hat`` with straight-through gradients to ``z`` (while inactive: ``z``).
        indices: one ``(B, *scale_k)`` int64 token map per scale.
        loss: scalar; VAR's mean over scales of codebook + beta * commitment, 0 while inactive.
        perplexity: scalar, perplexity of this batch's codes pooled over all scales (per-batch diagnostic).
        per_scale_perplexity: ``(num_scales,)`` float, perplexity of this batch's codes at each scale.
        per_scale_usage: ``(num_scales,)`` float, fraction of the K codes hit at each scale in this batch.
    """

    quantized: torch.Tensor
    indices: list[torch.Tensor]
    loss: torch.Tensor
    perplexity: torch.Tensor
    per_scale_perplexity: torch.Tensor
    per_scale_usage: torch.Tensor


class _Cascade(NamedTuple):
    partial_sums: list[torch.Tensor]  # f_hat after each scale, (B, D, *S) each
    indices: list[torch.Tensor]  # (B, *scale_k) each
    residuals: list[torch.Tensor]  # r_k as (B * prod(scale_k), D) each


class _Phi(nn.Module):
    """VAR's ``Phi``: ``(1 - r) h + r conv(h)``, a 3x3(x3) convolution blended with the identity."""

    def __init__(self, spatial_dims: int, channels: int, ratio: float) -> None:
        super().__init__()
        # MONAI's Conv factory, imported here: at module level it made `import medvq.quantizers` cost ~7 s of MONAI
        # imports for code (k-means, the search) that needs only torch
        from monai.networks.layers.factories import Conv

        self.conv = Conv[Conv.CONV, spatial_dims](channels, channels, kernel_size=3, padding=1)
        self.ratio = float(ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1.0 - self.ratio) + self.conv(h).mul(self.ratio)


def _normalize_scales(scales: Any, spatial_dims: int) -> tuple[tuple[int, ...], ...]:
    if not isinstance(scales, Sequence) or isinstance(scales, str) or len(scales) == 0:
        raise ValueError(f"scales must be a non-empty sequence of ints or per-axis tuples, got {scales!r}.")
    out = []
    for s in scales:
        if isinstance(s, int) and not isinstance(s, bool):
            axes = (s,) * spatial_dims  # same size on every axis
        else:
            axes = tuple(s) if isinstance(s, Sequence) else None
        if axes is None or len(axes) != spatial_dims or any(
            isinstance(a, bool) or not isinstance(a, int) or a < 1 for a in axes
        ):
            raise ValueError(
                f"scales entries must be ints >= 1 or tuples of {spatial_dims} ints >= 1 (spatial_dims), got {s!r}."
            )
        out.append(axes)
    for prev, cur in pairwise(out):
        if any(c < p for p, c in zip(prev, cur)) or cur == prev:
            raise ValueError(
                f"scales must be increasing (no axis shrinks, each scale differs from the previous), got {prev} "
                f"then {cur}."
            )
    return tuple(out)


class MultiScaleResidualQuantizer(nn.Module):
    """VAR's multi-scale residual quantizer with one shared codebook and deferred quantization.

    While ``active`` is False the module is a pass-through (``quantized`` is ``z``, ``loss`` is 0) that still reports
    per-scale ``indices``: the nearest codes of the residuals an exact quantizer would leave (see
    :meth:`collect_residuals`). :meth:`activate` sets the codebook from such residuals and turns quantization on;
    ``active`` is saved in the state dict (the bool buffer ``codes.active_flag`` of :attr:`codes`; old checkpoints
    with ``codes._extra_state = {"active": bool}`` still load, see :func:`~medvq.quantizers.upgrade_state_dict`).

    Args:
        num_embeddings: K, the number of codes shared by all scales (>= 1).
        embedding_dim: D, the code dimension; ``z`` must have D channels.
        scales: token-map sizes, coarse to fine; each an int (same on every axis) or a tuple of ``spatial_dims``
            ints. The last one must equal ``z``'s spatial shape. Default VAR's ``(1, 2, 3, 4, 5, 6, 8, 10, 13, 16)``
            (a 16x16 latent).
        spatial_dims: 2 or 3. Default 2.
        commitment_cost: beta, weight of the encoder term ``||sg(f_hat) - z||^2``. Default 0.25 (VAR, VQ-VAE).
        phi_shared: VAR's ``share_quant_resi``: the number of phi convolutions shared by neighbouring scales
            (``PhiPartiallyShared``; 4 in VAR, 1 is one phi for all scales), or 0 for one phi per scale
            (``PhiNonShared``). Default 4.
        phi_residual_ratio: r in ``phi(h) = (1 - r) h + r conv(h)``, in [0, 1]; 0 disables phi altogether (``h_k`` is
            the upsampled code; VAR's ``quant_resi=0``, an identity). Default 0.5 (VAR's ``quant_resi``).
        active: quantize from the start (True) or start as a pass-through (False). Default True.
        chunk_size: bound on the elements of one block of the distance matrix (memory, not speed). Default 2**20.
        kmeans_iterations: Lloyd iterations of :meth:`activate` with ``init="kmeans"``. Default 20.
        commitment: ``"all"`` (default, VAR's loss: the encoder commits to every running sum ``f_hat_k``) or
            ``"final"`` (only to the final ``f_hat``; the codebook and phi still learn from every running sum).
        dead_code_threshold: while active and training, codes unused at every scale for this many consecutive steps
            become random residuals of the current batch (:meth:`VectorQuantizer.revive_dead_codes`, DDP-consistent);
            0 (default, VAR) disables it. ``codes.total_revived`` counts the revived codes.
        codebook_update: ``"gradient"`` (default, VAR: the codebook learns from the running-sum loss) or ``"ema"``
            (VQ-VAE's EMA: each code becomes the moving average of the residuals assigned to it at any scale, summed
            over DDP ranks; phi still learns by gradient). The step's cascade uses the codes before the update.
        decay: EMA decay in [0, 1) with ``codebook_update="ema"``. Default 0.99.
        codebook_projection: VQGAN-LC's frozen codebook with a learned projection (Zhu et al. 2024, arXiv 2406.11837):
            the stored ``(K, D)`` table (k-means centroids after a deferred switch) is frozen and every code is
            ``W c + b``, one ``D x D`` linear map shared by all codes and trained by gradient, so the codes move
            together and none is left behind. Identity at construction and again at :meth:`activate`, so the born
            codes are the centroids. Needs ``codebook_update="gradient"``. A checkpoint trained with it loads into a
            quantizer without it (the projection is folded into the table: the same codes), and the other way round
            (the projection starts as the identity); ``model_final.pt`` is written folded
            (:func:`fold_codebook_projections`), so key-matching tools such as ``ckpt_export`` copy the right codes
            too. Default False.
        revival: where revived codes come from with ``dead_code_threshold > 0``: ``"pooled"`` (default) draws the
            replacements uniformly from all residuals of the batch (the finest scale's tokens dominate: 256 of the
            680 of VAR's scales), ``"per_scale"`` gives every scale the same share of the draws, so coarse scales,
            whose few residuals are the largest, get codes too.
        normalize: LlamaGen's l2-normalised codes (Sun et al. 2024, arXiv 2406.06525) adapted to a residual cascade:
            the nearest code is found by cosine similarity between the residual and the unit-norm codes, and scale
            ``k`` uses ``m_k`` times the unit code, with one learned magnitude ``m_k`` per scale (``code_magnitude``)
            because residuals shrink scale by scale and a unit code cannot describe a fine one. ``m_k`` starts at the
            mean residual norm of scale ``k`` seen by :meth:`collect_residuals` before :meth:`activate` (the
            deferred switch's collection pass; a quantizer active from construction, the standard schedule, starts
            it at 1); the k-means of :meth:`activate` runs on the residuals' directions. Not with
            ``codebook_projection``. Default False.

    Example:
        >>> msq = MultiScaleResidualQuantizer(num_embeddings=16, embedding_dim=4, scales=(1, 2, 4), active=False)
        >>> z = torch.randn(2, 4, 4, 4)
        >>> report = msq.activate(msq.collect_residuals(z))
        >>> [t.shape for t in msq(z).indices]
        [torch.Size([2, 1, 1]), torch.Size([2, 2, 2]), torch.Size([2, 4, 4])]
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        scales: Sequence[int | Sequence[int]] = _VAR_SCALES,
        spatial_dims: int = 2,
        commitment_cost: float = 0.25,
        phi_shared: int = 4,
        phi_residual_ratio: float = 0.5,
        active: bool = True,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        kmeans_iterations: int = 20,
        commitment: str = "all",
        dead_code_threshold: int = 0,
        codebook_update: str = "gradient",
        decay: float = 0.99,
        codebook_projection: bool = False,
        revival: str = "pooled",
        normalize: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True or False, got {normalize!r}.")
        if normalize and codebook_projection:
            raise ValueError("normalize=True and codebook_projection=True cannot be combined; choose one.")
        self.normalize = normalize
        if revival not in _REVIVALS:
            raise ValueError(f"revival must be one of {_REVIVALS}, got {revival!r}.")
        if not isinstance(codebook_projection, bool):
            raise TypeError(f"codebook_projection must be True or False, got {codebook_projection!r}.")
        if codebook_projection and codebook_update != "gradient":
            raise ValueError(
                f"codebook_projection=True trains the projection by gradient over a frozen code table; it needs "
                f"codebook_update='gradient', got {codebook_update!r}."
            )
        self.revival = revival
        self.codebook_projection = codebook_projection
        if spatial_dims not in _UP_MODES:
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
        if isinstance(phi_shared, bool) or not isinstance(phi_shared, int) or phi_shared < 0:
            raise ValueError(f"phi_shared must be an integer >= 0 (0 = one phi per scale), got {phi_shared!r}.")
        if commitment not in ("all", "final"):
            raise ValueError(f"commitment must be 'all' (VAR) or 'final', got {commitment!r}.")
        self.commitment = commitment
        if not 0.0 <= phi_residual_ratio <= 1.0:
            raise ValueError(f"phi_residual_ratio must be in [0, 1], got {phi_residual_ratio!r}.")
        self.scales = _normalize_scales(scales, spatial_dims)
        self.spatial_dims = spatial_dims
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.chunk_size = int(chunk_size)
        # the shared codebook, `active` and the DDP-safe `activate` live in one VectorQuantizer (validates K, D, beta,
        # chunk_size); its forward is never called
        self.codes = VectorQuantizer(
            num_embeddings, embedding_dim, commitment_cost=commitment_cost, active=active, chunk_size=chunk_size,
            kmeans_iterations=kmeans_iterations, dead_code_threshold=dead_code_threshold,
            codebook_update=codebook_update, decay=decay, normalize=normalize,
        )
        if normalize:
            # one learned magnitude per scale for the unit codes; until activate: 1. Residual norms accumulated by
            # collect_residuals (while inactive) give activate its starting values
            self.code_magnitude = nn.Parameter(torch.ones(len(self.scales)))
            self.register_buffer("_norm_sums", torch.zeros(len(self.scales), dtype=torch.float64), persistent=False)
            self.register_buffer("_norm_counts", torch.zeros(len(self.scales), dtype=torch.float64), persistent=False)
        if codebook_projection:
            # VQGAN-LC: the table is frozen, the shared linear map W c + b learns (identity at the start)
            self.codes.weight.requires_grad_(False)
            self.projection = nn.Linear(embedding_dim, embedding_dim)
            self._reset_projection()
        self.commitment_cost = float(commitment_cost)
        # VAR's quant_resi: phi_shared > 0 convolutions shared by neighbouring scales (PhiPartiallyShared; 1 is
        # PhiShared), 0 one per scale (PhiNonShared); a ratio of 0 is VAR's nn.Identity (no phi at all)
        num_phi = phi_shared if phi_shared > 0 else len(self.scales)
        if phi_residual_ratio == 0.0:
            num_phi = 0
        self.phis = nn.ModuleList(_Phi(spatial_dims, embedding_dim, phi_residual_ratio) for _ in range(num_phi))
        # scale k sits at k / (num_scales - 1) in [0, 1] and takes the phi whose tick is nearest; VAR spreads the
        # ticks evenly in [1/(3K), 1 - 1/(3K)] for K = 4 and in [1/(2K), 1 - 1/(2K)] for every other K
        if num_phi > 0:
            margin = 1 / 3 / num_phi if num_phi == 4 else 1 / 2 / num_phi
            ticks = np.linspace(margin, 1 - margin, num_phi)
            last = max(len(self.scales) - 1, 1)
            self.phi_index = tuple(int(np.argmin(np.abs(ticks - k / last))) for k in range(len(self.scales)))
        else:
            self.phi_index = ()

    # ------------------------------------------------------------------ state
    @property
    def active(self) -> bool:
        """True when quantizing; False while a pass-through (continuous phase). See ``VectorQuantizer.active`` (a
        buffer underneath; baked into a ``torch.jit.trace`` graph)."""
        return self.codes.active

    @active.setter
    def active(self, value: bool) -> None:
        self.codes.active = value

    @property
    def codebook(self) -> torch.Tensor:
        """The shared ``(K, D)`` codes as looked up (with ``codebook_projection``: the projected table)."""
        if self.codebook_projection:
            return self.projection(self.codes.codebook)
        return self.codes.codebook

    @torch.no_grad()
    def _reset_projection(self) -> None:
        nn.init.eye_(self.projection.weight)
        nn.init.zeros_(self.projection.bias)

    def _to_table(self, codes: torch.Tensor) -> torch.Tensor:
        """``(n, D)`` codes in latent space -> rows of the stored table (inverse projection, a pseudo-inverse)."""
        weight, bias = self.projection.weight.detach().float(), self.projection.bias.detach().float()
        return (codes - bias) @ torch.linalg.pinv(weight).T

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # a checkpoint trained with codebook_projection loads into a quantizer without it (the projection folded into
        # the table gives the same codes), and a plain one into a projected quantizer (identity projection)
        w_key, b_key, table_key = prefix + "projection.weight", prefix + "projection.bias", prefix + "codes.weight"
        if not self.codebook_projection and w_key in state_dict and b_key in state_dict and table_key in state_dict:
            weight, bias = state_dict.pop(w_key), state_dict.pop(b_key)
            with torch.no_grad():
                state_dict[table_key] = state_dict[table_key].float() @ weight.float().T + bias.float()
        elif self.codebook_projection and w_key not in state_dict and b_key not in state_dict:
            dim = self.embedding_dim
            state_dict[w_key] = torch.eye(dim, device=self.projection.weight.device)
            state_dict[b_key] = torch.zeros(dim, device=self.projection.bias.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @property
    def num_scales(self) -> int:
        return len(self.scales)

    @property
    def scale_lengths(self) -> tuple[int, ...]:
        """Tokens per scale, ``prod(scale_k)``; a generator's sequence is their concatenation, coarse first."""
        return tuple(int(np.prod(s)) for s in self.scales)

    def extra_repr(self) -> str:
        return (f"scales={self.scales}, spatial_dims={self.spatial_dims}, phi_index={self.phi_index}, "
                f"codebook_projection={self.codebook_projection}, revival={self.revival!r}, normalize={self.normalize}")

    # ------------------------------------------------------------------ cascade
    def _check_input(self, z: Any) -> None:
        if not isinstance(z, torch.Tensor) or not z.is_floating_point():
            raise TypeError(f"z must be a floating torch.Tensor (B, D, *spatial), got {type(z).__name__}.")
        if z.ndim != self.spatial_dims + 2 or z.shape[1] != self.embedding_dim:
            raise ValueError(
                f"z must have shape (B, embedding_dim={self.embedding_dim}, *spatial) with spatial_dims="
                f"{self.spatial_dims} spatial axes, got {tuple(z.shape)}."
            )
        if tuple(z.shape[2:]) != self.scales[-1]:
            raise ValueError(
                f"z's spatial shape {tuple(z.shape[2:])} must equal the last of scales, {self.scales[-1]}."
            )

    def _refine(self, k: int, codes: torch.Tensor) -> torch.Tensor:
        """``phi_k(up(codes))``: ``(B, D, *scale_k)`` -> ``(B, D, *S)``."""
        if k != self.num_scales - 1:  # the last scale is the full resolution: no interpolation
            codes = F.interpolate(codes, size=self.scales[-1], mode=_UP_MODES[self.spatial_dims])
        return self.phis[self.phi_index[k]](codes) if self.phis else codes

    def _cascade(self, z: torch.Tensor, use_codebook: bool) -> _Cascade:
        """Residual cascade over the scales; ``use_codebook=False`` replaces each code by its exact residual."""
        batch, dim = z.shape[:2]
        codebook = self.codebook
        f_rest = z.detach()  # indices are not differentiable, so the running residual needs no graph
        f_hat = torch.zeros_like(z)
        partial_sums, indices, residuals = [], [], []
        for k, scale in enumerate(self.scales):
            # 1. residual at scale k
            r = f_rest if k == self.num_scales - 1 else F.interpolate(f_rest, size=scale, mode="area")
            flat = r.movedim(1, -1).reshape(-1, dim)  # (B, D, *scale) -> (B * prod(scale), D)
            # 2. nearest shared code (exact, chunked)
            query = F.normalize(flat, dim=1) if self.normalize else flat  # cosine lookup of unit codes
            idx = nearest_codes(query, codebook.detach(), self.chunk_size).indices  # (B * prod(scale),)
            if not use_codebook:
                chosen = flat  # (N_k, D)
            elif self.normalize:
                chosen = F.embedding(idx, codebook) * self.code_magnitude[k]
            else:
                chosen = F.embedding(idx, codebook)
            # 3. refine, accumulate, subtract
            h = self._refine(k, chosen.view(batch, *scale, dim).movedim(-1, 1))  # (B, D, *S)
            f_hat = f_hat + h
            f_rest = f_rest - h.detach()
            partial_sums.append(f_hat)
            indices.append(idx.view(batch, *scale))
            residuals.append(flat)
        return _Cascade(partial_sums, indices, residuals)

    def _statistics(self, indices: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        counts = torch.stack([torch.bincount(i.flatten(), minlength=self.num_embeddings) for i in indices])  # (n, K)
        per_scale_perplexity = torch.stack([perplexity_from_counts(c) for c in counts]).float()
        per_scale_usage = counts.gt(0).float().mean(dim=1)
        return perplexity_from_counts(counts.sum(0)).float(), per_scale_perplexity, per_scale_usage

    # ------------------------------------------------------------------ forward
    def forward(self, z: torch.Tensor) -> MultiScaleQuantizerOutput:
        """Quantize ``z`` of shape ``(B, D, *scales[-1])``.

        Returns:
            :class:`MultiScaleQuantizerOutput`.
        """
        self._check_input(z)
        # float32 whatever the autocast dtype: bf16 rounding changes argmins and the residual sums
        with torch.autocast(device_type=z.device.type, enabled=False):
            z32 = z.float()
            active = self.active
            cascade = self._cascade(z32, use_codebook=active)
            stats = self._statistics(cascade.indices)
            if not active:
                # pass-through; the zero loss touches every parameter so DDP gets a (zero) gradient for each
                zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
                return MultiScaleQuantizerOutput(z, cascade.indices, torch.as_tensor(zero).float().abs(), *stats)
            # VAR's loss on every running sum: codebook + phi learn from the first term, the encoder from the second
            loss = z32.new_zeros(())
            for f_hat in cascade.partial_sums:
                loss = loss + F.mse_loss(f_hat, z32.detach())
                if self.commitment == "all":
                    loss = loss + self.commitment_cost * F.mse_loss(f_hat.detach(), z32)
            loss = loss / self.num_scales
            if self.commitment == "final":
                loss = loss + self.commitment_cost * F.mse_loss(cascade.partial_sums[-1].detach(), z32)
            ema = self.codes.codebook_update == "ema"
            if self.training and (ema or self.codes.dead_code_threshold > 0):
                # after the loss, so this step's graph is unaffected; counts pooled over scales and ranks
                flat_idx = torch.cat([i.flatten() for i in cascade.indices])  # (sum_k B * n_k,)
                counts = all_reduce_sum_(torch.bincount(flat_idx, minlength=self.num_embeddings))
                residuals = torch.cat(cascade.residuals)  # (sum_k B * n_k, D), in the order of flat_idx
                if ema:  # with normalize the codes are directions: the moving average of unit residuals
                    rows = F.normalize(residuals, dim=1) if self.normalize else residuals
                    self.codes._ema_update(rows, flat_idx, counts)
                if self.codes.dead_code_threshold > 0:
                    weights = None
                    if self.revival == "per_scale":  # every scale the same share of the draws
                        weights = torch.cat([r.new_full((r.shape[0],), 1.0 / r.shape[0]) for r in cascade.residuals])
                    to_table = self._to_table if self.codebook_projection else None
                    self.codes.revive_dead_codes(residuals, counts, row_weights=weights, to_codes=to_table)
            f_hat = cascade.partial_sums[-1]
            # straight-through: the value of f_hat, the gradient of the identity to z
            quantized = z32 + (f_hat - z32).detach()
        return MultiScaleQuantizerOutput(quantized.to(z.dtype), cascade.indices, loss, *stats)

    # ------------------------------------------------------------------ tokens
    def _scale_codes(self, k: int, indices: torch.Tensor) -> torch.Tensor:
        """Scale ``k``'s codes of ``indices`` ``(B, *scale_k)`` as ``(B, D, *scale_k)`` (validates dtype and range)."""
        codes = self.codes.lookup(indices, self.codebook)
        return codes * self.code_magnitude[k] if self.normalize else codes

    @torch.no_grad()
    def latent_to_indices(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Per-scale token maps ``(B, *scale_k)`` of ``z`` with the current codebook (active or not)."""
        self._check_input(z)
        return self._cascade(z.float(), use_codebook=True).indices

    def indices_to_latent(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """``f_hat = sum_k phi_k(up(codebook[indices[k]]))`` as ``(B, D, *scales[-1])`` (what the decoder consumes)."""
        if len(indices) != self.num_scales:
            raise ValueError(f"indices must hold one token map per scale ({self.num_scales}), got {len(indices)}.")
        batch = indices[0].shape[0]
        f_hat = None
        for k, (idx, scale) in enumerate(zip(indices, self.scales)):
            if tuple(idx.shape) != (batch, *scale):
                raise ValueError(f"indices[{k}] must have shape {(batch, *scale)}, got {tuple(idx.shape)}.")
            h = self._refine(k, self._scale_codes(k, idx))
            f_hat = h if f_hat is None else f_hat + h
        return f_hat

    def flatten_indices(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-scale token maps -> one ``(B, L)`` int64 sequence, ``L = sum(scale_lengths)``, coarse scale first."""
        if len(indices) != self.num_scales:
            raise ValueError(f"indices must hold one token map per scale ({self.num_scales}), got {len(indices)}.")
        return torch.cat([idx.reshape(idx.shape[0], -1) for idx in indices], dim=1)  # (B, *scale_k) -> (B, n_k)

    def unflatten_indices(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Inverse of :meth:`flatten_indices`: a ``(B, L)`` sequence -> one ``(B, *scale_k)`` map per scale."""
        total = sum(self.scale_lengths)
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.shape[1] != total:
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"tokens must have shape (B, {total}) (sum of the scale lengths), got {shape}.")
        parts = tokens.split(list(self.scale_lengths), dim=1)
        return [p.reshape(tokens.shape[0], *scale) for p, scale in zip(parts, self.scales)]

    def teacher_forcing_input(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:
        """A next-scale generator's input for every scale after the first, ``(B, L - n_0, D)`` (VAR's
        ``idxBl_to_var_input``): for k < last, ``f_hat_k = sum_{j<=k} phi_j(up(codebook[indices[j]]))`` pooled
        (area) to scale ``k + 1`` and flattened. The first scale's input is the generator's condition token."""
        if len(indices) != self.num_scales:
            raise ValueError(f"indices must hold one token map per scale ({self.num_scales}), got {len(indices)}.")
        f_hat, inputs = None, []
        for k in range(self.num_scales - 1):
            f_hat, x = self.next_scale_input(k, f_hat, indices[k])
            inputs.append(x)
        return torch.cat(inputs, dim=1)

    def next_scale_input(
        self, k: int, f_hat: torch.Tensor | None, indices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One sampling step (VAR's ``get_next_autoregressive_input``): add scale ``k``'s codes to ``f_hat``.

        Args:
            k: the scale of ``indices``.
            f_hat: running sum ``(B, D, *scales[-1])``; None before the first scale.
            indices: ``(B, *scale_k)`` token map of scale ``k``.

        Returns:
            the new ``f_hat``, and the input of scale ``k + 1``, ``(B, n_{k+1}, D)`` (at the last scale: ``f_hat``
            flattened, which no generator consumes).
        """
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < self.num_scales:
            raise ValueError(f"k must be a scale index in [0, {self.num_scales}), got {k!r}.")
        if not isinstance(indices, torch.Tensor) or tuple(indices.shape[1:]) != self.scales[k]:
            shape = tuple(indices.shape) if isinstance(indices, torch.Tensor) else type(indices).__name__
            raise ValueError(f"indices of scale {k} must have shape (B, *{self.scales[k]}), got {shape}.")
        if (k == 0) != (f_hat is None):
            raise ValueError("f_hat must be None at the first scale (k=0) and the running sum after it.")
        h = self._refine(k, self._scale_codes(k, indices))
        f_hat = h if f_hat is None else f_hat + h
        nxt = f_hat if k == self.num_scales - 1 else F.interpolate(f_hat, size=self.scales[k + 1], mode="area")
        return f_hat, nxt.flatten(2).transpose(1, 2)  # (B, D, *scale) -> (B, n, D)

    # ------------------------------------------------------------------ deferral
    @torch.no_grad()
    def collect_residuals(self, z: torch.Tensor) -> torch.Tensor:
        """The ``(N, D)`` residual vectors of ``z`` at every scale, ``N = B * sum_k prod(scale_k)``, image by image
        (row ``b * L + t`` is token ``t`` of image ``b`` in :meth:`flatten_indices` order).

        With ``normalize=True`` and while inactive it also records each scale's residual norms, the starting code
        magnitudes of :meth:`activate` (:meth:`reset_residual_norms` forgets them).

        Active: the residuals ``r_k`` of the cascade with the current codebook. Inactive: the residuals an exact
        quantizer would leave (each ``r_k`` is "quantized" to itself), i.e. a phi-refined Laplacian pyramid of ``z``.
        We use those rather than the plain pooled latents ``down_k(z)``: after activation the fine scales only see
        what the coarse scales left over, which is far smaller than ``z`` itself, so k-means on pooled latents would
        spend the codes at the scale of ``z`` and leave the fine residuals to a handful of near-zero codes.
        """
        self._check_input(z)
        residuals = self._cascade(z.float(), use_codebook=self.active).residuals  # (B * n_k, D) each
        if self.normalize and not self.active:  # the starting magnitudes of activate
            for k, r in enumerate(residuals):
                self._norm_sums[k] += r.norm(dim=1).double().sum()
                self._norm_counts[k] += r.shape[0]
        batch = z.shape[0]
        # batch-major (image by image, coarse to fine within an image), so callers can subsample per image
        return torch.cat([r.view(batch, -1, self.embedding_dim) for r in residuals], dim=1).view(-1, self.embedding_dim)

    def activate(
        self, samples: torch.Tensor, init: str = "kmeans", seed: int = 0, iterations: int | None = None
    ) -> ActivationReport:
        """Set the shared codebook from ``(N, D)`` residual samples (see :meth:`collect_residuals`) and turn
        quantization on: :meth:`VectorQuantizer.activate`, i.e. DDP-safe (every rank must call it), ``init`` in
        ``("kmeans", "samples")``."""
        if self.codebook_projection:  # the born codes are the centroids themselves
            self._reset_projection()
        report = self.codes.activate(samples, init=init, seed=seed, iterations=iterations)  # validates on every rank
        if self.normalize:
            self._start_magnitudes(samples)
        return report

    @torch.no_grad()
    def reset_residual_norms(self) -> None:
        """Forget the residual norms :meth:`collect_residuals` recorded (``normalize=True``; a no-op otherwise): the
        deferred switch calls it before its collection pass, so the starting magnitudes come from that pass only."""
        if self.normalize:
            self._norm_sums.zero_()
            self._norm_counts.zero_()

    @torch.no_grad()
    def _start_magnitudes(self, samples: torch.Tensor) -> None:
        """``code_magnitude[k]``: scale ``k``'s mean residual norm over what :meth:`collect_residuals` saw on every
        rank since the last activation; a scale it never saw takes the samples' mean norm (over every rank)."""
        sums = all_reduce_sum_(self._norm_sums.clone())
        counts = all_reduce_sum_(self._norm_counts.clone())
        fallback = all_reduce_sum_(torch.stack([samples.detach().norm(dim=1).double().sum(),
                                                torch.tensor(float(samples.shape[0]), dtype=torch.float64,
                                                             device=samples.device)]).to(sums.device))
        mean = float(fallback[0] / fallback[1].clamp_min(1))
        starts = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, mean))
        self.code_magnitude.copy_(starts.to(self.code_magnitude))
        self.reset_residual_norms()
