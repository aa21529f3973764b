"""Named VAR transformer presets, as torchvision's ``resnet18(*, weights=...)``: ``var_d16``, ``var_tiny``, and the
``VAR_PRESETS`` registry (name -> builder) for configs that pick a preset by name.

Every builder takes the same keyword-only arguments: what ties the transformer to its tokenizer and data
(``num_embeddings``, ``embedding_dim``, ``scale_lengths``, ``num_conditions``) and the CFG training switch
(``condition_dropout``). The architecture (width, depth, heads) is what the preset fixes; build
:class:`VARTransformer` directly to change it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from medvq.networks.var import VARTransformer

__all__ = ["VAR_PRESETS", "VAR_SCALE_LENGTHS", "var_d16", "var_tiny"]

#: VAR's 256 px schedule: token maps 1, 2, 3, 4, 5, 6, 8, 10, 13, 16 squared (680 tokens, a 16x16 latent).
VAR_SCALE_LENGTHS: tuple[int, ...] = tuple(p * p for p in (1, 2, 3, 4, 5, 6, 8, 10, 13, 16))


def var_d16(
    *,
    num_embeddings: int = 4096,
    embedding_dim: int = 32,
    scale_lengths: Sequence[int] = VAR_SCALE_LENGTHS,
    num_conditions: int = 8,
    condition_dropout: float = 0.1,
) -> VARTransformer:
    """VAR-d16 (Tian et al. 2024): depth 16, width ``64 * depth = 1024``, 16 heads, MLP ratio 4, cosine attention.

    About 310 M parameters with the defaults (VAR-d16 reports 310 M), almost all in the blocks.

    Args:
        num_embeddings: the tokenizer's codebook size V. Default 4096 (VAR's multi-scale VQVAE).
        embedding_dim: the tokenizer's code dimension D. Default 32 (VAR's ``Cvae``).
        scale_lengths: tokens per scale, coarse first; must equal the quantizer's ``scale_lengths``. Default VAR's.
        num_conditions: number of labels C of a multi-hot condition row. Default 8.
        condition_dropout: CFG training drop rate. Default 0.1 (VAR).
    """
    return VARTransformer(
        num_embeddings=num_embeddings,
        embedding_dim=embedding_dim,
        scale_lengths=scale_lengths,
        num_conditions=num_conditions,
        width=1024,
        depth=16,
        num_heads=16,
        mlp_ratio=4.0,
        condition_dropout=condition_dropout,
    )


def var_tiny(
    *,
    num_embeddings: int = 256,
    embedding_dim: int = 8,
    scale_lengths: Sequence[int] = (1, 4, 9, 16, 36, 64),
    num_conditions: int = 8,
    condition_dropout: float = 0.1,
) -> VARTransformer:
    """Tiny VAR for tests and the CPU quickstart: depth 2, width 64, 2 heads (about 0.18 M parameters).

    Defaults match :func:`~medvq.networks.msvqgan_tiny`'s (256 codes of dimension 8, scales 1, 2, 3, 4, 6, 8: 32 px
    images); pass ``scale_lengths=tokenizer.quantizer.scale_lengths`` for another schedule (the ``odir_var`` quickstart
    uses VAR's 10 scales at 64 px). Arguments as :func:`var_d16`.
    """
    return VARTransformer(
        num_embeddings=num_embeddings,
        embedding_dim=embedding_dim,
        scale_lengths=scale_lengths,
        num_conditions=num_conditions,
        width=64,
        depth=2,
        num_heads=2,
        mlp_ratio=4.0,
        condition_dropout=condition_dropout,
    )


#: Preset name -> builder (``VAR_PRESETS[name](num_embeddings=..., ...)``).
VAR_PRESETS: dict[str, Callable[..., VARTransformer]] = {"var_d16": var_d16, "var_tiny": var_tiny}
