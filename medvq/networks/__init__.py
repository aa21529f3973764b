"""Networks: the VQGAN tokenizer (MONAI encoder/decoder around a deferrable VectorQuantizer) and its presets."""

from medvq.networks.vqgan import TokenizerOutput, VQGANTokenizer, tokens_as_forward
from medvq.networks.vqgan_presets import PRESETS, vqgan_f8, vqgan_f16, vqgan_tiny

__all__ = ["PRESETS", "TokenizerOutput", "VQGANTokenizer", "tokens_as_forward", "vqgan_f8", "vqgan_f16", "vqgan_tiny"]
from medvq.networks.msvqgan import MultiScaleVQGANTokenizer, msvqgan_f16, msvqgan_tiny

__all__ += ["MultiScaleVQGANTokenizer", "msvqgan_f16", "msvqgan_tiny"]
from medvq.networks.var import VARTransformer
from medvq.networks.var_presets import VAR_PRESETS, VAR_SCALE_LENGTHS, var_d16, var_tiny
from medvq.networks.var_sampling import filter_logits, sample_var

__all__ += ["VAR_PRESETS", "VAR_SCALE_LENGTHS", "VARTransformer", "filter_logits", "sample_var", "var_d16",
            "var_tiny"]
