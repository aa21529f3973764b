"""Named VQGAN tokenizer presets, as torchvision's ``resnet18(*, weights=...)``: ``vqgan_f16``, ``vqgan_f8``,
``vqgan_tiny``, and the ``PRESETS`` registry (name -> builder) for configs that pick a preset by name.

Every builder takes the same keyword-only arguments: the data (``spatial_dims``, ``in_channels``), the codebook and the
schedule (``num_embeddings``, ``embedding_dim``, ``quantize``, ...), and memory switches. The architecture (widths,
depth, attention) is what the preset fixes; build :class:`VQGANTokenizer` directly to change it.
"""

from __future__ import annotations

from collections.abc import Callable

from medvq.networks.vqgan import VQGANTokenizer

__all__ = ["PRESETS", "vqgan_f8", "vqgan_f16", "vqgan_tiny"]


def vqgan_f16(
    *,
    spatial_dims: int = 2,
    in_channels: int = 3,
    num_embeddings: int = 8192,
    embedding_dim: int = 32,
    quantize: bool = True,
    commitment_cost: float = 0.25,
    codebook_update: str = "gradient",
    normalize: bool = False,
    dead_code_threshold: int = 0,
    use_checkpointing: bool = False,
    use_flash_attention: bool = False,
) -> VQGANTokenizer:
    """Paper-scale factor-16 tokenizer: taming's ImageNet VQGAN (Esser et al. 2021, ``vqgan_imagenet_f16_16384``).

    Widths ``(128, 128, 256, 256, 512)``, 2 residual blocks per level (3 in the decoder), attention at the lowest
    resolution (16x16 tokens at 256 px), ``z_channels=256``, 32 GroupNorm groups; the code dimension is low (32
    by default, as LlamaGen) instead of taming's 256. About 72 M parameters in 2D (taming's f16 has ~72 M), 200 M in 3D.

    Args:
        spatial_dims: 2 or 3. Default 2.
        in_channels: image channels (reconstructions have the same). Default 3.
        num_embeddings: codebook size K. Default 8192.
        embedding_dim: code dimension D. Default 32.
        quantize: quantize from step 0 (True) or start as a pass-through for the deferred schedule (False).
        commitment_cost: beta of the commitment loss. Default 0.25.
        codebook_update: ``"gradient"`` or ``"ema"``. Default ``"gradient"``.
        normalize: cosine code lookup. Default False.
        dead_code_threshold: revive codes unused for this many training steps; 0 (default) disables it.
        use_checkpointing: activation checkpointing in training. Default False.
        use_flash_attention: fused scaled-dot-product attention. Default False.
    """
    return VQGANTokenizer(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        channels=(128, 128, 256, 256, 512),
        num_res_blocks=2,
        norm_num_groups=32,
        z_channels=256,
        embedding_dim=embedding_dim,
        num_embeddings=num_embeddings,
        commitment_cost=commitment_cost,
        codebook_update=codebook_update,
        normalize=normalize,
        dead_code_threshold=dead_code_threshold,
        quantize=quantize,
        use_checkpointing=use_checkpointing,
        use_flash_attention=use_flash_attention,
    )


def vqgan_f8(
    *,
    spatial_dims: int = 2,
    in_channels: int = 3,
    num_embeddings: int = 8192,
    embedding_dim: int = 32,
    quantize: bool = True,
    commitment_cost: float = 0.25,
    codebook_update: str = "gradient",
    normalize: bool = False,
    dead_code_threshold: int = 0,
    use_checkpointing: bool = False,
    use_flash_attention: bool = False,
) -> VQGANTokenizer:
    """Factor-8 tokenizer: :func:`vqgan_f16` without its second 256-wide level.

    Widths ``(128, 128, 256, 512)`` (three downsamplings), 2 residual blocks per level, attention at the lowest
    resolution (32x32 tokens at 256 px: 1024 tokens, dense attention), ``z_channels=256``. About 65 M parameters in
    2D, 179 M in 3D. Arguments as :func:`vqgan_f16`.
    """
    return VQGANTokenizer(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        channels=(128, 128, 256, 512),
        num_res_blocks=2,
        norm_num_groups=32,
        z_channels=256,
        embedding_dim=embedding_dim,
        num_embeddings=num_embeddings,
        commitment_cost=commitment_cost,
        codebook_update=codebook_update,
        normalize=normalize,
        dead_code_threshold=dead_code_threshold,
        quantize=quantize,
        use_checkpointing=use_checkpointing,
        use_flash_attention=use_flash_attention,
    )


def vqgan_tiny(
    *,
    spatial_dims: int = 2,
    in_channels: int = 3,
    num_embeddings: int = 256,
    embedding_dim: int = 8,
    quantize: bool = True,
    commitment_cost: float = 0.25,
    codebook_update: str = "gradient",
    normalize: bool = False,
    dead_code_threshold: int = 0,
    use_checkpointing: bool = False,
    use_flash_attention: bool = False,
) -> VQGANTokenizer:
    """Tiny factor-4 tokenizer for tests and the CPU quickstart (same architecture, 0.27 M parameters in 2D).

    Widths ``(16, 32, 32)``, 1 residual block per level (2 in the decoder), 8 GroupNorm groups, ``z_channels=32``,
    attention at the lowest resolution; 256 codes of dimension 8 by default. A (2, 3, 32, 32) batch runs in a few
    milliseconds on a CPU. Arguments as :func:`vqgan_f16`.
    """
    return VQGANTokenizer(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        channels=(16, 32, 32),
        num_res_blocks=1,
        norm_num_groups=8,
        z_channels=32,
        embedding_dim=embedding_dim,
        num_embeddings=num_embeddings,
        commitment_cost=commitment_cost,
        codebook_update=codebook_update,
        normalize=normalize,
        dead_code_threshold=dead_code_threshold,
        quantize=quantize,
        use_checkpointing=use_checkpointing,
        use_flash_attention=use_flash_attention,
    )


#: Preset name -> builder, for configs that select a preset by name (``PRESETS[name](spatial_dims=3, ...)``).
PRESETS: dict[str, Callable[..., VQGANTokenizer]] = {
    "vqgan_f16": vqgan_f16,
    "vqgan_f8": vqgan_f8,
    "vqgan_tiny": vqgan_tiny,
}
