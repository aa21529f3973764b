"""Ignite/MONAI engines: the tokenizer trainer (generator step + discriminator step) and its evaluator."""

from medvq.engines.tokenizer_evaluator import TokenizerEvalKeys, TokenizerEvaluator
from medvq.engines.tokenizer_trainer import TokenizerKeys, TokenizerTrainer
from medvq.utils.distributed import unwrap_model  # re-exported: engines' users unwrap DDP models too

__all__ = ["TokenizerEvalKeys", "TokenizerEvaluator", "TokenizerKeys", "TokenizerTrainer", "unwrap_model"]
