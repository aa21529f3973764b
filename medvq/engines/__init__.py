"""Ignite/MONAI engines: the tokenizer trainer (generator step + discriminator step) and its evaluator."""

from medvq.engines.generator_evaluator import GeneratorEvalKeys, GeneratorEvaluator
from medvq.engines.param_groups import tokenizer_parameter_groups
from medvq.engines.tokenizer_evaluator import TokenizerEvalKeys, TokenizerEvaluator
from medvq.engines.tokenizer_trainer import TokenizerKeys, TokenizerTrainer
from medvq.engines.var_batch import VARPrepareBatch, condition_matrix
from medvq.utils.distributed import unwrap_model  # re-exported: engines' users unwrap DDP models too

__all__ = [
    "GeneratorEvalKeys",
    "GeneratorEvaluator",
    "TokenizerEvalKeys",
    "TokenizerEvaluator",
    "TokenizerKeys",
    "TokenizerTrainer",
    "VARPrepareBatch",
    "condition_matrix",
    "tokenizer_parameter_groups",
    "unwrap_model",
]
