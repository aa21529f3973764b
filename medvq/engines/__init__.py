"""Ignite/MONAI engines: the tokenizer trainer (generator step + discriminator step)."""

from medvq.engines.tokenizer_trainer import TokenizerKeys, TokenizerTrainer, unwrap_model

__all__ = ["TokenizerKeys", "TokenizerTrainer", "unwrap_model"]
