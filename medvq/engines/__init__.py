"""Ignite/MONAI engines: the tokenizer trainer (generator step + discriminator step) and its evaluator."""

from medvq.engines.tokenizer_evaluator import TokenizerEvalKeys, TokenizerEvaluator
from medvq.engines.tokenizer_trainer import TokenizerKeys, TokenizerTrainer, unwrap_model

__all__ = ["TokenizerEvalKeys", "TokenizerEvaluator", "TokenizerKeys", "TokenizerTrainer", "unwrap_model"]
