"""Inputs of a tokenizer inference run: the images to tokenize and the trained weights.

:func:`inference_datalist` turns either a folder of photographs or a MONAI datalist JSON (such as the
``output_dir/datalist.json`` a training run writes) into datalist items; :func:`load_tokenizer_checkpoint` loads the
weights written by training into the network built by the same bundle config. Both fail early, before any image is
read, with messages that name the path and the bundle override that fixes it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.data import load_decathlon_datalist
from torch import nn

from medvq.data import build_folder_datalist, build_image_datalist
from medvq.utils.checkpoints import read_checkpoint

__all__ = ["PIL_EXTENSIONS", "inference_datalist", "load_tokenizer_checkpoint"]

logger = logging.getLogger(__name__)

PIL_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
"""Endings listed from an input folder: what ``medvq.transforms.fundus_preprocessing`` (MONAI's PILReader) reads."""


def _shorten(text: str, limit: int = 600) -> str:
    # torch lists every missing / unexpected key: thousands of characters for a paper-scale network
    return text if len(text) <= limit else text[:limit] + " ..."


_SLICE_KEYS = ("slice_index", "slice_axis")


def inference_datalist(
    input_dir: str | os.PathLike = "", input_datalist: str | os.PathLike = "", key: str = "validation",
    keep_keys: Sequence[str] = (), data_format: str = "odir", spatial_dims: int = 2, slice_axis: int = 2,
    channels: int | None = None,
) -> list[dict[str, Any]]:
    """Datalist items ``{"image": absolute path}`` for inference, from a folder OR a datalist JSON (exactly one).

    Args:
        input_dir: folder of photographs (``.jpg .jpeg .png .bmp .tif .tiff``, sub-folders included, sorted by
            path), listed by :func:`medvq.data.build_folder_datalist`; default ``""`` (not used).
        input_datalist: MONAI (Decathlon-style) datalist JSON, e.g. a training run's ``output_dir/datalist.json``;
            relative image paths are joined to the JSON's folder; default ``""`` (not used).
        key: list of ``input_datalist`` to read (``"training"``, ``"validation"``, ...); default ``"validation"``.
        keep_keys: datalist fields kept besides ``"image"`` (e.g. ``("label",)`` to generate with the real labels);
            every item must have them. Default none. A datalist item's ``slice_index`` / ``slice_axis`` (the 2-D
            slices of volumes a training run listed) are always kept.
        data_format: ``"odir"`` (default: a folder of photographs) or ``"images"``: a folder of images of any
            modality, listed and checked as for training by :func:`medvq.data.build_image_datalist` (DICOM series
            folders as one volume; with ``spatial_dims`` 2, volumes become their non-empty slices along
            ``slice_axis``; unusable files skipped and counted in a log warning).
        spatial_dims, slice_axis, channels: ``"images"`` folders only, as for training.

    Returns:
        Items holding ``"image"`` and ``keep_keys`` (other keys of a datalist are dropped: inference needs none, and
        items with and without labels could not be batched together).

    Raises:
        ValueError: neither or both inputs given, ``key`` missing from the JSON, an empty list, ``keep_keys`` with
            ``input_dir``, or an item without one of ``keep_keys``.
        FileNotFoundError: ``input_dir`` / ``input_datalist`` does not exist (the message names the path).
    """
    if bool(input_dir) == bool(input_datalist):
        raise ValueError(
            "give exactly one input: --input_dir <folder of JPEG/PNG images> or --input_datalist <datalist JSON>, "
            f"got input_dir={str(input_dir)!r} and input_datalist={str(input_datalist)!r}."
        )
    if input_dir:
        if keep_keys:
            raise ValueError(f"keep_keys {list(keep_keys)} needs an input_datalist: a folder of images has no fields.")
        if data_format == "images":
            result = build_image_datalist(dataset_dir=input_dir, spatial_dims=spatial_dims, slice_axis=slice_axis,
                                          val_fraction=0.0, labels=False, channels=channels)
            return [{"image": item["image"], **{k: item[k] for k in _SLICE_KEYS if k in item}} for item in result.train]
        return build_folder_datalist(input_dir, extensions=PIL_EXTENSIONS)
    path = Path(input_datalist).expanduser().absolute()
    if not path.is_file():
        raise FileNotFoundError(f"input_datalist '{path}' does not exist; pass a datalist JSON with --input_datalist.")
    lists = [k for k, v in json.loads(path.read_text()).items() if isinstance(v, list)]
    if key not in lists:
        raise ValueError(
            f"input_datalist '{path}' has no list '{key}' (it has {lists}); choose one with --input_datalist_key."
        )
    items = load_decathlon_datalist(str(path), is_segmentation=False, data_list_key=key)
    if not items:
        raise ValueError(f"the '{key}' list of input_datalist '{path}' is empty; choose another --input_datalist_key.")
    for i, item in enumerate(items):
        missing = [k for k in keep_keys if k not in item]
        if missing:
            raise ValueError(f"item {i} ({item.get('image')}) of list '{key}' in '{path}' has no {missing}: every item "
                             "must have the fields the run needs (e.g. 'label' to generate with the real labels).")
    return [
        {"image": str(item["image"]), **{k: item[k] for k in (*keep_keys, *_SLICE_KEYS) if k in item}} for item in items
    ]


def load_tokenizer_checkpoint(
    network: nn.Module, checkpoint: str | os.PathLike, map_location: Any = None, strict: bool = True,
    what: str = "tokenizer", argument: str = "--checkpoint",
) -> nn.Module:
    """Load trained weights into ``network`` (in place) and put it in eval mode.

    Accepts both files a training run writes (:class:`medvq.handlers.CheckpointHandler`): ``model_final.pt`` (the
    network's bare state dict) and ``checkpoint_<iteration>.pt`` (a dict whose ``"network"`` entry is that state
    dict). Read with ``torch.load(weights_only=True)``. The quantizer's ``active`` flag is part of the state dict, so
    a checkpoint saved before the deferred switch loads as a pass-through quantizer: a warning says so, because its
    reconstructions then decode continuous latents and its token maps index a codebook that was never trained.

    Args:
        network: the tokenizer built by the bundle config (a DDP wrapper is looked through).
        checkpoint: path of the ``.pt`` file.
        map_location: ``torch.load``'s ``map_location`` (e.g. the inference device); default None.
        strict: ``load_state_dict``'s ``strict``; default True (a mismatch means another config built the network).
        what: the network's role in messages and logs (``"tokenizer"``, ``"generator"``). Default ``"tokenizer"``.
        argument: the bundle override that sets the path, named in the not-found message. Default
            ``"--checkpoint"``.

    Returns:
        ``network``, loaded and in eval mode.

    Raises:
        FileNotFoundError: ``checkpoint`` is empty or no file (the message names it and the ``--checkpoint`` override).
        medvq.utils.checkpoints.CheckpointError: the file is empty, truncated or unsafe (the message names it).
        TypeError: the file holds no state dict.
        RuntimeError: the weights do not fit ``network`` (the message suggests using the training's config overlays).
    """
    path = Path(checkpoint).expanduser() if checkpoint else None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"{what} checkpoint not found: '{path or checkpoint}'. Train first (training writes "
            f"checkpoints/model_final.pt in its output folder) or pass {argument} <model_final.pt or "
            "checkpoint_<N>.pt>."
        )
    state = read_checkpoint(
        path, map_location=map_location,
        hint=f"Pass {argument} <model_final.pt or checkpoint_<N>.pt> of a {what} training run that finished writing it.",
    )
    if isinstance(state, dict) and isinstance(state.get("network"), dict):
        state = state["network"]  # a full training checkpoint: networks, optimizers, trainer state, ...
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint '{path}' holds a {type(state).__name__}, not a state dict.")
    module = getattr(network, "module", network)  # DDP -> the model
    try:
        module.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        raise RuntimeError(
            f"checkpoint '{path}' does not fit the {what} this config builds (its preset and sizes, e.g. "
            "network_preset / tokenizer_preset / generator_preset, num_embeddings, embedding_dim): use the same config "
            "files and overrides as the training, e.g. "
            f"add configs/quickstart.json for a quickstart checkpoint. {_shorten(str(exc))}"
        ) from exc
    quantizer = getattr(module, "quantizer", None)
    if quantizer is not None and not bool(getattr(quantizer, "active", True)):
        logger.warning(
            "checkpoint '%s' was saved before quantization started (quantizer inactive): reconstructions decode "
            "continuous latents and token maps index an untrained codebook.", path,
        )
    logger.info("loaded %s weights from %s", what, path)
    return network.eval()
