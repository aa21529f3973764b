"""Whole-evaluation-set codebook coverage as an accumulating Ignite metric.

:class:`CodebookCoverage` sums per-code counts (and, optionally, streaming moments of the encoder latents) over every
iteration of an evaluation run and turns them into the coverage numbers of :mod:`medvq.metrics.coverage` once, at
the end. It never averages per-batch values: a batch of B latents has perplexity at most B, so a mean of per-batch
perplexities measures batch diversity, not the codebook (see ``docs/metrics.md``).

Follows the accumulate / all-reduce / compute pattern of Ignite's own metrics (``ignite.metrics.Accuracy``):
``reset``/``update`` are wrapped in :func:`~ignite.metrics.metric.reinit__is_reduced` and the accumulated sums are
all-reduced with :func:`~ignite.metrics.metric.sync_all_reduce` before the numbers are computed, so it is correct
under DDP (every rank sees the same whole-set result).

Limitations: ``code_distance`` is O(K^2 D) time per :meth:`CodebookCoverage.compute` (seconds on a CPU for K = 16384);
the latent moments are plain float64 sums, so ``trace(cov)`` loses precision when the latents' mean is more than
~1e6 times their spread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.exceptions import NotComputableError
from ignite.metrics import Metric
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

from medvq.metrics.coverage import (
    DISTANCE_CHUNK_SIZE,
    code_usage,
    covariance_from_moments,
    dead_codes,
    effective_dimension,
    mean_code_distance,
    perplexity_from_counts,
    shrinkage,
)

from medvq.utils.distributed import unwrap_model

__all__ = ["CodebookCoverage"]


def _codebook_source(codebook: Any) -> Any:
    """Unwrap DDP and find the quantizer of a tokenizer; a module without a codebook is an error, not a callable."""
    if isinstance(codebook, torch.nn.Module):
        codebook = unwrap_model(codebook)
    if isinstance(codebook, torch.nn.Module) and not hasattr(codebook, "codebook"):
        quantizer = getattr(codebook, "quantizer", None)
        if quantizer is None or not hasattr(quantizer, "codebook"):
            raise TypeError(
                f"codebook is a {type(codebook).__name__} module without a `codebook` attribute or a `quantizer` that "
                "has one: pass the quantizer, the tokenizer, or the (K, D) codebook tensor."
            )
        codebook = quantizer
    return codebook


def _read_table(source: Any) -> torch.Tensor:
    """The ``(K, D)`` table of a :func:`_codebook_source` result (tensor, object with ``codebook``, or callable)."""
    if isinstance(source, torch.Tensor):
        table = source
    elif hasattr(source, "codebook"):
        table = source.codebook
    else:
        table = source()
    if not isinstance(table, torch.Tensor):
        raise TypeError(f"codebook must provide a (K, D) tensor, got {type(table).__name__}.")
    if table.ndim != 2:
        raise ValueError(f"codebook must have shape (K, D), got {tuple(table.shape)}.")
    return table.detach()


class CodebookCoverage(Metric):
    """Codebook usage, perplexity, code distance, dead codes and shrinkage over a whole evaluation set.

    Each :meth:`update` adds the batch's code indices to per-code counts ``n_k`` (int64, ``bincount``) and, when the
    encoder latents are given too, adds them to streaming moments in float64: the number of latent rows ``n``, and
    per dimension ``S1_d = sum_i x_id`` and ``S2_d = sum_i x_id^2``, and their Gram matrix. :meth:`compute` reads the codebook as it is at
    that moment (so a codebook that changed during training is measured as evaluated) and returns a dict:

    - ``usage``: ``|{k : n_k > 0}| / K``; ``dead_codes``: ``K - |{k : n_k > 0}|``;
    - ``perplexity``: ``exp(-sum_k p_k log p_k)``, ``p_k = n_k / sum_j n_j``;
    - ``code_distance``: mean pairwise Euclidean distance over all K codes; ``code_distance_used``: over the used
      codes only (``nan`` when fewer than 2 are used);
    - ``num_latents``: ``sum_k n_k``;
    - ``codebook_effective_dim``: :func:`~medvq.metrics.effective_dimension` (exp-entropy of the normalised
      covariance spectrum) of the used codes (``nan`` when fewer than 2 are used);
    - ``latent_effective_dim`` (only with latents): the same of the latents, from their streaming Gram matrix
      ``G = sum_i x_i x_i^T`` (float64, ``D x D``): ``cov = (G - S1 S1^T / n) / (n - 1)``;
    - ``shrinkage`` (present only when latents were given): ``trace(cov(codebook)) / trace(cov(latents))`` with the
      latent trace from the moments, ``trace(cov) = sum_d (S2_d - S1_d^2 / n) / (n - 1)``; ``nan`` when it is
      undefined (fewer than 2 latents or codes, or latents without spread). The key is left out, rather than set to
      ``nan``, when no latents were given, so that a missing input is not mistaken for a measured value.

    Each key is prefixed with ``prefix``. Attached to an engine, Ignite (>= 0.4.3, ``metrics_result_mode="both"``)
    writes every key of the dict into ``engine.state.metrics`` and the whole dict under the attach name, which must
    therefore not equal a key (attach as e.g. ``"coverage"``). The values are Python ``float``/``int``.

    The formulas are those of :mod:`medvq.metrics.coverage` (the functional forms); the definitions follow "Early
    Quantization Shrinks Codebook" (arXiv 2603.17052).

    Args:
        codebook: where to read the ``(K, D)`` code table at compute time: a tensor (read as it is then, so a
            parameter updated in place is seen updated), an object with a ``codebook`` attribute (e.g. a
            :class:`~medvq.quantizers.VectorQuantizer`), or a callable with no arguments that returns the table.
        num_embeddings: K, the number of codes. Default None: taken from the tensor, from the object's
            ``num_embeddings`` attribute, or else by reading the table once at construction.
        output_transform: maps ``engine.state.output`` to what :meth:`update` takes. Default identity.
        device: device of the accumulated counts and moments. Default ``"cpu"``; under DDP with ``nccl`` use the
            rank's CUDA device.
        prefix: prepended to every key of the result, e.g. ``"val_"``. Default ``""``.
        chunk_size: bound on the elements of one block of the distance matrix in ``code_distance``. Default 2**20.

    Raises:
        TypeError: ``codebook`` is none of the accepted kinds, or ``prefix`` is not a string.
        ValueError: ``num_embeddings`` is not an integer >= 1 or disagrees with a ``codebook`` tensor, the tensor is
            not ``(K, D)``, or ``chunk_size`` < 1.

    Example:
        >>> codebook = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [9.0, 9.0]])
        >>> metric = CodebookCoverage(codebook, prefix="val_")
        >>> metric.update(torch.tensor([0, 1, 1, 2]))  # indices only: no shrinkage
        >>> result = metric.compute()
        >>> result["val_usage"], result["val_dead_codes"], result["val_code_distance_used"]
        (0.75, 1, 4.0)

        With an evaluator whose output is ``{"indices": ..., "latents": ...}`` (e.g. from ``vq(z)`` and ``z``):

        >>> # CodebookCoverage(vq, prefix="val_").attach(evaluator, "coverage")
    """

    # update() parses its own output formats (see iteration_completed), so no keys are required of a Mapping output
    required_output_keys = None

    def __init__(
        self,
        codebook: torch.Tensor | Callable[[], torch.Tensor] | Any,
        num_embeddings: int | None = None,
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
        prefix: str = "",
        chunk_size: int = DISTANCE_CHUNK_SIZE,
    ) -> None:
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string, got {type(prefix).__name__}.")
        if num_embeddings is not None and (
            isinstance(num_embeddings, bool) or not isinstance(num_embeddings, int) or num_embeddings < 1
        ):
            raise ValueError(f"num_embeddings must be an integer >= 1 or None, got {num_embeddings!r}.")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}.")
        codebook = _codebook_source(codebook)
        if not (isinstance(codebook, torch.Tensor) or hasattr(codebook, "codebook") or callable(codebook)):
            raise TypeError(
                "codebook must be a (K, D) tensor, an object with a `codebook` attribute (e.g. a VectorQuantizer) "
                f"or a callable returning the (K, D) table, got {type(codebook).__name__}."
            )
        self._codebook = codebook
        #: ``(K,)`` whole-set code counts of the last :meth:`compute` (all ranks summed), None before the first one
        self.last_counts: torch.Tensor | None = None
        self.prefix = prefix
        self.chunk_size = chunk_size
        self.num_embeddings = self._resolve_num_embeddings(num_embeddings)
        # Metric.__init__ calls reset(), which needs num_embeddings
        super().__init__(output_transform=output_transform, device=device)

    # ------------------------------------------------------------------ codebook
    def _read_codebook(self) -> torch.Tensor:
        """The ``(K, D)`` table as it is now, detached."""
        return _read_table(self._codebook)

    def _resolve_num_embeddings(self, num_embeddings: int | None) -> int:
        if isinstance(self._codebook, torch.Tensor):
            k = self._read_codebook().shape[0]
            if num_embeddings is not None and num_embeddings != k:
                raise ValueError(f"num_embeddings is {num_embeddings} but the codebook tensor has {k} rows.")
            return k
        if num_embeddings is not None:
            return num_embeddings
        k = getattr(self._codebook, "num_embeddings", None)
        if isinstance(k, int) and not isinstance(k, bool) and k >= 1:
            return k
        return self._read_codebook().shape[0]

    # ------------------------------------------------------------------ accumulation
    @reinit__is_reduced
    def reset(self) -> None:
        """Zero the counts and the latent moments (Ignite calls this at the start of every evaluation epoch)."""
        self._counts = torch.zeros(self.num_embeddings, dtype=torch.int64, device=self._device)  # (K,)
        self._latent_count = torch.zeros((), dtype=torch.int64, device=self._device)  # n
        # S1, S2: (D,), sized by the first latents (or by the codebook at compute time when none came)
        self._latent_sum = torch.zeros(0, dtype=self._double_dtype, device=self._device)
        self._latent_sum_sq = torch.zeros(0, dtype=self._double_dtype, device=self._device)
        self._latent_gram = torch.zeros(0, 0, dtype=self._double_dtype, device=self._device)  # sum x x^T, (D, D)

    def _parse(self, output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(output, torch.Tensor):
            return output, None
        if isinstance(output, Mapping):
            if "indices" not in output:
                raise ValueError(f"output as a mapping must have key 'indices', got keys {list(output.keys())}.")
            return output["indices"], output.get("latents")
        if isinstance(output, (tuple, list)) and len(output) in (1, 2):
            return output[0], (output[1] if len(output) == 2 else None)
        raise TypeError(
            "output must be an indices tensor, a pair (indices, latents) or a mapping with keys 'indices' and "
            f"optionally 'latents', got {type(output).__name__}"
            + (f" of length {len(output)}" if isinstance(output, (tuple, list)) else "")
            + " (use output_transform to select them, e.g. lambda out: out.indices for a QuantizerOutput)."
        )

    def _check_indices(self, indices: Any) -> torch.Tensor:
        if not isinstance(indices, torch.Tensor):
            raise TypeError(f"indices must be a tensor, got {type(indices).__name__}.")
        if indices.dtype == torch.bool or indices.is_floating_point() or indices.is_complex():
            raise TypeError(f"indices must be an integer tensor, got dtype {indices.dtype}.")
        flat = indices.detach().reshape(-1).to(device=self._device, dtype=torch.int64)  # (B, *S) -> (N,)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.num_embeddings):
            raise ValueError(
                f"indices must lie in [0, {self.num_embeddings}) (num_embeddings), got values in "
                f"[{int(flat.min())}, {int(flat.max())}]."
            )
        return flat

    def _check_latents(self, latents: Any, num_indices: int) -> torch.Tensor:
        if not isinstance(latents, torch.Tensor) or not latents.is_floating_point():
            raise TypeError(
                f"latents must be a floating tensor, got {getattr(latents, 'dtype', type(latents).__name__)}."
            )
        if latents.ndim < 2:
            raise ValueError(f"latents must have shape (B, D, *spatial) or (N, D), got {tuple(latents.shape)}.")
        dim = latents.shape[1]
        flat = latents.detach().movedim(1, -1).reshape(-1, dim)  # (B, D, *S) -> (N, D); (N, D) unchanged
        if flat.shape[0] != num_indices:
            raise ValueError(
                f"latents hold {flat.shape[0]} vectors of dimension {dim} (shape {tuple(latents.shape)}, channels in "
                f"dim 1) but indices hold {num_indices}: give one latent per index."
            )
        if self._latent_sum.numel() and dim != self._latent_sum.numel():
            raise ValueError(f"latents have dimension {dim} but earlier latents had {self._latent_sum.numel()}.")
        return flat.to(device=self._device, dtype=self._double_dtype)

    @reinit__is_reduced
    def update(self, output: Any) -> None:
        """Add one batch: ``indices`` (int, any shape) and optionally its ``latents``.

        Args:
            output: an indices tensor of any shape; or ``(indices, latents)``; or a mapping with key ``"indices"``
                and optionally ``"latents"``. ``latents`` is ``(B, D, *spatial)`` with ``indices`` ``(B, *spatial)``,
                or ``(N, D)`` with N = ``indices.numel()``; give them as the quantizer compares them with the codes
                (l2-normalised for a cosine quantizer), or shrinkage compares different spaces.

        Raises:
            TypeError: ``output`` has none of these forms, ``indices`` is not an integer tensor, or ``latents`` is not
                a floating tensor.
            ValueError: an index is outside ``[0, num_embeddings)``, or the latents do not match the indices in
                number or earlier latents in dimension. Nothing is accumulated from a batch that raises.
        """
        # 1. validate everything first, so that a bad batch leaves the sums untouched
        indices, latents = self._parse(output)
        flat_indices = self._check_indices(indices)  # (N,)
        flat_latents = None if latents is None else self._check_latents(latents, flat_indices.numel())  # (N, D)
        # 2. code counts
        self._counts += torch.bincount(flat_indices, minlength=self.num_embeddings)
        # 3. streaming moments of the latents
        if flat_latents is not None:
            if not self._latent_sum.numel():
                self._latent_sum = flat_latents.new_zeros(flat_latents.shape[1])
                self._latent_sum_sq = flat_latents.new_zeros(flat_latents.shape[1])
                self._latent_gram = flat_latents.new_zeros(flat_latents.shape[1], flat_latents.shape[1])
            self._latent_count += flat_latents.shape[0]
            self._latent_sum += flat_latents.sum(dim=0)
            self._latent_sum_sq += flat_latents.square().sum(dim=0)
            self._latent_gram += flat_latents.T @ flat_latents  # (D, N) @ (N, D)

    @torch.no_grad()
    def iteration_completed(self, engine: Any) -> None:
        """Pass ``output_transform(engine.state.output)`` to :meth:`update` unchanged.

        Ignite's default would turn a mapping into a tuple of ``required_output_keys`` (all required) and unroll
        lists of tensors; here a mapping may leave out ``"latents"``.
        """
        self.update(self._output_transform(engine.state.output))

    # ------------------------------------------------------------------ result
    @sync_all_reduce("_counts", "_latent_count", "_latent_sum", "_latent_sum_sq", "_latent_gram")
    def _reduced_state(self) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Counts and moments summed over all ranks (this rank's own in a single process)."""
        return self._counts, int(self._latent_count), self._latent_sum, self._latent_sum_sq, self._latent_gram

    def compute(self) -> dict[str, float | int]:
        """The coverage numbers of everything passed to :meth:`update` since the last :meth:`reset`.

        Returns:
            dict with keys ``prefix + k`` for ``k`` in usage, perplexity, code_distance, code_distance_used,
            dead_codes, num_latents, and shrinkage when latents were given (see the class docstring).

        Raises:
            NotComputableError: no index was seen since the last reset (on any rank).
            ValueError: the codebook no longer has ``num_embeddings`` rows, or its dimension differs from the
                latents'.
        """
        # 1. the codebook as it is now
        table = self._read_codebook()  # (K, D)
        if table.shape[0] != self.num_embeddings:
            raise ValueError(
                f"codebook has {table.shape[0]} codes at compute time but num_embeddings is {self.num_embeddings}."
            )
        if not self._latent_sum.numel():
            # no latents on this rank: zeros of the codebook's dimension, so every rank all-reduces the same shapes
            self._latent_sum = torch.zeros(table.shape[1], dtype=self._double_dtype, device=self._device)
            self._latent_sum_sq = torch.zeros_like(self._latent_sum)
            self._latent_gram = torch.zeros(table.shape[1], table.shape[1], dtype=self._double_dtype,
                                            device=self._device)
        elif self._latent_sum.numel() != table.shape[1]:
            raise ValueError(
                f"latents have dimension {self._latent_sum.numel()} but the codebook has {table.shape[1]}."
            )
        # 2. whole-set sums over all ranks
        counts, n, s1, s2, gram = self._reduced_state()
        num_latents = int(counts.sum())
        if num_latents == 0:
            raise NotComputableError(
                "CodebookCoverage must have at least one index (update) before compute() can be called."
            )
        self.last_counts = counts.detach().cpu().clone()  # whole-set code counts of this compute, for plots
        # 3. coverage numbers from the functional forms
        used = counts > 0  # (K,)
        result: dict[str, float | int] = {
            "usage": code_usage(counts),
            "perplexity": float(perplexity_from_counts(counts)),
            "code_distance": mean_code_distance(table, chunk_size=self.chunk_size),
            "code_distance_used": mean_code_distance(table, mask=used.to(table.device), chunk_size=self.chunk_size),
            "dead_codes": dead_codes(counts),
            "num_latents": num_latents,
            # the effective dimension of the codes the tokens use (dead codes of a random init would add noise)
            "codebook_effective_dim": (effective_dimension(table[used.to(table.device)])
                                       if int(used.sum()) >= 2 else float("nan")),
        }
        # 4. shrinkage, only when latents were given: trace(cov) = sum_d (S2_d - S1_d^2 / n) / (n - 1)
        if n > 0:
            latent_trace = float(((s2 - s1.square() / n) / (n - 1)).sum()) if n > 1 else float("nan")
            defined = table.shape[0] > 1 and latent_trace > 0  # False for nan too
            result["shrinkage"] = shrinkage(table, latent_trace) if defined else float("nan")
            result["latent_effective_dim"] = (effective_dimension(covariance_from_moments(n, s1, gram),
                                                                  is_covariance=True) if n > 1 else float("nan"))
        return {self.prefix + key: value for key, value in result.items()}
