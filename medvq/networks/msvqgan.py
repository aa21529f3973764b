"""VAR's tokenizer: the VQGAN encoder/decoder around a :class:`~medvq.quantizers.MultiScaleResidualQuantizer`.

VAR (Tian et al. 2024, arXiv 2404.02905) tokenizes an image into token maps at increasing scales (1x1 ... 16x16 for
a 16x16 latent) drawn from one shared codebook; its next-scale transformer (:class:`medvq.networks.VARTransformer`)
generates them coarse to fine. VAR's authors released the trained tokenizer but not its training code; here it is
the same :class:`~medvq.networks.VQGANTokenizer` (taming blocks, MONAI layers) with the multi-scale quantizer, trained
by the same :class:`~medvq.engines.TokenizerTrainer` and deferred by the same
:class:`~medvq.handlers.DeferredQuantizationHandler` (which initialises the shared codebook by k-means on the exact
residual pyramid of the mature encoder's latents, see ``MultiScaleResidualQuantizer.collect_residuals``).

Limitations: the last scale must equal the latent grid, so the image size is fixed by ``scales[-1]`` and the
downsampling factor (a 16x16 latent at factor 16 means 256 px images).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medvq.networks.vqgan import VQGANTokenizer
from medvq.quantizers import MultiScaleResidualQuantizer

__all__ = ["MultiScaleVQGANTokenizer", "msvqgan_f16", "msvqgan_tiny"]

_VAR_SCALES = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


class MultiScaleVQGANTokenizer(VQGANTokenizer):
    """VQGAN tokenizer whose quantizer is VAR's multi-scale residual quantizer.

    Same encoder, decoder and projections as :class:`VQGANTokenizer` (see it for the architecture arguments); the
    quantizer outputs one token map per scale (``output.quantizer.indices`` is a list), :meth:`encode_to_indices`
    returns that list and :meth:`decode_indices` takes it.

    Args:
        spatial_dims, in_channels, out_channels, channels, num_res_blocks, norm_num_groups, attention_levels,
            with_nonlocal_attn, z_channels, embedding_dim, num_embeddings, commitment_cost, quantize,
            use_checkpointing, use_flash_attention: as :class:`VQGANTokenizer`. ``embedding_dim`` defaults to 32
            and ``num_embeddings`` to 4096 (VAR's tokenizer: ``Cvae=32``, ``vocab_size=4096``).
        scales: token-map sizes coarse to fine, ints or per-axis tuples; the last must be the latent grid (image
            size / ``2 ** (len(channels) - 1)``). Default VAR's ``(1, 2, 3, 4, 5, 6, 8, 10, 13, 16)``.
        phi_shared: phi convolutions shared by neighbouring scales (VAR's ``share_quant_resi``: 4); 0 gives one phi
            per scale (VAR's ``PhiNonShared``). Default 4.
        phi_residual_ratio: phi's blend ``(1 - r) h + r conv(h)``; 0 disables phi. Default 0.5 (VAR's
            ``quant_resi``).
        codebook_update: ``"gradient"`` (default, VAR) or ``"ema"``; decay: its EMA decay (default 0.99), see
            :class:`~medvq.quantizers.MultiScaleResidualQuantizer`.
        quant_conv_kernel_size: 3 (default, VAR's VQVAE ``quant_conv_ks=3``) or 1 (taming's VQGAN).
        commitment: encoder commitment on every running sum (``"all"``, VAR's loss, default) or on the final one
            (``"final"``), see :class:`~medvq.quantizers.MultiScaleResidualQuantizer`.
        dead_code_threshold: revive codes unused at every scale for this many training steps (after the switch);
            0 (default, VAR) disables it.
        codebook_projection: VQGAN-LC's frozen code table with a learned linear projection of the codes (default
            False); revival: ``"pooled"`` (default) or ``"per_scale"`` draws of revived codes; codebook_normalize:
            LlamaGen's l2-normalised codes with one learned magnitude per scale (the quantizer's ``normalize``,
            default False). All as :class:`~medvq.quantizers.MultiScaleResidualQuantizer`.

    Raises:
        ValueError: as :class:`VQGANTokenizer`, bad scales, or an image whose latent grid is not ``scales[-1]``.

    Example:
        >>> net = MultiScaleVQGANTokenizer(spatial_dims=2, channels=(16, 32, 32), norm_num_groups=8, num_res_blocks=1,
        ...                                z_channels=32, embedding_dim=8, num_embeddings=64, scales=(1, 2, 4, 8))
        >>> x = torch.rand(2, 3, 32, 32) * 2 - 1
        >>> [tuple(t.shape) for t in net.encode_to_indices(x)]
        [(2, 1, 1), (2, 2, 2), (2, 4, 4), (2, 8, 8)]
    """

    quantizer: MultiScaleResidualQuantizer

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int | None = None,
        channels: Sequence[int] = (128, 128, 256, 256, 512),
        num_res_blocks: int = 2,
        norm_num_groups: int = 32,
        attention_levels: Sequence[bool] | None = None,
        with_nonlocal_attn: bool = True,
        z_channels: int = 256,
        embedding_dim: int = 32,
        num_embeddings: int = 4096,
        scales: Sequence[int | Sequence[int]] = _VAR_SCALES,
        commitment_cost: float = 0.25,
        phi_shared: int = 4,
        phi_residual_ratio: float = 0.5,
        commitment: str = "all",
        dead_code_threshold: int = 0,
        codebook_update: str = "gradient",
        decay: float = 0.99,
        quantize: bool = True,
        use_checkpointing: bool = False,
        use_flash_attention: bool = False,
        quant_conv_kernel_size: int = 3,
        codebook_projection: bool = False,
        revival: str = "pooled",
        codebook_normalize: bool = False,
    ) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=channels,
            num_res_blocks=num_res_blocks,
            norm_num_groups=norm_num_groups,
            attention_levels=attention_levels,
            with_nonlocal_attn=with_nonlocal_attn,
            z_channels=z_channels,
            embedding_dim=embedding_dim,
            num_embeddings=num_embeddings,
            commitment_cost=commitment_cost,
            quantize=quantize,
            use_checkpointing=use_checkpointing,
            use_flash_attention=use_flash_attention,
            quant_conv_kernel_size=quant_conv_kernel_size,
        )
        # the parent built a single-scale quantizer (validating K, D and beta); the multi-scale one replaces it
        self.quantizer = MultiScaleResidualQuantizer(
            num_embeddings,
            embedding_dim,
            scales=scales,
            spatial_dims=spatial_dims,
            commitment_cost=commitment_cost,
            phi_shared=phi_shared,
            phi_residual_ratio=phi_residual_ratio,
            commitment=commitment,
            dead_code_threshold=dead_code_threshold,
            codebook_update=codebook_update,
            decay=decay,
            active=quantize,
            codebook_projection=codebook_projection,
            revival=revival,
            normalize=codebook_normalize,
        )

    @property
    def scales(self) -> tuple[tuple[int, ...], ...]:
        """The quantizer's per-axis token-map sizes, coarse to fine."""
        return self.quantizer.scales

    @property
    def image_shape(self) -> tuple[int, ...]:
        """The one spatial image shape this tokenizer takes: ``scales[-1] * downsample_factor``."""
        return tuple(s * self.downsample_factor for s in self.scales[-1])

    def _check_image(self, x: object) -> None:
        super()._check_image(x)
        shape = tuple(int(s) for s in x.shape[2:])  # type: ignore[union-attr]
        if self.latent_shape(shape) != self.scales[-1]:
            raise ValueError(
                f"images of spatial shape {shape} give a {self.latent_shape(shape)} latent grid, but the last of "
                f"scales is {self.scales[-1]}: resize the images to {self.image_shape} or change scales."
            )

    @torch.no_grad()
    def encode_to_indices(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """One ``(B, *scale_k)`` int64 token map per scale of images ``x`` (a pure lookup, also while inactive)."""
        return self.quantizer.latent_to_indices(self.encode(x))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Token indices ``(B, 1, L)`` int64 of images ``x``: every scale's map flattened, coarse scale first
        (:meth:`MultiScaleResidualQuantizer.flatten_indices`), with a channel axis."""
        return self.quantizer.flatten_indices(self.encode_to_indices(x)).unsqueeze(1)

    def decode_indices(self, indices: Sequence[torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """Images ``(B, out_channels, *image_shape)`` from one token map per scale (or a ``(B, L)`` sequence)."""
        if isinstance(indices, torch.Tensor):
            indices = self.quantizer.unflatten_indices(indices)
        return self.decode(self.quantizer.indices_to_latent(indices))


def msvqgan_f16(
    *,
    spatial_dims: int = 2,
    in_channels: int = 3,
    num_embeddings: int = 4096,
    embedding_dim: int = 32,
    scales: Sequence[int | Sequence[int]] = _VAR_SCALES,
    quantize: bool = True,
    commitment_cost: float = 0.25,
    phi_shared: int = 4,
    commitment: str = "all",
    dead_code_threshold: int = 0,
    codebook_update: str = "gradient",
    decay: float = 0.99,
    use_checkpointing: bool = False,
    use_flash_attention: bool = False,
    quant_conv_kernel_size: int = 3,
    codebook_projection: bool = False,
    revival: str = "pooled",
    codebook_normalize: bool = False,
) -> MultiScaleVQGANTokenizer:
    """VAR's tokenizer size (``vae_ch=160``, ``ch_mult=(1, 1, 2, 2, 4)``, ``z_channels=32``, K=4096, D=32): widths
    ``(160, 160, 320, 320, 640)``, factor 16, 256 px images for VAR's 16x16 last scale, 3x3 quant convs as VAR's
    VQVAE. Arguments as
    :class:`MultiScaleVQGANTokenizer`."""
    return MultiScaleVQGANTokenizer(
        spatial_dims=spatial_dims, in_channels=in_channels, channels=(160, 160, 320, 320, 640), num_res_blocks=2,
        norm_num_groups=32, z_channels=32, embedding_dim=embedding_dim, num_embeddings=num_embeddings, scales=scales,
        commitment_cost=commitment_cost, phi_shared=phi_shared, commitment=commitment,
        dead_code_threshold=dead_code_threshold, codebook_update=codebook_update, decay=decay, quantize=quantize,
        use_checkpointing=use_checkpointing,
        use_flash_attention=use_flash_attention, quant_conv_kernel_size=quant_conv_kernel_size,
        codebook_projection=codebook_projection, revival=revival, codebook_normalize=codebook_normalize,
    )


def msvqgan_tiny(
    *,
    spatial_dims: int = 2,
    in_channels: int = 3,
    num_embeddings: int = 256,
    embedding_dim: int = 8,
    scales: Sequence[int | Sequence[int]] = (1, 2, 3, 4, 6, 8),
    quantize: bool = True,
    commitment_cost: float = 0.25,
    phi_shared: int = 2,
    commitment: str = "all",
    dead_code_threshold: int = 0,
    codebook_update: str = "gradient",
    decay: float = 0.99,
    use_checkpointing: bool = False,
    use_flash_attention: bool = False,
    quant_conv_kernel_size: int = 3,
    codebook_projection: bool = False,
    revival: str = "pooled",
    codebook_normalize: bool = False,
) -> MultiScaleVQGANTokenizer:
    """Tiny factor-4 multi-scale tokenizer for tests and the CPU quickstart (widths ``(16, 32, 32)``, as
    :func:`~medvq.networks.vqgan_tiny`); the default scales end at 8x8, i.e. 32 px images."""
    return MultiScaleVQGANTokenizer(
        spatial_dims=spatial_dims, in_channels=in_channels, channels=(16, 32, 32), num_res_blocks=1,
        norm_num_groups=8, z_channels=32, embedding_dim=embedding_dim, num_embeddings=num_embeddings, scales=scales,
        commitment_cost=commitment_cost, phi_shared=phi_shared, commitment=commitment,
        dead_code_threshold=dead_code_threshold, codebook_update=codebook_update, decay=decay, quantize=quantize,
        use_checkpointing=use_checkpointing,
        use_flash_attention=use_flash_attention, quant_conv_kernel_size=quant_conv_kernel_size,
        codebook_projection=codebook_projection, revival=revival, codebook_normalize=codebook_normalize,
    )
