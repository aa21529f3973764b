"""The memorization check of a sampling run: its samples against the images the models were trained on.

:func:`check_sample_memorization` is what ``medvq sample`` and the var bundles' ``sample.json`` run after writing the
samples: the samples are decoded again from their recorded tokens (exactly the model's output, before PNG rounding),
the training images and the held-out validation images are read from the run's ``datalist.json`` with the tokenizer's
own preprocessing, and :func:`medvq.generation.memorization.memorization_check` finds each sample's nearest training
image in pixel space and in the tokenizer's latent space, calibrated on the held-out images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from medvq.generation.memorization import (
    MemorizationReport,
    memorization_check,
    tokenizer_features,
    tokenizer_reconstruction,
)

__all__ = ["check_sample_memorization"]

logger = logging.getLogger(__name__)


def _tokens(samples: Any) -> tuple[torch.Tensor, list[str] | None]:
    if isinstance(samples, torch.Tensor):
        return samples, None
    records = list(samples)
    if not records or not all(isinstance(r, Mapping) and "tokens" in r for r in records):
        raise ValueError("samples must be a (N, L) token tensor or the non-empty list of sample records "
                         "write_samples returns (each with its 'tokens').")
    names = [str(r.get("file", i)) for i, r in enumerate(records)]
    return torch.tensor([r["tokens"] for r in records], dtype=torch.long), names


def _name(item: Mapping[str, Any]) -> str:
    """A datalist item's name: its file, and for a slice of a volume the slice (``ct.nii.gz:z012``)."""
    index = item.get("slice_index", -1)
    if index is None or int(index) < 0:
        return str(item["image"])
    return f"{item['image']}:{'xyz'[int(item.get('slice_axis', 2))]}{int(index):03d}"


def check_sample_memorization(
    tokenizer: Any,
    samples: torch.Tensor | Sequence[Mapping[str, Any]],
    datalist: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    *,
    sample_names: Sequence[str] | None = None,
    train_key: str = "training",
    held_out_key: str = "validation",
    batch_size: int = 16,
    num_workers: int = 0,
    progress: bool = True,
) -> MemorizationReport:
    """Run the memorization check of synthetic samples against a run's training images.

    Args:
        tokenizer: a :class:`medvq.api.Tokenizer` (its network decodes the tokens and gives the latent features; its
            pipeline, the training's, reads the real images).
        samples: the samples' integer token sequences ``(N, L)`` (or maps ``(N, *grid)``), decoded here; images
            ``(N, C, *spatial)`` float in [-1, 1], used as they are; or the records
            :func:`medvq.generation.write_samples` returns (their ``"tokens"``; their ``"file"`` names the samples).
        datalist: the training's ``datalist.json`` (a run's ``output_dir/datalist.json``): its ``train_key`` list is
            searched, its ``held_out_key`` list (images never trained on) calibrates the near-copy thresholds.
        output_dir: where ``memorization.json`` and ``memorization_pairs.png`` go; None writes nothing.
        sample_names: one name per sample (default the records' files, else positions).
        train_key, held_out_key: the datalist's lists. Defaults ``"training"`` and ``"validation"``.
        batch_size, num_workers: of the loaders reading the real images. Defaults 16 and 0.
        progress: show a progress bar over the training images.

    Returns:
        The :class:`~medvq.generation.memorization.MemorizationReport`.

    Raises:
        FileNotFoundError: no ``datalist``.
        ValueError: a datalist without the lists (or with fewer than 2 held-out images), or bad ``samples``.
    """
    from monai.data import DataLoader, Dataset

    from medvq.inference import inference_datalist

    path = Path(datalist).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"the training datalist '{path}' does not exist: the memorization check compares the "
                                "samples with the images listed there (a run's output_dir/datalist.json).")
    tokens, names = _tokens(samples)
    network = tokenizer.network
    if tokens.is_floating_point():  # images already: (N, C, *spatial) in [-1, 1]
        decoded = tokens.float().cpu()
    else:  # token sequences or maps: decoded again, exactly the model's output
        decoded = torch.cat([tokenizer.decode(tokens[i:i + batch_size].long())
                             for i in range(0, len(tokens), batch_size)])
    train = inference_datalist(input_datalist=path, key=train_key)
    held_out = inference_datalist(input_datalist=path, key=held_out_key)

    def images(items: list[dict[str, Any]]) -> Iterator[torch.Tensor]:
        # plain tensors: the check slices batches, and MONAI refuses to slice MetaTensors whose metadata differ
        loader = DataLoader(Dataset(items, tokenizer.pipeline), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers)
        for batch in loader:
            image = batch["image"]
            yield image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)

    report = memorization_check(
        decoded, images(train), images(held_out), reconstruct=tokenizer_reconstruction(network),
        features=tokenizer_features(network), output_dir=output_dir, train_names=[_name(i) for i in train],
        sample_names=list(sample_names) if sample_names is not None else names, batch_size=batch_size,
        progress=progress,
    )
    spaces = ", ".join(f"{space} {result.fraction_flagged:.1%} (threshold {result.threshold:.4g}, calibration "
                       f"{result.calibration.status})" for space, result in report.spaces.items())
    logger.info("memorization check: %d of %d samples flagged as near-copies of %d training images; %s",
                sum(report.flagged), report.num_samples, report.num_train, spaces)
    return report
