"""Reference statistics for g-FID: the feature Gaussian of a whole datalist split, computed once and cached.

VAR (and ADM before it) report ImageNet g-FID of class-balanced samples against the statistics of the *training*
images, centre-cropped as for evaluation (ADM's ``VIRTUAL_imagenet256_labeled.npz`` reference batch). medvq's
default for medical data pairs each generated image with a held-out real image of the same labels
(``fid_reference: "evaluation"``), which keeps the training images out of the metric; ``"training"`` gives the
paper convention. Computing the statistics of ~127k ImageNet-100 training images costs one extractor pass over them,
so the result is cached as a file keyed by what determines it: the datalist file's SHA-256, the split, the
extractor's SHA-256 and a description of the preprocessing. A cache whose recorded key differs is recomputed, never
reused.

Why our own and not MONAI's ``FIDMetric``: that takes two feature tensors in memory; here only float64 sums of
the features are kept (:class:`~medvq.metrics.fid.FeatureStatistics`), all-reduced over DDP ranks, and the result
is written where a later evaluation finds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medvq.metrics.fid import FeatureStatistics, _sha256
from medvq.utils.distributed import all_reduce_sum_, rank, world_size

__all__ = ["FID_REFERENCES", "gfid_reference_statistics", "reference_statistics"]

#: values of the bundles' ``fid_reference`` knob
FID_REFERENCES = ("evaluation", "training")

_LOG = logging.getLogger(__name__)


def _cache_key(datalist_sha256: str, key: str, extractor_sha256: str, preprocessing: Any) -> dict[str, Any]:
    return {"datalist_sha256": datalist_sha256, "key": key, "extractor_sha256": extractor_sha256,
            "preprocessing": json.loads(json.dumps(preprocessing, sort_keys=True, default=str))}


def reference_statistics(
    datalist: str | os.PathLike,
    extractor: Callable[[torch.Tensor], torch.Tensor],
    transform: Callable,
    key: str = "training",
    cache_dir: str | os.PathLike | None = None,
    preprocessing: Any = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> FeatureStatistics:
    """Feature statistics of every image of ``datalist[key]`` after ``transform``, cached in ``cache_dir``.

    Under DDP each rank extracts every ``world_size``-th image and the sums are all-reduced, so every rank returns
    the statistics of the whole split; rank 0 writes the cache.

    Args:
        datalist: a MONAI (Decathlon-style) datalist JSON, e.g. a training run's ``datalist.json``.
        extractor: a :class:`~medvq.metrics.fid.FeatureExtractor` (its ``info.sha256`` keys the cache) or any
            callable ``(B, C, *spatial)`` images in [-1, 1] -> ``(B, F)`` features (then the cache key holds
            ``"unidentified"`` and no cache is read or written, since nothing says two such callables agree).
        transform: the evaluation preprocessing, mapping a datalist item to a dict with ``"image"``.
        key: the split. Default ``"training"``.
        cache_dir: folder of the cache file (created); None computes without caching.
        preprocessing: a JSON-able description of ``transform`` for the cache key (e.g. run_info's
            ``preprocessing``); a different description recomputes. Default None.
        batch_size, num_workers: of the extraction's DataLoader.
        device: where the images go before the extractor.
        progress: a progress bar on rank 0 (tqdm).

    Returns:
        :class:`~medvq.metrics.fid.FeatureStatistics` of the split (float64 sums on the CPU).

    Raises:
        FileNotFoundError: ``datalist`` does not exist.
        ValueError: the split is missing or has fewer than 2 images.
    """
    from medvq.inference import inference_datalist  # imports MONAI: only when statistics are needed

    datalist = Path(datalist)
    if not datalist.is_file():
        raise FileNotFoundError(f"fid reference: the datalist {datalist} does not exist; give the training run's "
                                "datalist.json (its output_dir).")
    items = inference_datalist(input_datalist=datalist, key=key)
    if len(items) < 2:
        raise ValueError(f"fid reference: {datalist} lists {len(items)} image(s) under {key!r}; FID needs at least 2.")
    info = getattr(extractor, "info", None)
    extractor_sha = getattr(info, "sha256", None) or "unidentified"
    wanted = _cache_key(_sha256(datalist), key, extractor_sha, preprocessing)
    cache_file = None
    if cache_dir is not None and extractor_sha != "unidentified":
        name = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]
        cache_file = Path(cache_dir) / f"fid_reference_{key}_{name}.pt"
        if cache_file.is_file():
            saved = torch.load(cache_file, map_location="cpu", weights_only=True)
            if saved.get("cache_key") == wanted:
                stats = FeatureStatistics.from_sums(int(saved["count"]), saved["sum"], saved["outer"])
                _LOG.info("fid reference: %d %s images' statistics read from %s", stats.count, key, cache_file)
                return stats
            _LOG.warning("fid reference: %s was made for another datalist, extractor or preprocessing; recomputing",
                         cache_file)

    from monai.data import DataLoader, Dataset

    shard = items[rank()::world_size()]
    loader = DataLoader(Dataset(shard, transform=transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    stats = FeatureStatistics()
    batches = loader
    if progress and rank() == 0:
        from tqdm import tqdm

        batches = tqdm(loader, desc=f"fid reference ({key}, {len(items)} images)", unit="batch")
    with torch.no_grad():
        for batch in batches:
            images = batch["image"]
            images = images.as_tensor() if hasattr(images, "as_tensor") else images
            stats.update(extractor(images.to(device).float()))
    num_features = stats.num_features
    if num_features is None:  # a rank without images (fewer images than ranks) still takes part in the reduction
        num_features = int(getattr(extractor, "num_features", 0)) or None
    if world_size() > 1:
        if num_features is None:
            raise ValueError("fid reference: a rank received no images and the extractor does not state its "
                             "num_features; use fewer ranks than images.")
        count = all_reduce_sum_(torch.tensor([float(stats.count)], dtype=torch.float64, device=device))
        total = all_reduce_sum_((stats.sum if stats.count else torch.zeros(num_features, dtype=torch.float64))
                                .to(device))
        outer = all_reduce_sum_((stats.outer if stats.count else
                                 torch.zeros(num_features, num_features, dtype=torch.float64)).to(device))
        stats = FeatureStatistics.from_sums(int(count.item()), total.cpu(), outer.cpu())
    if cache_file is not None and rank() == 0:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_suffix(".pt.partial")
        torch.save({"cache_key": wanted, "count": stats.count, "sum": stats.sum.cpu(), "outer": stats.outer.cpu(),
                    "datalist": str(datalist)}, partial)
        partial.replace(cache_file)  # never a half-written cache under the final name
        _LOG.info("fid reference: %d %s images' statistics written to %s", stats.count, key, cache_file)
    return stats


def gfid_reference_statistics(
    mode: str,
    extractor: Callable[[torch.Tensor], torch.Tensor] | None,
    datalist: str | os.PathLike,
    transform: Callable,
    cache_dir: str | os.PathLike | None = None,
    preprocessing: Any = None,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> FeatureStatistics | None:
    """What a bundle's ``fid_reference`` knob asks for: None for ``"evaluation"`` (the metric pairs generated and
    real images itself) or without an extractor, the training split's cached statistics for ``"training"``.

    Raises:
        ValueError: ``mode`` is not one of :data:`FID_REFERENCES` (the message names the knob).
    """
    if mode not in FID_REFERENCES:
        raise ValueError(f"--fid_reference must be one of {FID_REFERENCES}, got {mode!r}: 'evaluation' compares the "
                         "generated images with the real images of eval_datalist_key, 'training' with the statistics "
                         "of the training split (VAR's ImageNet convention).")
    if mode == "evaluation" or extractor is None:
        return None
    return reference_statistics(datalist, extractor, transform, key="training", cache_dir=cache_dir,
                                preprocessing=preprocessing, batch_size=batch_size, num_workers=num_workers,
                                device=device)
