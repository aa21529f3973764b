"""Vector quantizer with deferred quantization: a pass-through until :meth:`VectorQuantizer.activate`.

Follows VQ-VAE (van den Oord et al. 2017, arXiv 1711.00937) for the codebook/commitment losses and the
straight-through estimator, the sonnet ``VectorQuantizerEMA`` for EMA codebook updates (here the step's output already
uses the updated codes, and there is no Laplace smoothing, see ``_ema_update``), LlamaGen (Sun et al. 2024)
for l2-normalised (cosine) lookup, and "Early Quantization Shrinks Codebook" (arXiv 2603.17052) for deferral: train
the autoencoder continuously, then initialise the codebook from the mature encoder's latents (k-means) and only then
quantize.

Limitations: the nearest-code search is exact but O(N K D) in time; ``chunk_size`` bounds its memory, not its cost.
Dead-code revival draws replacements from the current batch, so it needs batches with at least a few latents.

State dict: ``active`` is the 0-dim bool buffer ``active_flag`` (a tensor, so MONAI's ``copy_model_state``,
``monai.bundle.load`` and ``CheckpointLoader(strict_shape=False)`` handle it like any weight). Checkpoints of earlier
medvq versions stored it as the extra state ``_extra_state = {"active": bool}``: ``load_state_dict`` converts that
entry, and :func:`upgrade_state_dict` converts a whole old state dict for tools that do not call it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from medvq.metrics.coverage import perplexity_from_counts
from medvq.quantizers.kmeans import kmeans
from medvq.quantizers.search import DEFAULT_CHUNK_SIZE, nearest_codes
from medvq.utils.distributed import all_gather_rows, all_reduce_sum_, broadcast_, is_distributed, rank

__all__ = ["ACTIVE_FLAG", "ActivationReport", "QuantizerOutput", "VectorQuantizer", "upgrade_state_dict"]

#: state-dict key (under the quantizer's prefix) of the ``active`` flag: a 0-dim ``torch.bool`` tensor
ACTIVE_FLAG = "active_flag"
# where earlier medvq checkpoints kept it: the module's extra state, ``{"active": bool}``
_LEGACY_KEY = "_extra_state"

_UPDATES = ("gradient", "ema")
_INITS = ("kmeans", "samples")
_EMBEDDING_INITS = ("uniform", "normal")


class QuantizerOutput(NamedTuple):
    """Output of :meth:`VectorQuantizer.forward`.

    Attributes:
        quantized: shape of ``z``; the nearest codes with straight-through gradients to ``z`` (while inactive: ``z``
            itself, or the l2-normalised ``z`` when ``normalize=True``).
        indices: ``(B, *spatial)`` int64 index of the nearest code of every latent (also computed while inactive).
        loss: scalar; codebook + commitment loss (gradient updates), commitment only (EMA), 0 while inactive.
        perplexity: scalar, perplexity of this batch's code distribution (a per-batch diagnostic only: use
            :class:`medvq.metrics.CodebookCoverage` for whole-set numbers).
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    perplexity: torch.Tensor


class ActivationReport(NamedTuple):
    """What :meth:`VectorQuantizer.activate` did.

    Attributes:
        num_samples: latents used (over all ranks).
        init: ``"kmeans"`` or ``"samples"``.
        inertia: k-means inertia of the last assignment step (see :class:`~medvq.quantizers.KMeansResult`), ``None``
            for ``init="samples"``.
        seconds: wall time of the codebook computation.
        usage: fraction of codes that are the nearest code of at least one sample right after activation.
    """

    num_samples: int
    init: str
    inertia: float | None
    seconds: float
    usage: float


def _legacy_active(value: Any) -> bool | None:
    """The flag of an old ``_extra_state`` entry ``{"active": bool}``, or None when ``value`` is not one."""
    if isinstance(value, Mapping) and set(value) == {"active"} and isinstance(value["active"], (bool, int)):
        return bool(value["active"])
    return None


def upgrade_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``state_dict`` where every old-format quantizer flag is in the current format.

    medvq checkpoints written before the flag became a buffer hold ``<prefix>_extra_state = {"active": bool}`` for
    each :class:`VectorQuantizer` (``quantizer._extra_state`` in a VQGAN tokenizer, ``quantizer.codes._extra_state``
    in a multi-scale one); this returns the same entries, in the same order, with those replaced by
    ``<prefix>active_flag`` bool tensors. ``load_state_dict`` converts them itself; this is for tools that match
    keys on their own, such as MONAI's ``copy_model_state`` (``monai.bundle.load``, ``ckpt_export``,
    ``CheckpointLoader(strict_shape=False)``), which would otherwise skip the old entry and leave the quantizer's
    flag at its constructor value. Other entries, and ``_extra_state`` entries of other shapes, are kept as they are.

    Example:
        >>> upgrade_state_dict({"quantizer._extra_state": {"active": True}})
        {'quantizer.active_flag': tensor(True)}
    """
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        flag = _legacy_active(value) if key.rsplit(".", 1)[-1] == _LEGACY_KEY else None
        new_key = key[: -len(_LEGACY_KEY)] + ACTIVE_FLAG
        if flag is None or new_key in state_dict:  # a current entry wins; load_state_dict then reports the old one
            out[key] = value
        else:
            out[new_key] = torch.tensor(flag)
    return out


def _check_samples(samples: Any, embedding_dim: int) -> tuple[type[Exception], str] | None:
    """The (exception type, message) that ``activate`` must raise for these samples, or None when they are fine."""
    if not isinstance(samples, torch.Tensor):
        return TypeError, f"samples must be a torch.Tensor (N, D), got {type(samples).__name__}."
    if not samples.is_floating_point():
        return TypeError, f"samples must be a floating tensor, got dtype {samples.dtype}."
    if samples.ndim != 2 or samples.shape[1] != embedding_dim:
        return ValueError, f"samples must have shape (N, {embedding_dim}), got {tuple(samples.shape)}."
    if not torch.isfinite(samples).all():
        return ValueError, "samples contain NaN or inf values; check the encoder output before activating."
    return None


class VectorQuantizer(nn.Module):
    """Vector quantizer whose quantization can be deferred until the encoder has matured.

    While ``active`` is False the module is a pass-through (``quantized`` is ``z``, ``loss`` is 0) that still reports
    the nearest ``indices``, so coverage can be monitored before the switch. :meth:`activate` sets the codebook from
    ``(N, D)`` latents of the current encoder (k-means centroids or a random subset) and turns quantization on.
    ``active`` is saved in the state dict (the 0-dim bool buffer ``active_flag``), so a resumed run continues in the
    same phase; an old checkpoint with the flag as extra state ``{"active": bool}`` still loads (see
    :func:`upgrade_state_dict`). The flag is a bool tensor, so ``.half()`` / ``.to(dtype)`` leave it alone, and it
    moves with ``.to(device)``. Under DDP it is a buffer that DDP broadcasts from rank 0 (``broadcast_buffers``): that
    is harmless, because :meth:`activate` and the ``active`` setter set it identically on every rank. Reading it costs
    a device-to-host copy of one byte per forward call on a GPU.

    Args:
        num_embeddings: K, the number of codes (>= 1).
        embedding_dim: D, the dimension of a code; ``z`` must have D channels.
        commitment_cost: beta, weight of the commitment term ``||z - sg(e)||^2``. Default 0.25 (VQ-VAE).
        codebook_update: ``"gradient"`` (codebook loss ``||sg(z) - e||^2`` trains the codes) or ``"ema"`` (codes are
            exponential moving averages of their assigned latents; the loss is the commitment term only).
        decay: EMA decay in [0, 1). Default 0.99. With 0 the codes become the batch means of their latents.
        epsilon: codes whose EMA cluster size is <= epsilon keep their value (no division by ~0). Default 1e-5.
        normalize: l2-normalise latents and codes (cosine lookup, as the LlamaGen tokenizer). ``quantized`` is then
            on the unit sphere, and while inactive it is the normalised ``z``. Default False.
        dead_code_threshold: revive codes unused for this many consecutive training-mode forward calls (micro-batches
            under gradient accumulation count one each) by re-seeding them from
            current latents; 0 (default) disables revival. :attr:`num_revived` is the count of the last step and
            ``total_revived`` the running total.
        active: quantize from the start (True, the ``standard`` schedule) or start as a pass-through (False, the
            ``deferred`` schedule). Default True.
        embedding_init: initial random codebook, ``"uniform"`` in (-1/K, 1/K) as taming-transformers' VQGAN (the
            standard baseline) or ``"normal"``. Default ``"uniform"``.
        chunk_size: bound on the elements of one block of the distance matrix (memory, not speed). Default 2**20.
        kmeans_iterations: Lloyd iterations used by :meth:`activate` with ``init="kmeans"``. Default 20.

    Example:
        >>> vq = VectorQuantizer(512, 8, active=False)
        >>> z = torch.randn(2, 8, 16, 16)
        >>> vq(z).quantized.equal(z)
        True
        >>> report = vq.activate(torch.randn(4096, 8), init="kmeans")
        >>> vq.active, vq(z).indices.shape
        (True, torch.Size([2, 16, 16]))
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        commitment_cost: float = 0.25,
        codebook_update: str = "gradient",
        decay: float = 0.99,
        epsilon: float = 1e-5,
        normalize: bool = False,
        dead_code_threshold: int = 0,
        active: bool = True,
        embedding_init: str = "uniform",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        kmeans_iterations: int = 20,
    ) -> None:
        super().__init__()
        for name, value in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if codebook_update not in _UPDATES:
            raise ValueError(f"codebook_update must be one of {_UPDATES}, got {codebook_update!r}.")
        if embedding_init not in _EMBEDDING_INITS:
            raise ValueError(f"embedding_init must be one of {_EMBEDDING_INITS}, got {embedding_init!r}.")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay!r}.")
        if commitment_cost < 0:
            raise ValueError(f"commitment_cost must be >= 0, got {commitment_cost!r}.")
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon!r}.")
        if isinstance(dead_code_threshold, bool) or not isinstance(dead_code_threshold, int) or dead_code_threshold < 0:
            raise ValueError(
                f"dead_code_threshold must be an integer >= 0 (0 disables revival), got {dead_code_threshold!r}."
            )
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}.")
        if kmeans_iterations < 0:
            raise ValueError(f"kmeans_iterations must be >= 0, got {kmeans_iterations!r}.")
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.commitment_cost = float(commitment_cost)
        self.codebook_update = codebook_update
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.normalize = bool(normalize)
        self.dead_code_threshold = dead_code_threshold
        self.chunk_size = int(chunk_size)
        self.kmeans_iterations = int(kmeans_iterations)
        self.num_revived = 0

        if embedding_init == "uniform":
            init = torch.empty(num_embeddings, embedding_dim).uniform_(-1.0 / num_embeddings, 1.0 / num_embeddings)
        else:
            init = torch.randn(num_embeddings, embedding_dim)
        # the codebook; trained by the optimizer only with gradient updates
        self.weight = nn.Parameter(init, requires_grad=codebook_update == "gradient")
        if codebook_update == "ema":
            self.register_buffer("ema_cluster_size", torch.ones(num_embeddings))
            self.register_buffer("ema_embed_sum", init.clone())
        self.register_buffer("unused_steps", torch.zeros(num_embeddings, dtype=torch.long))
        self.register_buffer("total_revived", torch.zeros((), dtype=torch.long))
        # the deferred-quantization switch: a persistent buffer (see ACTIVE_FLAG), read through `active`
        self.register_buffer(ACTIVE_FLAG, torch.tensor(bool(active)))

    # ------------------------------------------------------------------ state
    @property
    def active(self) -> bool:
        """True when quantizing; False while a pass-through (continuous phase).

        A Python bool read from (and written to, in place) the ``active_flag`` buffer, the one source of truth, so a
        loaded state dict or a DDP buffer broadcast is seen at once. Under ``torch.jit.trace`` the forward's branch on
        it is baked into the graph (a ``TracerWarning``): a traced module keeps the phase it was traced in, whatever
        flag is loaded into it later. That is what an exported, already active tokenizer wants; trace a module in
        the phase it is meant to run in.
        """
        return bool(self.active_flag)

    @active.setter
    def active(self, value: bool) -> None:
        with torch.no_grad():
            self.active_flag.fill_(bool(value))  # in place: DDP broadcasts into the registered tensor

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # EMA statistics are derived state: a checkpoint of a gradient-updated quantizer loads into an EMA one (the
        # statistics restart from the loaded codebook) and vice versa (they are dropped), instead of failing or, worse,
        # letting stale statistics overwrite the loaded codebook at the first EMA step
        size_key, sum_key, weight_key = prefix + "ema_cluster_size", prefix + "ema_embed_sum", prefix + "weight"
        # checkpoints of earlier medvq versions: the flag as extra state {"active": bool} instead of the buffer. A state
        # dict with neither entry is left to torch (a missing key under strict=True)
        flag_key, legacy_key = prefix + ACTIVE_FLAG, prefix + _LEGACY_KEY
        if legacy_key in state_dict and flag_key not in state_dict:
            legacy = state_dict.pop(legacy_key)
            flag = _legacy_active(legacy)
            if flag is None:
                error_msgs.append(
                    f"'{legacy_key}' must be an old medvq quantizer flag {{'active': bool}} (current checkpoints store "
                    f"'{flag_key}', a bool tensor), got {legacy!r}."
                )
            else:
                device = None if self.active_flag.is_meta else self.active_flag.device
                state_dict[flag_key] = torch.tensor(flag, device=device)
        if self.codebook_update == "ema" and weight_key in state_dict and sum_key not in state_dict:
            state_dict[size_key] = torch.ones(self.num_embeddings)
            state_dict[sum_key] = state_dict[weight_key].detach().clone()
        elif self.codebook_update == "gradient":
            state_dict.pop(size_key, None)
            state_dict.pop(sum_key, None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    @property
    def codebook(self) -> torch.Tensor:
        """The ``(K, D)`` code table as used for lookup (l2-normalised when ``normalize``)."""
        return F.normalize(self.weight, dim=1) if self.normalize else self.weight

    def extra_repr(self) -> str:
        return (
            f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, "
            f"codebook_update={self.codebook_update!r}, normalize={self.normalize}, "
            f"active={'?' if self.active_flag.is_meta else self.active}"
        )

    # ------------------------------------------------------------------ forward
    def _check_input(self, z: Any) -> None:
        if not isinstance(z, torch.Tensor):
            raise TypeError(
                f"VectorQuantizer expects a torch.Tensor z of shape (B, D, *spatial), got {type(z).__name__}."
            )
        if not z.is_floating_point():
            raise TypeError(f"VectorQuantizer expects a floating tensor z, got dtype {z.dtype}.")
        if z.ndim < 3:
            raise ValueError(
                f"z must have shape (B, D, *spatial) with at least one spatial dim, got {tuple(z.shape)}."
            )
        if z.shape[1] != self.embedding_dim:
            raise ValueError(
                f"z has {z.shape[1]} channels (dim 1) but embedding_dim is {self.embedding_dim}: "
                "z must be (B, embedding_dim, *spatial)."
            )
        if not torch.isfinite(z).all():
            raise ValueError("z contains NaN or inf values; check the encoder output (learning rate, AMP overflow).")

    def _flatten(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.movedim(1, -1).reshape(-1, self.embedding_dim).float()  # (B, D, *S) -> (N, D), N = B * prod(S)
        return F.normalize(flat, dim=1) if self.normalize else flat

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``z`` of shape ``(B, D, *spatial)`` (any number >= 1 of spatial dims).

        Returns:
            :class:`QuantizerOutput` (quantized, indices, loss, perplexity).
        """
        self._check_input(z)
        batch_shape = (z.shape[0], *z.shape[2:])  # (B, *S)
        # distances and codebook statistics in float32 whatever the autocast dtype: bf16 rounding changes argmins
        with torch.autocast(device_type=z.device.type, enabled=False):
            # 1. flatten and look up the nearest codes (exact, chunked, no gradient)
            flat = self._flatten(z)  # (N, D)
            codebook = self.codebook
            indices = nearest_codes(flat.detach(), codebook.detach(), self.chunk_size).indices  # (N,)
            counts = torch.bincount(indices, minlength=self.num_embeddings)  # (K,)
            perplexity = perplexity_from_counts(counts)
            if not self.active:
                # 2a. continuous phase: pass-through, nothing learned by the codebook. The zero loss still touches the
                # codebook parameter so that DDP (without find_unused_parameters) gets a (zero) gradient for it
                passed = z if not self.normalize else flat.view(*batch_shape, -1).movedim(-1, 1).to(z.dtype)
                zero = (self.weight.sum() * 0.0).abs() if self.weight.requires_grad else z.new_zeros((), dtype=torch.float32)
                return QuantizerOutput(passed, indices.view(batch_shape), zero.float(), perplexity)

            # 2b. codebook statistics: EMA update and dead-code bookkeeping (training only, synchronised under DDP)
            if self.training and (self.codebook_update == "ema" or self.dead_code_threshold > 0):
                counts = all_reduce_sum_(counts.clone())
                if self.codebook_update == "ema":
                    self._ema_update(flat.detach(), indices, counts)
                    codebook = self.codebook
            # 3. losses (VQ-VAE eq. 3): codebook term trains the codes, commitment term trains the encoder
            quantized = F.embedding(indices, codebook)  # (N, D), differentiable w.r.t. the codebook
            commitment = F.mse_loss(flat, quantized.detach())
            if self.codebook_update == "gradient":
                loss = F.mse_loss(quantized, flat.detach()) + self.commitment_cost * commitment
            else:
                loss = self.commitment_cost * commitment
            # 4. straight-through estimator: forward value of the code, gradient of the identity to z
            quantized = flat + (quantized - flat).detach()
            # 5. revive codes that stayed unused too long (after the loss, so this step's graph is unaffected)
            if self.training and self.dead_code_threshold > 0:
                self.revive_dead_codes(flat.detach(), counts)
        quantized = quantized.view(*batch_shape, self.embedding_dim).movedim(-1, 1).to(z.dtype)  # (B, D, *S)
        return QuantizerOutput(quantized, indices.view(batch_shape), loss, perplexity)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        buffer_dtype = self.ema_embed_sum.dtype
        sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, indices, flat.to(buffer_dtype))  # (K, D)
        all_reduce_sum_(sums)
        self.ema_cluster_size.mul_(self.decay).add_(counts.to(self.ema_cluster_size.dtype), alpha=1 - self.decay)
        self.ema_embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        # code = EMA sum / EMA size. Codes whose EMA size fell to <= epsilon keep their value instead of dividing by
        # ~0; sonnet's VectorQuantizerEMA uses Laplace smoothing of the sizes for that, but it biases every code by
        # ~(n + K eps) / n, 2% at K = 131072 codes and 64 latents per batch, so decay 0 would not give batch means
        size = self.ema_cluster_size.unsqueeze(1)  # (K, 1)
        updated = self.ema_embed_sum / size.clamp_min(self.epsilon)
        self.weight.data.copy_(torch.where(size > self.epsilon, updated, self.weight.data).to(self.weight.dtype))

    @torch.no_grad()
    def revive_dead_codes(
        self, flat: torch.Tensor, counts: torch.Tensor, row_weights: torch.Tensor | None = None,
        to_codes: Any = None,
    ) -> None:
        """One step of dead-code bookkeeping: codes unused (``counts == 0``) for ``dead_code_threshold`` consecutive
        steps become random rows of ``flat``, taken from rank 0 so every rank keeps the same codebook.

        Args:
            flat: ``(N, D)`` vectors this step quantized (latents, or a multi-scale quantizer's residuals).
            counts: ``(K,)`` code counts of this step, already summed over ranks.
            row_weights: ``(N,)`` non-negative drawing weights of the rows; None (default) draws every row with the
                same probability. A multi-scale quantizer's ``revival="per_scale"`` gives each scale the same share.
            to_codes: maps the drawn ``(n, D)`` rows to the stored code table's space (a multi-scale quantizer's
                inverse code projection); None stores them as they are.
        """
        self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
        dead = (self.unused_steps >= self.dead_code_threshold).nonzero().flatten()
        self.num_revived = int(dead.numel())
        if self.num_revived == 0:
            return
        # replacements: random latents of this batch, taken from rank 0 so that every rank gets the same codebook
        if row_weights is None:
            picks = torch.randint(flat.shape[0], (self.num_revived,), device=flat.device)
        else:
            picks = torch.multinomial(row_weights.float(), self.num_revived, replacement=True)
        replacement = flat[picks].float()
        if to_codes is not None:
            replacement = to_codes(replacement)
        replacement = broadcast_(replacement.contiguous())
        self.weight.data[dead] = replacement.to(self.weight.dtype)
        if self.codebook_update == "ema":
            self.ema_embed_sum[dead] = replacement
            self.ema_cluster_size[dead] = 1.0
        self.unused_steps[dead] = 0
        self.total_revived.add_(self.num_revived)

    # ------------------------------------------------------------------ lookup
    def lookup(self, indices: torch.Tensor, codebook: torch.Tensor | None = None) -> torch.Tensor:
        """Codes of ``indices`` ``(B, *spatial)`` as a ``(B, D, *spatial)`` tensor (what the decoder consumes).

        ``codebook``: a ``(K, D)`` table to read instead of :attr:`codebook` (a multi-scale quantizer's projected
        codes); the indices are validated against ``num_embeddings`` either way."""
        if indices.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"indices must be an integer tensor, got dtype {indices.dtype}.")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_embeddings):
            raise ValueError(f"indices must lie in [0, {self.num_embeddings}), got range "
                             f"[{int(indices.min())}, {int(indices.max())}].")
        table = self.codebook if codebook is None else codebook
        return F.embedding(indices.long(), table).movedim(-1, 1)  # (B, *S, D) -> (B, D, *S)

    # ------------------------------------------------------------------ deferral
    @torch.no_grad()
    def activate(
        self, samples: torch.Tensor, init: str = "kmeans", seed: int = 0, iterations: int | None = None
    ) -> ActivationReport:
        """Set the codebook from latents of the current encoder and turn quantization on.

        Under DDP (an initialized process group) it must be called on every rank (it runs collectives): the samples
        of all ranks are gathered, rank 0 computes the codebook and broadcasts it, so every rank ends with the same
        codebook. Invalid samples on any rank raise on every rank, so no rank is left waiting in a collective.

        Args:
            samples: ``(N, D)`` latents of the current encoder, ``N >= num_embeddings`` over all ranks.
            init: ``"kmeans"`` (k-means++ seeding + Lloyd iterations, the paper's choice) or ``"samples"`` (a random
                subset of the samples, cheap).
            seed: seed of the k-means seeding / the subset draw.
            iterations: Lloyd iterations; default ``kmeans_iterations`` given at construction.

        Returns:
            :class:`ActivationReport`.

        Raises:
            ValueError: unknown ``init``, wrong shape, non-finite samples, or fewer samples than codes.
            TypeError: non-tensor or non-floating samples.
        """
        if init not in _INITS:
            raise ValueError(f"init must be one of {_INITS}, got {init!r}.")
        problem = _check_samples(samples, self.embedding_dim)
        if is_distributed():
            # every rank must take the same branch before the collectives below, or the valid ranks would wait forever
            failed = all_reduce_sum_(torch.tensor([float(problem is not None)], device=self.weight.device))
            if problem is None and float(failed) > 0:
                problem = (ValueError, "the latent samples of another rank are invalid (see that rank's error).")
        if problem is not None:
            raise problem[0](problem[1])
        start = time.perf_counter()
        device = self.weight.device
        # 1. all latents of all ranks, in rank order
        latents = all_gather_rows(samples.detach().to(device=device, dtype=torch.float32))  # (N_total, D)
        if self.normalize:
            latents = F.normalize(latents, dim=1)
        num_samples = latents.shape[0]
        if num_samples < self.num_embeddings:
            raise ValueError(
                f"activate needs at least num_embeddings={self.num_embeddings} latent samples, got N={num_samples}: "
                "collect more batches of latents before the switch."
            )
        # 2. rank 0 computes the codebook, every rank receives it
        codebook = torch.empty(self.num_embeddings, self.embedding_dim, device=device)
        inertia = torch.zeros((), dtype=torch.float64, device=device)
        if rank() == 0:
            if init == "kmeans":
                iters = self.kmeans_iterations if iterations is None else int(iterations)
                result = kmeans(latents, self.num_embeddings, iterations=iters, seed=seed, chunk_size=self.chunk_size)
                codebook.copy_(result.centroids)
                inertia.fill_(result.inertia)
            else:
                generator = torch.Generator(device=device)
                generator.manual_seed(int(seed))
                pick = torch.randperm(num_samples, generator=generator, device=device)[: self.num_embeddings]
                codebook.copy_(latents[pick])
        if is_distributed():
            broadcast_(codebook)
            broadcast_(inertia)
        if self.normalize:
            codebook = F.normalize(codebook, dim=1)
        # 3. install it, reset the EMA and dead-code statistics, switch on
        self.weight.data.copy_(codebook)
        if self.codebook_update == "ema":
            self.ema_cluster_size.fill_(1.0)
            self.ema_embed_sum.copy_(codebook)
        self.unused_steps.zero_()
        self.active = True
        seconds = time.perf_counter() - start
        assigned = nearest_codes(latents, codebook, self.chunk_size).indices
        usage = float(torch.bincount(assigned, minlength=self.num_embeddings).gt(0).float().mean())
        return ActivationReport(
            num_samples=num_samples,
            init=init,
            inertia=float(inertia) if init == "kmeans" else None,
            seconds=seconds,
            usage=usage,
        )
