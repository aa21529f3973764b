"""Token datasets for stage 2: every image of a datalist tokenized once by the frozen stage-1 tokenizer.

Pre-computing tokens is the ``odir_var`` bundle's default because stage 2 then never runs the encoder
(``benchmarks/var_prepare_batch.py`` prints the measured ratio); the price is that random image augmentation cannot
reach the tokens (VAR trains on fixed tokens too). Each item keeps its other fields (``label``, ``image`` path, ...), so
the generator's datalist stays traceable to the source images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import DataLoader, Dataset
from torch import nn
from tqdm.auto import tqdm

from medvq.utils.distributed import rank, unwrap_model

__all__ = ["tokenize_datalist"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def tokenize_datalist(
    tokenizer: nn.Module,
    datalist: Sequence[dict[str, Any]],
    transform: Callable,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    num_workers: int = 0,
    image_key: str = "image",
    tokens_key: str = "tokens",
    float_keys: Sequence[str] = ("label",),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Items of ``datalist`` with a ``(L,)`` int64 token sequence added under ``tokens_key``.

    Args:
        tokenizer: trained multi-scale tokenizer (:class:`~medvq.networks.MultiScaleVQGANTokenizer`); run in eval
            mode, float32, and restored to its previous mode afterwards.
        datalist: MONAI datalist items (``{"image": path, "label": [...], ...}``).
        transform: the deterministic preprocessing (e.g. ``fundus_preprocessing(train=False)``) giving ``image_key``
            tensors in [-1, 1].
        device: where the tokenizer runs.
        batch_size, num_workers: of the DataLoader.
        image_key: key of the images. Default ``"image"``.
        tokens_key: key of the tokens in the returned items. Default ``"tokens"``.
        float_keys: fields stored as float32 tensors (``label`` lists become ``(C,)`` condition vectors).
        progress: show a progress bar (rank 0 only).

    Returns:
        One dict per input item, in order: the item's fields (``image_key`` left as the path), ``tokens_key``
        ``(L,)`` int64, and each of ``float_keys`` as a float32 tensor.

    Raises:
        ValueError: an empty datalist.
    """
    if len(datalist) == 0:
        raise ValueError("datalist is empty: there is nothing to tokenize.")
    inner = unwrap_model(tokenizer)
    was_training = inner.training
    inner.eval()
    started = time.perf_counter()
    loader = DataLoader(Dataset(list(datalist), transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    sequences = []
    try:
        for batch in tqdm(loader, desc="tokenizing", disable=not progress or rank() != 0, leave=False):
            images = batch[image_key]
            images = images.as_tensor() if hasattr(images, "as_tensor") else images
            maps = inner.encode_to_indices(images.to(device).float())
            sequences.append(inner.quantizer.flatten_indices(maps).cpu())  # (B, L)
    finally:
        inner.train(was_training)
    tokens = torch.cat(sequences)
    items = []
    for item, seq in zip(datalist, tokens):
        out = dict(item)
        for key in float_keys:
            if key in out:
                out[key] = torch.as_tensor(out[key], dtype=torch.float32)
        out[tokens_key] = seq.clone()
        items.append(out)
    logger.info("tokenized %d images into %d tokens each in %.1f s", len(items), tokens.shape[1],
                time.perf_counter() - started)
    return items
