"""Tokenizer inference: input datalists, checkpoint loading and a handler that saves reconstructions and token maps.

Wired by ``bundles/odir_vq/configs/inference.json`` around :class:`medvq.engines.TokenizerEvaluator`.
"""

from medvq.inference.inputs import PIL_EXTENSIONS, inference_datalist, load_tokenizer_checkpoint
from medvq.inference.saver import TokenSaver

__all__ = ["PIL_EXTENSIONS", "TokenSaver", "inference_datalist", "load_tokenizer_checkpoint"]
