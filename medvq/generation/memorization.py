"""Memorization check: is a synthetic image a near-copy of a training image?

For every synthetic sample it finds the nearest training image, by exact search, in two spaces: pixels (images in
[-1, 1], flattened) and the tokenizer's continuous latents (``network.encode``, the pre-quantization latents of both
:class:`~medvq.networks.VQGANTokenizer` and :class:`~medvq.networks.MultiScaleVQGANTokenizer`). Distances are RMS per
element (Euclidean / sqrt(F)), so a threshold does not depend on the image or latent size. A sample is flagged as a
near-copy when its distance is at most a threshold calibrated on held-out real images (:func:`calibrate`):

- copies, ``d_recon``: a held-out image against its own reconstruction, the distance at which a generator that
  reproduces a training image through the tokenizer would sit;
- different images, ``d_real``: a held-out image, and also its reconstruction (samples come out of the decoder,
  which blurs them towards the training images), against its nearest training image; the smaller of the two counts.

The threshold is the geometric mean of the ``copy_quantile`` (0.95) of ``d_recon`` and the ``real_quantile`` (0.05) of
``d_real`` (conservative order statistics), capped at half the latter. The calibration ``status`` says how far apart
the two are: ``"separated"`` (ratio >= 4, the geometric mean applies), ``"weak"`` (ratio in (1, 4)) or
``"overlapping"`` (ratio <= 1): there the cap applies and copies blurred by the tokenizer may be missed; see
``docs/memorization.md``.

Memory: the training set streams once through the search, batch by batch (a DataLoader works); only the features of
the samples, the held-out images and their reconstructions stay in memory, plus, per space, one uint8 view of the
current nearest training image of each sample (for the pairs PNG).

Limitations: a near-copy detector, not a privacy guarantee: it misses copies that are shifted, flipped, re-coloured or
copied in part (a lesion pasted on another background), and says nothing about what a model leaks in other ways.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo
from torch import nn
from tqdm.auto import tqdm

from medvq.generation.writer import sample_views
from medvq.quantizers.search import nearest_codes
from medvq.utils.distributed import unwrap_model

__all__ = [
    "Calibration",
    "MemorizationReport",
    "Neighbours",
    "SpaceResult",
    "calibrate",
    "memorization_check",
    "nearest_neighbours",
    "pixel_features",
    "tokenizer_features",
    "tokenizer_reconstruction",
]

logger = logging.getLogger(__name__)

#: Bound on the elements of one distance block and of one block of query rows (2**24 float32 = 64 MiB). Larger than
#: the quantizer's 2**20 because a row here is a whole image (F up to ~10^5-10^6): a query block holds
#: ``chunk_size // F`` rows, and each block reads every reference once, so tiny query blocks would be memory-bound.
DEFAULT_CHUNK_SIZE = 2**24
COPY_QUANTILE = 0.95
REAL_QUANTILE = 0.05
#: The threshold is at most this fraction of the different-image distance (a factor-2 margin against false alarms).
CAP_FRACTION = 0.5
#: ``real_distance / copy_distance`` from which the geometric mean stays under the cap: both margins >= 2.
MIN_SEPARATION = (1 / CAP_FRACTION) ** 2
_TILE_MIN = 96  # pairs PNG: tiles are enlarged by an integer factor to at least this many pixels high


class Neighbours(NamedTuple):
    """Result of :func:`nearest_neighbours`.

    Attributes:
        distances: ``(Q,)`` Euclidean distance of each query to its nearest reference (exact, see the function).
        indices: ``(Q,)`` int64 index of that reference (the lowest index on ties).
    """

    distances: torch.Tensor
    indices: torch.Tensor


@torch.no_grad()
def nearest_neighbours(queries: torch.Tensor, references: torch.Tensor,
                       chunk_size: int = DEFAULT_CHUNK_SIZE) -> Neighbours:
    """Exact Euclidean nearest neighbour of every query row among the reference rows, memory-bounded.

    Reuses the quantizer's chunked exact search (:func:`medvq.quantizers.search.nearest_codes`: blocks of
    ``||r||^2 - 2 q.r`` by one ``addmm``, running minimum over reference blocks, winner's distance recomputed from
    the difference so that an exact duplicate gives 0). Here the queries are also cut into blocks of at most
    ``chunk_size // F`` rows, because that recompute holds a ``(rows, F)`` difference and F is a whole image.

    Args:
        queries: ``(Q, F)`` floating tensor.
        references: ``(R, F)`` floating tensor, R >= 1; moved to the queries' device.
        chunk_size: most elements of one distance block and of one query block. Default 2**24.

    Returns:
        :class:`Neighbours` ``(distances (Q,), indices (Q,))`` in the promoted floating dtype of the inputs.

    Raises:
        ValueError: a tensor is not 2-D, F differs or is 0, ``references`` is empty, or ``chunk_size < 1``.
    """
    for name, value in (("queries", queries), ("references", references)):
        if not isinstance(value, torch.Tensor) or value.ndim != 2:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a 2-D tensor (N, F), got {shape}.")
    if queries.shape[1] != references.shape[1] or queries.shape[1] == 0:
        raise ValueError(f"queries and references must have the same F >= 1 features (dim 1), got "
                         f"{tuple(queries.shape)} and {tuple(references.shape)}.")
    if references.shape[0] == 0:
        raise ValueError("references is empty: there is nothing to search.")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}.")
    dtype = torch.promote_types(queries.dtype, references.dtype)
    dtype = dtype if dtype.is_floating_point else torch.float32
    queries, references = queries.to(dtype), references.to(device=queries.device, dtype=dtype)
    num_queries, num_features = queries.shape
    ref_sq = references.square().sum(1)  # (R,), shared by every query block
    rows = max(1, chunk_size // num_features)
    distances = torch.empty(num_queries, dtype=dtype, device=queries.device)
    indices = torch.empty(num_queries, dtype=torch.long, device=queries.device)
    for q0 in range(0, num_queries, rows):
        found = nearest_codes(queries[q0 : q0 + rows], references, chunk_size=chunk_size, return_distances=True,
                              codebook_sq_norms=ref_sq)
        distances[q0 : q0 + rows] = found.distances.sqrt()
        indices[q0 : q0 + rows] = found.indices
    return Neighbours(distances, indices)


# ---------------------------------------------------------------------------------------------------- features
def pixel_features(images: torch.Tensor) -> torch.Tensor:
    """Pixel-space features: ``(B, C, *spatial)`` images in [-1, 1] -> ``(B, C * prod(spatial))`` float32."""
    return images.float().flatten(1)


@contextlib.contextmanager
def _evaluating(network: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the duration, then the network's own mode again."""
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        network.train(was_training)


def _device(network: nn.Module) -> torch.device:
    return next(iter(network.parameters()), torch.empty(0)).device


def tokenizer_features(network: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Latent-space features of a tokenizer: ``images -> network.encode(images).flatten(1)`` (float32).

    ``encode`` gives the continuous pre-quantization latents ``(B, embedding_dim, *tokens)`` of both
    :class:`~medvq.networks.VQGANTokenizer` and :class:`~medvq.networks.MultiScaleVQGANTokenizer`. The images go to
    the network's device; the network runs in eval mode without autograd and gets its own mode back afterwards.

    Raises:
        TypeError: the (unwrapped) network has no ``encode`` method.
    """
    net = unwrap_model(network)
    if not callable(getattr(net, "encode", None)):
        raise TypeError(f"network must have an encode(images) method (a tokenizer), got {type(net).__name__}.")

    def features(images: torch.Tensor) -> torch.Tensor:
        with _evaluating(net):
            return net.encode(images.to(_device(net))).float().flatten(1)  # (B, D, *T) -> (B, D * prod(T))

    return features


def tokenizer_reconstruction(network: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Reconstructions of a tokenizer, ``images -> network.forward_with_output(images).reconstruction``.

    Quantized once the quantizer is active, continuous before (what the decoder sees at this point of training). Eval
    mode (so no EMA step or dead-code revival), no autograd, the network's own mode restored; returned on the images'
    device.

    Raises:
        TypeError: the (unwrapped) network has no ``forward_with_output`` method.
    """
    net = unwrap_model(network)
    if not callable(getattr(net, "forward_with_output", None)):
        raise TypeError(f"network must have a forward_with_output(images) method (a tokenizer), got "
                        f"{type(net).__name__}.")

    def reconstruct(images: torch.Tensor) -> torch.Tensor:
        with _evaluating(net):
            return net.forward_with_output(images.to(_device(net))).reconstruction.to(images.device)

    return reconstruct


# ---------------------------------------------------------------------------------------------------- calibration
@dataclass(frozen=True)
class Calibration:
    """The near-copy threshold of one feature space and the held-out distances it came from (RMS per element).

    Attributes:
        threshold: a sample at distance <= threshold from a training image is a near-copy.
        status: threshold = min(sqrt(copy_distance * real_distance), real_distance / 2); ``"separated"`` when
            separation >= 4 (the geometric mean, both margins >= 2), ``"weak"`` when 1 < separation < 4 and
            ``"overlapping"`` when separation <= 1 (half of real_distance: copies blurred by the tokenizer may be
            missed, see copy_missed_fraction), ``"lossless"`` when copy_distance == 0 (half of real_distance).
        copy_distance: the ``copy_quantile`` of ``recon_distances`` (the order statistic at or above it).
        real_distance: the ``real_quantile`` of ``min(real_distances, decoded_distances)`` (the order statistic at or
            below it).
        separation: ``real_distance / copy_distance`` (None when copy_distance is 0); near 1 the check is weak.
        copy_quantile, real_quantile: the quantiles used.
        recon_distances: per held-out image, the distance to its own reconstruction (``d_recon``).
        real_distances: per held-out image, the distance to its nearest training image (``d_real``).
        decoded_distances: per held-out image, the distance of its reconstruction to the nearest training image.
        real_flagged_fraction: fraction of held-out images whose ``min(real, decoded)`` distance is <= threshold (a
            different image flagged: the false-alarm rate on held-out data).
        copy_missed_fraction: fraction of ``recon_distances`` > threshold (reconstructed copies that would be missed).
        notes: human-readable warnings (weak calibration, held-out images duplicating training images).
    """

    threshold: float
    status: str
    copy_distance: float
    real_distance: float
    separation: float | None
    copy_quantile: float
    real_quantile: float
    recon_distances: list[float]
    real_distances: list[float]
    decoded_distances: list[float]
    real_flagged_fraction: float
    copy_missed_fraction: float
    notes: list[str] = field(default_factory=list)


def _check_quantile(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}.")
    return float(value)


def _calibration(real: torch.Tensor, decoded: torch.Tensor, recon: torch.Tensor, copy_quantile: float,
                 real_quantile: float, space: str = "") -> Calibration:
    """The threshold rule of :class:`Calibration` on RMS distances, each ``(H,)``: held-out to training set
    (``real``), reconstructed held-out to training set (``decoded``), held-out to own reconstruction (``recon``)."""
    real, decoded, recon = (t.double().cpu() for t in (real, decoded, recon))
    # a generator's samples come out of the decoder, and decoding blurs an image towards the training images (with a
    # tokenizer trained 60 steps on 32 px fundus images, reconstructions of unseen images sat 8-39 % closer to the
    # training set than their originals), so the "different image" distance is the smaller of the two ways a real
    # unseen image can reach the training set
    different = torch.minimum(real, decoded)
    # conservative order statistics, not interpolation: with H <= 20 images these are the max of d_recon and the min
    # of d_real, so a separated calibration flags none of its own held-out images and misses none of their copies
    copy_distance = float(torch.quantile(recon, copy_quantile, interpolation="higher"))
    real_distance = float(torch.quantile(different, real_quantile, interpolation="lower"))
    where = f" ({space} space)" if space else ""
    notes = []
    separation = real_distance / copy_distance if copy_distance > 0 else None
    # threshold = min(geometric mean, half of real_distance). The geometric mean because distances are scales: it sits
    # the same factor above the copies' distance as below the different images' one. The cap keeps a factor-2 margin
    # against flagging different images (the low quantile of H held-out images overestimates the smallest distance
    # among many samples); the two meet at separation 4.
    threshold = CAP_FRACTION * real_distance
    if separation is None:  # a geometric mean with 0 would flag exact copies only
        status = "lossless"
        notes.append(f"reconstructions equal their inputs{where}: no copy scale, the threshold is "
                     f"{CAP_FRACTION} x the {real_quantile} quantile of the different-image distances.")
    elif separation >= MIN_SEPARATION:
        status, threshold = "separated", math.sqrt(copy_distance * real_distance)
    else:
        status = "weak" if separation > 1 else "overlapping"
        notes.append(f"the calibration is {status}{where}: the {real_quantile} quantile of the different-image "
                     f"distances ({real_distance:.4g}) is only {separation:.3g} x the {copy_quantile} quantile of the "
                     f"reconstruction distances ({copy_distance:.4g}); the threshold is {CAP_FRACTION} x the "
                     f"former, so copies blurred by the tokenizer may be missed "
                     f"(copy_missed_fraction on the held-out images: {float((recon > threshold).double().mean()):.2f}).")
    duplicates = int((real == 0).sum())
    if duplicates:
        notes.append(f"{duplicates} held-out image(s) equal a training image{where}: the held-out set overlaps the "
                     "training set.")
    for note in notes:
        logger.warning("memorization calibration: %s", note)
    return Calibration(
        threshold=threshold, status=status, copy_distance=copy_distance, real_distance=real_distance,
        separation=separation, copy_quantile=copy_quantile,
        real_quantile=real_quantile, recon_distances=recon.tolist(), real_distances=real.tolist(),
        decoded_distances=decoded.tolist(), real_flagged_fraction=float((different <= threshold).double().mean()),
        copy_missed_fraction=float((recon > threshold).double().mean()), notes=notes,
    )


def _rms_pair_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise RMS distance of two ``(N, F)`` tensors, in float64."""
    return (a.double() - b.double().to(a.device)).square().mean(1).sqrt()


def calibrate(train_features: torch.Tensor, held_out_features: torch.Tensor, held_out_recon_features: torch.Tensor,
              *, copy_quantile: float = COPY_QUANTILE, real_quantile: float = REAL_QUANTILE,
              chunk_size: int = DEFAULT_CHUNK_SIZE) -> Calibration:
    """Near-copy threshold from held-out real images (rule in :class:`Calibration` and the module docstring).

    Args:
        train_features: ``(N, F)`` features of the training images.
        held_out_features: ``(H, F)`` features of held-out real images (never trained on), H >= 2.
        held_out_recon_features: ``(H, F)`` features of their reconstructions, same order.
        copy_quantile: quantile of the reconstruction distances taken as the copies' distance. Default 0.95.
        real_quantile: quantile of the different-image distances taken as their distance. Default 0.05.
        chunk_size: as :func:`nearest_neighbours`.

    Returns:
        :class:`Calibration`, distances RMS per element.

    Raises:
        ValueError: bad shapes (the message names the argument), H < 2, or a quantile outside [0, 1].
    """
    copy_quantile = _check_quantile("copy_quantile", copy_quantile)
    real_quantile = _check_quantile("real_quantile", real_quantile)
    if not isinstance(held_out_features, torch.Tensor) or held_out_features.ndim != 2 or len(held_out_features) < 2:
        shape = tuple(held_out_features.shape) if isinstance(held_out_features, torch.Tensor) else None
        raise ValueError(f"held_out_features must be (H, F) with H >= 2 held-out images, got shape {shape}.")
    if not isinstance(held_out_recon_features, torch.Tensor) or (held_out_recon_features.shape
                                                                 != held_out_features.shape):
        shape = tuple(held_out_recon_features.shape) if isinstance(held_out_recon_features, torch.Tensor) else None
        raise ValueError(f"held_out_recon_features must have the shape of held_out_features "
                         f"{tuple(held_out_features.shape)}, got {shape}.")
    if not isinstance(train_features, torch.Tensor) or train_features.ndim != 2 or (
            train_features.shape[1] != held_out_features.shape[1]):
        shape = tuple(train_features.shape) if isinstance(train_features, torch.Tensor) else None
        raise ValueError(f"train_features must be (N, {held_out_features.shape[1]}), got shape {shape}.")
    scale = math.sqrt(held_out_features.shape[1])  # Euclidean -> RMS per element
    real = nearest_neighbours(held_out_features, train_features, chunk_size).distances / scale
    decoded = nearest_neighbours(held_out_recon_features, train_features, chunk_size).distances / scale
    return _calibration(real, decoded, _rms_pair_distances(held_out_features, held_out_recon_features),
                        copy_quantile, real_quantile)


# ---------------------------------------------------------------------------------------------------- report
@dataclass(frozen=True)
class SpaceResult:
    """Per-sample results in one feature space (``"pixel"`` or ``"latent"``); distances RMS per element.

    Attributes:
        space: the space's name.
        threshold: the calibrated near-copy threshold (``calibration.threshold``).
        calibration: :class:`Calibration`.
        distances: per sample, the distance to its nearest training image.
        nearest_index: per sample, that image's position in the training set (iteration order).
        nearest_name: per sample, that image's name.
        flagged: per sample, ``distance <= threshold``.
        fraction_flagged: mean of ``flagged``.
    """

    space: str
    threshold: float
    calibration: Calibration
    distances: list[float]
    nearest_index: list[int]
    nearest_name: list[str]
    flagged: list[bool]
    fraction_flagged: float


@dataclass(frozen=True)
class MemorizationReport:
    """What :func:`memorization_check` found.

    Attributes:
        num_samples, num_train, num_held_out: set sizes.
        sample_names: one name per sample.
        spaces: ``{"pixel": SpaceResult, "latent": SpaceResult}`` (latent only when a ``features`` callable is given).
        flagged: per sample, flagged in at least one space.
        fraction_flagged: mean of ``flagged``.
        files: written files by kind (``"json"``, ``"pairs"``), empty without ``output_dir``.
    """

    num_samples: int
    num_train: int
    num_held_out: int
    sample_names: list[str]
    spaces: dict[str, SpaceResult]
    flagged: list[bool]
    fraction_flagged: float
    files: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (what ``memorization.json`` holds)."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------------- inputs
def _as_images(batch: Any, name: str, image_key: str) -> torch.Tensor:
    """The image tensor of one batch: a tensor, a mapping's ``image_key`` entry or a sequence's first item."""
    if isinstance(batch, Mapping):
        if image_key not in batch:
            raise ValueError(f"a batch of {name} is a mapping without the image_key {image_key!r}: keys "
                             f"{sorted(map(str, batch))}.")
        batch = batch[image_key]
    elif isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or an iterable of tensor batches (or of mappings holding "
                        f"{image_key!r}), got a batch of type {type(batch).__name__}.")
    if batch.ndim not in (4, 5):
        raise ValueError(f"{name} must hold (B, C, H, W) images or (B, C, D, H, W) volumes, got a batch of shape "
                         f"{tuple(batch.shape)}.")
    return batch


def _batches(images: Any, name: str, batch_size: int, image_key: str) -> Iterator[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        _as_images(images, name, image_key)
        yield from images.split(batch_size)
        return
    if not isinstance(images, Iterable):
        raise TypeError(f"{name} must be a tensor or an iterable of batches, got {type(images).__name__}.")
    for batch in images:
        yield _as_images(batch, name, image_key)


def _gather(images: Any, name: str, image_key: str, shape: tuple[int, ...] | None) -> torch.Tensor:
    """All batches of ``images`` as one CPU tensor, checked against the per-image ``shape``."""
    batches = [images] if isinstance(images, torch.Tensor) else images  # a tensor is one batch here
    parts = [_check_shape(batch, name, shape).detach().float().cpu()
             for batch in _batches(batches, name, 1, image_key)]
    if not parts or sum(len(p) for p in parts) == 0:
        raise ValueError(f"{name} is empty.")
    return torch.cat(parts)


def _check_shape(batch: torch.Tensor, name: str, shape: tuple[int, ...] | None) -> torch.Tensor:
    if shape is not None and tuple(batch.shape[1:]) != shape:
        raise ValueError(f"{name} must hold images of shape (C, *spatial) = {shape} like samples, got a batch of "
                         f"shape {tuple(batch.shape)}.")
    return batch


def _batch_names(batch: torch.Tensor, start: int) -> list[str]:
    """Names of a batch's images: MONAI's ``filename_or_obj`` metadata when present, else their positions."""
    meta = getattr(batch, "meta", None)  # a MONAI MetaTensor's metadata, collated per batch
    names = meta.get("filename_or_obj") if isinstance(meta, dict) else None
    if isinstance(names, (list, tuple)) and len(names) == len(batch):
        return [str(n) for n in names]
    return [str(start + i) for i in range(len(batch))]


def _features(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, name: str,
              batch_size: int) -> torch.Tensor:
    """``fn`` over ``images`` in batches, checked: one finite row of the same width per image."""
    parts = []
    for batch in images.split(batch_size):
        out = fn(batch)
        if not isinstance(out, torch.Tensor) or out.ndim < 2 or len(out) != len(batch):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"features must return one row per image, (B, F) for a batch of {len(batch)}, got "
                             f"{shape}.")
        out = out.detach().float().flatten(1)
        if not torch.isfinite(out).all():
            raise ValueError(f"features returned non-finite values for {name}.")
        parts.append(out)
    return torch.cat(parts)


def _tile(image: torch.Tensor) -> np.ndarray:
    """One ``(C, *spatial)`` image in [-1, 1] as an RGB uint8 tile (a volume: its three orthogonal middle slices)."""
    view = sample_views(image[None].float())[0]  # (C, h, w)
    array = ((view.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    array = array[:3] if array.shape[0] == 3 else array[:1].repeat(3, 0)  # other channel counts: the first
    return np.moveaxis(array, 0, -1)  # (h, w, 3)


# ---------------------------------------------------------------------------------------------------- the check
def memorization_check(
    samples: torch.Tensor | Iterable[Any],
    train_images: torch.Tensor | Iterable[Any],
    held_out_images: torch.Tensor | Iterable[Any],
    *,
    reconstruct: Callable[[torch.Tensor], torch.Tensor],
    features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    output_dir: str | os.PathLike | None = None,
    train_names: Sequence[str] | None = None,
    sample_names: Sequence[str] | None = None,
    batch_size: int = 32,
    pairs: int = 8,
    image_key: str = "image",
    copy_quantile: float = COPY_QUANTILE,
    real_quantile: float = REAL_QUANTILE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
) -> MemorizationReport:
    """Flag synthetic samples that are near-copies of training images (module docstring; ``docs/memorization.md``).

    Args:
        samples: synthetic images ``(S, C, *spatial)`` in [-1, 1] (2-D or 3-D), or an iterable of such batches.
        train_images: the training images, same ``(C, *spatial)``: a tensor, or an iterable of batches (a
            DataLoader; tensors, mappings holding ``image_key`` or sequences whose first item is the images),
            iterated once.
        held_out_images: real images never trained on, same shape, at least 2: they calibrate the thresholds.
        reconstruct: images -> reconstructions of the same shape (:func:`tokenizer_reconstruction`).
        features: images -> ``(B, F)`` latent features (:func:`tokenizer_features`); None checks pixel space only.
        output_dir: write ``memorization.json`` and ``memorization_pairs.png`` there (created). Default None.
        train_names: one name per training image; default MONAI's ``filename_or_obj`` metadata, else the position.
        sample_names: one name per sample; default the position.
        batch_size: images per call of ``reconstruct`` / ``features`` (and per training batch of a tensor).
            Default 32.
        pairs: rows of the pairs PNG (most copy-like samples first); 0 writes no PNG. Default 8.
        image_key: the images' key in mapping batches. Default ``"image"``.
        copy_quantile, real_quantile: as :func:`calibrate`.
        chunk_size: as :func:`nearest_neighbours`.
        progress: show a progress bar over the training batches. Default True.

    Returns:
        :class:`MemorizationReport`.

    Raises:
        ValueError / TypeError: empty sets, mismatched shapes, fewer than 2 held-out images, a bad callable output or a
            bad argument (the message names it).
    """
    # 0. arguments
    for name, value, low in (("batch_size", batch_size, 1), ("pairs", pairs, 0), ("chunk_size", chunk_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    copy_quantile = _check_quantile("copy_quantile", copy_quantile)
    real_quantile = _check_quantile("real_quantile", real_quantile)
    if not callable(reconstruct):
        raise TypeError(f"reconstruct must be a callable images -> reconstructions, got {type(reconstruct).__name__}.")
    if features is not None and not callable(features):
        raise TypeError(f"features must be a callable images -> (B, F) or None, got {type(features).__name__}.")

    # 1. samples and held-out images in memory (both are small); every image must have the samples' shape
    sample_tensor = _gather(samples, "samples", image_key, None)  # (S, C, *spatial)
    image_shape = tuple(sample_tensor.shape[1:])
    held = _gather(held_out_images, "held_out_images", image_key, image_shape)  # (H, C, *spatial)
    num_samples, num_held = len(sample_tensor), len(held)
    if num_held < 2:
        raise ValueError(f"held_out_images must hold at least 2 images to calibrate the threshold, got {num_held}.")
    if sample_names is not None and len(sample_names) != num_samples:
        raise ValueError(f"sample_names has {len(sample_names)} names for {num_samples} samples.")
    recon = [reconstruct(b) for b in held.split(batch_size)]
    if not all(isinstance(r, torch.Tensor) for r in recon):
        raise TypeError(f"reconstruct must return a tensor, got {type(recon[0]).__name__}.")
    recon = torch.cat([r.detach().float().cpu() for r in recon])
    if recon.shape != held.shape:
        raise ValueError(f"reconstruct must return images of the input's shape {tuple(held.shape)}, got "
                         f"{tuple(recon.shape)}.")

    # 2. query features per space: rows [0, S) are the samples, [S, S + H) the held-out images, [S + H, S + 2H)
    #    their reconstructions
    spaces: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"pixel": pixel_features}
    if features is not None:
        spaces["latent"] = features
    queries, recon_distances = {}, {}
    for space, fn in spaces.items():
        held_features = _features(fn, held, "held_out_images", batch_size)
        recon_features = _features(fn, recon, "the reconstructions", batch_size)
        recon_distances[space] = _rms_pair_distances(held_features, recon_features)
        queries[space] = torch.cat([_features(fn, sample_tensor, "samples", batch_size), held_features,
                                    recon_features])  # (S + 2H, F)
    num_queries = num_samples + 2 * num_held

    # 3. one pass over the training set: running exact nearest neighbour of every query (strict < keeps the first)
    best_d = {s: torch.full((num_queries,), math.inf, dtype=torch.float64) for s in spaces}
    best_i = {s: torch.full((num_queries,), -1, dtype=torch.long) for s in spaces}
    tiles: dict[str, list[np.ndarray | None]] = {s: [None] * num_samples for s in spaces}
    names: list[str] = []
    total = math.ceil(len(train_images) / batch_size) if isinstance(train_images, torch.Tensor) else (
        len(train_images) if hasattr(train_images, "__len__") else None)
    bar = tqdm(_batches(train_images, "train_images", batch_size, image_key), total=total,
               desc="memorization: training set", disable=not progress, leave=False)
    for batch in bar:
        _check_shape(batch, "train_images", image_shape)
        start = len(names)
        names.extend(_batch_names(batch, start))
        for space, fn in spaces.items():
            refs = _features(fn, batch, "train_images", len(batch))  # (b, F)
            if refs.shape[1] != queries[space].shape[1]:
                raise ValueError(f"features gave {refs.shape[1]} values per training image but "
                                 f"{queries[space].shape[1]} per sample ({space} space).")
            queries[space] = queries[space].to(refs.device)  # once: the search runs where the features are
            found = nearest_neighbours(queries[space], refs, chunk_size)
            d, i = found.distances.double().cpu(), found.indices.cpu()
            better = d < best_d[space]  # (S + 2H,)
            best_d[space] = torch.where(better, d, best_d[space])
            best_i[space] = torch.where(better, i + start, best_i[space])
            if output_dir is not None and pairs:
                for q in better[:num_samples].nonzero().flatten().tolist():
                    tiles[space][q] = _tile(batch[int(i[q])])
    num_train = len(names)
    if num_train == 0:
        raise ValueError("train_images is empty.")
    if train_names is not None:
        if len(train_names) != num_train:
            raise ValueError(f"train_names has {len(train_names)} names for {num_train} training images.")
        names = [str(n) for n in train_names]

    # 4. calibrate each space on the held-out images, then flag the samples
    results = {}
    for space in spaces:
        scale = math.sqrt(queries[space].shape[1])  # Euclidean -> RMS per element
        distances = best_d[space] / scale
        calibration = _calibration(distances[num_samples : num_samples + num_held], distances[num_samples + num_held :],
                                   recon_distances[space], copy_quantile, real_quantile, space)
        flagged = (distances[:num_samples] <= calibration.threshold).tolist()
        index = best_i[space][:num_samples].tolist()
        results[space] = SpaceResult(
            space=space, threshold=calibration.threshold, calibration=calibration,
            distances=distances[:num_samples].tolist(), nearest_index=index, nearest_name=[names[i] for i in index],
            flagged=flagged, fraction_flagged=sum(flagged) / num_samples,
        )
    any_flagged = [any(results[s].flagged[q] for s in spaces) for q in range(num_samples)]
    report = MemorizationReport(
        num_samples=num_samples, num_train=num_train, num_held_out=num_held,
        sample_names=[str(n) for n in sample_names] if sample_names is not None else [str(q)
                                                                                      for q in range(num_samples)],
        spaces=results, flagged=any_flagged, fraction_flagged=sum(any_flagged) / num_samples,
    )
    logger.info("memorization check: %d of %d samples flagged as near-copies (%s)", sum(any_flagged), num_samples,
                ", ".join(f"{s} {r.fraction_flagged:.1%}, threshold {r.threshold:.4g}, {r.calibration.status}"
                          for s, r in results.items()))

    # 5. files
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        if pairs:
            path = out / "memorization_pairs.png"
            _write_pairs(path, report, sample_tensor, tiles, pairs)
            report.files["pairs"] = str(path)
        report.files["json"] = str(out / "memorization.json")
        tmp = out / "memorization.json.tmp"
        tmp.write_text(json.dumps(report.to_dict(), indent=2, allow_nan=False))
        tmp.replace(out / "memorization.json")  # atomic: a reader never sees half a report
    return report


def _short(name: str, width: int = 36) -> str:
    name = os.path.basename(name) or name
    return name if len(name) <= width else "..." + name[-(width - 3):]


def _write_pairs(path: Path, report: MemorizationReport, samples: torch.Tensor,
                 tiles: dict[str, list[np.ndarray | None]], pairs: int) -> None:
    """One row per sample, most copy-like first (smallest distance / threshold over the spaces): the sample, its
    nearest training image in each space, and the distances, thresholds and flags as text."""
    spaces = list(report.spaces.values())

    def score(q: int) -> float:
        return min(r.distances[q] / r.threshold if r.threshold > 0 else (0.0 if r.distances[q] == 0 else math.inf)
                   for r in spaces)

    order = sorted(range(report.num_samples), key=score)[:pairs]
    font = ImageFont.load_default()
    height = samples.shape[-2] if samples.ndim == 4 else max(samples.shape[2:])
    zoom = max(1, math.ceil(_TILE_MIN / height))
    gap, text_width, header = 6, 380, 18
    rows = []
    for q in order:
        row_tiles = [_tile(samples[q])] + [tiles[r.space][q] for r in spaces]
        row_tiles = [np.kron(t, np.ones((zoom, zoom, 1), dtype=np.uint8)) for t in row_tiles]  # nearest upscaling
        rows.append((q, row_tiles))
    tile_h, tile_w = rows[0][1][0].shape[:2]
    width = (tile_w + gap) * (1 + len(spaces)) + text_width
    canvas = Image.new("RGB", (width, header + len(rows) * (tile_h + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    titles = ["synthetic sample"] + [f"train ({r.space})" for r in spaces]
    for c, title in enumerate(titles):
        draw.text((c * (tile_w + gap) + 2, 3), title, fill="black", font=font)
    for r_index, (q, row_tiles) in enumerate(rows):
        top = header + r_index * (tile_h + gap)
        for c, tile in enumerate(row_tiles):
            canvas.paste(Image.fromarray(tile), (c * (tile_w + gap), top))
        verdict = "NEAR-COPY" if report.flagged[q] else "not flagged"
        lines = [f"sample {_short(report.sample_names[q])}: {verdict}"]
        for r in spaces:
            mark = "<=" if r.flagged[q] else ">"
            lines.append(f"{r.space}: train {_short(r.nearest_name[q], 24)}")
            lines.append(f"  d={r.distances[q]:.4f} {mark} t={r.threshold:.4f} ({r.calibration.status})")
        draw.multiline_text(((tile_w + gap) * len(row_tiles) + 4, top + 2), "\n".join(lines), fill="black",
                            font=font, spacing=3)
    info = PngInfo()
    info.add_text("Description", "medvq memorization check: left column synthetic samples, other columns real "
                                 "training images (their nearest neighbours).")
    canvas.save(path, pnginfo=info)
